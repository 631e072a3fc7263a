"""Per-paper training recipes: the `RECIPES` table, `recipe_for(model)` and the run-length defaults.

Each row is one paper's training set-up; every field can be overridden by a `TrainConfig`
option. Where a paper does not state a value, the row's comment says so and what is used.
"""
import dataclasses

from liverzoo.errors import ConfigError

#: `--optimizer` choices (SGD: Nesterov momentum 0.99, as nnU-Net).
OPTIMIZERS = ("adam", "sgd")
#: `--sampling` choices of 2.5D models (3D models sample sub-volumes: "volume").
SAMPLINGS = ("dense", "sparse", "dense_sparse")
#: `--strategy` choices (`liverzoo.training.distribute.make_strategy`).
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recipe:
    """The training set-up of one paper (see `RECIPES`).

    Attributes:
        paper: file in ../shared/papers.
        optimizer: "adam" or "sgd" (SGD: Nesterov momentum 0.99, as nnU-Net).
        learning_rate: initial learning rate.
        schedule: name in `liverzoo.schedules.SCHEDULES`.
        loss: name in `liverzoo.losses.LOSSES`.
        class_weights: weights of "weighted_ce" (background, liver, tumor), else None.
        aux_weights: deep-supervision weights rule: "lv_net" (0.2, 0.4, 0.6, 0.8), "halving"
            (nnU-Net: 1/2, 1/4, ... from fine to coarse) or None.
        weight_decay: L2 coefficient lambda of LV-Net Eq. 3 (0 for none).
        sampling: "dense", "sparse" or "dense_sparse" for 2D models; "volume" for 3D.
        dsd: Dense-Sparse then Dense training (paper 000).
        batch_size: the paper's batch size.
        epochs: the paper's number of epochs (of `PAPER_STEPS_PER_EPOCH` steps).
        patch: the paper's training input `(H, W)` (2D) or `(D, H, W)` (3D).
        augment: `liverzoo.data.augment.AugmentConfig` fields.
        recompute: gradient checkpointing (LW-HCN's paper uses it to reach batch 6).
    """

    paper: str
    optimizer: str
    learning_rate: float
    schedule: str
    loss: str
    class_weights: tuple
    aux_weights: str
    weight_decay: float
    sampling: str
    dsd: bool
    batch_size: int
    epochs: int
    patch: tuple
    augment: dict
    recompute: bool


# nnU-Net's 2D augmentation (rotation, scaling 0.7-1.4, mirroring, brightness/contrast, noise),
# which the DS nnU-Net paper inherits by "following the settings in nnU-Net".
_NNUNET_AUGMENT = dict(rotation=180, zoom=0.3, flip_axes=("h", "w"), intensity_scale=0.25, noise_std=0.05)

# One row per paper; `recipe_for(model)` picks the row of the model's paper (SPECS[model].paper).
# Where a paper does not state a value the comment says so and what is used instead.
RECIPES = {
    # 000 DS nnU-Net (and 2D nnU-Net): Dice + CE "following nnU-Net" (SGD 0.01, Nesterov 0.99,
    # poly 0.9, deep supervision 1/2^i, batch 12 are nnU-Net's); T = 7; DSD 400 + 600 epochs.
    "ds_nnunet": Recipe(
        paper="000_ebe0050d52f538d0.txt", optimizer="sgd", learning_rate=1e-2, schedule="poly", loss="dice_ce",
        class_weights=None, aux_weights="halving", weight_decay=0.0, sampling="dense_sparse", dsd=True, batch_size=12,
        epochs=1000, patch=(512, 512), augment=_NNUNET_AUGMENT, recompute=False),
    # 001 LW-HCN: Adam 1e-3, poly 0.9, Eq. 8 Dice + CE, 12x256x256 sub-volumes, batch 6 with
    # gradient checkpointing; no augmentation and no epoch count stated (24 h on a P100).
    "lw_hcn": Recipe(
        paper="001_bb2d5e6c0ac559d5.txt", optimizer="adam", learning_rate=1e-3, schedule="poly", loss="dice_ce",
        class_weights=None, aux_weights=None, weight_decay=0.0, sampling="volume", dsd=False, batch_size=6,
        epochs=100, patch=(12, 256, 256), augment={}, recompute=True),
    # 002 residual U-Net: Adam 1e-3 (0.9, 0.999), weighted CE (weights not stated: ours),
    # rotations up to 180 degrees, elastic deformation, zoom 0.2; 100,000 iterations of batch 16.
    "residual_unet": Recipe(
        paper="002_7138868b57b69ed8.txt", optimizer="adam", learning_rate=1e-3, schedule="constant",
        loss="weighted_ce", class_weights=(1.0, 3.0, 10.0), aux_weights=None, weight_decay=0.0, sampling="dense",
        dsd=False, batch_size=16, epochs=400, patch=(256, 256), augment=dict(rotation=180, zoom=0.2, elastic=0.02),
        recompute=False),
    # 003 3DYNet (and its 3D U-Net / V-Net baselines): soft Dice + CE, Adam 1e-4 with cosine
    # annealing per batch, batch 1, 500 epochs, 256x256x64 volumes; flips, shifts, scaling.
    "ynet3d": Recipe(
        paper="003_1722e7be9c09b159.txt", optimizer="adam", learning_rate=1e-4, schedule="cosine", loss="dice_ce",
        class_weights=None, aux_weights=None, weight_decay=0.0, sampling="volume", dsd=False, batch_size=1,
        epochs=500, patch=(64, 256, 256), augment=dict(flip_axes=("d", "h", "w"), shift=0.1, zoom=0.1),
        recompute=False),
    # 004 LV-Net: CE with deep supervision 0.2, 0.4, 0.6, 0.8 (Eq. 3), Adam 1e-3 x 0.9 per
    # epoch, weight decay 1e-5, batch 4, 16 slices of 256x256; best model after ~20 epochs.
    "lv_net": Recipe(
        paper="004_e35520e2e41b14d6.txt", optimizer="adam", learning_rate=1e-3, schedule="exponential", loss="ce",
        class_weights=None, aux_weights="lv_net", weight_decay=1e-5, sampling="volume", dsd=False, batch_size=4,
        epochs=20, patch=(16, 256, 256), augment={}, recompute=False),
}
#: Steps per epoch when the data is not the demo and --steps_per_epoch is not given (nnU-Net's).
PAPER_STEPS_PER_EPOCH = 250
#: The DS (dense-sparse) stage's share of the epochs in DSD training (paper 000: 400 of 1000).
DSD_DENSE_SPARSE_SHARE = 0.4
#: Sparse stack stride (paper 000: s = 2).
SPARSE_STRIDE = 2

# The embedded demo: 4 small cases; these defaults make `tools/train.py --model=residual_unet`
# finish in minutes on a 2-core CPU (docs/training.md has the measured run).
DEMO_EPOCHS = 6
DEMO_STEPS_PER_EPOCH = 40
DEMO_BATCH_SIZE = {"2d": 8, "3d": 2}


def recipe_for(model):
    """`(recipe name, Recipe)` of a zoo model, found through the paper it follows."""
    from liverzoo import models

    if model not in models.MODELS:
        raise ConfigError(f"--model={model!r} is not a zoo model; valid names: {', '.join(sorted(models.MODELS))}")
    paper = models.SPECS[model].paper
    for name, recipe in RECIPES.items():
        if recipe.paper == paper:
            return name, recipe
    raise ConfigError(f"no training recipe for paper {paper} of model {model!r}")
