"""tools/export.py end to end: checkpoint -> SavedModel, zoo name -> int8 TFLite calibrated on
the user's TFRecord shards (verified in LiteRT), and one error line for bad flags."""
import json
import os

import numpy as np
import pytest

from liverzoo import lite
from tests.conftest import REPO, run_tool

EXPORT = os.path.join(REPO, "tools", "export.py")


def _run(*args, **kwargs):
    return run_tool("export", *args, **kwargs)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from liverzoo.data import demo

    folder = tmp_path_factory.mktemp("shards")
    demo.write_demo_tfrecords(str(folder), preset="residual_unet", inplane_size=64)
    return folder


def test_int8_tflite_calibrated_on_shards_and_verified(shards, tmp_path):
    out = tmp_path / "exported" / "ru_int8.tflite"
    # Fresh weights give near-tie probabilities (int8 agrees on ~0.87 of voxels): no threshold here;
    # test_quantized_file_below_min_agreement_is_refused covers it.
    result = _run("--model=residual_unet", "--input_shape=32,32,1", "--quantize=int8",
                  f"--representative_data={shards}", f"--output={out}", "--min_agreement=0")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    meta = lite.read_metadata(out)
    assert meta["model"] == "residual_unet" and meta["quantize"] == "int8" and meta["preset"] == "residual_unet"
    report = json.loads((tmp_path / "exported" / "ru_int8.verify.json").read_text())
    assert report["builtin_only"] and report["num_inputs"] == 8 and report["input_shape"] == [32, 32, 1]
    assert f"argmax agreement {report['argmax_agreement']:.4f}" in result.stdout
    assert sorted(os.listdir(tmp_path / "exported")) == ["ru_int8.tflite", "ru_int8.verify.json"]


def test_saved_model_from_a_checkpoint(tmp_path):
    import keras
    import tensorflow as tf

    from liverzoo import models

    keras.utils.set_random_seed(0)
    model = models.build("lw_hcn", input_shape=(4, 32, 32, 1))
    model.save(tmp_path / "best.keras")
    result = _run(f"--model_path={tmp_path / 'best.keras'}", "--format=saved_model", f"--output={tmp_path / 'sm'}")
    assert result.returncode == 0, result.stderr
    x = np.random.default_rng(0).standard_normal((2, 4, 32, 32, 1)).astype(np.float32)
    out = tf.saved_model.load(str(tmp_path / "sm")).signatures["segment"](ct_subvolume=tf.constant(x))
    np.testing.assert_allclose(out["probabilities"].numpy(), np.asarray(model(x, training=False)), atol=1e-5)


BAD_FLAGS = [
    (["--output=x.tflite"], "error: give exactly one of --model_path"),
    (["--model=residual_unet", "--input_shape=32,x,1", "--output=x.tflite"], "error: --input_shape='32,x,1'"),
    (["--model_path=/no/such/best.keras", "--output=x.tflite"], "error: --model_path=/no/such/best.keras: no such file"),
    ([f"--model_path={EXPORT}", "--output=x.tflite"], f"error: --model_path={EXPORT}: not a .keras file"),
    (["--model=residual_unet", "--format=onnx", "--output=x.onnx"], "error: --format='onnx'"),
    (["--model=residual_unet", "--format=saved_model", "--quantize=int8", "--output=sm"],
     "error: --quantize applies to --format=tflite only"),
    (["--model=residual_unet", "--output=model.bin"], "error: --output=model.bin: a TFLite file must end in .tflite"),
]


@pytest.mark.parametrize("args, message", BAD_FLAGS, ids=[m for _, m in BAD_FLAGS])
def test_bad_flags_give_one_error_line(args, message, tmp_path):
    result = _run(*args, cwd=tmp_path, timeout=300)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert os.listdir(tmp_path) == []  # nothing written


def test_shards_of_another_preset_are_refused(shards, tmp_path):
    result = _run("--model=lv_net", "--input_shape=16,32,32,1", "--quantize=int8", f"--representative_data={shards}",
                  f"--output={tmp_path / 'lv.tflite'}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: --representative_data={shards}: shards were preprocessed with preset 'residual_unet', "
        "the model takes 'lv_net'")
    assert not (tmp_path / "lv.tflite").exists()


def test_quantized_file_below_min_agreement_is_refused(tmp_path):
    """A threshold above what the int8 file reaches: exit 1, the figures printed, no file left."""
    out = tmp_path / "ru_int8.tflite"
    args = ["--model=residual_unet", "--input_shape=32,32,1", "--quantize=int8", "--num_verify=2", f"--output={out}"]
    result = _run(*args, "--min_agreement=1.0")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    agreement = float(error.split("agrees with Keras on ")[1].split()[0])
    assert agreement < 1.0 and f"argmax agreement {agreement:.4f}" in result.stdout  # the measured figures
    assert error.startswith(f"error: {out}: int8 file agrees with Keras on") and "below --min_agreement=1" in error
    assert os.listdir(tmp_path) == []
    # --force keeps it, with a warning.
    forced = _run(*args, "--min_agreement=1.0", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "warning:" in forced.stdout and "kept (--force)" in forced.stdout
    assert sorted(os.listdir(tmp_path)) == ["ru_int8.tflite", "ru_int8.verify.json"]
