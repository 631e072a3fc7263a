"""A 3D transposed convolution made only of TFLite builtin ops (CONV_2D, DEPTH_TO_SPACE, ...).

TFLite's CONV_3D_TRANSPOSE has no int8 kernel and is not accelerated by XNNPACK. A strided
transposed convolution is a polyphase (sub-pixel) convolution: output position
`s * q + r` of an axis with stride `s` only sees kernel taps `r, r + s, r + 2s, ...`
applied to inputs `q, q - 1, q - 2, ...`. So every output phase `(r_d, r_h, r_w)` is an
ordinary stride-1 convolution of the input with a strided slice of the kernel (at most
`ceil(k / s)` taps per axis, no zero taps); the `s_d * s_h * s_w` phase outputs are
concatenated along channels and a depth-to-space interleaves them. With
`kernel_size == strides` (V-Net's 2x2x2 up-convolution) each phase is a 1x1x1
convolution, a matrix product per voxel.

The stride-1 3D convolution is folded into 2D builtins as in `liverzoo.layers.conv3d`: one
CONV_2D over its depth-shifted slices stacked along channels.
"""
import itertools

import keras
import tensorflow as tf

from liverzoo.errors import ConfigError
from liverzoo.layers.conv3d import _FoldedConv3DBase


def _axis_plan(kernel, stride, padding):
    """Per-axis constants of the polyphase computation.

    Returns `(taps, pad_before, pad_after, trim_before, trim_after)`: the phase convolutions
    have at most `taps = ceil(k / s)` taps, on the input padded by `pad_before`/`pad_after` zeros ("valid",
    so it yields `n + pad_before + pad_after - taps + 1` positions `q`), and the interleaved
    result (`s` outputs per `q`) is cropped by `trim_before`/`trim_after` to the transposed
    convolution's output: `n * s` ("same") or `n * s + max(k - s, 0)` ("valid"). None depends on the
    input length `n`, so unknown sizes work.
    """
    taps = -(-kernel // stride)
    # TensorFlow's transposed "same" conv is the gradient of a "same" conv of an n*s input:
    # that conv pads max(k - s, 0) in total, the smaller half before.
    first = max(kernel - stride, 0) // 2 if padding == "same" else 0
    extra = max(kernel - stride, 0) if padding == "valid" else 0  # output length minus n * s
    q_lo = first // stride
    q_hi_minus_n = (first + extra - 1) // stride  # last needed q, minus n
    # Phase q reads inputs q - taps + 1 .. q: zeros before the first and after the last input.
    pad_before = taps - 1 - q_lo
    pad_after = q_hi_minus_n + 1
    trim_before = first - stride * q_lo
    trim_after = stride * (q_hi_minus_n + 1) - first - extra
    if pad_before < 0:  # cannot happen for k >= 1, s >= 1 (q_lo < taps); kept as a guard
        raise ConfigError(f"kernel {kernel}, stride {stride}: unsupported padding plan")
    return taps, pad_before, pad_after, trim_before, trim_after


@keras.saving.register_keras_serializable(package="liverzoo")
class FoldedConv3DTranspose(_FoldedConv3DBase):
    """A `keras.layers.Conv3DTranspose` built from TFLite builtin ops (no CONV_3D_TRANSPOSE).

    Equals `keras.layers.Conv3DTranspose(filters, kernel_size, strides, padding)` with the same
    kernel, stored in that layer's layout `(kd, kh, kw, filters, C)`, so weights copy between
    them unchanged. Computed as a polyphase convolution (see the module docstring) of
    CONV_2D ops (one per output phase), interleaved by DEPTH_TO_SPACE (in-plane, equal strides) or reshapes and
    transposes of at most 5 dimensions. Used by `liverzoo.export.lite_compatible` to make the
    up-convolutions of V-Net (../shared/papers/004_e35520e2e41b14d6.txt) and 3DYNet
    (../shared/papers/003_1722e7be9c09b159.txt) int8-quantizable and XNNPACK-accelerated.

    Args:
        filters: output channels.
        kernel_size: int or `(kd, kh, kw)`.
        strides: int or `(sd, sh, sw)`.
        padding: "valid" or "same" (TensorFlow's rule, as `Conv3DTranspose`).
        use_bias: whether to add a bias.
        kernel_initializer: initializer of the `(kd, kh, kw, filters, C)` kernel.
        bias_initializer: initializer of the bias.
        kernel_regularizer: regularizer of the kernel.
        bias_regularizer: regularizer of the bias.
        **kwargs: standard `keras.layers.Layer` arguments (name, dtype, ...).

    Example:
        >>> import numpy as np
        >>> up = FoldedConv3DTranspose(8, 3, strides=2, padding="same")
        >>> up(np.zeros((1, 4, 8, 8, 16), "float32")).shape
        TensorShape([1, 8, 16, 16, 8])
    """

    def __init__(self, filters, kernel_size, strides=1, padding="valid", **kwargs):
        # Argument checks, weights and config are FoldedConv3D's; a transposed conv has no
        # dilation here (get_config writes dilation_rate=1, which from_config passes back).
        super().__init__(kernel_size, strides=strides, padding=padding, **kwargs)
        cls = type(self).__name__
        if self.dilation_rate != (1, 1, 1):
            raise ConfigError(f"{cls}: dilation_rate is not supported, got {self.dilation_rate}")
        if not isinstance(filters, int) or filters < 1:
            raise ConfigError(f"{cls}: filters must be a positive int, got {filters!r}")
        self.filters = filters
        self._plans = [_axis_plan(k, s, padding) for k, s in zip(self.kernel_size, self.strides)]

    def _kernel_shape(self, channels):
        return (*self.kernel_size, self.filters, channels)  # Conv3DTranspose's layout

    def _out_channels(self, channels):
        return self.filters

    def _phase_kernel(self, phase):
        """`(td, th, tw, C, filters)` kernel of one output phase `(rd, rh, rw)`.

        Taps `r, r + s, ...` of each axis, reversed because a convolution correlates while
        output `s * q + r` takes input `q - m` with tap `r + s * m`. Only slices, a reverse and
        a transpose of the variable, none larger than the kernel: the TFLite converter folds
        them into a constant (it does not fold ops whose result is much larger than their
        operands, which rules out zero-padding the kernel to a common phase size).
        """
        k = self.kernel[phase[0] :: self.strides[0], phase[1] :: self.strides[1], phase[2] :: self.strides[2]]
        k = keras.ops.flip(k, axis=(0, 1, 2))
        return keras.ops.transpose(k, (0, 1, 2, 4, 3))

    def call(self, inputs):
        taps = [p[0] for p in self._plans]
        sd, sh, sw = self.strides
        f = self.filters
        pads = [[0, 0], *[[p[1], p[2]] for p in self._plans], [0, 0]]
        x = tf.pad(inputs, pads) if any(p for pair in pads for p in pair) else inputs
        b, d, h, w, c = keras.ops.shape(x)
        qd = d - taps[0] + 1
        # Phase by phase (order rd, rh, rw: the channel order the interleaving expects), a
        # stride-1 "valid" 3D convolution as one 2D convolution over stacked depth taps. A phase
        # with fewer taps than the most on an axis starts that many inputs later.
        outputs = []
        for phase in itertools.product(*(range(s) for s in self.strides)):
            counts = [len(range(r, k, s)) for r, k, s in zip(phase, self.kernel_size, self.strides)]
            if 0 in counts:  # a stride above the kernel: this phase sees no tap
                zero = keras.ops.zeros_like(outputs[0])
                outputs.append(zero if self.bias is None else zero + self.bias)
                continue
            kernel = self._phase_kernel(phase)
            (md, mh, mw), (td, th, tw) = counts, taps
            xs = x[:, td - md :, th - mh :, tw - mw :]
            _, _, hs, ws, _ = keras.ops.shape(xs)
            # The md depth taps stacked along channels: one 2D conv per phase, so a quantized
            # file rounds once (a sum of per-tap convs rounds every partial sum to int8).
            if md > 1:
                stacked = keras.ops.concatenate([xs[:, t : -(md - 1 - t) or None] for t in range(md)], axis=-1)
            else:
                stacked = xs
            kernel = keras.ops.reshape(keras.ops.transpose(kernel, (1, 2, 0, 3, 4)), (mh, mw, md * c, f))
            y = keras.ops.conv(keras.ops.reshape(stacked, (-1, hs, ws, md * c)), kernel, padding="valid")
            # The bias per phase (the interleaving only moves values): it fuses into the conv.
            y = y if self.bias is None else y + self.bias
            outputs.append(y)
        y = keras.ops.concatenate(outputs, axis=-1) if len(outputs) > 1 else outputs[0]
        _, qh, qw, n = keras.ops.shape(y)
        if sd > 1:  # interleave the depth phases: (B, qd, sd, ...) -> (B, qd * sd, ...)
            y = keras.ops.reshape(y, (b, qd, qh * qw, sd, n // sd))
            y = keras.ops.transpose(y, (0, 1, 3, 2, 4))
        y = keras.ops.reshape(y, (-1, qh, qw, sh * sw * f))
        if sh == sw:
            if sh > 1:
                y = tf.nn.depth_to_space(y, sh)
        else:  # DEPTH_TO_SPACE takes one block size: rows, then columns by a reshape
            y = keras.ops.reshape(y, (-1, qh, qw, sh, sw * f))
            y = keras.ops.transpose(y, (0, 1, 3, 2, 4))
        y = keras.ops.reshape(y, (b, qd * sd, qh * sh, qw * sw, f))
        trims = [(p[3], p[4]) for p in self._plans]
        if any(t for pair in trims for t in pair):
            y = y[:, trims[0][0] : -trims[0][1] or None, trims[1][0] : -trims[1][1] or None,
                  trims[2][0] : -trims[2][1] or None]
        return y

    def compute_output_shape(self, input_shape):
        b, *spatial, _ = input_shape
        sizes = [
            None if n is None else n * s + (max(k - s, 0) if self.padding == "valid" else 0)
            for n, k, s in zip(spatial, self.kernel_size, self.strides)
        ]
        return (b, *sizes, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters)
        return config
