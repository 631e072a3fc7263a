"""LW-HCN: 2D Xception bottom + 3D factorized convolutions (Zhang et al., paper 001)."""
from liverzoo.models.lw_hcn.lw_hcn import build_lw_hcn  # noqa: F401
