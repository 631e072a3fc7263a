"""DeepLabV3+ encoder levels and `load_encoder_weights` (the LW-HCN encoder initialisation)."""
import numpy as np
import pytest

from liverzoo.errors import ConfigError
from liverzoo.models.deeplabv3plus import apply_xception_encoder, build_deeplabv3plus, load_encoder_weights

SOURCE_KWARGS = dict(input_shape=(32, 32, 1), middle_blocks=1)


def _encoder_model(last_level, channels=1, middle_blocks=1, prefix="encoder"):
    import keras

    inputs = keras.Input((32, 32, channels))
    levels = apply_xception_encoder(inputs, name=prefix, last_level=last_level, middle_blocks=middle_blocks)
    return keras.Model(inputs, levels[last_level]), levels


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A DeepLabV3+ with random (non-initial) weights saved as .keras and .weights.h5."""
    import keras

    keras.utils.set_random_seed(0)
    model = build_deeplabv3plus(**SOURCE_KWARGS)
    rng = np.random.default_rng(0)
    model.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in model.get_weights()])
    folder = tmp_path_factory.mktemp("deeplab")
    model.save(folder / "deeplab.keras")
    model.save_weights(folder / "deeplab.weights.h5")
    return model, folder


@pytest.mark.parametrize("last_level,expected", [
    ("P1", {"P1": (16, 64)}),
    ("P3", {"P1": (16, 64), "P2": (8, 128), "P3": (4, 256)}),
    ("P4", {"P1": (16, 64), "P2": (8, 128), "P3": (4, 256), "P4": (2, 2048)}),
])
def test_encoder_levels_have_stride_two_to_the_k(last_level, expected):
    model, levels = _encoder_model(last_level)
    assert {k: (v.shape[1], v.shape[-1]) for k, v in levels.items()} == expected
    assert all(layer.name.startswith("encoder_") for layer in model.layers[1:])


def test_encoder_rejects_unknown_level():
    with pytest.raises(ConfigError, match="last_level"):
        _encoder_model("P5")


@pytest.mark.parametrize("filename", ["deeplab.keras", "deeplab.weights.h5"])
def test_stride8_encoder_receives_the_trained_weights(source, filename):
    import keras

    trained, folder = source
    target, _ = _encoder_model("P3")
    kwargs = {"source_kwargs": SOURCE_KWARGS} if filename.endswith(".h5") else {}
    copied = load_encoder_weights(target, folder / filename, **kwargs)
    assert copied == sum(1 for layer in target.layers if layer.weights)
    x = np.random.default_rng(1).normal(size=(2, 32, 32, 1)).astype("float32")
    reference = keras.Model(trained.input, trained.get_layer("encoder_p3_add").output)
    np.testing.assert_allclose(np.asarray(target(x)), np.asarray(reference(x)), rtol=1e-5, atol=1e-5)


def test_nested_encoder_layers_are_found(source):
    import keras

    _, folder = source
    encoder, _ = _encoder_model("P2")
    inputs = keras.Input((32, 32, 1))
    outer = keras.Model(inputs, keras.layers.Conv2D(2, 1, name="head")(encoder(inputs)))
    assert load_encoder_weights(outer, folder / "deeplab.keras") == sum(1 for layer in encoder.layers if layer.weights)


@pytest.mark.parametrize("make_target,path,match", [
    (lambda: _encoder_model("P3")[0], "missing.keras", "does not exist"),
    (lambda: _encoder_model("P3")[0], "deeplab.txt", "expected a .keras"),
    (lambda: _encoder_model("P3", prefix="backbone")[0], "deeplab.keras", "no layers named"),
    (lambda: _encoder_model("P3", channels=3)[0], "deeplab.keras", "weight shapes"),
    (lambda: _encoder_model("P4", middle_blocks=2)[0], "deeplab.keras", "no layer 'encoder_middle2"),
    (lambda: _encoder_model("P3")[0], "deeplab.weights.h5", "cannot read"),  # wrong source_kwargs
])
def test_load_encoder_weights_errors_leave_the_model_untouched(source, make_target, path, match):
    _, folder = source
    (folder / "deeplab.txt").write_text("not weights")
    target = make_target()
    before = [w.copy() for w in target.get_weights()]
    with pytest.raises(ConfigError, match=match):
        load_encoder_weights(target, folder / path, source_kwargs=dict(SOURCE_KWARGS, middle_blocks=3))
    for a, b in zip(target.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)
