"""liverzoo.data.tfrecord: NIfTI -> preprocess -> TFRecord -> batch equals the direct NumPy
computation; sampling rules; split and manifest; byte-identical output; bad shards and bad
cases end in DataError naming the file with nothing half-written."""
import filecmp
import json
import os
import shutil

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from liverzoo.data import io, preprocess, sampling, tfrecord  # noqa: E402
from liverzoo.data.phantom import save_phantom  # noqa: E402
from liverzoo.errors import ConfigError, DataError  # noqa: E402
from tests.data.helpers import FailingCase, write_nifti  # noqa: E402

PRESET = "lw_hcn"
SIZE = 32
SHAPES = {"volume-0": (40, 40, 12), "volume-1": (36, 44, 9), "volume-2": (48, 40, 5), "volume-3": (40, 40, 15)}


def _write_cases(folder):
    for k, (case_id, shape) in enumerate(SHAPES.items()):
        n = case_id.split("-")[1]
        save_phantom(folder / f"volume-{n}.nii.gz", folder / f"segmentation-{n}.nii.gz", shape, (1.2, 1.0, 2.5),
                     seed=k, num_tumors=2)
    return io.find_cases(folder)


def _write(cases, out, **kwargs):
    kwargs = {"preset": PRESET, "num_shards": 2, "val_fraction": 0.25, "seed": 0, "inplane_size": SIZE, **kwargs}
    return tfrecord.write_dataset(cases, out, **kwargs)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfrecord")
    (root / "in").mkdir()
    cases = _write_cases(root / "in")
    manifest = _write(cases, root / "out")
    direct = {}
    for case in cases:  # the direct computation: nibabel load + preprocess, no TFRecords
        ct = case.load()
        image, label, spacing = preprocess.prepare_volume(ct.array, ct.spacing, PRESET, ct.label, inplane_size=SIZE)
        direct[case.case_id] = (image, label, spacing)
    return {"root": root, "cases": cases, "out": str(root / "out"), "manifest": manifest, "direct": direct}


def _examples(dataset):
    """Unbatches (image, label, meta) batches into a list of numpy dicts."""
    out = []
    for image, label, meta in dataset:
        for k in range(image.shape[0]):
            item = {key: value[k].numpy() for key, value in meta.items()}
            item["case_id"] = item["case_id"].decode()
            out.append(dict(item, image=image[k].numpy(), label=label[k].numpy()))
    return out


@pytest.mark.parametrize("mode,stride", [("dense", 1), ("sparse", 2)])
def test_every_slice_round_trip_equals_direct_computation(data, mode, stride):
    dataset = tfrecord.make_dataset(data["out"], mode=mode, stack_size=7, batch_size=5, shuffle=False, repeat=False,
                                    samples_per_case=None, split="all", include_metadata=True)
    examples = _examples(dataset)
    seen = sorted((e["case_id"], int(e["slice"])) for e in examples)
    assert seen == sorted((c, z) for c, (img, _, _) in data["direct"].items() for z in range(img.shape[2]))
    for e in examples:
        image, label, _ = data["direct"][e["case_id"]]
        assert e["image"].shape == (SIZE, SIZE, 7) and e["image"].dtype == np.float32
        np.testing.assert_array_equal(e["image"], sampling.extract_stack(image, int(e["slice"]), 7, stride))
        np.testing.assert_array_equal(e["label"], label[:, :, int(e["slice"])].astype(np.int32))
        assert int(e["stride"]) == stride


@pytest.mark.parametrize("mode", ["dense", "sparse", "dense_sparse"])
def test_random_stacks_are_eq1_stacks_at_the_reported_slice(data, mode):
    patch = (24, 20)
    dataset = tfrecord.make_dataset(data["out"], mode=mode, stack_size=5, patch_shape=patch, batch_size=8, seed=3,
                                    samples_per_case=6, include_metadata=True)
    examples = _examples(dataset.take(6))
    train = set(data["manifest"]["splits"]["train"])
    for e in examples:
        assert e["case_id"] in train
        image, label, _ = data["direct"][e["case_id"]]
        stack = sampling.extract_stack(image, int(e["slice"]), 5, int(e["stride"]))
        pad = {c["case_id"]: c["pad_value"] for c in data["manifest"]["cases"]}[e["case_id"]]
        np.testing.assert_array_equal(e["image"], sampling.crop_or_pad(stack, e["origin"], patch, pad))
        np.testing.assert_array_equal(e["label"], sampling.crop_or_pad(label[:, :, int(e["slice"])], e["origin"], patch))
    strides = {int(e["stride"]) for e in examples}
    assert strides == {"dense": {1}, "sparse": {2}, "dense_sparse": {1, 2}}[mode]


def test_volume_patches_tiling_and_foreground(data):
    patch = (8, 24, 24)
    pads = {c["case_id"]: c["pad_value"] for c in data["manifest"]["cases"]}
    dataset = tfrecord.make_dataset(data["out"], mode="volume", patch_shape=patch, batch_size=4, seed=1,
                                    samples_per_case=4, foreground_fraction=1.0, include_metadata=True)
    for e in _examples(dataset.take(4)):
        image, label, _ = data["direct"][e["case_id"]]
        assert e["image"].shape == patch + (1,)
        expected = sampling.crop_or_pad(np.transpose(image, (2, 0, 1)), e["origin"], patch, pads[e["case_id"]])
        np.testing.assert_array_equal(e["image"][..., 0], expected)
        np.testing.assert_array_equal(e["label"], sampling.crop_or_pad(np.transpose(label, (2, 0, 1)), e["origin"], patch))
    # In order: tiles cover every voxel of every case.
    tiles = _examples(tfrecord.make_dataset(data["out"], mode="volume", patch_shape=patch, batch_size=3, shuffle=False,
                                            repeat=False, samples_per_case=None, split="all", include_metadata=True))
    for case_id, (image, _, _) in data["direct"].items():
        covered = np.zeros(np.transpose(image, (2, 0, 1)).shape, int)
        for t in (t for t in tiles if t["case_id"] == case_id):
            region = tuple(slice(max(o, 0), max(o + p, 0)) for o, p in zip(t["origin"], patch))
            covered[region] += 1
        assert covered.min() >= 1, case_id


def test_foreground_fraction_one_centres_every_sample_on_labels(data):
    dataset = tfrecord.make_dataset(data["out"], mode="dense", stack_size=1, batch_size=16, seed=0,
                                    foreground_fraction=1.0, samples_per_case=8)
    for image, label in dataset.take(3):
        assert image.shape == (16, SIZE, SIZE, 1) and label.dtype == tf.int32
        assert all(np.any(label[k].numpy() > 0) for k in range(16))
    # Small patches: a uniform draw often misses the liver, a foreground-centred one never.
    for fraction in (1.0, 0.0):
        dataset = tfrecord.make_dataset(data["out"], mode="volume", patch_shape=(1, 3, 3), batch_size=64, seed=0,
                                        foreground_fraction=fraction, samples_per_case=16)
        _, label = next(iter(dataset))
        share = np.mean([np.any(label[k].numpy() > 0) for k in range(64)])
        assert share == 1.0 if fraction == 1.0 else share < 0.9


def test_augment_and_determinism(data):
    def flip(image, label):
        return tf.reverse(image, [0]), tf.reverse(label, [0])

    def first_batches(**kwargs):
        ds = tfrecord.make_dataset(data["out"], mode="dense", batch_size=4, seed=7, samples_per_case=4,
                                   include_metadata=True, **kwargs)
        return [[t.numpy() for t in (x, y, m["slice"])] for x, y, m in ds.take(2)]

    plain, again, flipped = first_batches(), first_batches(), first_batches(augment=flip)
    for a, b, c in zip(plain, again, flipped):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)  # same seed, same batches
        np.testing.assert_array_equal(c[0], a[0][:, ::-1])
        np.testing.assert_array_equal(c[1], a[1][:, ::-1])


def test_manifest_split_by_case_and_counts(data):
    m = data["manifest"]
    assert m == json.load(open(os.path.join(data["out"], tfrecord.MANIFEST_NAME)))
    assert sorted(m["splits"]["train"] + m["splits"]["val"]) == sorted(SHAPES)
    assert len(m["splits"]["val"]) == 1  # round(0.25 * 4)
    for shard in m["shards"]:
        assert set(shard["cases"]) <= set(m["splits"][shard["split"]])
        assert os.path.getsize(os.path.join(data["out"], shard["file"])) == shard["bytes"]
    for entry in m["cases"]:
        image, label, spacing = data["direct"][entry["case_id"]]
        assert entry["num_slices"] == image.shape[2] == SHAPES[entry["case_id"]][2]
        assert entry["label_voxels"] == {str(c): int(n) for c, n in enumerate(np.bincount(label.ravel(), minlength=3))}
        np.testing.assert_allclose(entry["spacing"], spacing, atol=1e-5)
    assert m["preset"] == dict(preprocess.PRESETS[PRESET].to_dict(), inplane_size=SIZE)
    assert tfrecord.split_cases(SHAPES, 0.25, 0) == tfrecord.split_cases(list(SHAPES)[::-1], 0.25, 0)


def test_read_cases_returns_whole_preprocessed_volumes(data):
    cases = list(tfrecord.read_cases(data["out"], split="val"))
    assert [c.case_id for c in cases] == data["manifest"]["splits"]["val"]
    for case in tfrecord.read_cases(os.path.join(data["out"], "*.tfrecord.gz")):
        image, label, spacing = data["direct"][case.case_id]
        np.testing.assert_array_equal(case.image, image)
        np.testing.assert_array_equal(case.label, label)
        np.testing.assert_allclose(case.spacing, spacing, rtol=1e-6)


def test_same_input_and_seed_give_byte_identical_files(data, tmp_path):
    _write(data["cases"], tmp_path / "again")
    names = sorted(os.listdir(data["out"]))
    assert names == sorted(os.listdir(tmp_path / "again"))
    match, mismatch, errors = filecmp.cmpfiles(data["out"], tmp_path / "again", names, shallow=False)
    assert mismatch == [] and errors == []


def test_one_and_two_workers_write_identical_files(data, tmp_path):
    # ds_nnunet also runs the intensity-statistics pass on the workers; a bad case is skipped.
    folder = tmp_path / "in"
    shutil.copytree(data["root"] / "in", folder)
    _bad_case(folder, "label")
    runs = {}
    for workers in (1, 2):
        calls = []
        manifest = _write(io.find_cases(folder), tmp_path / str(workers), preset="ds_nnunet", skip_bad=True,
                          num_workers=workers, progress=lambda k, n, case_id: calls.append((k, n, case_id)))
        runs[workers] = calls
    assert [s["case_id"] for s in manifest["skipped"]] == ["volume-9"]
    assert runs[1] == runs[2] and runs[1][-5:] == [(k, 5, case_id) for k, case_id in enumerate([*SHAPES, "volume-9"])]
    names = sorted(os.listdir(tmp_path / "1"))
    assert names == sorted(os.listdir(tmp_path / "2")) == sorted([s["file"] for s in manifest["shards"]] + ["manifest.json"])
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "1", tmp_path / "2", names, shallow=False)
    assert mismatch == [] and errors == []


@pytest.mark.parametrize("how", ["raise", "exit"])
def test_a_worker_crash_names_the_case_and_leaves_nothing(data, tmp_path, how):
    out = tmp_path / "out"
    cases = [*data["cases"], FailingCase("volume-2b", how)]
    with pytest.raises(DataError) as info:
        _write(cases, out, num_workers=2)
    message = str(info.value)
    assert message.startswith("volume-2b: ") and len(message.splitlines()) == 1, message
    assert ("RuntimeError: simulated crash" if how == "raise" else "process converting this case died") in message
    assert os.listdir(out) == []


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_bad_worker_count_is_a_config_error(data, tmp_path, workers):
    with pytest.raises(ConfigError, match=f"num_workers must be a positive integer, got {workers!r}"):
        _write(data["cases"], tmp_path / "out", num_workers=workers)
    assert not (tmp_path / "out").exists()


def test_truncated_or_corrupt_shard_names_the_shard(data, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(data["out"], out)
    shard = str(out / data["manifest"]["shards"][0]["file"])
    content = open(shard, "rb").read()
    open(shard, "wb").write(content[: len(content) // 2])
    with pytest.raises(DataError, match="truncated") as info:
        tfrecord.make_dataset(str(out))
    assert shard in str(info.value)
    with pytest.raises(DataError, match="truncated") as info:
        list(tfrecord.read_cases(str(out), split="train"))
    assert shard in str(info.value)
    # Same size, flipped bytes: the manifest's sha256 and the record CRCs catch it.
    open(shard, "wb").write(content[:200] + bytes(b ^ 0xFF for b in content[200:400]) + content[400:])
    with pytest.raises(DataError, match="corrupt") as info:
        tfrecord.make_dataset(str(out), verify=True)
    assert shard in str(info.value)
    with pytest.raises(DataError, match="corrupt") as info:
        list(tfrecord.read_cases(str(out), split="all"))
    assert shard in str(info.value)
    os.remove(out / tfrecord.MANIFEST_NAME)
    with pytest.raises(DataError, match="corrupt") as info:
        tfrecord.make_dataset(str(out / "train-*"), verify=True)
    assert shard in str(info.value)


def _bad_case(folder, kind):
    """One bad case (LiTS names, number 9) among good ones."""
    image, label = folder / "volume-9.nii.gz", folder / "segmentation-9.nii.gz"
    good = np.zeros((16, 16, 4), np.int16)
    if kind == "nan":
        write_nifti(image, np.full((16, 16, 4), np.nan, np.float32))
        write_nifti(label, np.zeros((16, 16, 4), np.uint8))
        return str(image)
    write_nifti(image, good)
    write_nifti(label, np.full((16, 16, 4), 7, np.uint8) if kind == "label" else np.zeros((16, 16, 5), np.uint8))
    return str(label)


@pytest.mark.parametrize("kind,message", [("nan", "NaN"), ("label", "found 7"), ("shape", "label shape")])
def test_bad_case_stops_the_writer_and_leaves_nothing(data, tmp_path, kind, message):
    folder = tmp_path / "in"
    shutil.copytree(data["root"] / "in", folder)
    bad_file = _bad_case(folder, kind)
    out = tmp_path / "out"
    with pytest.raises(DataError, match=message) as info:
        _write(io.find_cases(folder), out)
    assert bad_file in str(info.value)
    assert os.listdir(out) == []
    manifest = _write(io.find_cases(folder), out, skip_bad=True)
    assert [s["case_id"] for s in manifest["skipped"]] == ["volume-9"] and bad_file in manifest["skipped"][0]["error"]
    assert "volume-9" not in manifest["splits"]["train"] + manifest["splits"]["val"]
    assert sorted(os.listdir(out)) == sorted([s["file"] for s in manifest["shards"]] + ["manifest.json"])


def test_writer_config_errors_and_rewrites(data, tmp_path):
    with pytest.raises(ConfigError, match="valid presets"):
        _write(data["cases"], tmp_path / "a", preset="nope")
    with pytest.raises(ConfigError, match="compression"):
        _write(data["cases"], tmp_path / "a", compression="ZIP")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(DataError, match="not writable") as info:
        _write(data["cases"], blocker / "out")
    assert str(blocker / "out") in str(info.value)
    # Rewriting with fewer shards removes the old ones, so globs never see stale shards.
    out = tmp_path / "re"
    _write(data["cases"], out, num_shards=3, compression=None)
    manifest = _write(data["cases"], out, num_shards=1, compression=None)
    assert sorted(os.listdir(out)) == sorted([s["file"] for s in manifest["shards"]] + ["manifest.json"])
    assert [s["file"] for s in manifest["shards"]] == ["train-00000-of-00001.tfrecord", "val-00000-of-00001.tfrecord"]
    image, label = next(iter(tfrecord.make_dataset(str(out / "train-*.tfrecord"), batch_size=2, seed=0)))
    assert image.shape == (2, SIZE, SIZE, 7)


@pytest.mark.parametrize("kwargs,message", [
    ({"mode": "random"}, "mode must be"),
    ({"stack_size": 4}, "odd"),
    ({"mode": "volume", "patch_shape": (8, 8)}, "3 positive sizes"),
    ({"samples_per_case": 0}, "samples_per_case"),
])
def test_reader_config_errors(data, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        tfrecord.make_dataset(data["out"], **kwargs)
    with pytest.raises(DataError, match="no TFRecord shards"):
        tfrecord.make_dataset(os.path.join(data["out"], "nothing-*"))
