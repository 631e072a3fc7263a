"""The zoo entry of LV-Net (../shared/papers/004_e35520e2e41b14d6.txt)."""
from liverzoo.layout import get_layout
from liverzoo.models.lv_net.lv_net import build_lv_net
from liverzoo.models.spec import ModelSpec, Paper, ParamVariant

PAPER = Paper(
    file="004_e35520e2e41b14d6.txt",
    title="Lei et al., Lightweight V-Net for Liver Segmentation, ICASSP 2020",
    url="https://doi.org/10.1109/ICASSP40776.2020.9053454",
)

# Table 3: 1,659,282 trainable parameters (liver only); the count compared here is all weights
# at 3 classes (tests/models/test_lv_net.py compares trainable counts at 2 classes).
LV_NET = ModelSpec(
    name="lv_net",
    builder=build_lv_net,
    layout=get_layout("3d"),
    preset="lv_net",
    default_input_shape=(16, 128, 128, 1),
    paper_input_shape=(16, 256, 256, 1),
    tiny_input_shape=(16, 16, 16, 1),
    paper_params=1_659_282,
    params_tolerance=0.10,
    paper_variants=(ParamVariant(kwargs={"num_classes": 2}, paper_params=1_659_282, tolerance=0.10),),
    reference=PAPER,
)

SPECS = (LV_NET,)
