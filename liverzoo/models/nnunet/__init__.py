"""2D nnU-Net (LiTS plan) and DS nnU-Net, its depthwise-separable 2.5D variant (paper 000)."""
from liverzoo.models.nnunet.nnunet import build_ds_nnunet, build_nnunet, build_nnunet_2d  # noqa: F401
