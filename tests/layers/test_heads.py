"""liverzoo/layers/heads.py: the softmax head in 2D (NumPy reference) and 3D."""
import numpy as np

from liverzoo.layers import heads
from tests.layers.numpy_2d import RNG, functional, np_bilinear, np_conv_layer


def test_softmax_head_upsamples_logits_then_normalises():
    model = functional(heads.apply_softmax_head, (4, 4, 6), num_classes=3, upsample=2, name="head")
    x = RNG.normal(size=(2, 4, 4, 6)).astype("float32")
    logits = np_bilinear(np_conv_layer(model.get_layer("head_logits"), x, False), 2)
    expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(model(x)), expected, atol=1e-5)


def test_softmax_head_3d_upsamples_logits_trilinearly_then_normalises():
    import keras

    from liverzoo.layers.conv3d import FoldedConv3D

    model = functional(heads.apply_softmax_head, (2, 4, 4, 6), num_classes=3, upsample=2, conv=FoldedConv3D,
                       name="head")
    assert [type(layer).__name__ for layer in model.layers[1:]] == ["FoldedConv3D", "TrilinearUpSampling3D", "Softmax"]
    assert [layer.name for layer in model.layers[1:]] == ["head_logits", "head_up", "head"]
    x = RNG.normal(size=(2, 2, 4, 4, 6)).astype("float32")
    logits = np.asarray(model.get_layer("head_up")(model.get_layer("head_logits")(x)))
    expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    out = np.asarray(model(x))
    assert out.shape == (2, 4, 8, 8, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-5)
    default = heads.apply_softmax_head(keras.Input((2, 4, 4, 6)), 3, name="plain")
    assert tuple(default.shape) == (None, 2, 4, 4, 3)
