"""Instance normalisation whose statistics stay accurate in TFLite.

nnU-Net normalises every conv output per sample and channel over its spatial axes
(`InstanceNorm2d(affine=True)`). `keras.layers.GroupNormalization(groups=-1)` computes the
same function, but its statistics are one reduction over all H*W positions; TFLite's MEAN
accumulates such a reduction sequentially in float32, which at 256x256 puts a lone layer
1e-4 from a float64 reference (TF's tree reduction: 1e-5), and a 16-layer nnU-Net's
probabilities up to 5e-4 from Keras. `InstanceNormalization` reduces one spatial axis at a
time (means of means: equal sizes make them the exact mean) and centres before the
variance, so both TF and LiteRT stay within ~2e-6 of float64 (tests/layers/test_normalization.py).
Weights (`gamma`, `beta`, one per channel) are those of `GroupNormalization(groups=-1)`.
"""
import keras

from liverzoo.errors import ConfigError


@keras.saving.register_keras_serializable(package="liverzoo")
class InstanceNormalization(keras.layers.Layer):
    """Per-sample, per-channel normalisation over all spatial axes, with a per-channel affine.

    `y = gamma * (x - mean) / sqrt(var + epsilon) + beta`, mean and (biased) variance over
    the axes between batch and channels, for inputs of any rank >= 3 (channels last).
    Statistics are computed in float32 under mixed precision.

    Args:
        epsilon: added to the variance (nnU-Net: 1e-5).
        center: learn `beta`.
        scale: learn `gamma`.
        beta_initializer, gamma_initializer: initializers of the affine weights.

    Example:
        >>> layer = InstanceNormalization()
        >>> y = layer(np.random.rand(2, 8, 8, 4).astype("float32"))
        >>> np.allclose(y.numpy().mean((1, 2)), 0, atol=1e-5)
        True
    """

    def __init__(self, epsilon=1e-5, center=True, scale=True, beta_initializer="zeros",
                 gamma_initializer="ones", **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon
        self.center = center
        self.scale = scale
        self.beta_initializer = keras.initializers.get(beta_initializer)
        self.gamma_initializer = keras.initializers.get(gamma_initializer)

    def build(self, input_shape):
        channels = input_shape[-1]
        if len(input_shape) < 3 or channels is None:
            raise ConfigError(f"InstanceNormalization: expects (B, ..., C) with a known C, got {tuple(input_shape)}")
        self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer=self.gamma_initializer) \
            if self.scale else None
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer=self.beta_initializer) \
            if self.center else None
        super().build(input_shape)

    def _spatial_mean(self, x):
        # Axis by axis, innermost first: each MEAN sums one row, not all H*W positions.
        for axis in reversed(range(1, len(x.shape) - 1)):
            x = keras.ops.mean(x, axis=axis, keepdims=True)
        return x

    def call(self, inputs):
        x = keras.ops.cast(inputs, "float32")
        centred = x - self._spatial_mean(x)
        inv = keras.ops.rsqrt(self._spatial_mean(keras.ops.square(centred)) + self.epsilon)
        if self.gamma is not None:
            inv = inv * keras.ops.cast(self.gamma, "float32")
        y = centred * inv
        if self.beta is not None:
            y = y + keras.ops.cast(self.beta, "float32")
        return keras.ops.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            epsilon=self.epsilon,
            center=self.center,
            scale=self.scale,
            beta_initializer=keras.initializers.serialize(self.beta_initializer),
            gamma_initializer=keras.initializers.serialize(self.gamma_initializer),
        )
        return config
