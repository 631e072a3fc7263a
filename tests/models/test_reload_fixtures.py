"""`.keras` files saved by older liverzoo code still load (`safe_mode=True`) with the same outputs.

tests/data/models/ holds one tiny model per family written before the one-folder-per-family
restructure (see make_fixtures.py there): layer classes, registered names, layer names and
weight order must keep matching them.
"""
import importlib.util
import pathlib

import numpy as np
import pytest

FIXTURE_DIR = pathlib.Path(__file__).resolve().parents[1] / "data" / "models"


def _fixtures_module():
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURE_DIR / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FIXTURES = _fixtures_module().FIXTURES


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_old_keras_file_loads_with_same_outputs(name):
    import keras

    import liverzoo.models  # noqa: F401  (registers the liverzoo layers)

    fixtures = _fixtures_module()
    model = keras.models.load_model(FIXTURE_DIR / f"{name}.keras", safe_mode=True, compile=False)
    out = model(fixtures.fixture_input(FIXTURES[name][0]), training=False)
    out = out[0] if isinstance(out, (list, tuple)) else out
    expected = np.load(FIXTURE_DIR / "expected_outputs.npz")[name]
    np.testing.assert_allclose(np.asarray(out), expected, atol=1e-5)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_new_build_matches_old_file_layer_names_and_weights(name):
    import keras

    from liverzoo import models

    old = keras.models.load_model(FIXTURE_DIR / f"{name}.keras", safe_mode=True, compile=False)
    shape, kwargs = FIXTURES[name]
    new = models.build(name, input_shape=shape, **kwargs)
    assert [layer.name for layer in new.layers] == [layer.name for layer in old.layers]
    assert [(w.path, tuple(w.shape)) for w in new.weights] == [(w.path, tuple(w.shape)) for w in old.weights]
    assert [type(layer).__name__ for layer in new.layers] == [type(layer).__name__ for layer in old.layers]
