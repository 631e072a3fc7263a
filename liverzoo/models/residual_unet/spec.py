"""The zoo entry of the residual U-Net (../shared/papers/002_7138868b57b69ed8.txt)."""
from liverzoo.layout import get_layout
from liverzoo.models.residual_unet.residual_unet import build_residual_unet
from liverzoo.models.spec import ModelSpec, Paper, ParamVariant, Recipe

PAPER = Paper(
    file="002_7138868b57b69ed8.txt",
    title="Pandey et al., Segmentation of Liver Lesions with Reduced Complexity Deep Models",
    url="https://arxiv.org/abs/1805.09233",
)

# 002 residual U-Net: Adam 1e-3 (0.9, 0.999), weighted CE (weights not stated: ours),
# rotations up to 180 degrees, elastic deformation, zoom 0.2; 100,000 iterations of batch 16.
RECIPE = Recipe(
    name="residual_unet",
    paper="002_7138868b57b69ed8.txt", optimizer="adam", learning_rate=1e-3, schedule="constant",
    loss="weighted_ce", class_weights=(1.0, 3.0, 10.0), aux_weights=None, weight_decay=0.0, sampling="dense",
    dsd=False, batch_size=16, epochs=400, patch=(256, 256), augment=dict(rotation=180, zoom=0.2, elastic=0.02),
    recompute=False,
)


RESIDUAL_UNET = ModelSpec(
    name="residual_unet",
    builder=build_residual_unet,
    layout=get_layout("2d"),
    preset="residual_unet",
    default_input_shape=(128, 128, 1),
    paper_input_shape=(256, 256, 1),
    tiny_input_shape=(32, 32, 1),
    # "2 million" (Sec. VI); the literal reading of the text gives 5.3 M and the paper has no
    # layer table to rebuild its 2 M from, so it is not compared (see `build_residual_unet`).
    paper_params=2_000_000,
    # Its U-Net baseline ("around 30 million") is the same topology with standard convs.
    paper_variants=(ParamVariant(kwargs={"separable": False}, paper_params=30_000_000, tolerance=0.15),),
    recipe=RECIPE,
    reference=PAPER,
)

SPECS = (RESIDUAL_UNET,)
