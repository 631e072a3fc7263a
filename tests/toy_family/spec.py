"""The toy family's one spec: every field the rest of liverzoo reads, by keyword."""
from liverzoo.layout import get_layout
from liverzoo.models.spec import ModelSpec, Paper, Recipe
from tests.toy_family.toy_unet import build_toy_unet

TOY_UNET = ModelSpec(
    name="toy_unet",
    builder=build_toy_unet,
    layout=get_layout("2d"),
    preset="residual_unet",
    default_input_shape=(32, 32, 1),
    paper_input_shape=(64, 64, 1),
    tiny_input_shape=(32, 32, 1),
    reference=Paper(file="none", title="a test's toy"),
    recipe=Recipe(name="toy", paper="none", optimizer="adam", learning_rate=1e-3, schedule="constant",
                  loss="dice_ce", class_weights=None, aux_weights=None, weight_decay=0.0, sampling="dense",
                  dsd=False, batch_size=2, epochs=1, patch=(32, 32), augment={}, recompute=False),
)

SPECS = (TOY_UNET,)
