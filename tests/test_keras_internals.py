"""liverzoo._keras_internals: the version guard, and canaries that fail when an upstream fix lands.

When a canary fails, the Keras/TensorFlow bug it watches is fixed: remove the workaround it
names (and this test), then widen the pin in setup.py.
"""
import subprocess
import sys
import textwrap

import pytest

keras = pytest.importorskip("keras")

from liverzoo import _keras_internals  # noqa: E402
from liverzoo.errors import ConfigError  # noqa: E402


def test_installed_versions_are_the_tested_ones():
    _keras_internals.check_versions("the test suite")


def test_untested_versions_raise_a_clear_error(monkeypatch):
    monkeypatch.setattr(keras, "__version__", "3.99.0")
    with pytest.raises(ConfigError, match=r"--recompute relies on keras internals tested with keras>=3\.15,<3\.16; "
                                          r"found keras 3\.99\.0"):
        _keras_internals.check_versions("--recompute")


def test_canary_keras_reduce_per_replica_still_averages_scalars_with_axis_0():
    """keras-team/keras#20585: when this fails, `multi_worker_fit`'s reduce_per_replica patch may go."""
    assert _keras_internals.reduce_per_replica_is_broken()


REMAT_SCRIPT = textwrap.dedent("""
    import numpy as np, keras
    with keras.RematScope(mode="full"):
        inputs = keras.Input((8, 8, 1))
        x = keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 3, padding="same")(inputs))
        model = keras.Model(inputs, keras.layers.Conv2D(2, 1)(x))
    model.compile("adam", "mse")
    model.fit(np.ones((4, 8, 8, 1)), np.ones((4, 8, 8, 2)), epochs=1, verbose=0)
    print("REMAT TRAINS")
""")


def test_canary_remat_scope_still_fails_on_batchnorm_in_graph_mode():
    """When keras.RematScope trains a BatchNormalization model, RecomputeModel (and layer_calls) may go."""
    proc = subprocess.run([sys.executable, "-c", REMAT_SCRIPT], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "REMAT TRAINS" not in proc.stdout, "keras.RematScope works now"
    assert "ValueError" in proc.stderr, proc.stderr[-2000:]


def test_layer_calls_follow_the_functional_graph():
    inputs = keras.Input((4,))
    a = keras.layers.Dense(3, name="a")(inputs)
    b = keras.layers.Dense(2, name="b")(a)
    calls = _keras_internals.layer_calls(keras.Model(inputs, b))
    assert [c.layer.name for c in calls] == ["a", "b"]
    assert calls[1].inputs[0] is calls[0].outputs[0]
