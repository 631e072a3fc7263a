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
        tiny_kwargs: builder options for unit tests, only where the paper's widths make a
            test unaffordable (e.g. 3DYNet's 186 M weights): `build(name,
            input_shape=spec.tiny_input_shape, **spec.tiny_kwargs)`.
    """

    kind: str
    preset: str
    default_input_shape: tuple
    paper_input_shape: tuple
    paper_params: object
    paper: str
    tiny_input_shape: tuple
    tiny_kwargs: dict = dataclasses.field(default_factory=dict)


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


# 2D / 2.5D models (../shared/papers 000, 001, 002). Imported here, after MODELS/SPECS exist.
from liverzoo.models.deeplabv3plus import build_deeplabv3plus  # noqa: E402
from liverzoo.models.nnunet import build_ds_nnunet, build_nnunet_2d  # noqa: E402
from liverzoo.models.residual_unet import build_residual_unet  # noqa: E402
from liverzoo.models.summary import summary  # noqa: E402, F401  (the function shadows the submodule)

MODELS.update(
    residual_unet=build_residual_unet,
    ds_nnunet=build_ds_nnunet,
    nnunet_2d=build_nnunet_2d,
    deeplabv3plus=build_deeplabv3plus,
)
SPECS.update(
    residual_unet=ModelSpec("2d", "residual_unet", (128, 128, 1), (256, 256, 1), 2_000_000,
                            "002_7138868b57b69ed8.txt", (32, 32, 1)),
    ds_nnunet=ModelSpec("2d", "ds_nnunet", (128, 128, 7), (512, 512, 7), 7_700_000,
                        "000_ebe0050d52f538d0.txt", (128, 128, 7)),
    nnunet_2d=ModelSpec("2d", "ds_nnunet", (128, 128, 1), (512, 512, 1), 41_000_000,
                        "000_ebe0050d52f538d0.txt", (128, 128, 1)),
    # The LW-HCN paper uses DeepLabV3+ as baseline and encoder donor but reports no size for it.
    deeplabv3plus=ModelSpec("2d", "lw_hcn", (128, 128, 1), (512, 512, 1), None,
                            "001_bb2d5e6c0ac559d5.txt", (32, 32, 1)),
)

# LW-HCN (../shared/papers/001): 2D Xception bottom + 3D factorized convs; conv_type gives Table 1.
from liverzoo.models.lw_hcn import build_lw_hcn  # noqa: E402

MODELS.update(lw_hcn=build_lw_hcn)
SPECS.update(
    lw_hcn=ModelSpec("3d", "lw_hcn", (12, 128, 128, 1), (12, 256, 256, 1), 3_600_000,
                     "001_bb2d5e6c0ac559d5.txt", (8, 32, 32, 1)),
)

# LV-Net and its baselines (../shared/papers/004), 3DYNet (../shared/papers/003).
from liverzoo.models.lv_net import build_lv_net  # noqa: E402
from liverzoo.models.unet3d import build_unet3d  # noqa: E402
from liverzoo.models.vnet import build_vnet  # noqa: E402
from liverzoo.models.ynet3d import build_ynet3d, build_ynet3d_ee  # noqa: E402

MODELS.update(lv_net=build_lv_net, vnet=build_vnet, unet3d=build_unet3d, ynet3d=build_ynet3d, ynet3d_ee=build_ynet3d_ee)
SPECS.update(
    lv_net=ModelSpec("3d", "lv_net", (16, 128, 128, 1), (16, 256, 256, 1), 1_659_282,
                     "004_e35520e2e41b14d6.txt", (16, 16, 16, 1)),
    vnet=ModelSpec("3d", "lv_net", (16, 128, 128, 1), (16, 256, 256, 1), 65_173_903,
                   "004_e35520e2e41b14d6.txt", (16, 16, 16, 1)),
    unet3d=ModelSpec("3d", "lv_net", (16, 128, 128, 1), (16, 256, 256, 1), 16_320_322,
                     "004_e35520e2e41b14d6.txt", (8, 16, 16, 1)),
    # The paper reports no size; its VGG19 widths give 186 M / 169 M weights: tests use 1/8.
    ynet3d=ModelSpec("3d", "ynet3d", (16, 128, 128, 1), (64, 256, 256, 1), None,
                     "003_1722e7be9c09b159.txt", (16, 16, 16, 1), {"base_filters": 8}),
    ynet3d_ee=ModelSpec("3d", "ynet3d", (16, 128, 128, 1), (64, 256, 256, 1), None,
                        "003_1722e7be9c09b159.txt", (16, 16, 16, 1), {"base_filters": 8}),
)
