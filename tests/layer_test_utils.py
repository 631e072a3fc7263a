"""One helper for every custom layer test (after keras-hub's `run_layer_test`).

It checks, in one call: output shape, `get_config`/`from_config` round trip with equal
outputs, and a `.keras` save + reload with `safe_mode=True` with equal outputs.
"""
import numpy as np


def run_layer_test(layer_cls, init_kwargs, input_data, expected_output_shape, *, tmp_path, atol=1e-6):
    import keras

    layer = layer_cls(**init_kwargs)
    inputs = keras.Input(shape=input_data.shape[1:], batch_size=None, dtype="float32")
    model = keras.Model(inputs, layer(inputs))
    out = np.asarray(model(input_data, training=False))
    assert out.shape == tuple(expected_output_shape), (out.shape, expected_output_shape)
    assert np.all(np.isfinite(out))

    # Config round trip: every constructor argument survives, outputs match with equal weights.
    config = layer.get_config()
    for key in init_kwargs:
        assert key in config, f"get_config() drops {key!r}"
    clone = layer_cls.from_config(config)
    clone_model = keras.Model(inputs, clone(inputs))
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(np.asarray(clone_model(input_data, training=False)), out, atol=atol)

    # Save + reload in the .keras format with safe_mode=True (no Lambda, registered class).
    path = tmp_path / f"{layer_cls.__name__}.keras"
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(np.asarray(reloaded(input_data, training=False)), out, atol=atol)
    return out
