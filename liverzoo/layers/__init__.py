"""Serializable layers and block functions; importing this package registers every layer."""
from liverzoo.layers.conv2d import SubPixelUpsampling  # noqa: F401
