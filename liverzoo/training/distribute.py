"""tf.distribute for training: the strategy, TF_CONFIG, the chief's folder and synchronized BatchNorm.

Example:
    >>> strategy = make_strategy("auto", check_strategy("auto"))  # doctest: +SKIP
    >>> is_chief(strategy)  # doctest: +SKIP
    True
"""
import contextlib
import json
import os

from liverzoo.errors import ConfigError
from liverzoo.training.config import check_choice
from liverzoo.training.precise_bn import batchnorm_layers
from liverzoo.training.recipes import STRATEGIES


def _tf_config():
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        tf_config = json.loads(raw)
        tf_config["cluster"], tf_config["task"]["type"], tf_config["task"]["index"]  # noqa: B018 - shape check
    except (ValueError, KeyError, TypeError):
        raise ConfigError("TF_CONFIG is not valid JSON with 'cluster' and 'task' {'type', 'index'}") from None
    return tf_config


def check_strategy(name):
    """Checks `--strategy` against the environment (no TensorFlow). Returns the TF_CONFIG dict."""
    check_choice(name, STRATEGIES, "strategy")
    tf_config = _tf_config()
    if name == "multi_worker" and tf_config is None:
        raise ConfigError("--strategy=multi_worker needs the TF_CONFIG environment variable (docs/training.md)")
    return tf_config


def make_strategy(name, tf_config=None):
    """The `tf.distribute` strategy for `--strategy`.

    "auto": MultiWorkerMirroredStrategy when TF_CONFIG names several tasks, MirroredStrategy
    over all GPUs when there are several, else one device (the GPU if any).
    "mirrored" uses all GPUs, or all logical CPU devices where there is no GPU.

    Example:
        >>> strategy = make_strategy("one_device")  # doctest: +SKIP
    """
    import tensorflow as tf

    if name == "auto":
        workers = sum(len(v) for v in (tf_config or {}).get("cluster", {}).values())
        if workers > 1:
            name = "multi_worker"
        else:
            name = "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "one_device"
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0] if gpus else "/cpu:0")
    return tf.distribute.MirroredStrategy(gpus or [d.name for d in tf.config.list_logical_devices("CPU")])


def is_multi_worker(strategy):
    """True for MultiWorkerMirroredStrategy."""
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def strategy_name(strategy):
    """The strategy's class name as users know it."""
    # MultiWorkerMirroredStrategy's class is called CollectiveAllReduceStrategy.
    return "MultiWorkerMirroredStrategy" if is_multi_worker(strategy) else type(strategy).__name__


def is_chief(strategy):
    """True on the process that writes shared files (always, except non-chief workers)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "chief" or (not has_chief and task_type == "worker" and task_id == 0)


def worker_dir(model_dir, strategy):
    """This process's folder: `model_dir` on the chief, `model_dir/workers/TYPE-INDEX` elsewhere."""
    if is_chief(strategy):
        return model_dir
    resolver = strategy.cluster_resolver
    return os.path.join(model_dir, "workers", f"{resolver.task_type}-{resolver.task_id}")


def fit_context(trainable, strategy):
    """The context `trainable.fit` runs in: Keras' multi-worker workaround where needed."""
    from liverzoo import _keras_internals

    return _keras_internals.multi_worker_fit(trainable, strategy) if is_multi_worker(strategy) else (
        contextlib.nullcontext())


def synchronize_batchnorm(model):
    """Makes every BatchNormalization layer use the statistics of the global batch.

    Under N replicas each replica would otherwise normalise with the statistics of its own
    1/N of the batch, so training would differ from one device with the same global batch
    (and 3D models run with one or two volumes per GPU). Keras' `synchronized=True`
    all-reduces the moments across replicas. Returns the number of layers changed.
    """
    layers = [layer for layer in batchnorm_layers(model) if not layer.synchronized]
    for layer in layers:
        layer.synchronized = True
    return len(layers)
