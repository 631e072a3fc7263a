"""The zoo entries of DS nnU-Net and its 2D nnU-Net baseline (../shared/papers/000_ebe0050d52f538d0.txt)."""
from liverzoo.layout import get_layout
from liverzoo.models.nnunet.nnunet import build_ds_nnunet, build_nnunet_2d
from liverzoo.models.spec import ExportHints, ModelSpec, Paper, ParamVariant, Recipe

PAPER = Paper(
    file="000_ebe0050d52f538d0.txt",
    title="Zhao et al., Multi-Slice Dense-Sparse Learning for Efficient Liver and Tumor Segmentation, EMBC 2021",
    url="https://arxiv.org/abs/2108.06761",
)

# 000 DS nnU-Net (and 2D nnU-Net): Dice + CE "following nnU-Net" (SGD 0.01, Nesterov 0.99,
# poly 0.9, deep supervision 1/2^i, batch 12 are nnU-Net's); T = 7; DSD 400 + 600 epochs.
# Augmentation: nnU-Net's 2D set (rotation, scaling 0.7-1.4, mirroring, brightness/contrast,
# noise), which the paper inherits by "following the settings in nnU-Net".
RECIPE = Recipe(
    name="ds_nnunet",
    paper="000_ebe0050d52f538d0.txt", optimizer="sgd", learning_rate=1e-2, schedule="poly", loss="dice_ce",
    class_weights=None, aux_weights="halving", weight_decay=0.0, sampling="dense_sparse", dsd=True, batch_size=12,
    epochs=1000, patch=(512, 512), augment=dict(rotation=180, zoom=0.3, flip_axes=("h", "w"), intensity_scale=0.25,
                noise_std=0.05), recompute=False,
)


# Sec. III-B, Table I: 7.7 M and 41 M parameters, met within 10% (issue 3).
DS_NNUNET = ModelSpec(
    name="ds_nnunet",
    builder=build_ds_nnunet,
    layout=get_layout("2d"),
    preset="ds_nnunet",
    default_input_shape=(128, 128, 7),
    paper_input_shape=(512, 512, 7),
    tiny_input_shape=(128, 128, 7),
    paper_params=7_700_000,
    params_tolerance=0.10,
    paper_variants=(ParamVariant(kwargs={"deep_supervision": False}, paper_params=7_700_000, tolerance=0.10),),
    recipe=RECIPE,
    reference=PAPER,
    # int8 agreement 0.86 after 10 fine-tune steps, 0.98 after 30, 0.99 after 60.
    export=ExportHints(fine_tune_steps=60),
)

NNUNET_2D = ModelSpec(
    name="nnunet_2d",
    builder=build_nnunet_2d,
    layout=get_layout("2d"),
    preset="ds_nnunet",
    default_input_shape=(128, 128, 1),
    paper_input_shape=(512, 512, 1),
    tiny_input_shape=(128, 128, 1),
    paper_params=41_000_000,
    params_tolerance=0.10,
    recipe=RECIPE,
    reference=PAPER,
)

SPECS = (DS_NNUNET, NNUNET_2D)
