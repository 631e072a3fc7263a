"""Gradient checkpointing for a functional Keras model (`RecomputeModel`)."""
import math

import keras

from liverzoo import _keras_internals


class RecomputeModel(keras.Model):
    """Gradient checkpointing for a functional model: `tf.recompute_grad` around segments.

    The model's layers (in topological order) are cut into about sqrt(n) contiguous
    segments. In training, every segment runs under `tf.recompute_grad`: only the tensors
    crossing segment boundaries are kept for the backward pass, and each segment's inner
    activations are recomputed when its gradients are needed (Chen et al. 2016, which
    LW-HCN, 001_bb2d5e6c0ac559d5.txt, uses to reach batch 6). Inference runs the layers
    plainly. The segments replay the functional graph's own layer calls (each layer with the
    arguments it was built with; `liverzoo._keras_internals.layer_calls`), so `inner` is left
    untouched and saves as usual.

    `keras.RematScope` was the first choice but its per-layer wrapping fails in graph mode on
    layers called with keyword arguments (BatchNormalization's `training`).
    Caveat: the recomputed forward pass updates BatchNormalization moving statistics a
    second time with the same batch statistics (momentum m acts like m^2).

    Save `model.inner` (the original functional model), not this wrapper.

    Args:
        inner: a functional `keras.Model` whose layers are each called once.
        num_segments: segments to cut (default: ceil(sqrt(number of layers))).

    Raises:
        ConfigError: a layer of `inner` is called more than once.

    Example:
        >>> wrapped = RecomputeModel(models.build("lw_hcn"))  # doctest: +SKIP
        >>> wrapped.compile(optimizer="adam", loss=losses.get("dice_ce"))  # doctest: +SKIP
    """

    def __init__(self, inner, num_segments=None, **kwargs):
        super().__init__(name=f"{inner.name}_recompute", **kwargs)
        self.inner = inner
        calls = _keras_internals.layer_calls(inner)
        num_segments = num_segments or max(1, math.ceil(math.sqrt(len(calls))))
        per = math.ceil(len(calls) / num_segments)
        chunks = [calls[i : i + per] for i in range(0, len(calls), per)]
        made_in = {id(t): j for j, chunk in enumerate(chunks) for call in chunk for t in call.outputs}
        used_in = {}
        for j, chunk in enumerate(chunks):
            for call in chunk:
                for t in call.inputs:
                    used_in.setdefault(id(t), set()).add(j)
        outputs = {id(t) for t in inner.outputs}
        segments = []
        for j, chunk in enumerate(chunks):
            needed = list({id(t): id(t) for call in chunk for t in call.inputs if made_in.get(id(t), -1) < j})
            produced = [id(t) for call in chunk for t in call.outputs
                        if id(t) in outputs or any(k > j for k in used_in.get(id(t), ()))]
            segments.append((needed, produced, chunk))
        # Keras must not track these (they hold inner's layers): a plain holder object.
        self._segments = _Untracked(segments)

    @staticmethod
    def _run(chunk, values, training):
        for call in chunk:
            call.run(values, training)

    def call(self, inputs, training=None):
        import tensorflow as tf

        values = {id(self.inner.inputs[0]): inputs}
        for needed, produced, chunk in self._segments.value:
            if not training:
                self._run(chunk, values, training)
                continue

            def segment(*args, needed=needed, produced=produced, chunk=chunk):
                local = dict(zip(needed, args))
                self._run(chunk, local, True)
                return [local[i] for i in produced]

            outs = tf.recompute_grad(segment)(*[values[i] for i in needed])
            values.update(zip(produced, outs if isinstance(outs, (list, tuple)) else [outs]))
        outs = [values[id(t)] for t in self.inner.outputs]
        return outs if len(outs) > 1 else outs[0]


class _Untracked:
    def __init__(self, value):
        self.value = value
