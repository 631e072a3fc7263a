"""The model a run trains: built in the strategy scope, regularized, wrapped and compiled."""
import keras

from liverzoo.training.config import builder_parameters
from liverzoo.training.distribute import synchronize_batchnorm
from liverzoo.training.recompute import RecomputeModel


def build_model(config, replicas=1):
    """Builds (inside the current strategy scope) the model, its trainable wrapper and losses.

    With more than one replica, BatchNormalization is synchronized across replicas.

    Args:
        config: a `ResolvedConfig`.
        replicas: replicas in sync.

    Returns:
        `(inner, trainable, num_outputs)`: `inner` is the zoo model that gets saved;
        `trainable` is what is compiled and fitted (`RecomputeModel(inner)` with
        --recompute, else `inner`).
    """
    from liverzoo import models

    kwargs = dict(config.model_kwargs, input_shape=config.input_shape)
    if "deep_supervision" in builder_parameters(config.model):
        kwargs["deep_supervision"] = config.deep_supervision is not None
    inner = models.build(config.model, **kwargs)
    num_outputs = len(inner.outputs)
    if replicas > 1:
        synchronize_batchnorm(inner)
    if config.weight_decay:
        # Eq. 3's lambda * ||W||^2 over all weights; Keras adds it to the loss once per step
        # (tests/training/test_distributed.py checks it is not counted per replica).
        for variable in inner.trainable_variables:
            variable.regularizer = keras.regularizers.L2(config.weight_decay)
    trainable = RecomputeModel(inner) if config.recompute else inner
    if trainable is not inner:
        trainable(keras.ops.zeros((1,) + tuple(config.input_shape)))  # builds the wrapper
    return inner, trainable, num_outputs


def compile_model(trainable, config, num_outputs):
    """Compiles with the resolved optimizer, schedule and (deep-supervision) loss."""
    from liverzoo import losses, schedules

    total_steps = config.epochs * config.steps_per_epoch
    lr = schedules.build(config.schedule, config.learning_rate, total_steps=total_steps,
                         steps_per_epoch=config.steps_per_epoch)
    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(lr, momentum=0.99, nesterov=True)
    else:
        optimizer = keras.optimizers.Adam(lr, beta_1=0.9, beta_2=0.999)
    loss = losses.get(config.loss, class_weights=config.class_weights)
    loss_weights = None
    if num_outputs > 1:
        k = num_outputs - 1
        if config.deep_supervision == "lv_net":
            aux = losses.LV_NET_AUX_WEIGHTS
        else:  # nnU-Net: halve the weight at each coarser level
            aux = tuple(0.5 ** (i + 1) for i in range(k))
        loss, loss_weights = losses.deep_supervision(loss, num_outputs, aux)
    trainable.compile(optimizer=optimizer, loss=loss, loss_weights=loss_weights, jit_compile=False)
