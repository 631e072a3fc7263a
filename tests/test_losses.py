"""liverzoo.losses against NumPy references and stock Keras losses."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from liverzoo import losses  # noqa: E402
from liverzoo.errors import ConfigError  # noqa: E402


def _random_case(shape, num_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=shape).astype(np.int32)
    logits = rng.normal(size=shape + (num_classes,)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return labels, probs.astype(np.float32)


def _np_dice_loss(labels, probs, eps):
    """Eq. 8's Dice term, written out per example with explicit loops over classes."""
    num_classes = probs.shape[-1]
    out = []
    for y, p in zip(labels, probs):
        dices = []
        for c in range(num_classes):
            yc = (y == c).astype(np.float64)
            pc = p[..., c].astype(np.float64)
            dices.append(2 * (pc * yc).sum() / ((pc + yc).sum() + eps))
        out.append(1 - np.mean(dices))
    return np.mean(out)


def _np_ce(labels, probs, weights=None):
    p_true = np.take_along_axis(probs, labels[..., None], axis=-1)[..., 0]
    ce = -np.log(np.clip(p_true, 1e-7, 1 - 1e-7))
    if weights is not None:
        ce = ce * np.asarray(weights)[labels]
    return ce.mean()


SHAPES = [(2, 8, 8), (2, 3, 6, 5)]  # a 2D batch (B, H, W) and a 3D batch (B, D, H, W)


@pytest.mark.parametrize("shape", SHAPES)
def test_soft_dice_matches_numpy(shape):
    labels, probs = _random_case(shape)
    got = float(losses.SoftDiceLoss(epsilon=1e-5)(labels, probs))
    np.testing.assert_allclose(got, _np_dice_loss(labels, probs, 1e-5), rtol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_dice_ce_is_eq8(shape):
    labels, probs = _random_case(shape, seed=1)
    got = float(losses.DiceCrossEntropyLoss()(labels, probs))
    # Per-example CE means average to the global mean because every example has equal size.
    want = _np_dice_loss(labels, probs, 1e-5) + _np_ce(labels, probs)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_perfect_prediction_gives_zero_dice_loss():
    labels, _ = _random_case((2, 6, 6))
    onehot = np.eye(3, dtype=np.float32)[labels]
    assert float(losses.SoftDiceLoss(epsilon=1e-5)(labels, onehot)) < 1e-5
    assert float(losses.DiceCrossEntropyLoss()(labels, onehot)) < 1e-4


@pytest.mark.parametrize("shape", SHAPES)
def test_cross_entropy_equals_keras(shape):
    labels, probs = _random_case(shape, seed=2)
    want = float(keras.losses.SparseCategoricalCrossentropy()(labels, probs))
    np.testing.assert_allclose(float(losses.get("ce")(labels, probs)), want, rtol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_weighted_cross_entropy_equals_keras_with_sample_weight(shape):
    weights = (0.5, 2.0, 7.0)
    labels, probs = _random_case(shape, seed=3)
    want = float(keras.losses.SparseCategoricalCrossentropy()(labels, probs, sample_weight=np.asarray(weights)[labels]))
    got = float(losses.WeightedCrossEntropy(weights)(labels, probs))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(got, _np_ce(labels, probs, weights), rtol=1e-5)


def test_losses_work_in_graph_mode_and_have_gradients():
    labels, probs = _random_case((2, 8, 8), seed=4)
    logits = tf.Variable(np.log(probs))
    for loss in (losses.SoftDiceLoss(), losses.DiceCrossEntropyLoss(), losses.WeightedCrossEntropy((1, 2, 3))):

        @tf.function
        def step(loss=loss):
            with tf.GradientTape() as tape:
                value = loss(labels, tf.nn.softmax(logits))
            return value, tape.gradient(value, logits)

        value, grad = step()
        assert np.isfinite(float(value))
        assert float(tf.reduce_sum(tf.abs(grad))) > 0


def test_float16_predictions_give_float32_loss():
    labels, probs = _random_case((2, 8, 8), seed=5)
    value = losses.DiceCrossEntropyLoss()(labels, probs.astype(np.float16))
    want = losses.DiceCrossEntropyLoss()(labels, probs.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(float(value), float(want), rtol=1e-6)


@pytest.mark.parametrize(
    "loss",
    [losses.SoftDiceLoss(epsilon=1e-3), losses.DiceCrossEntropyLoss(ce_weight=0.5),
     losses.WeightedCrossEntropy((1, 2, 9))],
)
def test_loss_serialization_round_trip(loss):
    labels, probs = _random_case((2, 5, 5), seed=6)
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(clone) is type(loss) and clone.get_config() == loss.get_config()
    np.testing.assert_allclose(float(clone(labels, probs)), float(loss(labels, probs)), rtol=1e-6)


def test_get_by_name_and_bad_names():
    assert isinstance(losses.get("dice_ce"), losses.DiceCrossEntropyLoss)
    assert losses.get("weighted_ce", class_weights=(1, 2, 3)).class_weights == (1.0, 2.0, 3.0)
    with pytest.raises(ConfigError, match="--loss"):
        losses.get("focal")
    with pytest.raises(ConfigError, match="class_weights"):
        losses.get("weighted_ce")
    with pytest.raises(ConfigError, match="non-negative"):
        losses.WeightedCrossEntropy((1, -1, 2))
    labels, probs = _random_case((1, 4, 4))
    with pytest.raises(ConfigError, match="3 classes"):
        losses.WeightedCrossEntropy((1, 2))(labels, probs)


def _multi_output_model(num_outputs):
    inputs = keras.Input((6, 6, 1))
    outputs = [keras.layers.Conv2D(3, 1, activation="softmax", name=f"head{i}")(inputs) for i in range(num_outputs)]
    return keras.Model(inputs, outputs)


def test_deep_supervision_loss_is_eq3_in_keras_compile():
    """Keras' summed multi-output loss equals L_main + sum eta_i L_i computed by hand."""
    keras.utils.set_random_seed(0)
    model = _multi_output_model(5)
    loss_list, weights = losses.deep_supervision(losses.get("ce"), 5)
    assert weights == [1.0, 0.2, 0.4, 0.6, 0.8]
    model.compile(optimizer="adam", loss=loss_list, loss_weights=weights)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 6, 6, 1)).astype(np.float32)
    y = rng.integers(0, 3, size=(4, 6, 6)).astype(np.int32)
    got = model.evaluate(x, (y,) * 5, batch_size=4, verbose=0)
    preds = model.predict(x, verbose=0)
    want = sum(w * _np_ce(y, p) for w, p in zip(weights, preds))
    np.testing.assert_allclose(got[0] if isinstance(got, list) else got, want, rtol=1e-5)


def test_deep_supervision_rejects_wrong_number_of_heads():
    with pytest.raises(ConfigError, match="3 auxiliary outputs"):
        losses.deep_supervision(losses.get("ce"), 4)
