"""Shared pytest set-up: quiet TF, small thread pools, paths to real CT."""
import os
import pathlib
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
# Real data lives in the repository (license notices beside the files): a clone runs every test.
REAL_CT = REPO / "liverzoo" / "data" / "demo"
REAL_DICOM = REPO / "tests" / "data" / "dicom"


def run_tool(name, *args, timeout=600, setup=None, **kwargs):
    """`tools/NAME.py ARGS` in a fresh Python process, as a user runs it; output captured as text
    (`kwargs`: `env`, `cwd`). `setup`: Python statements run in that process before the tool,
    e.g. to make an import fail as where an extra is not installed."""
    tool = str(REPO / "tools" / f"{name}.py")
    command = [sys.executable, tool]
    if setup:
        command = [sys.executable, "-c", f"{setup}\nimport runpy, sys\nsys.argv = sys.argv[1:]\n"
                   f"sys.path.insert(0, {str(REPO / 'tools')!r})\nrunpy.run_path(sys.argv[0], run_name='__main__')", tool]
    return subprocess.run(command + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kwargs)


@pytest.fixture(scope="session")
def real_ct_dir():
    """The real CT volumes embedded in the package (liverzoo/data/demo, see its NOTICE)."""
    return REAL_CT


@pytest.fixture(scope="session")
def trained_checkpoint():
    """The demo run's best.keras (residual_unet, 180 steps on 3 mm planes of three demo patients; its README)."""
    return REPO / "tests" / "data" / "trained" / "residual_unet_demo.keras"


@pytest.fixture(scope="session")
def real_dicom_dir():
    """Real DICOM: a JPEG 2000 series, three uncompressed slices, a dcmqi SEG (see its README)."""
    return REAL_DICOM


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    """A tiny fully convolutional 2D model (any plane size), saved as .keras."""
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input((None, None, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    out = keras.layers.Conv2D(3, 3, padding="same", activation="softmax")(h)
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    keras.Model(x, out, name="tiny").save(path)
    return path


@pytest.fixture(scope="session")
def ct_volume(real_ct_dir):
    """The small real CT (122x101x30, 3 mm) as a `CTVolume`."""
    from liverzoo.data.io import load_volume

    return load_volume(str(real_ct_dir / "totalseg_example_ct_sm.nii.gz"))
