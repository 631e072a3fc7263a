"""The model zoo: one builder per architecture, in one plain dict.

Example:
    >>> from liverzoo import models
    >>> model = models.build("residual_unet", input_shape=(256, 256, 1))
"""
import dataclasses

from liverzoo.errors import ConfigError

# Each builder module adds its entries below (explicit imports, no side-effect registry).
MODELS = {}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What the trainer, inference, export and benchmarks need to know about a model.

    Attributes:
        kind: "2d" (input (H, W, T), predicts the centre slice) or "3d" (input (D, H, W, 1)).
        preset: name of the preprocessing preset in `liverzoo.data.preprocess.PRESETS`.
        default_input_shape: shape used when none is given (demo-friendly).
        paper_input_shape: the input size of the paper (for parameter/FLOP tables).
        paper_params: parameter count reported by the paper (None when it reports none).
        paper: file in ../shared/papers the model follows.
        tiny_input_shape: a small shape for unit tests.
    """

    kind: str
    preset: str
    default_input_shape: tuple
    paper_input_shape: tuple
    paper_params: object
    paper: str
    tiny_input_shape: tuple


SPECS = {}


def build(name, **kwargs):
    """Builds the zoo model `name` with the builder's keyword arguments.

    Raises:
        ConfigError: (a ValueError) for an unknown name, listing the valid ones.
    """
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}")
    if "input_shape" not in kwargs:
        kwargs["input_shape"] = SPECS[name].default_input_shape
    return MODELS[name](**kwargs)
