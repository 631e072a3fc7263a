"""`import liverzoo`: cheap (no TensorFlow), yet enough for Keras to load any liverzoo file."""
import subprocess
import sys

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from liverzoo import losses  # noqa: E402
from liverzoo.layers import conv3d, normalization, resample3d  # noqa: E402


def _run(code):
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_import_liverzoo_does_not_import_tensorflow():
    out = _run("import sys, liverzoo, liverzoo.lite\n"
               "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))")
    assert out.strip() == "[]"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    inputs = keras.Input((4, 8, 8, 1))
    x = conv3d.FoldedConv3D(2, 3, padding="same")(inputs)
    x = normalization.InstanceNormalization()(x)
    x = resample3d.MaxPooling3D(2)(x)
    x = resample3d.TrilinearUpSampling3D(2)(x)
    outputs = keras.layers.Softmax()(conv3d.FoldedConv3D(3, 1)(x))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss=losses.get("dice_ce"))
    path = tmp_path_factory.mktemp("package") / "model.keras"
    model.save(path)
    batch = np.random.default_rng(0).normal(size=(1, 4, 8, 8, 1)).astype("float32")
    np.save(path.with_suffix(".npy"), batch)
    return path, model.predict(batch, verbose=0)


@pytest.mark.parametrize("imports", ["import liverzoo, keras", "import keras, liverzoo",
                                     "import liverzoo, tensorflow, keras"])
def test_import_liverzoo_alone_loads_liverzoo_files(saved, imports):
    path, expected = saved
    out = _run(f"{imports}\nimport numpy as np\n"
               f"model = keras.models.load_model({str(path)!r}, safe_mode=True)\n"
               f"print(type(model.loss).__name__)\n"
               f"np.save({str(path.with_suffix('.out.npy'))!r}, model.predict(np.load({str(path.with_suffix('.npy'))!r}), verbose=0))")
    assert out.strip().splitlines()[-1] == type(losses.get("dice_ce")).__name__
    np.testing.assert_allclose(np.load(path.with_suffix(".out.npy")), expected, atol=1e-6)
