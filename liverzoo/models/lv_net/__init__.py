"""LV-Net: a lightweight V-Net of 3D inverted residual blocks (Lei et al., paper 004)."""
from liverzoo.models.lv_net.blocks import apply_inverted_residual_3d, apply_resample_3d  # noqa: F401
from liverzoo.models.lv_net.lv_net import build_lv_net  # noqa: F401
