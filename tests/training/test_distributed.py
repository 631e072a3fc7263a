"""tf.distribute through liverzoo.training: MirroredStrategy equals one device; two-worker training.

Each scenario runs in fresh Python processes: logical CPU devices and
MultiWorkerMirroredStrategy must be configured before TensorFlow initialises.
"""
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from tests.training.helpers import write_phantom_shards

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(REPO, "tools", "train.py")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_phantom_shards(tmp_path_factory.mktemp("dist_shards"))


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from liverzoo import models, training

    shards, root = sys.argv[1], sys.argv[2]
    model_kwargs = {"base_filters": 4, "dropout": 0.0}
    keras.utils.set_random_seed(0)  # train() seeds the same way before building
    start = models.build("residual_unet", input_shape=(32, 32, 1), **model_kwargs).get_weights()
    out = {}
    for strategy in ("one_device", "mirrored"):
        logs = []
        config = training.TrainConfig(
            model="residual_unet", model_kwargs=model_kwargs, data=shards, model_dir=f"{root}/{strategy}",
            input_shape=(32, 32, 1), epochs=1, steps_per_epoch=1, batch_size=4, augment=False, loss="dice_ce",
            weight_decay=1e-3, optimizer="sgd", learning_rate=0.05, strategy=strategy, verbose=0)
        result = training.train(config, log=logs.append)
        model = keras.models.load_model(f"{root}/{strategy}/last.keras", compile=False)
        out[strategy] = {"loss": result["history"][0]["loss"], "log": logs[0],
                         "update": [(w - w0).tolist() for w, w0 in zip(model.get_weights(), start)]}
    print("RESULT " + json.dumps(out))
""")


def test_mirrored_two_cpus_matches_one_device(shards, tmp_path):
    """Same global batch, same seed: MirroredStrategy over 2 replicas trains like one device.

    One SGD step, so the weight update is proportional to the gradient. The run covers the
    per-example loss reduction, synchronized BatchNorm and the L2 penalty (weight_decay).
    Agreement is to float32 round-off of the reordered sums (about 1e-4 of the gradient).
    """
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), shards, str(tmp_path)], capture_output=True, text=True,
                          env=_env(), timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    one, mirrored = result["one_device"], result["mirrored"]
    assert "on 1 replica(s) with OneDeviceStrategy" in one["log"]
    assert "on 2 replica(s) with MirroredStrategy" in mirrored["log"]
    assert one["loss"] == pytest.approx(mirrored["loss"], rel=1e-5)
    import numpy as np

    moved = 0
    for a, b in zip(one["update"], mirrored["update"]):
        a, b = np.asarray(a), np.asarray(b)
        assert np.linalg.norm(a - b) <= 1e-2 * np.linalg.norm(a) + 1e-6
        moved += np.linalg.norm(a) > 1e-4
    assert moved > 10  # the step really changed the weights


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_worker_multi_worker_mirrored_completes_an_epoch(shards, tmp_path):
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    model_dir = tmp_path / "run"
    args = [sys.executable, TRAIN, "--model=residual_unet", '--model_kwargs={"base_filters": 4}', f"--data={shards}",
            f"--model_dir={model_dir}", "--input_shape=32,32,1", "--epochs=1", "--steps_per_epoch=2",
            "--batch_size=4", "--verbose=2", "--strategy=multi_worker"]
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      env=_env(TF_CONFIG=tf_config)))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=400)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-4000:]
        assert "on 2 replica(s) with MultiWorkerMirroredStrategy" in out
        assert "validation on 1 held-out case(s) not trained on (phantom2)" in out
    # Worker 0 is the chief: it alone writes the shared files; worker 1 keeps its own backup.
    assert (model_dir / "best.keras").is_file() and (model_dir / "history.csv").is_file()
    assert (model_dir / "workers" / "worker-1" / "backup" / "training_metadata.json").is_file()
    assert not (model_dir / "workers" / "worker-1" / "best.keras").exists()
