"""The model zoo: one folder per paper's family, each declaring its `ModelSpec`s in `spec.py`.

`FAMILIES` below is the registry: an explicit list of the families' spec tuples (adding a
paper is one folder plus one line here). `SPECS` (name -> `ModelSpec`) and `MODELS` (name ->
builder) are views built from it. A family that lives outside the package (a user's own model,
a test's toy) joins with one explicit call, `add_family(spec_tuple)`.

Example:
    >>> from liverzoo import models
    >>> model = models.build("residual_unet", input_shape=(256, 256, 1))
    >>> models.SPECS["lv_net"].layout.name
    '3d'
"""
from liverzoo.errors import ConfigError
from liverzoo.models.baselines3d import spec as baselines3d
from liverzoo.models.deeplabv3plus import spec as deeplabv3plus
from liverzoo.models.lv_net import spec as lv_net
from liverzoo.models.lw_hcn import spec as lw_hcn
from liverzoo.models.nnunet import spec as nnunet
from liverzoo.models.residual_unet import spec as residual_unet
from liverzoo.models.spec import ExportHints, ModelSpec, Paper, ParamVariant, Recipe  # noqa: F401
from liverzoo.models.summary import summary  # noqa: F401  (the function shadows the submodule)
from liverzoo.models.ynet3d import spec as ynet3d

# 2D / 2.5D (papers 002, 000, 001), then 3D (001, 004 and its baselines, 003).
FAMILIES = (
    residual_unet.SPECS,
    nnunet.SPECS,
    deeplabv3plus.SPECS,
    lw_hcn.SPECS,
    lv_net.SPECS,
    baselines3d.SPECS,
    ynet3d.SPECS,
)

SPECS = {spec.name: spec for family in FAMILIES for spec in family}
MODELS = {name: spec.builder for name, spec in SPECS.items()}


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


def add_family(specs):
    """Adds a model family declared outside the package (its `spec.py`'s `SPECS` tuple).

    Its models then train, segment and export through the same generic paths as the zoo's.

    Args:
        specs: tuple of `ModelSpec`.

    Returns:
        The names added.

    Raises:
        ConfigError: not `ModelSpec`s, or a name that is already taken.

    Example:
        >>> from my_models import spec  # doctest: +SKIP
        >>> models.add_family(spec.SPECS)  # doctest: +SKIP
        ['my_unet']
    """
    specs = tuple(specs)
    for spec in specs:
        if not isinstance(spec, ModelSpec):
            raise ConfigError(f"add_family takes ModelSpec objects, got {type(spec).__name__}")
        if spec.name in SPECS:
            raise ConfigError(f"model name {spec.name!r} is already taken")
    for spec in specs:
        SPECS[spec.name] = spec
        MODELS[spec.name] = spec.builder
    return [spec.name for spec in specs]
