"""Serializable layers and block functions; importing this package registers every layer."""
from liverzoo.layers.conv2d import SubPixelUpsampling  # noqa: F401
from liverzoo.layers.conv3d import DepthwiseConv3D, FoldedConv3D  # noqa: F401
from liverzoo.layers.conv3d_transpose import FoldedConv3DTranspose  # noqa: F401
from liverzoo.layers.dimension import SlicesToVolume, VolumeToSlices  # noqa: F401
from liverzoo.layers.sts import DSTSConv3D, ParallelSTSConv3D, SequentialSTSConv3D  # noqa: F401
from liverzoo.layers.resample3d import AveragePooling3D, MaxPooling3D, TrilinearUpSampling3D  # noqa: F401
from liverzoo.layers.normalized_concat import NormalizedConcatenate  # noqa: F401
