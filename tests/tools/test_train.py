"""tools/train.py: one error line for bad flags; a SIGKILLed run resumes where it stopped."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import run_tool
from tests.training.helpers import write_phantom_shards

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(REPO, "tools", "train.py")


def _run(args, **kwargs):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    return run_tool("train", *args, env=env, timeout=300, **kwargs)


# Each case is a fresh process (~3-8 s); the option checks themselves are tested in-process
# in tests/training/test_config.py. These cover the CLI's own parsing and its error path.
BAD_FLAGS = [
    (["--model=nope"], "error: --model='nope' is not a zoo model"),
    (["--model=residual_unet", "--epochs=abc"], "error: --epochs='abc': invalid literal for int()"),
    (["--model=residual_unet", "--data=/no/such/dir"], "error: --data=/no/such/dir"),
    (["--model=residual_unet", "--model_kwargs={bad"], "error: --model_kwargs={bad: not valid JSON"),
    (["--model=residual_unet", "--input_shape=64,x,1"], "error: --input_shape=64,x,1"),
    (["--model=residual_unet", "--preset=nope"], "error: --preset: unknown preset 'nope'"),
]


@pytest.mark.parametrize("args, message", BAD_FLAGS, ids=[m for _, m in BAD_FLAGS])
def test_bad_flags_give_one_error_line(args, message, tmp_path):
    result = _run(args + [f"--model_dir={tmp_path / 'run'}"])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "run").exists()


def _epoch_of_backup(model_dir):
    try:
        with open(os.path.join(model_dir, "backup", "training_metadata.json")) as f:
            return json.load(f)["epoch"]
    except (OSError, ValueError):
        return None


def test_sigkill_mid_epoch_then_restart_resumes(tmp_path):
    """Killed in epoch 2, the same command continues at epoch 2 with the optimizer state."""
    shards = write_phantom_shards(tmp_path / "shards")
    model_dir = tmp_path / "run"
    steps = 60
    args = ["--model=residual_unet", '--model_kwargs={"base_filters": 4}', f"--data={shards}",
            f"--model_dir={model_dir}", "--input_shape=32,32,1", "--epochs=3", f"--steps_per_epoch={steps}",
            "--batch_size=2", "--verbose=2", "--strategy=one_device"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    first = subprocess.Popen([sys.executable, TRAIN, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             env=env, text=True)
    deadline = time.time() + 240
    while _epoch_of_backup(model_dir) != 1:
        assert first.poll() is None, first.stdout.read()
        assert time.time() < deadline, "the first run did not finish epoch 1 in time"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)  # now inside epoch 2
    first.wait()
    first_out = first.stdout.read()
    assert first.returncode == -signal.SIGKILL and "Epoch 3/3" not in first_out
    assert _epoch_of_backup(model_dir) == 1

    second = _run(args)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Epoch 1/3" not in second.stdout and "Epoch 2/3" in second.stdout and "Epoch 3/3" in second.stdout
    assert "validation on 1 held-out case(s) not trained on (phantom2)" in second.stdout
    with open(model_dir / "history.csv") as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [0, 1, 2]
    assert _epoch_of_backup(model_dir) == 3

    import keras

    import liverzoo.losses  # noqa: F401 - registers the loss used in the saved compile config

    last = keras.models.load_model(model_dir / "last.keras", safe_mode=True)
    # Restarted from zero it would have 2 * steps iterations (two epochs in the second run).
    assert int(last.optimizer.iterations.numpy()) == 3 * steps

    third = _run(args)  # a finished run started again trains nothing and reports
    assert third.returncode == 0 and "Epoch" not in third.stdout
    assert "validation on 1 held-out case(s) not trained on (phantom2)" in third.stdout
