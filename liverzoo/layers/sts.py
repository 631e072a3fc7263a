"""Spatiotemporal-separate 3D convolutions of LW-HCN and the `conv_type` switch of its ablation.

../shared/papers/001_bb2d5e6c0ac559d5.txt, Sec. 3.1, factorizes a `k x k x k` convolution
over (slices, height, width) into a `1 x k x k` spatial and a `k x 1 x 1` temporal (inter-
slice) convolution:

- `SequentialSTSConv3D`, Eq. (4): spatial then temporal convolution, `9MN + 3N^2` weights.
- `ParallelSTSConv3D`, Eq. (5): spatial and temporal convolutions side by side, concatenated,
  then fused by a pointwise convolution, `12MN + 2N^2` weights.
- `DSTSConv3D`, Eq. (6): the channels are split into a spatial and a temporal half, each
  convolved per channel (depthwise), concatenated, then a pointwise convolution:
  `6M + MN` weights.

Atrous rates dilate only the slice plane (DST-ASPP, Eq. (7), "atrous rates 2, 4, 6 in the
spatial dimension"). Everything is built from `FoldedConv3D`/`DepthwiseConv3D`, so it
converts to TFLite builtins; the "standard" type uses the stock `Conv3D` (builtin CONV_3D)
when undilated and `FoldedConv3D` when dilated (a dilated CONV_3D would need Flex).
"""
import keras

from liverzoo.errors import ConfigError
from liverzoo.layers.conv3d import DepthwiseConv3D, FoldedConv3D
from liverzoo.layers.conv_norm_act import apply_norm_act

CONV_TYPES = ("standard", "sts_seq", "sts_par", "dsts")


def _copy(initializer):
    """A fresh initializer with the same config (sublayers must not share one instance)."""
    return keras.initializers.get(keras.initializers.serialize(initializer))


class _SpatioTemporalConv(keras.layers.Layer):
    """Shared arguments, checks and config of the factorized convolutions. Not for direct use."""

    def __init__(
        self,
        filters,
        kernel_size=3,
        dilation_rate=1,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        cls = type(self).__name__
        for arg, value in (("filters", filters), ("kernel_size", kernel_size), ("dilation_rate", dilation_rate)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{cls}: {arg} must be a positive int, got {value!r}")
        self.filters = filters
        self.kernel_size = kernel_size
        self.dilation_rate = dilation_rate
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def _kernels(self):
        """(kernel_size, dilation_rate) of the spatial 1 x k x k and the temporal k x 1 x 1 parts."""
        k, r = self.kernel_size, self.dilation_rate
        return ((1, k, k), (1, r, r)), ((k, 1, 1), 1)

    def _conv(self, filters, kernel_size, dilation_rate=1, *, use_bias=False, name):
        return FoldedConv3D(
            filters,
            kernel_size,
            padding="same",
            dilation_rate=dilation_rate,
            use_bias=use_bias,
            kernel_initializer=_copy(self.kernel_initializer),
            bias_initializer=_copy(self.bias_initializer),
            dtype=self.dtype_policy,
            name=name,
        )

    def _depthwise(self, kernel_size, dilation_rate, *, name):
        return DepthwiseConv3D(
            kernel_size,
            padding="same",
            dilation_rate=dilation_rate,
            use_bias=False,
            depthwise_initializer=_copy(self.kernel_initializer),
            dtype=self.dtype_policy,
            name=name,
        )

    def _pointwise(self):
        return self._conv(self.filters, 1, use_bias=self.use_bias, name="pointwise")

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            dilation_rate=self.dilation_rate,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
        )
        return config


@keras.saving.register_keras_serializable(package="liverzoo")
class SequentialSTSConv3D(_SpatioTemporalConv):
    """Sequential spatiotemporal-separate convolution (STS(sequ), Eq. (4)).

    A `1 x k x k` spatial convolution (M -> filters, dilated in the plane by
    `dilation_rate`) whose output feeds a `k x 1 x 1` temporal convolution (filters ->
    filters), as the text of ../shared/papers/001_bb2d5e6c0ac559d5.txt, Sec. 3.1 says ("using
    the output of spatial convolution as the input of temporal convolution"; Eq. (4) writes
    the composition the other way round). No non-linearity in between, as in Eq. (4).

    Args:
        filters: output channels N.
        kernel_size: k.
        dilation_rate: atrous rate in the slice plane.
        use_bias: bias on the temporal convolution.
        kernel_initializer: initializer of both kernels.
        bias_initializer: initializer of the bias.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
        >>> import numpy as np
        >>> SequentialSTSConv3D(8, dilation_rate=2)(np.zeros((1, 4, 16, 16, 3), "float32")).shape
        TensorShape([1, 4, 16, 16, 8])
    """

    def build(self, input_shape):
        spatial, temporal = self._kernels()
        self.spatial = self._conv(self.filters, *spatial, name="spatial")
        self.temporal = self._conv(self.filters, *temporal, use_bias=self.use_bias, name="temporal")
        self.spatial.build(input_shape)
        self.temporal.build(self.compute_output_shape(input_shape))
        super().build(input_shape)

    def call(self, inputs):
        return self.temporal(self.spatial(inputs))


@keras.saving.register_keras_serializable(package="liverzoo")
class ParallelSTSConv3D(_SpatioTemporalConv):
    """Parallel spatiotemporal-separate convolution (STS(pa), Eq. (5)) with a pointwise fusion.

    A `1 x k x k` spatial and a `k x 1 x 1` temporal convolution (both M -> filters) on the
    same input, concatenated (2 x filters channels) as in Eq. (5), then a pointwise
    convolution back to `filters` so that the module replaces a convolution one for one.
    ../shared/papers/001_bb2d5e6c0ac559d5.txt (Sec. 3.1) counts `12c^2` weights for both STS
    modules yet reports more parameters for STS(pa) than STS(sequ) (Table 1: 20.8 M vs
    19.4 M); the fusion (`2c^2`) is our reading of where they come from.

    Args:
        filters: output channels N.
        kernel_size: k.
        dilation_rate: atrous rate in the slice plane.
        use_bias: bias on the pointwise fusion.
        kernel_initializer: initializer of every kernel.
        bias_initializer: initializer of the bias.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
        >>> import numpy as np
        >>> ParallelSTSConv3D(8)(np.zeros((1, 4, 16, 16, 3), "float32")).shape
        TensorShape([1, 4, 16, 16, 8])
    """

    def build(self, input_shape):
        spatial, temporal = self._kernels()
        self.spatial = self._conv(self.filters, *spatial, name="spatial")
        self.temporal = self._conv(self.filters, *temporal, name="temporal")
        self.pointwise = self._pointwise()
        self.spatial.build(input_shape)
        self.temporal.build(input_shape)
        self.pointwise.build((*input_shape[:-1], 2 * self.filters))
        super().build(input_shape)

    def call(self, inputs):
        both = keras.ops.concatenate([self.spatial(inputs), self.temporal(inputs)], axis=-1)
        return self.pointwise(both)


@keras.saving.register_keras_serializable(package="liverzoo")
class DSTSConv3D(_SpatioTemporalConv):
    """Depthwise and spatiotemporal separate convolution (DSTS, Eq. (6)).

    The input channels are split: the first `C - C // 2` go through a depthwise `1 x k x k`
    spatial convolution (dilated in the plane by `dilation_rate`), the last `C // 2` through a
    depthwise `k x 1 x 1` temporal convolution; the two are concatenated and fused by a
    pointwise convolution to `filters` (Fig. 2 of ../shared/papers/001_bb2d5e6c0ac559d5.txt).
    Weights: `9 * ceil(C/2) + 3 * floor(C/2) + C * filters` (+ bias) for k = 3.

    Args:
        filters: output channels N.
        kernel_size: k.
        dilation_rate: atrous rate in the slice plane.
        use_bias: bias on the pointwise convolution.
        kernel_initializer: initializer of every kernel.
        bias_initializer: initializer of the bias.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
        >>> import numpy as np
        >>> DSTSConv3D(8, dilation_rate=4)(np.zeros((1, 4, 16, 16, 6), "float32")).shape
        TensorShape([1, 4, 16, 16, 8])
    """

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None or channels < 2:
            raise ConfigError(f"DSTSConv3D: needs at least 2 known input channels to split, got {channels}")
        self.spatial_channels = channels - channels // 2
        spatial, temporal = self._kernels()
        self.spatial = self._depthwise(*spatial, name="spatial")
        self.temporal = self._depthwise(*temporal, name="temporal")
        self.pointwise = self._pointwise()
        self.spatial.build((*input_shape[:-1], self.spatial_channels))
        self.temporal.build((*input_shape[:-1], channels // 2))
        self.pointwise.build(input_shape)
        super().build(input_shape)

    def call(self, inputs):
        spatial = self.spatial(inputs[..., : self.spatial_channels])
        temporal = self.temporal(inputs[..., self.spatial_channels :])
        return self.pointwise(keras.ops.concatenate([spatial, temporal], axis=-1))


_CLASSES = {"sts_seq": SequentialSTSConv3D, "sts_par": ParallelSTSConv3D, "dsts": DSTSConv3D}


def spatiotemporal_conv(filters, conv_type="dsts", *, kernel_size=3, dilation_rate=1, use_bias=True, name=None):
    """The convolution layer of one `conv_type` of the LW-HCN ablation (Table 1).

    Args:
        filters: output channels.
        conv_type: "standard" (full `k x k x k` conv, Eq. (1)), "sts_seq" (Eq. (4)),
            "sts_par" (Eq. (5)) or "dsts" (Eq. (6)).
        kernel_size: k.
        dilation_rate: atrous rate in the slice plane (the depth is never dilated).
        use_bias: whether the layer has a bias.
        name: layer name.

    Returns:
        A Keras layer mapping `(B, D, H, W, C)` to `(B, D, H, W, filters)` ("same" padding).

    Raises:
        ConfigError: for an unknown `conv_type`.

    Example:
        >>> spatiotemporal_conv(64, "sts_par", dilation_rate=2, name="c").__class__.__name__
        'ParallelSTSConv3D'
    """
    if conv_type not in CONV_TYPES:
        raise ConfigError(f"conv_type must be one of {CONV_TYPES}, got {conv_type!r}")
    if conv_type != "standard":
        return _CLASSES[conv_type](
            filters, kernel_size=kernel_size, dilation_rate=dilation_rate, use_bias=use_bias, name=name
        )
    if dilation_rate == 1:  # CONV_3D is a TFLite builtin when undilated
        return keras.layers.Conv3D(filters, kernel_size, padding="same", use_bias=use_bias, name=name)
    return FoldedConv3D(
        filters, kernel_size, padding="same", dilation_rate=(1, dilation_rate, dilation_rate), use_bias=use_bias, name=name
    )


def apply_spatiotemporal_conv(
    x, filters, conv_type="dsts", *, kernel_size=3, dilation_rate=1, norm="batch", activation="relu", name
):
    """`spatiotemporal_conv` + normalization + activation, the 3D block of LW-HCN.

    The convolution has a bias only when there is no normalization after it.

    Args:
        x: input tensor `(B, D, H, W, C)`.
        filters: output channels.
        conv_type: "standard", "sts_seq", "sts_par" or "dsts" (see `spatiotemporal_conv`).
        kernel_size: k.
        dilation_rate: atrous rate in the slice plane.
        norm: "batch", "instance" or None.
        activation: "relu", "leaky_relu" or None.
        name: prefix of the layer names (`name + "_conv"`, `"_norm"`, `"_act"`).

    Returns:
        The tensor `(B, D, H, W, filters)`.

    Example:
        >>> inputs = keras.Input((None, None, None, 32))
        >>> tuple(apply_spatiotemporal_conv(inputs, 64, "dsts", dilation_rate=2, name="b1").shape)
        (None, None, None, None, 64)
    """
    conv = spatiotemporal_conv(
        filters,
        conv_type,
        kernel_size=kernel_size,
        dilation_rate=dilation_rate,
        use_bias=norm is None,
        name=f"{name}_conv",
    )
    return apply_norm_act(conv(x), norm=norm, activation=activation, name=name)


def apply_pointwise_conv3d(x, filters, *, norm="batch", activation="relu", name):
    """A 1x1x1 convolution (as a TFLite CONV_2D) + normalization + activation.

    Args:
        x: input tensor `(B, D, H, W, C)`.
        filters: output channels.
        norm: "batch", "instance" or None.
        activation: "relu", "leaky_relu" or None.
        name: prefix of the layer names.

    Returns:
        The tensor `(B, D, H, W, filters)`.

    Example:
        >>> inputs = keras.Input((4, 8, 8, 32))
        >>> tuple(apply_pointwise_conv3d(inputs, 16, name="proj").shape)
        (None, 4, 8, 8, 16)
    """
    x = FoldedConv3D(filters, 1, use_bias=norm is None, name=f"{name}_conv")(x)
    return apply_norm_act(x, norm=norm, activation=activation, name=name)
