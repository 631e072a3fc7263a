"""3D U-Net and V-Net, the baselines of the LV-Net and 3DYNet papers (papers 004, 003)."""
from liverzoo.models.baselines3d.unet3d import build_unet3d  # noqa: F401
from liverzoo.models.baselines3d.vnet import build_vnet  # noqa: F401
