"""The inference-only graph and the rewrites that TFLite files get.

`inference_model` keeps `model.outputs[0]` (deep-supervision heads dropped). `lite_compatible`
swaps stock 3D convolutions for `liverzoo.layers` equivalents built from 2D builtins, which
LiteRT runs in int8 and with XNNPACK, and moves a batch norm that follows a concatenation in
front of it (`NormalizedConcatenate`) so that an int8 file does not round the long skips of a
U-Net to the decoder's scale; servers keep the stock layers (SavedModel).
"""
from liverzoo.errors import ConfigError


def inference_model(model):
    """The inference-only model: one input, `model.outputs[0]`, layers shared with `model`.

    Deep-supervision heads (`outputs[1:]`) are not part of the returned graph; dropout is
    inactive wherever this module traces it (`training=False`).

    Args:
        model: a functional `keras.Model` (zoo builder output or a loaded `.keras` file).

    Returns:
        `keras.Model` with a single output, named like `model`.

    Example:
        >>> lv = models.build("lv_net", input_shape=(16, 32, 32, 1))   # 5 outputs
        >>> len(inference_model(lv).outputs)
        1
    """
    import keras

    if not getattr(model, "outputs", None):
        raise ConfigError(f"model {model.name!r}: export needs a functional Keras model")
    if len(model.inputs) != 1:
        raise ConfigError(f"model {model.name!r}: expected one input, found {len(model.inputs)}")
    # A single-tensor input (not a list) so that callers pass a plain array.
    return keras.Model(model.inputs[0], model.outputs[0], name=model.name)


def lite_compatible(model):
    """The model rewritten for TFLite: same function, layers that quantize and run well there.

    TFLite's CONV_3D and CONV_3D_TRANSPOSE have no int8 kernel and XNNPACK does not run them:
    int8 files keep those weights in float and LiteRT runs them on slow reference kernels.
    Training keeps the stock layers (cuDNN); the TFLite export clones the model with
    `keras.layers.Conv3D` -> `liverzoo.layers.conv3d.FoldedConv3D` and
    `keras.layers.Conv3DTranspose` -> `liverzoo.layers.conv3d_transpose.FoldedConv3DTranspose`
    (same function, same weights). Layers that those cannot express (groups > 1,
    channels_first, an activation inside the conv, a dilated or output-padded transpose,
    a layer used more than once) are kept as they are.

    A `Concatenate` whose only reader is a `BatchNormalization` over the channels becomes a
    `NormalizedConcatenate` (the batch norm applied to each input, then the concatenation)
    and the batch norm an `Identity`: int8 CONCATENATION gives all inputs one scale, which
    rounded the residual U-Net's first long skip (range ~0.7 under a scale set by decoder
    features of range ~15) to about 12 levels; the demo checkpoint's int8 file agreed with
    Keras on 0.9806 of the voxels of the demo volumes because of it (0.9990 with the rewrite).

    Args:
        model: functional Keras model.

    Returns:
        A functional `keras.Model` sharing every other layer (and its weights) with `model`;
        `model` itself when nothing is replaced.

    Example:
        >>> lite = lite_compatible(models.build("vnet", input_shape=(16, 16, 16, 1)))
        >>> any(isinstance(layer, keras.layers.Conv3D) for layer in lite.layers)
        False
    """
    import keras

    from liverzoo._keras_internals import inbound_node_count
    from liverzoo.layers.conv3d import FoldedConv3D
    from liverzoo.layers.conv3d_transpose import FoldedConv3DTranspose

    def replacement(layer):
        if inbound_node_count(layer) != 1 or layer.data_format != "channels_last":
            return None
        config = layer.get_config()
        if config.get("activation") not in (None, "linear"):
            return None
        common = dict(
            filters=layer.filters, kernel_size=layer.kernel_size, strides=layer.strides, padding=layer.padding,
            use_bias=layer.use_bias, name=layer.name, dtype=layer.dtype_policy,
        )
        if isinstance(layer, keras.layers.Conv3DTranspose):
            if layer.output_padding is not None or max(layer.dilation_rate) > 1:
                return None
            return FoldedConv3DTranspose(**common)
        if isinstance(layer, keras.layers.Conv3D) and layer.groups == 1:
            return FoldedConv3D(dilation_rate=layer.dilation_rate, **common)
        return None

    stock_3d = (keras.layers.Conv3D, keras.layers.Conv3DTranspose)
    norm_after_concat = _norm_after_concat(model)
    replaced = []

    def clone(layer):
        if id(layer) in norm_after_concat:
            new = norm_after_concat[id(layer)]
            replaced.append(new)
            return new
        new = replacement(layer) if isinstance(layer, stock_3d) else None
        if new is None:
            return layer  # shared, weights included
        new.build(layer.input.shape)
        new.set_weights(layer.get_weights())
        replaced.append(new)
        return new

    if not norm_after_concat and not any(isinstance(layer, stock_3d) for layer in model.layers):
        return model
    def call(layer, *args, **kwargs):
        if isinstance(layer, keras.layers.Identity):
            return layer(args[0])  # stands for a batch norm, whose call also took mask/training
        return layer(*args, **kwargs)

    lite = keras.models.clone_model(model, clone_function=clone, call_function=call)
    return lite if replaced else model


def _norm_after_concat(model):
    """`{id(layer): replacement}` for each Concatenate read only by a channel BatchNormalization."""
    import keras

    from liverzoo._keras_internals import graph_consumers
    from liverzoo.layers.normalized_concat import NormalizedConcatenate, batch_norm_affine

    consumers = graph_consumers(model)
    out = {}
    for layer in model.layers:
        readers = consumers.get(id(layer), [])
        if not isinstance(layer, keras.layers.Concatenate) or len(readers) != 1:
            continue
        norm = readers[0]
        rank = len(layer.output.shape)
        if (not isinstance(norm, keras.layers.BatchNormalization) or layer.axis not in (-1, rank - 1)
                or norm.axis not in (-1, rank - 1)):
            continue
        scale, offset = batch_norm_affine(norm)
        out[id(layer)] = NormalizedConcatenate(scale, offset, name=layer.name)
        out[id(norm)] = keras.layers.Identity(name=norm.name)
    return out
