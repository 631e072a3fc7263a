"""liverzoo.training.distribute: the strategy chosen without TF_CONFIG (multi-process runs: test_distributed.py)."""
from liverzoo.training import distribute


def test_auto_strategy_without_tf_config_is_one_device(monkeypatch):
    import tensorflow as tf

    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = distribute.make_strategy("auto", distribute.check_strategy("auto"))
    assert isinstance(strategy, tf.distribute.OneDeviceStrategy) and distribute.is_chief(strategy)
