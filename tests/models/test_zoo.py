"""One table-driven test over every model in `liverzoo.models.MODELS` (2D and 3D).

Each model is built once (module cache) at `SPECS[name].tiny_input_shape` with its default
options (plus `SPECS[name].tiny_kwargs`, set only where the paper's widths are unaffordable), then checked for: output shapes, softmax, `.keras` save + reload with
`safe_mode=True`, `get_config`/`from_config` round trip, and that a few Adam steps on a fixed
tiny batch lower the loss. Bad builder arguments must raise `ConfigError` before any graph
is built.
"""
import pathlib

import numpy as np
import pytest

from liverzoo import models
from liverzoo.errors import ConfigError

NAMES = sorted(models.MODELS)
NUM_CLASSES = 3
BATCH = 2
# Models whose stacks must be odd (the centre slice is predicted).
ODD_T_MODELS = {"ds_nnunet", "nnunet_2d"}


def _outputs(model, x):
    out = model(x, training=False)
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


@pytest.fixture(scope="module")
def built():
    """name -> (model, fixed input batch, its outputs); each model is built once."""
    import keras

    cache = {}

    def get(name):
        if name not in cache:
            keras.utils.set_random_seed(0)
            spec = models.SPECS[name]
            shape = spec.tiny_input_shape
            model = models.build(name, input_shape=shape, num_classes=NUM_CLASSES, **spec.tiny_kwargs)
            x = np.random.default_rng(0).normal(size=(BATCH,) + tuple(shape)).astype("float32")
            cache[name] = (model, x, _outputs(model, x))
        return cache[name]

    return get


@pytest.mark.parametrize("name", NAMES)
def test_outputs_are_softmax_at_input_resolution(name, built):
    model, x, outs = built(name)
    spec = models.SPECS[name]
    assert len(spec.tiny_input_shape) == {"2d": 3, "3d": 4}[spec.kind] == spec.layout.rank
    expected = (BATCH,) + tuple(spec.tiny_input_shape[:-1]) + (NUM_CLASSES,)
    for out in outs:
        assert out.shape == expected
        assert np.all(out >= 0)
        np.testing.assert_allclose(out.sum(axis=-1), 1.0, atol=1e-5)
    # The main segmentation is always the first output (docs/design.md).
    assert tuple(model.outputs[0].shape[1:]) == expected[1:]


@pytest.mark.parametrize("name", NAMES)
def test_keras_save_reload_safe_mode(name, built, tmp_path):
    import keras

    model, x, outs = built(name)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True, compile=False)
    for a, b in zip(_outputs(reloaded, x), outs, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip(name, built):
    import keras

    model, x, outs = built(name)
    clone = keras.Model.from_config(model.get_config())
    assert [layer.name for layer in clone.layers] == [layer.name for layer in model.layers]
    clone.set_weights(model.get_weights())
    for a, b in zip(_outputs(clone, x), outs, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_training_steps_lower_the_loss(name, built):
    import keras

    model, x, _ = built(name)
    # A fresh copy, so the cached model keeps the weights the other tests compare against.
    weights = model.get_weights()
    model = keras.Model.from_config(model.get_config())
    model.set_weights(weights)
    keras.utils.set_random_seed(1)
    # A learnable target: the class is a threshold of the (centre) input channel.
    centre = x[..., x.shape[-1] // 2]
    y = np.digitize(centre, [-0.5, 0.5]).astype("int32")
    n_out = len(model.outputs)
    # Eager: tracing the training graph of a deep model costs more than a few eager steps.
    model.compile(
        optimizer=keras.optimizers.Adam(3e-4), loss=["sparse_categorical_crossentropy"] * n_out, run_eagerly=True
    )
    targets = y if n_out == 1 else [y] * n_out
    losses = [float(np.ravel(model.train_on_batch(x, targets))[0]) for _ in range(5)]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("name", NAMES)
def test_spec_is_consistent(name):
    from liverzoo.data.preprocess import PRESETS
    from liverzoo.layout import get_layout

    spec = models.SPECS[name]
    assert spec.preset in PRESETS
    assert spec.name == name and models.MODELS[name] is spec.builder
    assert spec.kind == spec.layout.name and spec.layout is get_layout(spec.kind)
    rank = {"2d": 3, "3d": 4}[spec.kind]
    for shape in (spec.default_input_shape, spec.paper_input_shape, spec.tiny_input_shape):
        assert len(shape) == rank and all(isinstance(d, int) and d > 0 for d in shape), shape
        assert spec.layout.check(shape) == shape
    assert spec.reference.title and spec.export.fine_tune_steps >= 10
    papers = pathlib.Path(__file__).resolve().parents[3] / "shared" / "papers"
    if papers.is_dir():
        assert (papers / spec.paper).is_file(), spec.paper


def _bad_cases(name):
    spec = models.SPECS[name]
    tiny = tuple(spec.tiny_input_shape)
    cases = [
        (dict(input_shape=tiny[1:]), "input_shape"),
        (dict(input_shape=tiny + (1,)), "input_shape"),
        (dict(input_shape=tiny, num_classes=1), "num_classes"),
        (dict(input_shape=tiny, num_classes=2.5), "num_classes"),
        # In-plane height is pooled by every model: one pixel more is never divisible.
        (dict(input_shape=tiny[:-3] + (tiny[-3] + 1,) + tiny[-2:]), "divisible"),
    ]
    if name in ODD_T_MODELS:
        cases.append((dict(input_shape=tiny[:-1] + (tiny[-1] + 1,)), "odd"))
    return cases


@pytest.mark.parametrize(
    "name,kwargs,match", [(name, kwargs, match) for name in NAMES for kwargs, match in _bad_cases(name)]
)
def test_bad_arguments_raise_config_error(name, kwargs, match):
    # ConfigError (not a Keras ValueError) shows the builder rejected them before building.
    with pytest.raises(ConfigError, match=match):
        models.build(name, **models.SPECS[name].tiny_kwargs, **kwargs)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ConfigError, match="residual_unet"):
        models.build("no_such_net")
