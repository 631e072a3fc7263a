"""Argument checks every builder runs before it builds any graph."""
from liverzoo.errors import ConfigError


def check_builder_args(model, input_shape, num_classes, *, layout, divisor, odd_channels=False):
    """Raises ConfigError unless the builder arguments describe a buildable network.

    Args:
        model: model name, used in the messages.
        input_shape: the builder's `input_shape` (without the batch axis).
        num_classes: the builder's `num_classes`.
        layout: the model's `liverzoo.layout.InputLayout` (2D `(H, W, T)` or 3D `(D, H, W, 1)`):
            `input_shape` must have its rank.
        divisor: every spatial size (all axes but the last) must be a multiple of it: the
            network's total stride, an int or one int per spatial axis.
        odd_channels: require an odd channel count (a 2.5D stack centred on its slice).

    Returns:
        `input_shape` as a tuple of ints.

    Example:
        >>> from liverzoo.layout import STACK_2D
        >>> check_builder_args("ds_nnunet", (256, 256, 7), 3, layout=STACK_2D, divisor=128, odd_channels=True)
        (256, 256, 7)
    """
    rank = layout.rank
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise ConfigError(f"{model}: input_shape must be a tuple of {rank} integers, got {input_shape!r}") from None
    if len(shape) != rank or any(d < 1 for d in shape):
        raise ConfigError(
            f"{model}: input_shape must have {rank} positive sizes (no batch axis), got {input_shape!r}"
        )
    if odd_channels and shape[-1] % 2 == 0:
        raise ConfigError(
            f"{model}: the slice stack T (last axis of input_shape) must be odd so the predicted slice "
            f"is its centre, got T={shape[-1]}"
        )
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"{model}: num_classes must be an integer >= 2, got {num_classes!r}")
    divisors = divisor if isinstance(divisor, (tuple, list)) else (divisor,) * (rank - 1)
    for axis, (size, div) in enumerate(zip(shape[:-1], divisors)):
        if size % div:
            raise ConfigError(
                f"{model}: input_shape {shape}: spatial size {size} (axis {axis}) is not divisible by the "
                f"network's total stride {div}"
            )
    return shape
