"""3D pooling and trilinear upsampling made only of TFLite builtin ops.

`keras.layers.MaxPooling3D` and `AveragePooling3D` convert to TFLite only through Flex
(SELECT_TF_OPS), which phones do not have, and `keras.layers.UpSampling3D` is nearest
neighbour only. A box pooling and a trilinear interpolation are separable, so the layers
here run them as two 2D builtins over folded tensors:

- in-plane: the slices `(B*D, H, W, C)` through MAX_POOL_2D / AVERAGE_POOL_2D /
  RESIZE_BILINEAR;
- along depth: `(B, D, H*W, C)` through the same op with a `(kd, 1)` window (pooling) or a
  `(s*D, H*W)` target size (the second axis keeps its size, which bilinear resizing maps
  to itself exactly).

The max over a box is the max over depth of the in-plane maxima; the mean over a box is the
mean over depth of the in-plane means, also at "same" borders, because TensorFlow (and
TFLite) average only the valid positions and the count of a box is the product of its
per-axis counts. Every size may be unknown (`None`).

Paper: average-pooling down-sampling and trilinear up-sampling of LV-Net,
../shared/papers/004_e35520e2e41b14d6.txt, Sec. 2.1 and Fig. 2.
"""
import keras
import tensorflow as tf

from liverzoo.errors import ConfigError
from liverzoo.layers.conv3d import PADDINGS, _conv_size, _triple


def _check_rank(layer, input_shape):
    if len(input_shape) != 5:
        raise ConfigError(f"{type(layer).__name__}: expects (B, D, H, W, C) input, got {tuple(input_shape)}")


class _Pooling3D(keras.layers.Layer):
    """Shared machinery of the two pooling layers; subclasses set `_pool` (a keras.ops pool)."""

    _pool = None

    def __init__(self, pool_size=2, strides=None, padding="valid", **kwargs):
        super().__init__(**kwargs)
        cls = type(self).__name__
        self.pool_size = _triple(pool_size, "pool_size", cls)
        self.strides = self.pool_size if strides is None else _triple(strides, "strides", cls)
        if padding not in PADDINGS:
            raise ConfigError(f"{cls}: padding must be one of {PADDINGS}, got {padding!r}")
        self.padding = padding

    def build(self, input_shape):
        _check_rank(self, input_shape)
        super().build(input_shape)

    def call(self, inputs):
        (kd, kh, kw), (sd, sh, sw) = self.pool_size, self.strides
        b, d, h, w, c = keras.ops.shape(inputs)
        x = inputs
        if (kh, kw, sh, sw) != (1, 1, 1, 1):
            x = self._pool(keras.ops.reshape(x, (-1, h, w, c)), (kh, kw), (sh, sw), self.padding)
            _, h, w, _ = keras.ops.shape(x)
        if (kd, sd) != (1, 1):
            x = self._pool(keras.ops.reshape(x, (b, d, h * w, c)), (kd, 1), (sd, 1), self.padding)
        return keras.ops.reshape(x, (b, -1, h, w, c))

    def compute_output_shape(self, input_shape):
        b, *spatial, c = input_shape
        sizes = [_conv_size(n, k, s, 1, self.padding) for n, k, s in zip(spatial, self.pool_size, self.strides)]
        return (b, *sizes, c)

    def get_config(self):
        config = super().get_config()
        config.update(pool_size=self.pool_size, strides=self.strides, padding=self.padding)
        return config


@keras.saving.register_keras_serializable(package="liverzoo")
class MaxPooling3D(_Pooling3D):
    """3D max pooling from TFLite's MAX_POOL_2D builtin; equals `keras.layers.MaxPooling3D`.

    The in-plane window is pooled over the slices, then the depth window over the folded
    plane, so the layer converts to MAX_POOL_2D + RESHAPE instead of a Flex MaxPool3D. Used
    by the encoders of 3DYNet (../shared/papers/003_1722e7be9c09b159.txt, Sec. 2) and the
    3D U-Net baseline.

    Args:
        pool_size: int or `(pd, ph, pw)` window.
        strides: int or `(sd, sh, sw)`; default: `pool_size`.
        padding: "valid" or "same" (TensorFlow's rule).
        **kwargs: standard `keras.layers.Layer` arguments (name, dtype, ...).

    Example:
        >>> import numpy as np
        >>> MaxPooling3D(2)(np.zeros((1, 4, 8, 8, 3), "float32")).shape
        TensorShape([1, 2, 4, 4, 3])
    """

    _pool = staticmethod(keras.ops.max_pool)


@keras.saving.register_keras_serializable(package="liverzoo")
class AveragePooling3D(_Pooling3D):
    """3D average pooling from TFLite's AVERAGE_POOL_2D builtin; equals `keras.layers.AveragePooling3D`.

    At "same" borders the mean is over the valid voxels only, as in TensorFlow. LV-Net's
    down-sampling module is a pointwise convolution and this pooling
    (../shared/papers/004_e35520e2e41b14d6.txt, Sec. 2.1, Fig. 2b).

    Args:
        pool_size: int or `(pd, ph, pw)` window.
        strides: int or `(sd, sh, sw)`; default: `pool_size`.
        padding: "valid" or "same" (TensorFlow's rule).
        **kwargs: standard `keras.layers.Layer` arguments (name, dtype, ...).

    Example:
        >>> import numpy as np
        >>> AveragePooling3D((1, 2, 2))(np.ones((1, 3, 4, 4, 2), "float32")).shape
        TensorShape([1, 3, 2, 2, 2])
    """

    _pool = staticmethod(keras.ops.average_pool)


@keras.saving.register_keras_serializable(package="liverzoo")
class TrilinearUpSampling3D(keras.layers.Layer):
    """Trilinear upsampling by integer factors, from TFLite's RESIZE_BILINEAR builtin.

    Sampling convention: half-pixel centres (output voxel `o` of an axis upsampled by `s`
    reads input coordinate `(o + 0.5) / s - 0.5`, clamped to the edge voxels), i.e.
    `tf.image.resize(..., "bilinear")`, PyTorch `F.interpolate(mode="trilinear",
    align_corners=False)` (the LV-Net authors' framework) and
    `scipy.ndimage.zoom(x, s, order=1, grid_mode=True, mode="nearest")`. Unlike
    `align_corners=True` it treats every voxel alike and keeps the volume centred, so maps
    upsampled from different depths line up.

    Trilinear interpolation is separable: the depth axis is interpolated first (on the
    smaller tensor, as a bilinear resize of `(B, D, H*W, C)` whose second axis keeps its
    size), then the plane (a bilinear resize of the slices `(B*s*D, H, W, C)`). LV-Net
    up-samples its decoder and its deep-supervision heads this way
    (../shared/papers/004_e35520e2e41b14d6.txt, Sec. 2.1-2.2, Fig. 2c).

    Args:
        size: int or `(sd, sh, sw)` upsampling factors (>= 1).
        **kwargs: standard `keras.layers.Layer` arguments (name, dtype, ...).

    Example:
        >>> import numpy as np
        >>> TrilinearUpSampling3D((2, 4, 4))(np.zeros((1, 3, 5, 5, 2), "float32")).shape
        TensorShape([1, 6, 20, 20, 2])
    """

    def __init__(self, size=2, **kwargs):
        super().__init__(**kwargs)
        self.size = _triple(size, "size", type(self).__name__)

    def build(self, input_shape):
        _check_rank(self, input_shape)
        super().build(input_shape)

    def call(self, inputs):
        sd, sh, sw = self.size
        b, d, h, w, c = keras.ops.shape(inputs)
        x = inputs
        if sd > 1:
            x = tf.image.resize(keras.ops.reshape(x, (b, d, h * w, c)), (d * sd, h * w), method="bilinear")
        if (sh, sw) != (1, 1):
            x = tf.image.resize(keras.ops.reshape(x, (-1, h, w, c)), (h * sh, w * sw), method="bilinear")
        return keras.ops.reshape(x, (b, d * sd, h * sh, w * sw, c))

    def compute_output_shape(self, input_shape):
        b, *spatial, c = input_shape
        return (b, *(None if n is None else n * s for n, s in zip(spatial, self.size)), c)

    def get_config(self):
        config = super().get_config()
        config.update(size=self.size)
        return config
