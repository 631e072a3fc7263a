"""The zoo entries of V-Net and 3D U-Net, as measured by the LV-Net paper (../shared/papers/004_e35520e2e41b14d6.txt)."""
from liverzoo.layout import get_layout
from liverzoo.models.baselines3d.unet3d import build_unet3d
from liverzoo.models.baselines3d.vnet import build_vnet
from liverzoo.models.lv_net.spec import PAPER
from liverzoo.models.lv_net.spec import RECIPE  # the lv_net paper trains its baselines alike
from liverzoo.models.spec import ModelSpec

# Table 3 of the LV-Net paper (trainable counts, liver only); compared here with all weights at
# 3 classes (tests/models/test_baselines3d.py compares trainable counts at 2 classes).
VNET = ModelSpec(
    name="vnet",
    builder=build_vnet,
    layout=get_layout("3d"),
    preset="lv_net",
    default_input_shape=(16, 128, 128, 1),
    paper_input_shape=(16, 256, 256, 1),
    tiny_input_shape=(16, 16, 16, 1),
    paper_params=65_173_903,
    params_tolerance=0.001,
    recipe=RECIPE,
    reference=PAPER,
)

UNET3D = ModelSpec(
    name="unet3d",
    builder=build_unet3d,
    layout=get_layout("3d"),
    preset="lv_net",
    default_input_shape=(16, 128, 128, 1),
    paper_input_shape=(16, 256, 256, 1),
    tiny_input_shape=(8, 16, 16, 1),
    paper_params=16_320_322,
    params_tolerance=0.001,
    recipe=RECIPE,
    reference=PAPER,
)

SPECS = (VNET, UNET3D)
