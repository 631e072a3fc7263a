"""liverzoo/data/beam_pipeline.py: the DirectRunner pipeline writes the local writer's exact files."""
import os

import pytest

from liverzoo.data.phantom import save_phantom
from liverzoo.errors import ConfigError, DataError

pytest.importorskip("apache_beam")
from liverzoo.data import beam_pipeline, io, tfrecord  # noqa: E402


def _files(folder):
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    folder = tmp_path_factory.mktemp("in")
    for k in range(3):
        save_phantom(folder / f"volume-{k}.nii.gz", folder / f"segmentation-{k}.nii.gz", (24, 24, 6), seed=k)
    return io.find_cases(folder)


# ds_nnunet also runs the intensity-statistics pass on the pipeline (two pipelines per write).
@pytest.mark.parametrize("preset", ["lv_net", "ds_nnunet"])
def test_direct_runner_writes_the_local_writers_bytes(tmp_path, cases, preset):
    args = dict(preset=preset, inplane_size=16, num_shards=2, val_fraction=0.34, seed=3)
    local = tfrecord.write_dataset(cases, tmp_path / "local", **args)
    beam = beam_pipeline.write_dataset(cases, tmp_path / "beam", runner="DirectRunner", **args)
    assert beam == local
    assert _files(tmp_path / "beam") == _files(tmp_path / "local")  # shards + manifest, no staging left


def test_bad_case_skipped_or_named_and_nothing_left(tmp_path, cases):
    bad = io.CaseSource("zz_bad", cases[0].image, str(tmp_path / "missing.nii.gz"))
    args = dict(preset="lv_net", inplane_size=16, num_shards=1, val_fraction=0.0)
    manifest = beam_pipeline.write_dataset([*cases, bad], tmp_path / "skip", skip_bad=True, **args)
    assert [s["case_id"] for s in manifest["skipped"]] == ["zz_bad"]
    tfrecord.write_dataset([*cases, bad], tmp_path / "local", skip_bad=True, **args)
    assert _files(tmp_path / "skip") == _files(tmp_path / "local")
    with pytest.raises(DataError, match="missing.nii.gz"):
        beam_pipeline.write_dataset([*cases, bad], tmp_path / "stop", **args)
    assert os.listdir(tmp_path / "stop") == []


def test_worker_failure_names_the_case(tmp_path):
    with beam_pipeline.BeamPool("DirectRunner", staging_dir=str(tmp_path)) as pool:
        results = pool.map(int, [("ok", ("7",)), ("broken", ("x",))])
        assert next(results) == ("ok", 7)
        with pytest.raises(DataError, match=r"^broken: conversion failed in a Beam worker \(ValueError: "):
            next(results)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("runner,message", [
    ("NoSuchRunner", "Beam refuses runner NoSuchRunner: Unexpected pipeline runner: NoSuchRunner"),
    ("DataflowRunner", "Missing required option: project"),
])
def test_bad_runner_is_a_config_error(tmp_path, cases, runner, message):
    with pytest.raises(ConfigError, match=message):
        beam_pipeline.write_dataset(cases, tmp_path / "out", runner=runner, preset="lv_net", inplane_size=16)
    assert not (tmp_path / "out").exists()  # refused before any work


def test_num_workers_does_not_apply(tmp_path, cases):
    with pytest.raises(ConfigError, match="num_workers does not apply"):
        beam_pipeline.write_dataset(cases, tmp_path / "out", preset="lv_net", num_workers=2)
