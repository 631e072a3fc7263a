"""3D convolutions made only of TFLite builtin ops, so that 3D models run on phones.

TFLite's CONV_3D builtin has no groups and no dilation: `Conv3D(groups=C)` converts but
fails at run time in LiteRT, and a dilated `Conv3D` converts only through Flex. The layers
here compute the same functions from 2D builtins by folding axes into the batch:

- a `(1, kh, kw)` kernel is a 2D convolution over the slices `(B*D, H, W, C)`;
- a `(kd, 1, 1)` kernel is a 2D convolution with a `(kd, 1)` kernel over `(B, D, H*W, C)`;
- a full `(kd, kh, kw)` kernel sees the depth-shifted slices of its `kd` depth taps (the
  depth axis padded first, as `Conv3D` pads it): a sum of one 2D convolution per tap, or,
  for `FoldedConv3D` traced inside `stacked_depth_taps` (the TFLite export), one 2D
  convolution over the taps stacked along channels.

Weights keep the layouts of the stock layers (`Conv3D`, and `Conv3D(groups=C)` for the
depthwise one), so weights copy between them unchanged. Every size may be unknown
(`None`): shapes are read with `keras.ops.shape` and static sizes fold to constants.

Paper: the depthwise 3D convolution of Eq. (2) in ../shared/papers/001_bb2d5e6c0ac559d5.txt.
"""
import contextlib

import keras
import tensorflow as tf

from liverzoo.errors import ConfigError

PADDINGS = ("same", "valid")


def _triple(value, what, layer, minimum=1):
    """`value` as a tuple of three ints >= minimum (an int is repeated)."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,) * 3
    if len(values) != 3 or not all(isinstance(v, int) and v >= minimum for v in values):
        raise ConfigError(f"{layer}: {what} must be an int or 3 ints >= {minimum}, got {value!r}")
    return values


def _conv_size(size, kernel, stride, dilation, padding):
    """Output length of one axis (None stays None), as `Conv3D` computes it."""
    if size is None:
        return None
    if padding == "same":
        return -(-size // stride)
    return max(-(-(size - (kernel - 1) * dilation) // stride), 0)


def _same_depth_padding(depth, kernel, stride, dilation):
    """(before, after) depth padding of TensorFlow's "same" rule; tensors for an unknown depth."""
    span = (kernel - 1) * dilation + 1
    if stride == 1:
        total = span - 1
    elif isinstance(depth, int):
        total = max((-(-depth // stride) - 1) * stride + span - depth, 0)
    else:  # the total depends on depth % stride: computed in the graph
        total = tf.maximum((-(-depth // stride) - 1) * stride + span - depth, 0)
    return total // 2, total - total // 2


class _FoldedConv3DBase(keras.layers.Layer):
    """Shared machinery: argument checks, depth taps, folding, config. Not for direct use."""

    def __init__(
        self,
        kernel_size,
        strides=1,
        padding="valid",
        dilation_rate=1,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        cls = type(self).__name__
        self.kernel_size = _triple(kernel_size, "kernel_size", cls)
        self.strides = _triple(strides, "strides", cls)
        self.dilation_rate = _triple(dilation_rate, "dilation_rate", cls)
        if padding not in PADDINGS:
            raise ConfigError(f"{cls}: padding must be one of {PADDINGS}, got {padding!r}")
        for s, r in zip(self.strides, self.dilation_rate):
            if s > 1 and r > 1:
                raise ConfigError(
                    f"{cls}: strides {self.strides} and dilation_rate {self.dilation_rate} are both > 1 "
                    "on one axis; TensorFlow convolutions support only one of them"
                )
        self.padding = padding
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)

    # Subclasses set _op (a keras.ops 2D convolution) and _kernel_arg (the constructor's name for
    # the kernel: "kernel" or "depthwise"), and define _kernel_shape(channels),
    # _out_channels(channels) and _fold_kernel(kernel) (one depth tap -> a 2D kernel).
    _op = None
    _kernel_arg = "kernel"
    # Whether a full kernel's depth taps are stacked along channels into one 2D conv, see
    # `stacked_depth_taps` (never for a depthwise conv, whose channels must stay separate).
    _stack_taps = False

    def build(self, input_shape):
        channels = input_shape[-1]
        if len(input_shape) != 5 or channels is None:
            raise ConfigError(
                f"{type(self).__name__}: expects (B, D, H, W, C) input with a known C, got {tuple(input_shape)}"
            )
        self.kernel = self.add_weight(
            name="kernel",
            shape=self._kernel_shape(channels),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self._out_channels(channels),),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
            )
        super().build(input_shape)

    def call(self, inputs):
        kd, kh, kw = self.kernel_size
        sd, sh, sw = self.strides
        rd, rh, rw = self.dilation_rate
        b, d, h, w, c = keras.ops.shape(inputs)
        if kh == kw == 1 and sh == sw == 1:
            # (kd, 1, 1): a (kd, 1) 2D kernel over (B, D, H*W, C); the 2D op pads D itself.
            x = keras.ops.reshape(inputs, (b, d, h * w, c))
            y = self._conv2d(x, self._temporal_kernel(), (sd, 1), (rd, 1))
            y = self._add_bias(y)
            return keras.ops.reshape(y, (b, -1, h, w, keras.ops.shape(y)[-1]))
        x = inputs
        if self.padding == "same" and kd > 1:
            before, after = _same_depth_padding(d, kd, sd, rd)
            x = tf.pad(x, [[0, 0], [before, after], [0, 0], [0, 0], [0, 0]])
        taps = sorted(self._live_taps(d))
        # Depth positions tap*rd, tap*rd + sd, ...; the negative stop keeps every slice
        # static even when D is unknown.
        shifted = [x[:, t * rd : -(kd - 1 - t) * rd or None : sd] if (kd > 1 or sd > 1) else x for t in taps]
        if self._stack_taps and len(taps) > 1:
            # One 2D conv over the depth taps stacked along channels (`stacked_depth_taps`).
            x = keras.ops.reshape(keras.ops.concatenate(shifted, axis=-1), (-1, h, w, len(taps) * c))
            kernel = keras.ops.stack([self.kernel[t] for t in taps], axis=2)  # (kh, kw, taps, C, N)
            kernel = keras.ops.reshape(kernel, (kh, kw, len(taps) * c, self.kernel.shape[-1]))
            y = self._conv2d(x, kernel, (sh, sw), (rh, rw))
        else:
            y = None
            for t, part in zip(taps, shifted):
                out = self._conv2d(keras.ops.reshape(part, (-1, h, w, c)), self._fold_kernel(self.kernel[t]),
                                   (sh, sw), (rh, rw))
                y = out if y is None else y + out
        y = self._add_bias(y)
        _, ho, wo, n = keras.ops.shape(y)
        return keras.ops.reshape(y, (b, -1, ho, wo, n))

    def _live_taps(self, depth):
        """Depth taps that read at least one real slice (all of them when D is unknown).

        With "same" padding and a static depth smaller than the kernel's span (e.g. depth 1
        at the coarsest level of LV-Net with 5x5x5 kernels), some taps see only the zero
        padding: their 2D conv is exactly 0. Leaving them out is exact and keeps such
        all-zero tensors out of the graph, whose zero calibrated range makes a full-int8
        file abort in LiteRT.
        """
        kd, sd, rd = self.kernel_size[0], self.strides[0], self.dilation_rate[0]
        if self.padding != "same" or kd == 1 or not isinstance(depth, int):
            return set(range(kd))
        before, _ = _same_depth_padding(depth, kd, sd, rd)
        outputs = -(-depth // sd)
        live = {
            tap for tap in range(kd)
            if any(0 <= tap * rd + j * sd - before < depth for j in range(outputs))
        }
        return live or set(range(kd))

    def _conv2d(self, x, kernel, strides, dilation):
        return self._op(x, kernel, strides=strides, padding=self.padding, dilation_rate=dilation)

    def _add_bias(self, y):
        return y if self.bias is None else y + self.bias

    def _temporal_kernel(self):
        """A (kd, 1, 1) kernel as one (kd, 1) 2D kernel."""
        return self._fold_kernel(self.kernel[:, :, 0])

    def compute_output_shape(self, input_shape):
        b, *spatial, c = input_shape
        sizes = [
            _conv_size(n, k, s, r, self.padding)
            for n, k, s, r in zip(spatial, self.kernel_size, self.strides, self.dilation_rate)
        ]
        return (b, *sizes, self._out_channels(c))

    def get_config(self):
        config = super().get_config()
        config.update(
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            use_bias=self.use_bias,
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            bias_regularizer=keras.regularizers.serialize(self.bias_regularizer),
        )
        config[f"{self._kernel_arg}_initializer"] = keras.initializers.serialize(self.kernel_initializer)
        config[f"{self._kernel_arg}_regularizer"] = keras.regularizers.serialize(self.kernel_regularizer)
        return config


@contextlib.contextmanager
def stacked_depth_taps(model):
    """Within the block, `FoldedConv3D` layers of `model` stack their depth taps (TFLite export).

    By default a full `(kd, kh, kw)` kernel is a sum of one 2D convolution per depth tap:
    in TensorFlow that is the faster form (LW-HCN's "standard" variant at 12x256x256: 4.2 s
    vs 4.6 s stacked) and keeps no stacked copy for the backward pass. A quantized TFLite
    file of that sum rounds every tap's output and every partial sum to int8 (5 roundings
    per 3x3x3 layer, where a 3D convolution has one). Stacked, the depth-shifted slices are
    concatenated along channels and one 2D convolution computes the layer: one rounding.
    `liverzoo.export` traces the model for TFLite inside this block. Same function either
    way (float32 rounding apart).

    Args:
        model: a Keras model (its nested layers included).

    Example:
        >>> with stacked_depth_taps(model):
        ...     concrete = tf.function(model).get_concrete_function(spec)
    """
    from liverzoo._keras_internals import flatten_layers

    layers = [layer for layer in flatten_layers(model) if isinstance(layer, FoldedConv3D)]
    for layer in layers:
        layer._stack_taps = True
    try:
        yield model
    finally:
        for layer in layers:
            del layer._stack_taps  # back to the class default


@keras.saving.register_keras_serializable(package="liverzoo")
class FoldedConv3D(_FoldedConv3DBase):
    """A `keras.layers.Conv3D` (any dilation) built from TFLite builtin 2D convolutions.

    Equals `keras.layers.Conv3D(filters, kernel_size, strides, padding, dilation_rate)` with
    the same kernel `(kd, kh, kw, C, filters)`, but converts to TFLite CONV_2D (plus
    reshape/slice/pad/add) instead of CONV_3D, which has no dilation and is not accelerated
    by XNNPACK. Used for the "standard" and STS variants of LW-HCN
    (../shared/papers/001_bb2d5e6c0ac559d5.txt, Eq. (1), (4), (5)), whose atrous branches
    dilate in the slice plane.

    Args:
        filters: output channels.
        kernel_size: int or `(kd, kh, kw)`.
        strides: int or `(sd, sh, sw)`.
        padding: "valid" or "same" (TensorFlow's rule, as `Conv3D`).
        dilation_rate: int or `(rd, rh, rw)`; not > 1 on an axis whose stride is > 1.
        use_bias: whether to add a bias.
        kernel_initializer: initializer of the `(kd, kh, kw, C, filters)` kernel.
        bias_initializer: initializer of the bias.
        kernel_regularizer: regularizer of the kernel.
        bias_regularizer: regularizer of the bias.
        **kwargs: standard `keras.layers.Layer` arguments (name, dtype, ...).

    Example:
        >>> import numpy as np
        >>> conv = FoldedConv3D(8, 3, padding="same", dilation_rate=(1, 2, 2))
        >>> conv(np.zeros((1, 4, 16, 16, 2), "float32")).shape
        TensorShape([1, 4, 16, 16, 8])
    """

    _op = staticmethod(keras.ops.conv)

    def __init__(self, filters, kernel_size, strides=1, padding="valid", dilation_rate=1, **kwargs):
        super().__init__(kernel_size, strides=strides, padding=padding, dilation_rate=dilation_rate, **kwargs)
        if not isinstance(filters, int) or filters < 1:
            raise ConfigError(f"FoldedConv3D: filters must be a positive int, got {filters!r}")
        self.filters = filters

    def _kernel_shape(self, channels):
        return (*self.kernel_size, channels, self.filters)

    def _out_channels(self, channels):
        return self.filters

    def _fold_kernel(self, kernel):
        return kernel

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters)
        return config


@keras.saving.register_keras_serializable(package="liverzoo")
class DepthwiseConv3D(_FoldedConv3DBase):
    """Depthwise 3D convolution (Eq. (2)) from TFLite builtin DEPTHWISE_CONV_2D ops.

    Each input channel is convolved with its own `depth_multiplier` kernels; output channel
    `c * depth_multiplier + m` is filter `m` of channel `c`, exactly as
    `keras.layers.Conv3D(C * depth_multiplier, kernel_size, groups=C)`. The kernel is stored
    in that layer's layout, `(kd, kh, kw, 1, C * depth_multiplier)`, so weights copy between
    the two unchanged; unlike it, this layer runs in LiteRT. Depthwise 3D convolution:
    ../shared/papers/001_bb2d5e6c0ac559d5.txt, Sec. 3.1, Eq. (2); 5x5x5 depthwise kernels of
    LV-Net: ../shared/papers/004_e35520e2e41b14d6.txt.

    Args:
        kernel_size: int or `(kd, kh, kw)`.
        strides: int or `(sd, sh, sw)`.
        padding: "valid" or "same" (TensorFlow's rule, as `Conv3D`).
        dilation_rate: int or `(rd, rh, rw)`; not > 1 on an axis whose stride is > 1.
        depth_multiplier: output channels per input channel.
        use_bias: whether to add a bias.
        depthwise_initializer: initializer of the kernel.
        bias_initializer: initializer of the bias.
        depthwise_regularizer: regularizer of the kernel.
        bias_regularizer: regularizer of the bias.
        **kwargs: standard `keras.layers.Layer` arguments (name, dtype, ...).

    Example:
        >>> import numpy as np
        >>> dw = DepthwiseConv3D(5, padding="same")
        >>> dw(np.zeros((2, 8, 16, 16, 4), "float32")).shape
        TensorShape([2, 8, 16, 16, 4])
        >>> tuple(dw.kernel.shape)  # the layout of Conv3D(4, 5, groups=4)
        (5, 5, 5, 1, 4)
    """

    _op = staticmethod(keras.ops.depthwise_conv)
    _kernel_arg = "depthwise"

    def _conv2d(self, x, kernel, strides, dilation):
        if strides[0] == strides[1]:
            return super()._conv2d(x, kernel, strides, dilation)
        # TensorFlow's CPU DepthwiseConv2dNative takes equal row and column strides only (unless
        # oneDNN is on, which TF enables only on some CPUs): pad as the strided conv would,
        # convolve at stride 1, keep every s-th row and column. Exact.
        pads = [(0, 0)]
        for axis in (0, 1):
            size = x.shape[1 + axis]
            if self.padding == "same":
                size = size if size is not None else keras.ops.shape(x)[1 + axis]
                pads.append(_same_depth_padding(size, kernel.shape[axis], strides[axis], dilation[axis]))
            else:
                pads.append((0, 0))
        x = keras.ops.pad(x, pads + [(0, 0)])
        y = self._op(x, kernel, strides=1, padding="valid", dilation_rate=dilation)
        return y[:, :: strides[0], :: strides[1], :]

    def __init__(
        self,
        kernel_size,
        strides=1,
        padding="valid",
        dilation_rate=1,
        depth_multiplier=1,
        depthwise_initializer="glorot_uniform",
        depthwise_regularizer=None,
        **kwargs,
    ):
        super().__init__(
            kernel_size,
            strides=strides,
            padding=padding,
            dilation_rate=dilation_rate,
            kernel_initializer=depthwise_initializer,
            kernel_regularizer=depthwise_regularizer,
            **kwargs,
        )
        if not isinstance(depth_multiplier, int) or depth_multiplier < 1:
            raise ConfigError(f"DepthwiseConv3D: depth_multiplier must be a positive int, got {depth_multiplier!r}")
        self.depth_multiplier = depth_multiplier

    def _kernel_shape(self, channels):
        return (*self.kernel_size, 1, channels * self.depth_multiplier)

    def _out_channels(self, channels):
        return channels * self.depth_multiplier

    def _fold_kernel(self, kernel):
        # (kh, kw, 1, C*m) -> (kh, kw, C, m): grouped-conv channel order is channel-major.
        return keras.ops.reshape(kernel, (*kernel.shape[:2], -1, self.depth_multiplier))

    def get_config(self):
        config = super().get_config()
        config.update(depth_multiplier=self.depth_multiplier)
        return config
