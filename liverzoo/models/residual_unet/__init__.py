"""Residual U-Net with depthwise-separable convolutions (Pandey et al., paper 002)."""
from liverzoo.models.residual_unet.residual_unet import build_residual_unet  # noqa: F401
