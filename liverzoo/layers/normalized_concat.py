"""Concatenation followed by batch norm, written as per-input affine maps then concatenation.

Only the TFLite export uses it (`liverzoo.export.lite_compatible`). In a TFLite int8 file
CONCATENATION forces one quantization scale on all of its inputs; in a U-Net that joins a
long skip (post-ReLU, range ~1) with upsampled decoder features (range ~15-40), the skip is
then rounded to a dozen levels before the next block's batch norm rescales it. Applying the
(per-channel, hence separable) batch norm to each input before joining them is the same
function in float, and the joined tensors then share a similar, normalised range.
"""
import keras
import numpy as np


@keras.saving.register_keras_serializable(package="liverzoo")
class NormalizedConcatenate(keras.layers.Layer):
    """`concat([x_i * scale_i + offset_i])` along the last axis, constants per channel.

    Args:
        scale: per-channel multipliers of the concatenated tensor (length = total channels).
        offset: per-channel offsets (same length).
        **kwargs: standard `keras.layers.Layer` arguments (name, dtype, ...).

    Example:
        >>> layer = NormalizedConcatenate([2.0, 2.0, 1.0], [0.0, 0.0, 1.0])
        >>> layer([np.ones((1, 2, 2, 2), "float32"), np.ones((1, 2, 2, 1), "float32")]).shape
        (1, 2, 2, 3)
    """

    def __init__(self, scale, offset, **kwargs):
        super().__init__(**kwargs)
        self.scale = [float(v) for v in np.ravel(scale)]
        self.offset = [float(v) for v in np.ravel(offset)]
        if len(self.scale) != len(self.offset):
            raise ValueError(f"NormalizedConcatenate: {len(self.scale)} scales but {len(self.offset)} offsets")

    def call(self, inputs):
        parts, start = [], 0
        for x in inputs:
            end = start + x.shape[-1]
            scale = np.asarray(self.scale[start:end], "float32")
            offset = np.asarray(self.offset[start:end], "float32")
            parts.append(x * scale + offset)
            start = end
        if start != len(self.scale):
            raise ValueError(f"NormalizedConcatenate: inputs have {start} channels, {len(self.scale)} scales")
        return keras.ops.concatenate(parts, axis=-1)

    def compute_output_shape(self, input_shapes):
        channels = sum(shape[-1] for shape in input_shapes)
        return tuple(input_shapes[0][:-1]) + (channels,)

    def get_config(self):
        config = super().get_config()
        config.update(scale=self.scale, offset=self.offset)
        return config


def batch_norm_affine(layer):
    """`(scale, offset)` of an inference-mode `keras.layers.BatchNormalization`, float64."""
    weights = {w.path.split("/")[-1]: np.asarray(w.numpy(), np.float64) for w in layer.weights}
    mean, variance = weights["moving_mean"], weights["moving_variance"]
    scale = 1.0 / np.sqrt(variance + layer.epsilon)
    if layer.scale:
        scale = scale * weights["gamma"]
    offset = -mean * scale
    if layer.center:
        offset = offset + weights["beta"]
    return scale, offset
