"""Segmentation losses of the zoo's papers, as serializable Keras losses (graph ops only).

Labels are integer maps (LiTS: 0 background, 1 liver, 2 tumor) shaped like the prediction
without its class axis; predictions are softmax probabilities `(B, ..., C)`.

Every loss here returns one value per example (per voxel for cross-entropy), which Keras
then averages. That keeps them decomposable over examples: under `tf.distribute` each
replica averages its share of the global batch and Keras divides by the number of replicas,
so the loss of a global batch is the same on one device or on many. For this reason the Dice
terms are computed per example (sums over the voxels of one sample) rather than over the
whole batch.

Papers (../shared/papers):
    001_bb2d5e6c0ac559d5.txt Eq. 8: multi-class Dice + cross-entropy (LW-HCN).
    000_ebe0050d52f538d0.txt: Dice + CE "following nnU-Net" (DS nnU-Net).
    002_7138868b57b69ed8.txt: weighted cross-entropy (residual U-Net).
    003_1722e7be9c09b159.txt Eq. 1-3: soft Dice + CE (3DYNet).
    004_e35520e2e41b14d6.txt Eq. 3: CE with deep supervision, weights 0.2, 0.4, 0.6, 0.8 (LV-Net).
"""
import keras
from keras import ops

from liverzoo.errors import ConfigError

# Probabilities are clipped before the log so a saturated softmax gives a finite loss.
_PROB_EPSILON = 1e-7

# LV-Net Eq. 3: eta_1..eta_4 for the auxiliary heads, ordered as the model lists them.
LV_NET_AUX_WEIGHTS = (0.2, 0.4, 0.6, 0.8)


def _one_hot(y_true, num_classes, dtype):
    return ops.one_hot(ops.cast(y_true, "int32"), num_classes, dtype=dtype)


def _cross_entropy(y_true, y_pred):
    """Per-voxel categorical cross-entropy -sum_c y_c log p_c of integer labels."""
    y_pred = ops.clip(y_pred, _PROB_EPSILON, 1.0 - _PROB_EPSILON)
    onehot = _one_hot(y_true, y_pred.shape[-1], y_pred.dtype)
    return -ops.sum(onehot * ops.log(y_pred), axis=-1)


def _dice_loss(y_true, y_pred, epsilon):
    """Per-example 1 - (1/C) sum_c 2 sum_i p y / (sum_i (p + y) + eps) (Eq. 8's Dice term)."""
    onehot = _one_hot(y_true, y_pred.shape[-1], y_pred.dtype)
    spatial = tuple(range(1, len(y_pred.shape) - 1))
    intersection = ops.sum(y_pred * onehot, axis=spatial)
    denominator = ops.sum(y_pred + onehot, axis=spatial)
    dice = 2.0 * intersection / (denominator + epsilon)
    return 1.0 - ops.mean(dice, axis=-1)


class _ZooLoss(keras.losses.Loss):
    """Common base: casts predictions to float32 (mixed precision) and keeps the config."""

    def __init__(self, name, reduction="sum_over_batch_size", **kwargs):
        super().__init__(name=name, reduction=reduction, **kwargs)

    def call(self, y_true, y_pred):
        return self.compute(y_true, ops.cast(y_pred, "float32"))


@keras.saving.register_keras_serializable(package="liverzoo")
class SoftDiceLoss(_ZooLoss):
    """Multi-class soft Dice loss, per example, averaged over classes (Dice term of Eq. 8).

    Args:
        epsilon: smoothing factor in the denominator (the paper's epsilon).
        name: loss name.
        **kwargs: passed to `keras.losses.Loss` (e.g. `reduction`).

    Returns:
        From `call`: `(B,)` values `1 - mean_c Dice_c`.

    Example:
        >>> loss = SoftDiceLoss()
        >>> value = loss(labels, probabilities)  # labels (B, H, W), probabilities (B, H, W, 3)

    Paper: 001_bb2d5e6c0ac559d5.txt, Eq. 8.
    """

    def __init__(self, epsilon=1e-5, name="soft_dice", **kwargs):
        super().__init__(name=name, **kwargs)
        self.epsilon = epsilon

    def compute(self, y_true, y_pred):
        return _dice_loss(y_true, y_pred, self.epsilon)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="liverzoo")
class DiceCrossEntropyLoss(_ZooLoss):
    """Soft Dice + categorical cross-entropy (LW-HCN Eq. 8, also DS nnU-Net and 3DYNet).

    `L = dice_weight * (1 - mean_c Dice_c) + ce_weight * mean_i CE_i`, per example.

    Args:
        epsilon: Dice smoothing factor.
        dice_weight: weight of the Dice term (1 in the papers).
        ce_weight: weight of the cross-entropy term (1 in the papers).
        name: loss name.
        **kwargs: passed to `keras.losses.Loss`.

    Returns:
        From `call`: `(B,)` per-example losses.

    Example:
        >>> model.compile(optimizer="adam", loss=DiceCrossEntropyLoss())

    Paper: 001_bb2d5e6c0ac559d5.txt, Eq. 8; 003_1722e7be9c09b159.txt, Eq. 3.
    """

    def __init__(self, epsilon=1e-5, dice_weight=1.0, ce_weight=1.0, name="dice_ce", **kwargs):
        super().__init__(name=name, **kwargs)
        self.epsilon = epsilon
        self.dice_weight = dice_weight
        self.ce_weight = ce_weight

    def compute(self, y_true, y_pred):
        spatial = tuple(range(1, len(y_pred.shape) - 1))
        ce = ops.mean(_cross_entropy(y_true, y_pred), axis=spatial)
        return self.dice_weight * _dice_loss(y_true, y_pred, self.epsilon) + self.ce_weight * ce

    def get_config(self):
        return {
            **super().get_config(),
            "epsilon": self.epsilon,
            "dice_weight": self.dice_weight,
            "ce_weight": self.ce_weight,
        }


@keras.saving.register_keras_serializable(package="liverzoo")
class WeightedCrossEntropy(_ZooLoss):
    """Categorical cross-entropy with one weight per true class (residual U-Net).

    Per voxel `w[y] * CE`, averaged over all voxels: the same value as Keras'
    `SparseCategoricalCrossentropy` with `sample_weight = w[y]`.

    Args:
        class_weights: one weight per class, e.g. `(1.0, 2.0, 8.0)` for background, liver,
            tumor (the paper does not give its weights); None for plain cross-entropy.
        name: loss name.
        **kwargs: passed to `keras.losses.Loss`.

    Returns:
        From `call`: per-voxel weighted losses `(B, ...)`.

    Example:
        >>> model.compile(optimizer="adam", loss=WeightedCrossEntropy((1.0, 2.0, 8.0)))

    Paper: 002_7138868b57b69ed8.txt (training section), 004_e35520e2e41b14d6.txt Eq. 1.
    """

    def __init__(self, class_weights=None, name="weighted_ce", **kwargs):
        super().__init__(name=name, **kwargs)
        self.class_weights = None if class_weights is None else tuple(float(w) for w in class_weights)
        if self.class_weights is not None and (not self.class_weights or min(self.class_weights) < 0):
            raise ConfigError(f"class_weights must be non-negative numbers, got {class_weights!r}")

    def compute(self, y_true, y_pred):
        if self.class_weights is None:
            return _cross_entropy(y_true, y_pred)
        if y_pred.shape[-1] != len(self.class_weights):
            raise ConfigError(
                f"class_weights has {len(self.class_weights)} entries but the model predicts "
                f"{y_pred.shape[-1]} classes"
            )
        weights = ops.take(ops.convert_to_tensor(self.class_weights, "float32"), ops.cast(y_true, "int32"))
        return weights * _cross_entropy(y_true, y_pred)

    def get_config(self):
        weights = None if self.class_weights is None else list(self.class_weights)
        return {**super().get_config(), "class_weights": weights}


LOSSES = {
    "dice": SoftDiceLoss,
    "dice_ce": DiceCrossEntropyLoss,
    "ce": WeightedCrossEntropy,  # without class weights
    "weighted_ce": WeightedCrossEntropy,
}


def get(name, *, class_weights=None):
    """Returns a loss instance by its `--loss` name.

    Args:
        name: one of `LOSSES` ("dice", "dice_ce", "ce", "weighted_ce").
        class_weights: class weights for "weighted_ce" (ignored by the others).

    Returns:
        A `keras.losses.Loss`.

    Raises:
        ConfigError: unknown name, or class weights missing for "weighted_ce".

    Example:
        >>> loss = get("dice_ce")
    """
    if name not in LOSSES:
        raise ConfigError(f"--loss={name!r} is not one of {', '.join(LOSSES)}")
    if name == "weighted_ce":
        if class_weights is None:
            raise ConfigError("--loss=weighted_ce needs --class_weights")
        return WeightedCrossEntropy(class_weights)
    if name == "ce":
        return WeightedCrossEntropy(name="ce")
    return LOSSES[name]()


def deep_supervision(loss, num_outputs, aux_weights=LV_NET_AUX_WEIGHTS):
    """Losses and weights for `model.compile` of a deep-supervision model (LV-Net Eq. 3).

    A deep-supervision model returns `[main, aux_1, ..., aux_k]`, all at full resolution.
    Keras 3 applies one loss per output and sums them with `loss_weights`, which is exactly
    `L_main + sum_i eta_i L_i`; the dataset must then yield the label once per output
    (`liverzoo.training.data.training_dataset` repeats it). Eq. 3's weight-decay term is the optimizer's job.

    Args:
        loss: the per-output loss (LV-Net: cross-entropy).
        num_outputs: number of model outputs, 1 + k.
        aux_weights: eta_1..eta_k, ordered as the auxiliary outputs.

    Returns:
        `(losses, loss_weights)`: two lists of length `num_outputs`, for
        `model.compile(loss=losses, loss_weights=loss_weights)`.

    Raises:
        ConfigError: when the model has a different number of auxiliary outputs.

    Example:
        >>> losses, weights = deep_supervision(WeightedCrossEntropy(), 5)
        >>> model.compile(optimizer="adam", loss=losses, loss_weights=weights)

    Paper: 004_e35520e2e41b14d6.txt, Eq. 3.
    """
    aux_weights = tuple(float(w) for w in aux_weights)
    if num_outputs - 1 != len(aux_weights):
        raise ConfigError(
            f"the model has {num_outputs - 1} auxiliary outputs but {len(aux_weights)} "
            f"deep-supervision weights were given ({aux_weights})"
        )
    return [loss] * num_outputs, [1.0, *aux_weights]
