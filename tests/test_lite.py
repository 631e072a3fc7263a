"""liverzoo.lite: LiteRT segmentation without TensorFlow, metadata, bad input."""
import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from liverzoo import lite
from liverzoo.errors import ConfigError, DataError
from tests.conftest import REPO

CT = "totalseg_example_ct_sm.nii.gz"  # real CT, 122x101x30, 3 mm
INPLANE = 64  # working plane for these tests (the preset's 256 would only be slower)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small untrained 2D model as Keras, fp32 .tflite and int8 .tflite (zoo metadata)."""
    import keras

    from liverzoo import export

    keras.utils.set_random_seed(0)
    x = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(h)
    model = keras.Model(x, keras.layers.Conv2D(3, 1, activation="softmax")(h), name="tiny")
    folder = tmp_path_factory.mktemp("lite")
    meta = export.zoo_metadata(model, preset="residual_unet")
    paths = {}
    with export.TFLiteExporter(model, metadata=meta) as exporter:
        for mode in ("none", "int8"):
            paths[mode] = export.write_tflite(exporter.convert(mode, export.demo_inputs((32, 32, 3), "residual_unet")),
                                              folder / f"tiny_{mode}.tflite")
    return model, paths


def test_segment_nifti_runs_without_tensorflow(exported, real_ct_dir, tmp_path):
    _, paths = exported
    script = f"""
import json, sys
import numpy as np
from liverzoo import lite
model = lite.LiteModel({str(paths['int8'])!r})
probs = model.predict(np.zeros((2,) + model.input_shape, np.float32))
mask = lite.segment_nifti({str(paths['int8'])!r}, {str(real_ct_dir / CT)!r}, {str(tmp_path / 'mask.nii.gz')!r},
                          inplane_size={INPLANE}, return_mask=True)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras"))
print(json.dumps({{"loaded": loaded, "probs": list(probs.shape), "mask": list(mask.shape)}}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["loaded"] == []
    assert out["probs"] == [2, 32, 32, 3] and out["mask"] == [122, 101, 30]
    assert (tmp_path / "mask.nii.gz").is_file()


def test_segment_nifti_equals_keras_segmentation(exported, real_ct_dir, tmp_path):
    from liverzoo import inference
    from liverzoo.data import io

    model, paths = exported
    out = tmp_path / "mask.nii.gz"
    mask = lite.segment_nifti(paths["none"], real_ct_dir / CT, out, inplane_size=INPLANE, return_mask=True)
    ct = io.load_volume(str(real_ct_dir / CT))
    reference = inference.segment(model, ct, kind="2d", preset="residual_unet", inplane_size=INPLANE)
    assert mask.dtype == np.uint8 and mask.shape == ct.array.shape
    assert np.mean(mask == reference) > 0.999
    source, written = nib.load(str(real_ct_dir / CT)), nib.load(str(out))
    assert written.shape == source.shape and np.allclose(written.affine, source.affine)
    np.testing.assert_array_equal(io.load_nifti(str(out), is_label=True).array, mask)
    # By default the mask stays on disk (written slab by slab): the same file, voxel counts returned.
    counts = lite.segment_nifti(paths["none"], real_ct_dir / CT, tmp_path / "again.nii.gz", inplane_size=INPLANE)
    np.testing.assert_array_equal(counts, np.bincount(mask.ravel(), minlength=3))
    np.testing.assert_array_equal(io.load_nifti(str(tmp_path / "again.nii.gz"), is_label=True).array, mask)


def test_metadata_round_trip_leaves_the_model_unchanged(exported):
    from ai_edge_litert.interpreter import Interpreter

    _, paths = exported
    data = paths["none"].read_bytes()
    assert lite.read_metadata(data)["preset"] == "residual_unet"
    again = lite.embed_metadata(data, {"model": "other", "kind": "2d"})
    assert lite.read_metadata(again) == {"model": "other", "kind": "2d"}  # replaced, not appended
    assert lite.tflite_ops(again) == lite.tflite_ops(data)
    x = np.random.default_rng(0).standard_normal((1, 32, 32, 3)).astype(np.float32)
    outputs = []
    for blob in (data, again):
        interpreter = Interpreter(model_content=blob)
        runner = interpreter.get_signature_runner("segment")
        outputs.append(runner(ct_stack=x)["probabilities"])
    np.testing.assert_array_equal(*outputs)


def _foreign_tflite(path):
    """A .tflite written by plain TensorFlow: no liverzoo metadata, no 'segment' signature."""
    import tensorflow as tf

    fn = tf.function(lambda x: tf.nn.softmax(tf.concat([x, -x, 0 * x], -1)),
                     input_signature=[tf.TensorSpec((1, 16, 16, 1), tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()])
    path.write_bytes(converter.convert())
    return path


def test_bad_input_is_named(exported, real_ct_dir, tmp_path):
    _, paths = exported
    with pytest.raises(DataError, match="missing.tflite: no such .tflite file"):
        lite.LiteModel(tmp_path / "missing.tflite")
    (tmp_path / "junk.tflite").write_bytes(b"not a flatbuffer at all")
    with pytest.raises(DataError, match="not a TFLite flatbuffer"):
        lite.LiteModel(tmp_path / "junk.tflite")
    with pytest.raises(ConfigError, match=r"does not fit the model's \(B,\) \+ \(32, 32, 3\)"):
        lite.LiteModel(paths["none"]).predict(np.zeros((1, 32, 32, 1), np.float32))

    foreign = _foreign_tflite(tmp_path / "foreign.tflite")
    assert lite.read_metadata(foreign) == {}
    with pytest.raises(ConfigError, match="no liverzoo metadata.*pass kind= and preset="):
        lite.segment_nifti(foreign, real_ct_dir / CT, tmp_path / "m.nii.gz")
    mask = lite.segment_nifti(foreign, real_ct_dir / CT, tmp_path / "m.nii.gz", kind="2d", preset="lw_hcn",
                              inplane_size=32, postprocess=False, return_mask=True)
    # softmax([x, -x, 0]) picks class 0 where x > 0 (HU above the lw_hcn window centre), else 1.
    assert set(np.unique(mask)) <= {0, 1} and 0 < np.mean(mask == 0) < 1
