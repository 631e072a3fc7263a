"""liverzoo.training.precise_bn: BatchNorm statistics averaged over training batches."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from liverzoo.training import precise_bn  # noqa: E402


def test_precise_bn_sets_moving_statistics_to_the_batch_average():
    inputs = keras.Input((4, 4, 2))
    norm = keras.layers.BatchNormalization(momentum=0.99)
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1)(norm(inputs)))
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=k, scale=1 + k, size=(3, 4, 4, 2)).astype(np.float32) for k in range(4)]
    for step in (None, precise_bn.batchnorm_step(model)):  # eager, then the traced step
        norm.moving_mean.assign(np.zeros(2, np.float32))
        assert precise_bn.recompute_batchnorm_statistics(model, iter(batches), step) == 4
        np.testing.assert_allclose(norm.moving_mean, np.mean([b.mean((0, 1, 2)) for b in batches], 0), rtol=1e-5)
        np.testing.assert_allclose(norm.moving_variance, np.mean([b.var((0, 1, 2)) for b in batches], 0), rtol=1e-4)
        assert norm.momentum == 0.99  # restored
    assert precise_bn.batchnorm_layers(model) == [norm]
