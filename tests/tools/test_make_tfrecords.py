"""tools/make_tfrecords.py end to end (subprocess): both folder layouts, progress, --skip_bad,
and bad input ending in one `error:` line, exit 1, no traceback, nothing left behind."""
import json
import os
import re

import pytest

from liverzoo.data.phantom import save_phantom
from tests import conftest
from tests.conftest import REPO
# TensorFlow's C++ start-up lines are not ours; everything else on stderr is.
TF_LOG = re.compile(r"^(WARNING: All log messages before absl|[IWEF]\d{4} \d\d:\d\d:\d\d)")


def run_tool(*flags, without_beam=False):
    """Runs the tool; `without_beam` makes `import apache_beam` fail, as where the extra is not installed."""
    result = conftest.run_tool("make_tfrecords", *flags, cwd=REPO, timeout=300,
                               setup="import sys; sys.modules['apache_beam'] = None" if without_beam else None)
    stderr = [line for line in result.stderr.splitlines() if line.strip() and not TF_LOG.match(line)]
    return result, stderr


def _truncate(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


def test_decathlon_layout_with_skip_bad(tmp_path):
    for sub in ("imagesTr", "labelsTr"):
        (tmp_path / "in" / sub).mkdir(parents=True)
    for k in range(4):
        save_phantom(tmp_path / "in" / "imagesTr" / f"liver_{k}.nii.gz", tmp_path / "in" / "labelsTr" / f"liver_{k}.nii.gz",
                     (24, 24, 6), seed=k)
    bad = tmp_path / "in" / "imagesTr" / "liver_3.nii.gz"
    _truncate(bad)
    out = tmp_path / "out"
    result, stderr = run_tool(f"--input_dir={tmp_path / 'in'}", f"--output_dir={out}", "--preset=lv_net",
                              "--inplane_size=16", "--num_shards=2", "--val_fraction=0.34", "--compression=none",
                              "--skip_bad")
    assert result.returncode == 0, result.stderr
    assert [line.split("] ")[1] for line in stderr] == [f"{k + 1}/4 liver_{k}" for k in range(4)]  # progress
    assert "wrote 2 train + 1 val cases" in result.stdout
    assert "skipped 1 bad case(s)" in result.stdout and f"liver_3: {bad}" in result.stdout
    manifest = json.load(open(out / "manifest.json"))
    assert manifest["preset"]["name"] == "lv_net" and manifest["preset"]["inplane_size"] == 16
    assert sorted(os.listdir(out)) == sorted([s["file"] for s in manifest["shards"]] + ["manifest.json"])
    assert all(s["file"].endswith(".tfrecord") for s in manifest["shards"])
    # The run above used every core (--num_workers defaults to os.cpu_count()); one worker writes the same bytes.
    again, stderr_again = run_tool(f"--input_dir={tmp_path / 'in'}", f"--output_dir={tmp_path / 'one'}",
                                   "--preset=lv_net", "--inplane_size=16", "--num_shards=2", "--val_fraction=0.34",
                                   "--compression=none", "--skip_bad", "--num_workers=1")
    assert again.returncode == 0 and stderr_again == stderr, again.stderr
    assert again.stdout == result.stdout.replace(str(out), str(tmp_path / "one"))
    assert {n: (out / n).read_bytes() for n in os.listdir(out)} == \
        {n: (tmp_path / "one" / n).read_bytes() for n in os.listdir(tmp_path / "one")}


def test_runner_direct_writes_the_same_files(tmp_path):
    pytest.importorskip("apache_beam")
    from liverzoo.data import io, tfrecord

    (tmp_path / "in").mkdir()
    for k in range(3):
        save_phantom(tmp_path / "in" / f"volume-{k}.nii.gz", tmp_path / "in" / f"segmentation-{k}.nii.gz",
                     (24, 24, 6), seed=k)
    out = tmp_path / "beam"
    result, stderr = run_tool(f"--input_dir={tmp_path / 'in'}", f"--output_dir={out}", "--preset=lv_net",
                              "--inplane_size=16", "--num_shards=2", "--val_fraction=0.34", "--runner=DirectRunner",
                              "--beam_options=--direct_num_workers=1")
    assert result.returncode == 0, result.stderr
    assert [line.split("] ")[1] for line in stderr] == [f"{k + 1}/3 volume-{k}" for k in range(3)]
    assert "wrote 2 train + 1 val cases" in result.stdout
    tfrecord.write_dataset(io.find_cases(tmp_path / "in"), tmp_path / "local", preset="lv_net", inplane_size=16,
                           num_shards=2, val_fraction=0.34)
    assert {n: (out / n).read_bytes() for n in os.listdir(out)} == \
        {n: (tmp_path / "local" / n).read_bytes() for n in os.listdir(tmp_path / "local")}


def test_bad_case_one_error_line_and_previous_output_kept(tmp_path):
    (tmp_path / "in").mkdir()
    for k in range(2):
        save_phantom(tmp_path / "in" / f"volume-{k}.nii", tmp_path / "in" / f"segmentation-{k}.nii", (24, 24, 6), seed=k)
    out = tmp_path / "out"
    pytest.importorskip("tensorflow")
    from liverzoo.data import io, tfrecord

    tfrecord.write_dataset(io.find_cases(tmp_path / "in"), out, preset="residual_unet", inplane_size=16)
    flags = [f"--input_dir={tmp_path / 'in'}", f"--output_dir={out}", "--preset=residual_unet", "--inplane_size=16"]
    before = {name: open(out / name, "rb").read() for name in os.listdir(out)}
    save_phantom(tmp_path / "in" / "volume-2.nii.gz", tmp_path / "in" / "segmentation-2.nii.gz", (24, 24, 6), seed=2)
    _truncate(tmp_path / "in" / "segmentation-2.nii.gz")
    result, stderr = run_tool(*flags)
    assert result.returncode == 1
    errors = [line for line in stderr if not line.startswith("[")]
    assert errors == [errors[0]] and errors[0].startswith("error: ")
    assert f"error: {tmp_path / 'in' / 'segmentation-2.nii.gz'}: " in errors[0] and "truncated" in errors[0]
    assert "Traceback" not in result.stderr
    assert {name: open(out / name, "rb").read() for name in os.listdir(out)} == before  # nothing half-written
    new_out = tmp_path / "new_out"  # a folder the failed run made is not left behind, empty
    result, _ = run_tool(f"--input_dir={tmp_path / 'in'}", f"--output_dir={new_out}", "--preset=residual_unet",
                         "--inplane_size=16")
    assert result.returncode == 1 and not new_out.exists()


@pytest.mark.parametrize("setup,flags,message", [
    (None, ["--preset=unet"], "unknown preset 'unet'; valid presets: ds_nnunet, lv_net, lv_net_window, lw_hcn, residual_unet, residual_unet_window, ynet3d"),
    ("empty", [], "no cases found"),
    ("unpaired", [], "unpaired files"),
    ("blocked", [], "output folder is not writable"),
    (None, ["--input_dir="], "--input_dir is required"),
    (None, ["--target_spacing=1,x"], "--target_spacing=1,x"),
    (None, ["--num_workers=0"], "--num_workers=0: must be at least 1"),
    (None, ["--num_workers=-3"], "--num_workers=-3: must be at least 1"),
    ("no_beam", ["--runner=DirectRunner"],
     "--runner=DirectRunner: Apache Beam is not installed; pip install liverzoo[beam]"),
    (None, ["--runner=NoSuchRunner"], "--runner=NoSuchRunner: Beam refuses runner NoSuchRunner"),
    (None, ["--runner=DirectRunner", "--num_workers=2"], "--num_workers does not apply with --runner"),
    (None, ["--beam_options=--direct_num_workers=2"], "--beam_options and --beam_staging_dir need --runner"),
])
def test_fast_errors(tmp_path, setup, flags, message):
    (tmp_path / "in").mkdir()
    output = tmp_path / "out"
    if setup == "unpaired":
        (tmp_path / "in" / "volume-1.nii").write_bytes(b"")
    if setup in ("blocked", "no_beam", None):
        save_phantom(tmp_path / "in" / "volume-1.nii", tmp_path / "in" / "segmentation-1.nii", (8, 8, 2))
    if setup == "blocked":
        (tmp_path / "file").write_text("")
        output = tmp_path / "file" / "out"
    result, stderr = run_tool(f"--input_dir={tmp_path / 'in'}", f"--output_dir={output}", "--preset=lv_net", *flags,
                              without_beam=setup == "no_beam")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(stderr) == 1 and stderr[0].startswith("error: ") and message in stderr[0], result.stderr
    assert not output.exists()
