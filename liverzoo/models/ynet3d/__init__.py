"""3DYNet and 3DYNet-EE: two 3D VGG19 encoders, one 3D U-Net decoder (d'Albenzio et al., paper 003)."""
from liverzoo.models.ynet3d.ynet3d import apply_vgg19_encoder_3d, build_ynet3d, build_ynet3d_ee  # noqa: F401
