"""The zoo entry of DeepLabV3+, as the LW-HCN paper uses it (../shared/papers/001_bb2d5e6c0ac559d5.txt)."""
from liverzoo.layout import get_layout
from liverzoo.models.deeplabv3plus.deeplabv3plus import build_deeplabv3plus
from liverzoo.models.lw_hcn.spec import RECIPE  # the lw_hcn paper trains its baselines alike
from liverzoo.models.spec import ModelSpec, Paper

# The LW-HCN paper uses DeepLabV3+ as baseline and encoder donor but reports no size for it.
DEEPLABV3PLUS = ModelSpec(
    name="deeplabv3plus",
    builder=build_deeplabv3plus,
    layout=get_layout("2d"),
    preset="lw_hcn",
    default_input_shape=(128, 128, 1),
    paper_input_shape=(512, 512, 1),
    tiny_input_shape=(32, 32, 1),
    recipe=RECIPE,
    reference=Paper(
        file="001_bb2d5e6c0ac559d5.txt",
        title="Chen et al., Encoder-Decoder with Atrous Separable Convolution for Semantic Image "
              "Segmentation, ECCV 2018 (as used by the LW-HCN paper)",
        url="https://arxiv.org/abs/1802.02611",
    ),
)

SPECS = (DEEPLABV3PLUS,)
