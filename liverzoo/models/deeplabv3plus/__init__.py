"""DeepLabV3+ with an Aligned-Xception encoder: LW-HCN's baseline and encoder donor (paper 001)."""
from liverzoo.models.deeplabv3plus.deeplabv3plus import (  # noqa: F401
    apply_aspp,
    apply_xception_encoder,
    build_deeplabv3plus,
    load_encoder_weights,
)
