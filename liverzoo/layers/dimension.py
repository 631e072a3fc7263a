"""The dimension-transformation layer Z of LW-HCN and its inverse.

../shared/papers/001_bb2d5e6c0ac559d5.txt, Sec. 3.2: "we first use 2D convolutions to extract
feature maps from 2D slices in the same CT volume, and then concatenate them into a 3D
feature map along the temporal dimension." `VolumeToSlices` folds the depth (slice) axis
into the batch so that 2D layers see every slice; `SlicesToVolume` (Z) stacks the slices'
2D feature maps back into one 3D map. Both are a single RESHAPE in TFLite.
"""
import keras

from liverzoo.errors import ConfigError


@keras.saving.register_keras_serializable(package="liverzoo")
class VolumeToSlices(keras.layers.Layer):
    """Folds the slice axis into the batch: `(B, D, H, W, C) -> (B*D, H, W, C)`.

    Slice `d` of volume `b` becomes batch row `b * D + d`, the order `SlicesToVolume`
    undoes. Used to run LW-HCN's 2D encoder (and 2D resampling) on every slice
    (../shared/papers/001_bb2d5e6c0ac559d5.txt, Fig. 1).

    Args:
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
        >>> import numpy as np
        >>> VolumeToSlices()(np.zeros((2, 12, 32, 32, 1), "float32")).shape
        TensorShape([24, 32, 32, 1])
    """

    def call(self, inputs):
        _, _, h, w, c = keras.ops.shape(inputs)
        return keras.ops.reshape(inputs, (-1, h, w, c))

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 5:
            raise ConfigError(f"VolumeToSlices: expects (B, D, H, W, C) input, got {tuple(input_shape)}")
        b, d, h, w, c = input_shape
        return (None if b is None or d is None else b * d, h, w, c)


@keras.saving.register_keras_serializable(package="liverzoo")
class SlicesToVolume(keras.layers.Layer):
    """Z: stacks per-slice 2D maps into one 3D map, `(B*D, h, w, C) -> (B, D, h, w, C)`.

    The number of slices D comes either from `depth` or, for networks that accept any
    depth, from a reference 5D tensor passed as second input (`Z([maps, volume])` takes
    B and D from `volume`, e.g. the network input).

    Args:
        depth: the number of slices D, or None to take it from the reference input.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
        >>> import numpy as np
        >>> maps = np.zeros((24, 4, 4, 256), "float32")
        >>> SlicesToVolume(depth=12)(maps).shape
        TensorShape([2, 12, 4, 4, 256])
        >>> SlicesToVolume()([maps, np.zeros((2, 12, 32, 32, 1), "float32")]).shape
        TensorShape([2, 12, 4, 4, 256])
    """

    def __init__(self, depth=None, **kwargs):
        super().__init__(**kwargs)
        if depth is not None and (not isinstance(depth, int) or depth < 1):
            raise ConfigError(f"SlicesToVolume: depth must be a positive int or None, got {depth!r}")
        self.depth = depth

    def _split(self, inputs):
        """(maps, reference or None), checking that exactly one source of D is given."""
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != 2 or self.depth is not None:
                raise ConfigError("SlicesToVolume: give either depth= or the inputs [maps, reference], not both")
            return inputs
        if self.depth is None:
            raise ConfigError("SlicesToVolume: without depth= it needs the inputs [maps, reference_volume]")
        return inputs, None

    def call(self, inputs):
        maps, reference = self._split(inputs)
        _, h, w, c = keras.ops.shape(maps)
        if reference is None:
            return keras.ops.reshape(maps, (-1, self.depth, h, w, c))
        b, d = keras.ops.shape(reference)[:2]
        return keras.ops.reshape(maps, (b, d, h, w, c))

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple)):
            maps, reference = input_shape
            b, d = reference[:2]
        else:
            maps, d = input_shape, self.depth
            b = None if maps[0] is None else maps[0] // d
        if len(maps) != 4:
            raise ConfigError(f"SlicesToVolume: expects (B*D, h, w, C) maps, got {tuple(maps)}")
        return (b, d, *maps[1:])

    def get_config(self):
        config = super().get_config()
        config.update(depth=self.depth)
        return config
