"""Real CT model inputs: int8 calibration, verification and fine-tuning data.

`sample_inputs` cuts slice stacks or sub-volumes from preprocessed CT cases; `demo_inputs`
takes them from the embedded demo cases; `calibration_inputs` also reads the user's TFRecord
shards or arrays. Calibrate int8 on 1-channel CT, not 3-channel photos.
"""
import os

import numpy as np

from liverzoo.errors import ConfigError, DataError
from liverzoo.layout import layout_of


def demo_inputs(input_shape, preset, *, num_samples=16, inplane_spacing=None):
    """Real CT model inputs from the embedded demo cases (see `sample_inputs`).

    Args:
        input_shape: per-example model input shape, `(H, W, T)` or `(D, H, W, 1)`.
        preset: name in `liverzoo.data.preprocess.PRESETS`.
        num_samples: number of inputs (spread over the demo cases).
        inplane_spacing: the training run's working plane in mm a pixel, or None.

    Returns:
        float32 array `(num_samples,) + input_shape`.

    Example:
        >>> demo_inputs((64, 64, 7), "ds_nnunet", num_samples=4).shape
        (4, 64, 64, 7)
    """
    from liverzoo.data import demo

    return sample_inputs(demo.demo_cases(), input_shape, preset, num_samples=num_samples,
                         inplane_spacing=inplane_spacing)[0]


def sample_inputs(cases, input_shape, preset, *, num_samples=16, inplane_spacing=None):
    """Model inputs (and labels) from real CT cases, preprocessed as the model expects.

    Each case goes through `preprocess.prepare_volume` with `preset` (padding, in-plane size
    of the model, intensity), or with `inplane_spacing` on the plane of a run trained at that
    many mm a pixel, cut or padded with air around its centre to the model's input (inputs
    then show anatomy at the scale the model segments it at); then slice stacks `(H, W, T)`
    (T adjacent slices, edges repeated, `sampling.extract_stack`) or sub-volumes `(D, H, W, 1)`
    are taken at evenly spaced slice positions. Used to calibrate int8, to verify exported
    files and to fine-tune the test models.

    Args:
        cases: `liverzoo.data.io.CTVolume`s (`array`, `spacing`, `label` or None).
        input_shape: per-example model input shape.
        preset: name in `liverzoo.data.preprocess.PRESETS`.
        num_samples: number of inputs, spread over the cases.
        inplane_spacing: mm a pixel of the working plane (`preprocess.working_plane`), or
            None for the whole slice resized to the input.

    Returns:
        `(images float32 (N,) + input_shape, labels int32 (N, H, W) / (N, D, H, W) or None)`;
        labels are the centre slice's for stacks, None when a case has no label.

    Example:
        >>> images, labels = sample_inputs([ct], (8, 32, 32, 1), "lv_net", num_samples=2)
        >>> images.shape, labels.shape
        ((2, 8, 32, 32, 1), (2, 8, 32, 32))
    """
    from liverzoo.data import preprocess, sampling

    if preset is None:
        raise ConfigError("no preprocessing preset known for this model: pass preset=")
    preprocess.get_preset(preset)
    input_shape = tuple(input_shape)
    layout = layout_of(input_shape)
    height, width = layout.plane(input_shape)
    depth = layout.stack(input_shape)
    images, labels = [], []
    for k, case in enumerate(cases):
        count = num_samples // len(cases) + (k < num_samples % len(cases))
        if count == 0:
            continue
        if inplane_spacing:
            image, label, _ = preprocess.prepare_volume(case.array, case.spacing, preset, case.label,
                                                        inplane_spacing=inplane_spacing)
            plane = np.array(image.shape[:2])
            origin = sampling.patch_origin(plane, (height, width), center=plane // 2)
            air = preprocess.air_value(preset, image)
            image = sampling.crop_or_pad(image, origin, (height, width), pad_value=air)
            label = None if label is None else sampling.crop_or_pad(label, origin, (height, width))
        else:
            image, label, _ = preprocess.prepare_volume(
                case.array, case.spacing, preset, case.label, inplane_size=height if height == width else 0
            )
        if image.shape[:2] != (height, width):
            image = preprocess.resize_inplane(image, (height, width))
            label = None if label is None else preprocess.resize_inplane(label, (height, width), order=0)
        num_slices = image.shape[2]
        for centre in np.linspace(0, num_slices - 1, count + 2)[1:-1].round().astype(int):
            if layout.is_volume:
                index = np.clip(np.arange(depth) + centre - depth // 2, 0, num_slices - 1)
                images.append(np.transpose(image[:, :, index], (2, 0, 1))[..., None])
                labels.append(None if label is None else np.transpose(label[:, :, index], (2, 0, 1)))
            else:
                images.append(sampling.extract_stack(image, centre, depth))
                labels.append(None if label is None else label[:, :, centre])
    images = np.stack(images).astype(np.float32)
    if any(label is None for label in labels):
        return images, None
    return images, np.stack(labels).astype(np.int32)


def calibration_inputs(representative_data, input_shape, preset, *, num_samples=32, inplane_spacing=None):
    """Per-example float32 inputs for int8 calibration (see `convert_tflite`).

    Args:
        representative_data: None (demo CT), a TFRecord file pattern, or an array/iterable
            of inputs shaped `input_shape` or `(1,) + input_shape`.
        input_shape: per-example model input shape.
        preset: preprocessing preset (used for the demo CT).
        num_samples: at most this many inputs.
        inplane_spacing: for the demo CT, the training run's working plane (mm a pixel): the
            calibration inputs are drawn at that scale, as the runtime will feed the model.

    Returns:
        float32 array `(N,) + input_shape`, N >= 1.

    Example:
        >>> calibration_inputs("tfrecords/demo/train-*.tfrecord", (64, 64, 7), None).shape
        (32, 64, 64, 7)
    """
    input_shape = tuple(input_shape)
    if representative_data is None:
        return demo_inputs(input_shape, preset, num_samples=num_samples, inplane_spacing=inplane_spacing)
    if isinstance(representative_data, (str, os.PathLike)):
        items = _tfrecord_inputs(os.fspath(representative_data), input_shape, num_samples, preset)
        where = f"--representative_data={os.fspath(representative_data)}"
    else:
        items, where = representative_data, "representative_data"
    out = []
    for item in items:
        item = np.asarray(item, np.float32)
        if item.shape == (1,) + input_shape:
            item = item[0]
        if item.shape != input_shape:
            raise DataError(f"{where}: input of shape {item.shape}, the model takes {input_shape}")
        out.append(item)
        if len(out) == num_samples:
            break
    if not out:
        raise DataError(f"{where}: no calibration inputs")
    return np.stack(out)


def _tfrecord_inputs(pattern, input_shape, num_samples, preset):
    """Inputs sampled from the user's TFRecord shards (`liverzoo.data.tfrecord`)."""
    from liverzoo.data import tfrecord

    flag = f"--representative_data={pattern}"
    _, manifest = tfrecord.shard_files(pattern, split="all")
    written = ((manifest or {}).get("preset") or {}).get("name")
    if preset is not None and written is not None and written != preset:
        raise DataError(f"{flag}: shards were preprocessed with preset {written!r}, the model takes {preset!r}")
    layout = layout_of(input_shape)
    if layout.is_volume:
        kwargs = dict(mode="volume", patch_shape=layout.patch(input_shape))
    else:
        kwargs = dict(mode="dense", stack_size=layout.stack(input_shape), patch_shape=layout.patch(input_shape))
    dataset = tfrecord.make_dataset(pattern, batch_size=1, shuffle=True, repeat=True, seed=0, split="all",
                                    samples_per_case=max(1, num_samples // 4), **kwargs)
    for images, _ in dataset.take(num_samples):
        yield np.asarray(images)[0]
