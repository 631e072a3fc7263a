"""Whole-volume segmentation in z-slabs: memory that does not grow with the scan's length.

`segment_slabs` is what `liverzoo.inference.segment` runs (Keras, SavedModel and LiteRT
alike). It never holds a float array of the whole volume:

1. The CT is read in z-slabs (`NiftiSlabs`: nibabel array proxies, `dataobj[..., z0:z1]`;
   a `.nii.gz` is read once, front to back, through one open file, or `indexed_gzip` when
   installed), padding is filled and each slab is resized in-plane to the working size
   (`liverzoo.data.preprocess.zoom_to`: a kept axis is sampled at its own voxels, so a slab
   resized alone equals the same slices of the whole volume resized). The working slices go
   to an unnamed temporary file, slice-major.
2. The preset's volume statistics (histogram equalisation's grey-level counts, the z-score's
   mean and standard deviation) are gathered from that file slab by slab.
3. `iter_probabilities` predicts in z order, reading each input stack or sub-volume with the
   halo it needs (a 2.5D stack: `T // 2 * stride` slices on each side; a 3D model: its
   overlapping windows), and hands over every slice whose scores are final; only the
   slices of the windows still open are kept.
4. Each finished block is resampled to the CT's plane and its argmax written into a uint8
   label map in a temporary file (`liverzoo.maskfile.MaskFile`), which is post-processed
   slab by slab (`liverzoo.postprocess.postprocess_slabs`) and handed back as an array or,
   with `as_file=True`, as the file (written to NIfTI slab by slab by
   `liverzoo.data.io.save_mask`): then nothing in memory grows with the scan's length.

The masks equal the whole-volume path's (`inference.predict_volume` on a preprocessed volume,
`probabilities_to_grid`) bit for bit, with one documented exception: the z-score's mean and
standard deviation are summed slab by slab in float64 instead of in one NumPy reduction;
they agree to float64 rounding, and the float32 values the model sees are the same on the
demo CT (tests/test_streaming.py). Presets that resample along z (`num_slices`,
`target_spacing`: 3DYNet) take the whole-volume path.

Example:
    >>> mask = segment_slabs(predict_fn, NiftiSlabs("ct.nii.gz"), layout=get_layout("2d"),
    ...                      preset="residual_unet", input_shape=(None, None, 5))  # doctest: +SKIP
"""
import itertools
import tempfile

import numpy as np

from liverzoo.data import preprocess
from liverzoo.errors import ConfigError, DataError
from liverzoo.layout import get_layout
from liverzoo.postprocess import OPENING_KEEP_ML, OPENING_MM

#: Native slices read (and resized) at a time: 16 x 512 x 512 float32 is 16 MB.
SLAB = 16


def iter_probabilities(predict_fn, take, size, *, layout, input_shape, stack_size=None, stride=1, window=20,
                       step=10, weighting="mean", batch_size=None, tta_flip=False, num_classes=3, progress=None,
                       pad_value=None):
    """Probabilities of a preprocessed volume, yielded in z order as they become final.

    The engine of `liverzoo.inference.predict_volume` (which documents the arguments):
    overlapping scores are accumulated per open slice and normalised by the summed window
    weights, so a slice leaves as soon as no later input covers it. A plane smaller than the
    model's fixed input is padded with `pad_value` (the normalised value of air, as the
    training sampler pads its patches) when it is given, and the padding's scores dropped.

    Args:
        predict_fn: `predict_fn(batch) -> probabilities`.
        take: `take(indices) -> (len(indices), X, Y)` float32 working slices (any order).
        size: `(X, Y, Z)` of the working volume.
        layout: an `InputLayout` or its name.
        input_shape, stack_size, stride, window, step, weighting, batch_size, tta_flip,
        num_classes, progress: as `predict_volume`.

    Yields:
        `(z0, block)`: float32 `(n, X, Y, C)` probabilities of slices `z0 .. z0 + n - 1`.
    """
    from liverzoo.inference import WEIGHTINGS, _axis_plan, _check_input_shape, _flips

    size_x, size_y, size_z = size
    layout = get_layout(layout)
    input_shape = _check_input_shape(layout, input_shape, size_z)
    if weighting not in WEIGHTINGS:
        raise ConfigError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
    tile_h, tile_w = layout.plane(input_shape)
    if layout.is_volume:
        depth = layout.stack(input_shape) or min(window, size_z)
    else:
        t, depth = layout.stack(input_shape), 1
        if stack_size is not None and stack_size != t:
            raise ConfigError(f"stack_size {stack_size} differs from the model's {t} input slices")
    tile_h, tile_w = tile_h or size_x, tile_w or size_y
    if (tile_h > size_x or tile_w > size_y) and pad_value is not None:
        padded_x, padded_y = max(tile_h, size_x), max(tile_w, size_y)

        def take_padded(indices):
            slices = take(indices)
            out = np.full((len(slices), padded_x, padded_y), pad_value, np.float32)
            out[:, :size_x, :size_y] = slices
            return out

        for z0, block in iter_probabilities(
                predict_fn, take_padded, (padded_x, padded_y, size_z), layout=layout, input_shape=input_shape,
                stack_size=stack_size, stride=stride, window=window, step=step, weighting=weighting,
                batch_size=batch_size, tta_flip=tta_flip, num_classes=num_classes, progress=progress):
            yield z0, block[:, :size_x, :size_y]
        return
    if tile_h > size_x or tile_w > size_y:
        raise DataError(
            f"the volume's plane {size_x}x{size_y} is smaller than the model's input {tile_h}x{tile_w}; "
            "pad it (pad_value=, as segment() does with air) or resize it to the model's input"
        )
    batch_size = batch_size or layout.default_batch
    xs, wx, total_x = _axis_plan(size_x, tile_h, max(tile_h // 2, 1), weighting)
    ys, wy, total_y = _axis_plan(size_y, tile_w, max(tile_w // 2, 1), weighting)
    if layout.is_volume:
        zs, wz, total_z = _axis_plan(size_z, depth, max(step, 1), weighting)
    else:
        from liverzoo.data.sampling import stack_indices

        zs, wz, total_z = list(range(size_z)), np.ones(1, np.float32), np.ones(size_z, np.float32)
    tile_weight = wx[:, None, None] * wy[None, :, None]
    plane_total = (total_x[:, None] * total_y[None, :])[..., None]

    def make_input(z, x, y):
        if not layout.is_volume:
            return np.moveaxis(take(np.asarray(stack_indices(z, size_z, t, stride)))[:, x : x + tile_h, y : y + tile_w],
                               0, -1)
        # Past the last slice (depth > Z), repeat the edge slice.
        idx = np.minimum(np.arange(z, z + depth), size_z - 1)
        return take(idx)[:, x : x + tile_h, y : y + tile_w, None]

    flips = _flips(tta_flip, layout.flip_axes)
    jobs = list(itertools.product(zs, xs, ys))
    # The output has the input's axes with C classes in place of the channel axis.
    expected = layout.input_shape((tile_h, tile_w), depth)[:-1] + (num_classes,)
    open_scores, next_out = {}, 0

    def scores_of(z):
        if z not in open_scores:
            open_scores[z] = np.zeros((size_x, size_y, num_classes), np.float32)
        return open_scores[z]

    for first in range(0, len(jobs), batch_size):
        chunk = jobs[first : first + batch_size]
        batch = np.stack([make_input(*job) for job in chunk])
        out = 0.0
        for axes in flips:
            probs = np.asarray(predict_fn(np.flip(batch, axes) if axes else batch), dtype=np.float32)
            if probs.shape != (len(chunk),) + expected:
                raise DataError(
                    f"the model returned shape {probs.shape} for input {batch.shape}; expected "
                    f"{(len(chunk),) + expected} ({num_classes} classes)"
                )
            out = out + (np.flip(probs, axes) if axes else probs)
        out = out / np.float32(len(flips))
        for (z, x, y), scores in zip(chunk, out):
            if not layout.is_volume:
                scores_of(z)[x : x + tile_h, y : y + tile_w] += scores * tile_weight
            else:
                for i in range(min(depth, size_z - z)):
                    scores_of(z + i)[x : x + tile_h, y : y + tile_w] += scores[i] * wz[i] * tile_weight
        if progress is not None:
            progress(min(chunk[-1][0] + depth, size_z), size_z)
        # Inputs come in z order: slices before the next input's first slice are complete.
        final = jobs[first + batch_size][0] if first + batch_size < len(jobs) else size_z
        if final > next_out:
            yield next_out, np.stack([open_scores.pop(z) / (plane_total * total_z[z]) for z in range(next_out, final)])
            next_out = final


class MemorySlabs:
    """Slabs of a `CTVolume` already in memory (DICOM series, or a caller's volume)."""

    def __init__(self, ct):
        self.ct, self.shape, self.spacing = ct, tuple(ct.array.shape), ct.spacing

    def read(self, z0, z1):
        """Canonical float32 HU `(X, Y, z1 - z0)`."""
        return np.asarray(self.ct.array[:, :, z0:z1], np.float32)


class NiftiSlabs:
    """A NIfTI CT read lazily in canonical (RAS+) z-slabs, with what `save_mask` needs.

    Has the attributes of `liverzoo.data.io.CTVolume` except `array` (`shape` instead), so
    masks are written back aligned with the file exactly as for a loaded volume.

    Args:
        path: a `.nii` or `.nii.gz` file.

    Raises:
        DataError: not a readable 3D NIfTI file.
    """

    def __init__(self, path):
        from liverzoo.data import io

        self.path, self.label, self.dicom_slices, self.case_id = str(path), None, None, None
        # One open file: slabs read front to back decompress a .nii.gz once (indexed_gzip,
        # when installed, also makes any order cheap).
        image, shape = io.open_nifti(self.path, keep_file_open=True)
        self._proxy = image.dataobj
        self.source_shape, self.source_affine = shape, image.affine
        self.source_ornt, self.affine = io.canonical_orientation(image.affine, shape, self.path)
        self.spacing = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        axes = self.source_ornt[:, 0].astype(int)
        self._z_axis = int(np.nonzero(axes == 2)[0][0])  # the stored axis that becomes canonical z
        self._z_flipped = self.source_ornt[self._z_axis, 1] < 0
        self.shape = tuple(int(shape[np.nonzero(axes == k)[0][0]]) for k in range(3))

    def read(self, z0, z1):
        """Canonical float32 HU `(X, Y, z1 - z0)` of canonical slices `z0 .. z1 - 1`."""
        from nibabel import orientations

        from liverzoo.data import io

        n = self.shape[2]
        lo, hi = (n - z1, n - z0) if self._z_flipped else (z0, z1)
        index = [slice(None)] * 3 + ([0] if len(self._proxy.shape) == 4 else [])
        index[self._z_axis] = slice(lo, hi)
        try:
            data = np.asarray(self._proxy[tuple(index)], np.float32)
        except Exception as e:  # EOF, zlib errors, short reads: the file is damaged
            raise DataError(f"{self.path}: the file is truncated or corrupt ({type(e).__name__}: {e})") from None
        io.check_finite(data, self.path)
        return np.asarray(orientations.apply_orientation(data, self.source_ornt), np.float32)

    def to_source(self, array_xyz):
        """Reorients a canonical `(X, Y, Z)` array back to the stored file's axis order."""
        from liverzoo.data import io

        return io.CTVolume.to_source(self, array_xyz)


class WorkingVolume:
    """The preprocessed working-grid slices of a CT, kept in a temporary file.

    Args:
        source: `NiftiSlabs` or `MemorySlabs`.
        preset: a preset name or `Preset` (without z resampling).
        plane: `(h, w)` working plane, or None for the CT's own.
        slab: native slices read at a time.
        antialias: smooth slices before they shrink (`preprocess.zoom_to`; the working plane
            at an in-plane spacing).
    """

    def __init__(self, source, preset, plane=None, slab=SLAB, antialias=False):
        self.preset = preprocess.get_preset(preset)
        size_x, size_y, size_z = source.shape
        self.plane = tuple(plane) if plane else (size_x, size_y)
        self.shape = self.plane + (size_z,)
        self._file = tempfile.TemporaryFile(prefix="liverzoo-working-")
        lo, hi = self.preset.window
        low, high, total = np.inf, -np.inf, 0.0
        for z0 in range(0, size_z, slab):
            z1 = min(z0 + slab, size_z)
            image = preprocess.zoom_to(preprocess.fill_padding(source.read(z0, z1)), self.plane + (z1 - z0,), 1,
                                       antialias=antialias)
            clipped = np.clip(image, np.float32(lo), np.float32(hi))
            low, high = min(low, float(clipped.min())), max(high, float(clipped.max()))
            total += float(clipped.sum(dtype=np.float64))
            self._file.write(np.ascontiguousarray(np.moveaxis(image, 2, 0)).tobytes())
        self._normalize = self._normalizer(low, high, total / (self.plane[0] * self.plane[1] * size_z))
        self._cache, self._cache_start = np.zeros((0,) + self.plane, np.float32), 0

    def _raw(self, z0, z1):
        """Working slices `z0 .. z1 - 1` before intensity normalisation, slice-major."""
        count = (z1 - z0) * self.plane[0] * self.plane[1]
        self._file.seek(z0 * self.plane[0] * self.plane[1] * 4)
        return np.fromfile(self._file, np.float32, count).reshape((z1 - z0,) + self.plane)

    def _slabs(self, slab=SLAB):
        for z0 in range(0, self.shape[2], slab):
            yield self._raw(z0, min(z0 + slab, self.shape[2]))

    def _normalizer(self, low, high, mean):
        """`apply_preset` as a per-slab function, with the volume's statistics."""
        preset, (lo, hi) = self.preset, self.preset.window
        if preset.normalization in ("linear", "ct_percentile"):
            return lambda raw: preprocess.apply_preset(raw, preset)
        if preset.normalization == "equalize":
            if high <= low:
                return lambda raw: np.zeros(raw.shape, np.float32)
            counts = sum(np.bincount(preprocess.grey_levels(preprocess.window_hu(raw, lo, hi, None), low, high).ravel(),
                                     minlength=256) for raw in self._slabs())
            mapping = preprocess.equalization_mapping(counts)
            return lambda raw: mapping[preprocess.grey_levels(preprocess.window_hu(raw, lo, hi, None), low, high)]
        # zscore: the deviation from the mean in a second pass, as np.std computes it.
        squares = sum(float(((preprocess.window_hu(raw, lo, hi, None).astype(np.float64) - mean) ** 2).sum()) for raw in self._slabs())
        std = max((squares / np.prod(self.shape)) ** 0.5, 1e-8)
        return lambda raw: ((preprocess.window_hu(raw, lo, hi, None) - np.float32(mean)) / np.float32(std)).astype(
            np.float32)

    def air_value(self):
        """The normalised value of air in this volume (what planes smaller than the model's input
        are padded with, as `liverzoo.data.tfrecord` pads training patches)."""
        return float(self._normalize(np.full((1, 1, 1), preprocess.AIR_HU, np.float32)).ravel()[0])

    def take(self, indices):
        """Normalised working slices at `indices` (sorted, close together), `(n, h, w)`."""
        first, last = int(indices.min()), int(indices.max()) + 1
        start, cached = self._cache_start, len(self._cache)
        if first < start or last > start + cached:
            # Read ahead: the next inputs need the slices just after these.
            end = min(max(last, first + SLAB), self.shape[2])
            self._cache, self._cache_start = self._normalize(self._raw(first, end)), first
        return self._cache[np.asarray(indices) - self._cache_start]

    def close(self):
        self._file.close()


def segment_slabs(predict_fn, source, *, layout, preset, input_shape, inplane_size=None, inplane_spacing=None,
                  postprocess=True, opening_mm=OPENING_MM, opening_keep_ml=OPENING_KEEP_ML, liver_threshold=None,
                  slab=SLAB, as_file=False, **predict_kwargs):
    """Labels of a CT on its own grid, predicted slab by slab (see the module docstring).

    Args:
        predict_fn: `predict_fn(batch) -> probabilities` (Keras wrapper or `LiteModel.predict`).
        source: `NiftiSlabs` (a file, read lazily) or `MemorySlabs` (a loaded `CTVolume`).
        layout: `InputLayout` or its name.
        preset: preprocessing preset (name or `Preset`) without z resampling.
        input_shape: the model's input shape without batch.
        inplane_size: working plane (None: the preset's; 0: the CT's).
        inplane_spacing: mm per pixel of the working plane instead of a fixed size
            (`liverzoo.data.preprocess.working_plane`); a plane smaller than the model's
            input is padded with air.
        postprocess: `liverzoo.postprocess.postprocess` on the finished mask (slab by slab).
        opening_mm: radius of its opening in mm (0: none).
        opening_keep_ml: pieces the opening cuts off stay when smaller than this (mL).
        liver_threshold: None for the argmax, else the liver-first rule of
            `liverzoo.inference.labels_from_probabilities`.
        slab: native slices read at a time.
        as_file: return the `MaskFile` instead of reading it into an array.
        **predict_kwargs: as `liverzoo.inference.predict_volume`.

    Returns:
        uint8 `(X, Y, Z)` label map, or its `MaskFile` (`as_file`).
    """
    from liverzoo.inference import probabilities_to_grid
    from liverzoo.maskfile import MaskFile
    from liverzoo.postprocess import postprocess_slabs

    preset = preprocess.get_preset(preset)
    if preset.num_slices is not None or preset.target_spacing is not None:
        raise ConfigError(f"preset {preset.name} resamples along z: use the whole-volume path")
    size = preset.inplane_size if inplane_size is None else (inplane_size or None)
    plane = preprocess.working_plane(source.shape, source.spacing, size, inplane_spacing)
    working = WorkingVolume(source, preset, plane, slab, antialias=bool(inplane_spacing))
    labels = MaskFile(source.shape)
    try:
        for z0, block in iter_probabilities(predict_fn, working.take, working.shape, layout=layout,
                                            input_shape=input_shape, pad_value=working.air_value(),
                                            **predict_kwargs):
            labels.write(z0, probabilities_to_grid(np.moveaxis(block, 0, 2), source.shape[:2] + (len(block),),
                                                   liver_threshold=liver_threshold))
    except BaseException:
        labels.close()
        raise
    finally:
        working.close()
    if postprocess:
        postprocess_slabs(labels, opening_mm=opening_mm, spacing=source.spacing, opening_keep_ml=opening_keep_ml)
    if as_file:
        return labels
    with labels:
        return np.asarray(labels)
