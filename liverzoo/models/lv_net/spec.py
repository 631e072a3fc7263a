"""The zoo entry of LV-Net (../shared/papers/004_e35520e2e41b14d6.txt)."""
from liverzoo.layout import get_layout
from liverzoo.models.lv_net.lv_net import build_lv_net
from liverzoo.models.spec import ModelSpec, Paper, ParamVariant, Recipe

PAPER = Paper(
    file="004_e35520e2e41b14d6.txt",
    title="Lei et al., Lightweight V-Net for Liver Segmentation, ICASSP 2020",
    url="https://doi.org/10.1109/ICASSP40776.2020.9053454",
)

# 004 LV-Net: CE with deep supervision 0.2, 0.4, 0.6, 0.8 (Eq. 3), Adam 1e-3 x 0.9 per
# epoch, weight decay 1e-5, batch 4, 16 slices of 256x256; best model after ~20 epochs.
RECIPE = Recipe(
    name="lv_net",
    paper="004_e35520e2e41b14d6.txt", optimizer="adam", learning_rate=1e-3, schedule="exponential", loss="ce",
    class_weights=None, aux_weights="lv_net", weight_decay=1e-5, sampling="volume", dsd=False, batch_size=4,
    epochs=20, patch=(16, 256, 256), augment={}, recompute=False,
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
    recipe=RECIPE,
    reference=PAPER,
)

SPECS = (LV_NET,)
