"""Whole-volume inference for every model kind, with bounded memory (NumPy/SciPy only).

`predict_volume` runs a `predict_fn(batch) -> probabilities` over a preprocessed
`(X, Y, Z)` volume and returns `(X, Y, Z, C)` probabilities:

- 2D / 2.5D models (`kind="2d"`, input `(H, W, T)`): every slice is predicted from its
  T-slice stack, whose slice indices come from `liverzoo.data.sampling.stack_indices`
  (Eq. (1) of ../shared/papers/000_ebe0050d52f538d0.txt, stride `s`, edge slices repeated).
  Stacks are gathered batch by batch; the T-channel volume is never built.
- 3D models (`kind="3d"`, input `(D, H, W, 1)`): overlapping sub-volumes along z, by default
  LW-HCN's test setting (../shared/papers/001_bb2d5e6c0ac559d5.txt, Sec. 4: "sub-volumes
  ... every 10 slices. Each sub-volume consists of 20 sequential slices ... combining and
  averaging the scores"); `weighting="gaussian"` weights each window's scores by a Gaussian
  centred on the window (sigma = 1/8 of its size) instead.
- A model with a fixed in-plane size smaller than the volume's plane is run on overlapping
  in-plane tiles (half-tile step, same weighting); a model with `None` spatial dims takes the
  whole plane. A fixed depth larger than the volume repeats the edge slice, as Eq. (1) does.
- `tta_flip=True` averages the predictions of the input and its flips along X, Y and both.

Scores are accumulated in place into one `(Z, X, Y, C)` float32 buffer and normalised by the
summed weights, which factor per axis (window grids are products of 1D positions), so no
weight volume is stored either.

`segment` goes from a raw-HU `CTVolume` to a uint8 label map on the CT's grid: the model's
preset preprocessing (`liverzoo.data.preprocess.prepare_volume`: padding, in-plane resize to
the preset's working size, intensity), `predict_volume`, linear interpolation of the
probabilities back to the original grid slice by slice, argmax, and post-processing.

This module never imports TensorFlow at import time: `liverzoo.lite` runs it with a LiteRT
`predict_fn`. `keras_predict_fn` wraps a Keras model (and imports Keras only when called).

Example:
    >>> from liverzoo import inference
    >>> probs = inference.predict_volume(fn, image, kind="2d", input_shape=(None, None, 3))  # doctest: +SKIP
    >>> mask = inference.segment(model, ct, model_name="residual_unet")  # doctest: +SKIP
"""
import functools

import numpy as np

from liverzoo.errors import ConfigError, DataError
from liverzoo.layout import LAYOUTS, get_layout, layout_of
from liverzoo.postprocess import OPENING_KEEP_ML, OPENING_MM

KINDS = tuple(LAYOUTS)
WEIGHTINGS = ("mean", "gaussian")


def window_starts(size, window, step):
    """Start offsets of windows of length `window` every `step` covering `[0, size)`.

    The last window is aligned with the end, so every position is covered.

    Args:
        size: length of the axis.
        window: window length (at most `size`; a longer window gets one start, 0).
        step: distance between starts, >= 1.

    Returns:
        list of int.

    Example:
        >>> window_starts(45, 20, 10)
        [0, 10, 20, 25]
    """
    if window >= size:
        return [0]
    starts = list(range(0, size - window + 1, step))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def window_weights(length, weighting):
    """1D score weights of a window: ones ("mean") or a Gaussian, sigma = length / 8.

    Args:
        length: window length.
        weighting: "mean" or "gaussian".

    Returns:
        float32 array of `length` positive weights.

    Example:
        >>> window_weights(4, "mean").tolist()
        [1.0, 1.0, 1.0, 1.0]
    """
    if weighting == "mean":
        return np.ones(length, np.float32)
    centre, sigma = (length - 1) / 2.0, max(length / 8.0, 1e-3)
    return np.exp(-0.5 * ((np.arange(length) - centre) / sigma) ** 2).astype(np.float32)


def _axis_plan(size, window, step, weighting):
    """(starts, weights of one window, per-position weight sums) along one axis."""
    starts = window_starts(size, window, step)
    weights = window_weights(window, weighting)
    total = np.zeros(max(size, window), np.float32)
    for s in starts:
        total[s : s + window] += weights
    return starts, weights, total[:size]


def _check_input_shape(layout, input_shape, num_slices):
    input_shape = tuple(None if d is None else int(d) for d in input_shape)
    if not layout.is_volume and len(input_shape) == layout.rank and input_shape[-1] is None:
        # Stacks are gathered per slice: their size T cannot be left to the data.
        raise ConfigError(f"a 2d model takes (H, W, T) inputs with T known; got input shape {input_shape}")
    input_shape = layout.check(input_shape)
    if num_slices < 1:
        raise DataError("the volume has no slices")
    return input_shape


def _flips(tta_flip, axes):
    """Tuples of array axes to flip: none, X, Y, X and Y."""
    if not tta_flip:
        return [()]
    x, y = axes
    return [(), (x,), (y,), (x, y)]


def predict_volume(
    predict_fn,
    image_xyz,
    *,
    kind,
    input_shape,
    stack_size=None,
    stride=1,
    window=20,
    step=10,
    weighting="mean",
    batch_size=None,
    tta_flip=False,
    num_classes=3,
    progress=None,
    pad_value=None,
):
    """Class probabilities of every voxel of a preprocessed volume.

    Args:
        predict_fn: `predict_fn(batch ndarray float32) -> probabilities ndarray`; batch
            `(B, H, W, T)` -> `(B, H, W, C)` for "2d", `(B, D, H, W, 1)` -> `(B, D, H, W, C)`
            for "3d" (a Keras model: `keras_predict_fn(model)`; LiteRT: `LiteModel.predict`).
        image_xyz: `(X, Y, Z)` float32 volume, already preprocessed for the model.
        kind: "2d" (2D/2.5D, predicts the centre slice of a stack) or "3d" (or a
            `liverzoo.layout.InputLayout`, e.g. `spec.layout`).
        input_shape: the model's input shape without the batch axis; `None` spatial dims
            take the whole plane (and `window` slices for a 3D model).
        stack_size: slices per stack for "2d"; must equal T of `input_shape` (default T).
        stride: slice stride s of the stack (Eq. (1) of paper 000: 1 dense, 2 sparse).
        window: slices per sub-volume for a "3d" model with a free depth (paper 001: 20).
        step: slices between sub-volume starts (paper 001: 10).
        weighting: "mean" (plain average of overlapping scores) or "gaussian".
        batch_size: inputs per `predict_fn` call (default 8 stacks or 1 sub-volume).
        tta_flip: average over flips along X, Y and both (4x the work).
        num_classes: C, checked against the model's output.
        progress: optional `progress(done_slices, total_slices)` callback.
        pad_value: pad a plane smaller than the model's fixed input with this value (the
            normalised value of air); None: such a plane is an error.

    Returns:
        float32 array `(X, Y, Z, C)` (a view of a slice-major buffer).

    Raises:
        ConfigError: bad kind, input shape, stack size or weighting.
        DataError: the volume is smaller in-plane than the model's fixed input, or the
            model's output does not have the expected shape.

    Example:
        >>> fn = lambda b: np.repeat(b[..., :1] * 0 + 1 / 3, 3, axis=-1)
        >>> predict_volume(fn, np.zeros((8, 8, 5), np.float32), kind="2d", input_shape=(8, 8, 3)).shape
        (8, 8, 5, 3)
    """
    from liverzoo.streaming import iter_probabilities

    image_xyz = np.asarray(image_xyz, dtype=np.float32)
    if image_xyz.ndim != 3:
        raise DataError(f"expected an (X, Y, Z) volume, got shape {image_xyz.shape}")
    # Slice-major copy: a stack or sub-volume is then one contiguous gather.
    volume = np.ascontiguousarray(np.moveaxis(image_xyz, 2, 0))
    acc = None
    for z0, block in iter_probabilities(
        predict_fn, volume.__getitem__, image_xyz.shape, layout=kind, input_shape=input_shape,
        stack_size=stack_size, stride=stride, window=window, step=step, weighting=weighting,
        batch_size=batch_size, tta_flip=tta_flip, num_classes=num_classes, progress=progress, pad_value=pad_value,
    ):
        if acc is None:
            acc = np.empty((image_xyz.shape[2],) + block.shape[1:], np.float32)
        acc[z0 : z0 + len(block)] = block
    return np.moveaxis(acc, 0, 2)


def keras_predict_fn(model):
    """Wraps a Keras model as a `predict_fn` (the segmentation output only).

    The one Keras-to-probabilities wrapper: `segment`, `liverzoo.runtime` (`.keras` files),
    `liverzoo.export.verify_tflite` and the trainer's validation use it. Deep-supervision models
    return `[main, aux_1, ...]`; docs/design.md makes `outputs[0]` the segmentation, so only it is
    used. Keras is imported here, lazily. The model is called in one traced function
    (`model(batch, training=False)`), not through `predict_on_batch`: that also works inside a
    `tf.distribute` scope, where `predict_on_batch` would run the whole batch on every replica
    and concatenate the copies.

    Args:
        model: a Keras model taking `(B, H, W, T)` or `(B, D, H, W, 1)` inputs.

    Returns:
        `predict_fn(batch) -> float32 ndarray`.

    Raises (from the returned function):
        DataError: the model cannot take an input of the batch's shape.

    Example:
        >>> fn = keras_predict_fn(keras.models.load_model("lv_net.keras"))  # doctest: +SKIP
    """
    import tensorflow as tf

    # One trace per input shape, reused for the whole run (reduce_retracing: relaxed shapes).
    # A partial, not a lambda: TensorFlow counts traces by the function's code object, so every
    # model wrapped here (validation, segment, runtime) would add to one count and warn about
    # "excessive retracing" after a few models, although each traces once or twice.
    call = tf.function(functools.partial(_call_inference, model), reduce_retracing=True)

    def predict_fn(batch):
        try:
            out = call(tf.constant(batch, tf.float32))
        except (ValueError, tf.errors.InvalidArgumentError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DataError(
                f"model {model.name} cannot take an input of shape {tuple(batch.shape)}: {first}"
            ) from None
        if isinstance(out, dict):
            out = out[model.output_names[0]] if model.output_names[0] in out else next(iter(out.values()))
        if isinstance(out, (list, tuple)):
            out = out[0]
        return np.asarray(out, dtype=np.float32)

    return predict_fn


def _call_inference(model, batch):
    return model(batch, training=False)


def _interp_matrix(n_out, n_in):
    """(n_out, n_in) linear interpolation weights with edge-aligned grids.

    Same sampling as `scipy.ndimage.zoom(order=1, grid_mode=True, mode="nearest")`, which
    `liverzoo.data.preprocess` uses to go the other way: output voxel o samples input
    coordinate (o + 0.5) * n_in / n_out - 0.5, clamped to the edge voxels.
    """
    coords = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    lo = np.floor(coords).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = (coords - lo).astype(np.float32)
    matrix = np.zeros((n_out, n_in), np.float32)
    np.add.at(matrix, (np.arange(n_out), lo), 1 - frac)
    np.add.at(matrix, (np.arange(n_out), hi), frac)
    return matrix


def labels_from_probabilities(probs, liver_threshold=None):
    """Labels of `(..., C)` probabilities: the argmax, or with `liver_threshold` the liver first.

    With `liver_threshold` t a voxel is foreground (liver, tumor included) where the
    foreground classes' probabilities sum to at least t, and then the most probable of them
    (liver or tumor); elsewhere background. t = 0.5 asks "liver or not" before "which part of
    the liver", as the LiTS liver score counts tumor as liver; a lower t grows a mask that a
    model draws too small (see `tools/predict.py --liver_threshold`).

    Example:
        >>> p = np.array([[0.4, 0.35, 0.25]], np.float32)
        >>> labels_from_probabilities(p).tolist(), labels_from_probabilities(p, 0.5).tolist()
        ([0], [1])
    """
    if liver_threshold is None:
        return np.argmax(probs, axis=-1).astype(np.uint8)
    foreground = probs[..., 1:]
    return np.where(foreground.sum(axis=-1) >= liver_threshold, 1 + np.argmax(foreground, axis=-1), 0).astype(np.uint8)


def check_liver_threshold(liver_threshold, name="liver_threshold"):
    """`liver_threshold` as a float in (0, 1), or None; ConfigError naming `name` otherwise."""
    if liver_threshold is None:
        return None
    if isinstance(liver_threshold, bool) or not isinstance(liver_threshold, (int, float, np.floating)) or not (
            0 < liver_threshold < 1):
        raise ConfigError(f"{name} must be a probability between 0 and 1 (exclusive), got {liver_threshold!r}")
    return float(liver_threshold)


def probabilities_to_grid(probs, shape, *, out=None, liver_threshold=None):
    """Labels (and optionally probabilities) on another grid, by linear interpolation.

    Interpolates `(H, W, Z', C)` probabilities to `(X, Y, Z)` one output slice at a time
    (never materialising the full-size probabilities unless `out` is given) and takes the
    argmax (or, with `liver_threshold`, `labels_from_probabilities`' liver-first rule).

    Args:
        probs: `(H, W, Z', C)` probabilities on the working grid.
        shape: `(X, Y, Z)` of the original grid.
        out: optional float32 `(X, Y, Z, C)` array that receives the interpolated
            probabilities.
        liver_threshold: None for the argmax, else the foreground probability at which a
            voxel is liver (`labels_from_probabilities`).

    Returns:
        uint8 label map `(X, Y, Z)`.

    Example:
        >>> p = np.zeros((2, 2, 1, 2), np.float32); p[0, :, :, 1] = 1; p[1, :, :, 0] = 1
        >>> probabilities_to_grid(p, (4, 2, 1))[:, 0, 0].tolist()
        [1, 1, 0, 0]
    """
    h, w, depth, _ = probs.shape
    size_x, size_y, size_z = shape
    labels = np.empty(shape, np.uint8)
    same_plane = (h, w) == (size_x, size_y)
    mx, my = (None, None) if same_plane else (_interp_matrix(size_x, h), _interp_matrix(size_y, w))
    mz = _interp_matrix(size_z, depth)
    for z in range(size_z):
        taps = np.nonzero(mz[z])[0]
        plane = sum(mz[z, k] * probs[:, :, k] for k in taps)
        if not same_plane:
            plane = np.einsum("xh,hwc,yw->xyc", mx, plane, my, optimize=True)
        labels[:, :, z] = labels_from_probabilities(plane, liver_threshold)
        if out is not None:
            out[:, :, z] = plane
    return labels


def _resolve_model(model, spec, kind, preset, input_shape):
    """(predict_fn, layout, preset, input_shape) from a Keras model or a callable + hints."""
    if hasattr(model, "predict_on_batch") and hasattr(model, "outputs"):
        input_shape = input_shape or tuple(model.input_shape[1:])
        predict_fn = keras_predict_fn(model)
    else:
        if not callable(model):
            raise ConfigError(f"model must be a Keras model or a predict function, got {type(model).__name__}")
        input_shape = input_shape or getattr(model, "input_shape", None)
        predict_fn = model
    layout = get_layout(kind) if kind is not None else (spec.layout if spec is not None else None)
    preset = preset or (spec.preset if spec is not None else None)
    if input_shape is None and spec is not None:
        input_shape = spec.default_input_shape
    if layout is None and input_shape is not None and len(input_shape) in {lay.rank for lay in LAYOUTS.values()}:
        layout = layout_of(input_shape)
    missing = [n for n, v in (("kind", layout), ("preset", preset), ("input_shape", input_shape)) if v is None]
    if missing:
        raise ConfigError(f"cannot tell the model's {', '.join(missing)}: pass model_name (a zoo name) or them")
    return predict_fn, layout, preset, tuple(input_shape)


def segment(
    model,
    ct,
    *,
    model_name=None,
    spec=None,
    kind=None,
    preset=None,
    input_shape=None,
    inplane_size=None,
    inplane_spacing=None,
    postprocess=True,
    opening_mm=OPENING_MM,
    opening_keep_ml=OPENING_KEEP_ML,
    liver_threshold=None,
    return_probabilities=False,
    streaming=True,
    as_file=False,
    **predict_kwargs,
):
    """Liver/tumor label map of a raw-HU CT volume, on the CT's own grid.

    Args:
        model: a Keras model, or a `predict_fn` (e.g. a `liverzoo.lite.LiteModel`, whose
            `input_shape` attribute is used when `input_shape` is not given).
        ct: a `liverzoo.data.io.CTVolume` (canonical `(X, Y, Z)` HU, with spacing), or a
            `liverzoo.streaming.NiftiSlabs` (a NIfTI file read slab by slab).
        model_name: zoo name; its `liverzoo.models.SPECS` entry gives kind and preset.
        spec: a `ModelSpec` instead of `model_name`.
        kind: "2d" or "3d" (overrides the spec; needed for a bare predict_fn).
        preset: preprocessing preset name (overrides the spec).
        input_shape: the model's input shape without batch (default: the model's).
        inplane_size: working in-plane size (default: the preset's, e.g. 256 for
            residual_unet; 0 keeps the CT's plane).
        inplane_spacing: mm per pixel of the working plane instead of a fixed size, as the
            model was trained (`liverzoo.data.preprocess.working_plane`; a plane smaller than
            the model's input is padded with air).
        postprocess: apply `liverzoo.postprocess.postprocess` (an opening that cuts thin
            bridges, largest liver component, holes filled, tumor inside the liver).
        opening_mm: radius of that opening in mm (default `liverzoo.postprocess.OPENING_MM`,
            10; 0: none).
        opening_keep_ml: pieces that opening cuts off stay when smaller than this (mL;
            default `liverzoo.postprocess.OPENING_KEEP_ML`, 2; 0: the plain opening).
        liver_threshold: None (default) labels each voxel with its most probable class; a
            probability t in (0, 1) makes a voxel liver where liver and tumor together reach t
            (`labels_from_probabilities`; below 0.5 it grows the liver mask).
        return_probabilities: also return `(X, Y, Z, C)` float32 probabilities (whole-volume
            path).
        streaming: predict slab by slab (`liverzoo.streaming.segment_slabs`: no whole-volume
            float array; same masks). False runs the whole-volume reference path, which
            `return_probabilities` and presets that resample along z (ynet3d) also take.
        as_file: return the labels as a `liverzoo.maskfile.MaskFile` (a temporary file that
            `liverzoo.data.io.save_mask` writes slab by slab) instead of an array: with
            streaming, memory then does not grow with the scan's length.
        **predict_kwargs: passed to `predict_volume` (stride, window, step, weighting,
            batch_size, tta_flip, num_classes, progress).

    Returns:
        uint8 `(X, Y, Z)` labels 0/1/2 (a `MaskFile` with `as_file`), or `(labels, probabilities)`.

    Raises:
        ConfigError: the model's kind/preset/input shape cannot be determined.
        DataError: the volume does not fit the model.

    Example:
        >>> mask = segment(model, load_volume("ct.nii.gz"), model_name="residual_unet")  # doctest: +SKIP
    """
    from liverzoo.data.preprocess import air_value, prepare_volume
    from liverzoo.postprocess import postprocess as clean

    if spec is None and model_name is not None:
        from liverzoo.models import SPECS

        if model_name not in SPECS:
            raise ConfigError(f"unknown model {model_name!r}; valid names: {', '.join(sorted(SPECS))}")
        spec = SPECS[model_name]
    from liverzoo import streaming as slabs
    from liverzoo.data.preprocess import get_preset

    liver_threshold = check_liver_threshold(liver_threshold)
    predict_fn, layout, preset, input_shape = _resolve_model(model, spec, kind, preset, input_shape)
    resamples_z = get_preset(preset).num_slices is not None or get_preset(preset).target_spacing is not None
    if (streaming or isinstance(ct, slabs.NiftiSlabs)) and not return_probabilities and not resamples_z:
        source = ct if isinstance(ct, slabs.NiftiSlabs) else slabs.MemorySlabs(ct)
        return slabs.segment_slabs(predict_fn, source, layout=layout, preset=preset, input_shape=input_shape,
                                   inplane_size=inplane_size, inplane_spacing=inplane_spacing,
                                   postprocess=postprocess, opening_mm=opening_mm,
                                   opening_keep_ml=opening_keep_ml, liver_threshold=liver_threshold,
                                   as_file=as_file, **predict_kwargs)
    if isinstance(ct, slabs.NiftiSlabs):
        from liverzoo.data import io

        ct = io.load_nifti(ct.path)
    image, _, _ = prepare_volume(ct.array, ct.spacing, preset, inplane_size=inplane_size,
                                 inplane_spacing=inplane_spacing)
    # Handed over slice-major, so predict_volume needs no copy of its own.
    image = np.ascontiguousarray(np.moveaxis(image, 2, 0))
    predict_kwargs.setdefault("pad_value", air_value(preset, image))
    probs = predict_volume(predict_fn, np.moveaxis(image, 0, 2), kind=layout, input_shape=input_shape, **predict_kwargs)
    del image
    full = np.empty(ct.array.shape + (probs.shape[-1],), np.float32) if return_probabilities else None
    labels = probabilities_to_grid(probs, ct.array.shape, out=full, liver_threshold=liver_threshold)
    del probs  # the score buffer is not needed by post-processing
    if postprocess:
        labels = clean(labels, opening_mm=opening_mm, spacing=ct.spacing, opening_keep_ml=opening_keep_ml)
    if as_file:
        from liverzoo.maskfile import MaskFile

        masks = MaskFile(labels.shape)
        masks.write(0, labels)
        labels = masks
    return (labels, full) if return_probabilities else labels
