"""The zoo entries of 3DYNet and 3DYNet-EE (../shared/papers/003_1722e7be9c09b159.txt)."""
from liverzoo.layout import get_layout
from liverzoo.models.spec import ExportHints, ModelSpec, Paper, Recipe
from liverzoo.models.ynet3d.ynet3d import build_ynet3d, build_ynet3d_ee

# No public link could be verified for this paper.
PAPER = Paper(
    file="003_1722e7be9c09b159.txt",
    title="d'Albenzio et al., 3DYNet: a densely interconnected network for volumetric liver and tumors segmentation",
)

# 003 3DYNet: soft Dice + CE, Adam 1e-4 with cosine annealing per batch, batch 1, 500 epochs,
# 256x256x64 volumes; flips, shifts, scaling.
RECIPE = Recipe(
    name="ynet3d",
    paper="003_1722e7be9c09b159.txt", optimizer="adam", learning_rate=1e-4, schedule="cosine", loss="dice_ce",
    class_weights=None, aux_weights=None, weight_decay=0.0, sampling="volume", dsd=False, batch_size=1,
    epochs=500, patch=(64, 256, 256), augment=dict(flip_axes=("d", "h", "w"), shift=0.1, zoom=0.1),
    recompute=False,
)


def _spec(name, builder, *, fine_tune_steps, paper_weights):
    # The paper reports no size; its VGG19 widths give 186 M / 169 M weights: tests use 1/8.
    return ModelSpec(
        name=name,
        builder=builder,
        layout=get_layout("3d"),
        preset="ynet3d",
        default_input_shape=(16, 128, 128, 1),
        paper_input_shape=(64, 256, 256, 1),
        tiny_input_shape=(16, 16, 16, 1),
        tiny_kwargs={"base_filters": 8},
        recipe=RECIPE,
        reference=PAPER,
        # Without normalisation layers the scores stay near-tied longer: int8 agreement of
        # ynet3d_ee 0.977 after 60 fine-tune steps, 0.986 after 150.
        export=ExportHints(
            fine_tune_steps=fine_tune_steps,
            bench_input_shape=(16, 128, 128, 1),
            bench_kwargs={"base_filters": 8},
            bench_why=f"paper 64x256x256 at VGG19 widths ({paper_weights} weights) does not fit this CPU budget",
        ),
    )


YNET3D = _spec("ynet3d", build_ynet3d, fine_tune_steps=30, paper_weights="186 M")
YNET3D_EE = _spec("ynet3d_ee", build_ynet3d_ee, fine_tune_steps=150, paper_weights="169 M")

SPECS = (YNET3D, YNET3D_EE)
