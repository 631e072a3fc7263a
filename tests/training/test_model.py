"""liverzoo.training.model: the built model carries LV-Net's weight decay."""
import numpy as np

from liverzoo import training
from liverzoo.training.model import build_model


def test_weight_decay_is_lv_net_eq3_l2_penalty():
    config = training.resolve(training.TrainConfig(model="lv_net", data="x", input_shape=(16, 16, 16, 1),
                                                     model_kwargs={"filters": (4, 8, 8, 16, 16)}))
    assert config.weight_decay == 1e-5
    inner, trainable, num_outputs = build_model(config)
    assert trainable is inner and num_outputs == 5  # main + 4 deep-supervision heads
    want = 1e-5 * sum(float(np.sum(np.square(w))) for w in inner.trainable_weights)
    np.testing.assert_allclose(float(sum(inner.losses)), want, rtol=1e-5)
