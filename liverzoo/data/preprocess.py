"""CT preprocessing as pure array functions, and the per-paper presets.

Every function takes and returns NumPy arrays (no TensorFlow import, so `liverzoo.lite`
can use it). `PRESETS` holds, per zoo model family, the intensity normalisation the paper
describes and the working geometry (in-plane size, slice count) the TFRecord writer uses:

| preset | paper | intensity | in-plane | slices |
|---|---|---|---|---|
| `lw_hcn` | 001 (LW-HCN) | clip [-200, 250] HU, linear to [-1, 1] | 512 | as is |
| `residual_unet` | 002 (Residual U-Net) | clip [-100, 200] HU, histogram equalisation to [0, 1] | 256 | as is |
| `ds_nnunet` | 000 (DS nnU-Net) | nnU-Net CT normalisation: clip to the 0.5/99.5 percentiles of foreground HU, z-score with the foreground mean/std | 512 | as is |
| `ynet3d` | 003 (3DYNet) | clip [-175, 250] HU, linear to [0, 1] | 256 | 64 |
| `lv_net` | 004 (LV-Net) | clip [-200, 200] HU, z-score over the volume | 256 | as is |
| `residual_unet_window`, `lv_net_window` | as their paper's | its window, linear to [0, 1] (no per-volume step) | as the paper's | as is |

The `_window` variants are what the demo trains with (`window_variant`): equalisation and
z-score depend on what else is in the scan, so a liver crop and a whole abdomen give the same
tissue different values.

Padding outside the scan field (-3024 or -2048 HU on many scanners) is replaced by air
(-1024 HU) before any resampling (`fill_padding`), so interpolation never blends the
artificial -3024 step into tissue and statistics are not pulled by it.
"""
import dataclasses

import numpy as np
from scipy import ndimage

from liverzoo.errors import ConfigError, DataError

#: Hounsfield value of air; what padding outside the scan field becomes.
AIR_HU = -1024.0
#: Voxels below this are padding, not patient: air is about -1000 HU, nothing is lower.
PADDING_THRESHOLD_HU = -1500.0


def fill_padding(volume_hu, threshold=PADDING_THRESHOLD_HU, value=AIR_HU):
    """Replaces padding outside the scan field (e.g. -3024 HU) by air.

    Args:
        volume_hu: array of Hounsfield units.
        threshold: voxels below it are padding.
        value: what they become.

    Returns:
        A float32 copy.

    Example:
        >>> fill_padding(np.array([-3024.0, -1000.0, 40.0])).tolist()
        [-1024.0, -1000.0, 40.0]
    """
    volume = np.array(volume_hu, dtype=np.float32)
    volume[volume < threshold] = value
    return volume


def window_hu(volume_hu, lo, hi, out_range=(0.0, 1.0)):
    """Clips HU to [lo, hi] and maps that range linearly to `out_range`.

    Like MONAI's `ScaleIntensityRange(a_min=lo, a_max=hi, b_min, b_max, clip=True)`.

    Args:
        volume_hu: array of Hounsfield units.
        lo: lower window bound (HU).
        hi: upper window bound (HU), > lo.
        out_range: `(min, max)` of the output, or None to return clipped HU.

    Returns:
        float32 array of the same shape.

    Example:
        >>> window_hu(np.array([-1000.0, 25.0, 400.0]), -200, 250, (-1, 1)).tolist()
        [-1.0, 0.0, 1.0]
    """
    if not hi > lo:
        raise ConfigError(f"window: upper bound {hi} must exceed lower bound {lo}")
    volume = np.clip(np.asarray(volume_hu, np.float32), lo, hi)
    if out_range is None:
        return volume
    b_min, b_max = out_range
    return ((volume - np.float32(lo)) * np.float32((b_max - b_min) / (hi - lo)) + np.float32(b_min)).astype(np.float32)


def equalize_histogram(volume, num_levels=256):
    """Histogram equalisation over the whole volume, output in [0, 1].

    The volume is quantised to `num_levels` grey levels between its minimum and maximum (an
    8-bit image for 256), and each level `v` maps to
    `(cdf(v) - cdf_min) / (N - cdf_min)`, the textbook formula (also OpenCV's
    `equalizeHist`): the lowest level goes to 0 and the highest to 1. One mapping per volume
    keeps adjacent slices of a 2.5D stack consistent.

    Args:
        volume: array (for the residual U-Net preset, HU windowed to [-100, 200]).
        num_levels: number of grey levels.

    Returns:
        float32 array in [0, 1].

    Example:
        >>> equalize_histogram(np.array([0.0, 0.0, 1.0, 3.0]), num_levels=4).tolist()
        [0.0, 0.0, 0.5, 1.0]
    """
    volume = np.asarray(volume, np.float32)
    lo, hi = float(volume.min()), float(volume.max())
    if hi <= lo:
        return np.zeros(volume.shape, np.float32)
    levels = grey_levels(volume, lo, hi, num_levels)
    return equalization_mapping(np.bincount(levels.ravel(), minlength=num_levels))[levels]


def grey_levels(volume, lo, hi, num_levels=256):
    """`equalize_histogram`'s quantisation: int32 levels of `volume` between `lo` < `hi`.

    Pointwise, so `liverzoo.streaming` quantises slab by slab with the volume's `lo`, `hi`.
    """
    return np.rint((np.asarray(volume, np.float32) - lo) * ((num_levels - 1) / (hi - lo))).astype(np.int32)


def equalization_mapping(counts):
    """Level -> [0, 1] value of `equalize_histogram`, from the counts of every grey level."""
    cdf = np.cumsum(counts)
    cdf_min = cdf[cdf > 0][0]
    return ((cdf - cdf_min) / max(cdf[-1] - cdf_min, 1)).astype(np.float32)


def zscore(volume, mask=None, eps=1e-8):
    """Standardises to zero mean and unit variance (statistics over `mask` if given).

    Args:
        volume: array.
        mask: optional boolean array of the same shape selecting the voxels for the statistics.
        eps: floor of the standard deviation.

    Returns:
        float32 array.

    Example:
        >>> zscore(np.array([1.0, 3.0])).tolist()
        [-1.0, 1.0]
    """
    volume = np.asarray(volume, np.float32)
    values = volume if mask is None else volume[mask]
    mean, std = values.mean(dtype=np.float64), values.std(dtype=np.float64)
    return ((volume - np.float32(mean)) / np.float32(max(std, eps))).astype(np.float32)


def resampled_shape(shape, spacing, target_spacing):
    """Shape after resampling `shape` voxels of `spacing` mm to `target_spacing` (None keeps an axis)."""
    target = [s if t is None else t for s, t in zip(spacing, target_spacing)]
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))


def working_plane(shape, spacing, inplane_size=None, inplane_spacing=None):
    """`(h, w)` plane a CT's slices are resized to for a model, or None to keep them.

    `inplane_spacing` (mm per pixel) draws every scan at one scale, whatever its field of view:
    a 500 mm slice at 3 mm is 167 pixels, a 300 mm one 100. Otherwise `inplane_size` gives a
    square plane (the whole slice stretched to it); 0 or None keeps the CT's plane.

    Example:
        >>> working_plane((512, 512, 20), (0.977, 0.977, 2.0), inplane_spacing=3.0)
        (167, 167)
        >>> working_plane((512, 400, 20), (1.0, 1.0, 2.0), inplane_size=128)
        (128, 128)
    """
    if inplane_spacing:
        return resampled_shape(shape[:2], spacing[:2], (inplane_spacing, inplane_spacing))
    if inplane_size:
        return (int(inplane_size), int(inplane_size))
    return None


def zoom_to(volume, shape, order, antialias=False):
    """Resamples `volume` to `shape` (order 1 linear, 0 nearest), voxel edges aligned.

    An axis whose size is kept is sampled at its own voxels, so resizing a z-slab in-plane
    gives exactly the slices of the whole volume resized (`liverzoo.streaming` relies on it).
    `antialias` first smooths each shrunk axis with a Gaussian of sigma `(factor - 1) / 2`
    (scikit-image's `resize(anti_aliasing=True)` rule), so a 0.8 mm scan drawn at 3 mm a pixel
    averages its tissue as a 3 mm reconstruction does instead of keeping the fine scan's noise.
    """
    volume = np.asarray(volume)
    if tuple(volume.shape) == tuple(shape):
        return volume
    factors = [n / o for n, o in zip(shape, volume.shape)]
    if antialias and order > 0 and any(f < 1 for f in factors):
        sigma = [max(0.0, (1 / f - 1) / 2) for f in factors]
        volume = ndimage.gaussian_filter(np.asarray(volume, np.float32), sigma, mode="nearest")
    # grid_mode aligns voxel edges (not centres): the output covers exactly the input extent,
    # so the new spacing is old spacing * old shape / new shape.
    out = ndimage.zoom(volume, factors, order=order, mode="nearest", grid_mode=True, prefilter=False)
    if out.shape != tuple(shape):  # zoom rounds; guard the exact shape
        raise DataError(f"resampling produced {out.shape}, expected {tuple(shape)}")
    return out


def resample(volume, spacing, target_spacing, order=1):
    """Resamples a volume to a target voxel spacing.

    Args:
        volume: `(X, Y, Z)` array.
        spacing: its voxel size in mm.
        target_spacing: wanted voxel size in mm; None for an axis keeps it.
        order: 1 (linear) for images, 0 (nearest) for labels.

    Returns:
        The resampled array (same dtype), shape `resampled_shape(...)`; its spacing is
        `spacing * volume.shape / new_shape` (equal to the target up to rounding).

    Example:
        >>> resample(np.zeros((100, 100, 40)), (0.8, 0.8, 2.5), (1.6, 1.6, None)).shape
        (50, 50, 40)
    """
    return zoom_to(volume, resampled_shape(np.shape(volume), spacing, target_spacing), order)


def resize_inplane(volume, size, order=1):
    """Resizes the X, Y axes of an `(X, Y, Z)` volume to `size`, keeping Z.

    Args:
        volume: `(X, Y, Z)` array.
        size: `(H, W)` or an int for a square size.
        order: 1 (linear) for images, 0 (nearest) for labels.

    Returns:
        `(H, W, Z)` array of the same dtype.

    Example:
        >>> resize_inplane(np.zeros((512, 512, 3), np.float32), 256).shape
        (256, 256, 3)
    """
    h, w = (size, size) if np.isscalar(size) else size
    return zoom_to(volume, (h, w, np.shape(volume)[2]), order)


# --- Presets ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Preset:
    """Intensity normalisation and working geometry of one model family.

    Attributes:
        name: key in `PRESETS`.
        paper: the paper file in shared/papers that specifies it.
        window: `(lo, hi)` HU clip (for "ct_percentile": the foreground 0.5/99.5 percentiles).
        normalization: "linear" (window to `out_range`), "equalize" (window, then histogram
            equalisation to [0, 1]), "zscore" (window, then z-score over the volume) or
            "ct_percentile" (clip to `window`, then `(x - mean) / std`, nnU-Net's CT scheme).
        out_range: output range of "linear".
        mean: foreground mean HU ("ct_percentile").
        std: foreground HU standard deviation ("ct_percentile").
        inplane_size: slices are resized to this square size (None keeps them).
        num_slices: volumes are resized to this many slices (None keeps them).
        target_spacing: `(x, y, z)` mm to resample to before resizing (None entries keep).
    """

    name: str
    paper: str
    window: tuple
    normalization: str = "linear"
    out_range: tuple = (0.0, 1.0)
    mean: float = 0.0
    std: float = 1.0
    inplane_size: int = None
    num_slices: int = None
    target_spacing: tuple = None

    def to_dict(self):
        """A JSON-friendly dict (the TFRecord manifest stores it)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, config):
        """Inverse of `to_dict`."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})


PRESETS = {
    "lw_hcn": Preset("lw_hcn", "001_bb2d5e6c0ac559d5.txt", (-200.0, 250.0), "linear", (-1.0, 1.0),
                     inplane_size=512),
    "residual_unet": Preset("residual_unet", "002_7138868b57b69ed8.txt", (-100.0, 200.0), "equalize",
                            inplane_size=256),
    # nnU-Net's CT statistics are dataset-level: these defaults are the liver+tumor voxels of
    # the embedded LiTS case 117 (tests recompute them); `write_dataset` recomputes them from
    # the training cases and stores the result in the manifest.
    "ds_nnunet": Preset("ds_nnunet", "000_ebe0050d52f538d0.txt", (24.0, 186.0), "ct_percentile",
                        mean=108.07, std=29.96, inplane_size=512),
    "ynet3d": Preset("ynet3d", "003_1722e7be9c09b159.txt", (-175.0, 250.0), "linear",
                     inplane_size=256, num_slices=64),
    "lv_net": Preset("lv_net", "004_e35520e2e41b14d6.txt", (-200.0, 200.0), "zscore", inplane_size=256),
}
_NORMALIZATIONS = ("linear", "equalize", "zscore", "ct_percentile")
#: Normalisations whose mapping depends on the volume's own content.
PER_VOLUME = ("equalize", "zscore")
#: The `_window` variant of every per-volume preset: the paper's window, linear to [0, 1].
PRESETS.update({f"{name}_window": dataclasses.replace(p, name=f"{name}_window", normalization="linear",
                                                      out_range=(0.0, 1.0))
                for name, p in list(PRESETS.items()) if p.normalization in PER_VOLUME})


def window_variant(name):
    """The name of `name`'s fixed-window variant (the name itself for a preset that has none).

    A per-volume normalisation maps the same HU to different values in different scans:
    histogram-equalised, the liver of the demo's three-slice dcmqi scan spreads over 0.29-0.86
    (10th-90th percentile) and that of the whole-abdomen totalseg scan over 0.65-0.89, both
    about 45 HU. The demo uses the window variant (`liverzoo.training.recipes.DEMO_FIXED_WINDOW`).

    Example:
        >>> window_variant("residual_unet"), window_variant("ynet3d")
        ('residual_unet_window', 'ynet3d')
    """
    return f"{name}_window" if f"{name}_window" in PRESETS else name


def get_preset(preset):
    """Returns the `Preset` for a name (or the `Preset` itself).

    Raises:
        ConfigError: unknown name; the message lists the valid ones.
    """
    if isinstance(preset, Preset):
        if preset.normalization not in _NORMALIZATIONS:
            raise ConfigError(f"preset {preset.name}: normalization must be one of {', '.join(_NORMALIZATIONS)}")
        return preset
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; valid presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[preset]


def preset_option(name, flag="--preset"):
    """`name` when it names a preset; ConfigError naming `flag` otherwise (the tools' `--preset`).

    Example:
        >>> preset_option("residual_unet_window")
        'residual_unet_window'
    """
    try:
        return get_preset(name).name
    except ConfigError as e:
        raise ConfigError(f"{flag}: {e}") from None


def apply_preset(array_hu, preset):
    """Applies a preset's intensity normalisation to a HU array.

    Args:
        array_hu: array of Hounsfield units (any shape).
        preset: a name in `PRESETS` or a `Preset`.

    Returns:
        float32 array of the same shape.

    Raises:
        ConfigError: unknown preset.

    Example:
        >>> apply_preset(np.array([-1000.0, 25.0, 400.0]), "lw_hcn").tolist()
        [-1.0, 0.0, 1.0]
    """
    preset = get_preset(preset)
    lo, hi = preset.window
    if preset.normalization == "linear":
        return window_hu(array_hu, lo, hi, preset.out_range)
    clipped = window_hu(array_hu, lo, hi, None)
    if preset.normalization == "equalize":
        return equalize_histogram(clipped)
    if preset.normalization == "zscore":
        return zscore(clipped)
    return ((clipped - np.float32(preset.mean)) / np.float32(max(preset.std, 1e-8))).astype(np.float32)


def air_value(preset, image):
    """The normalised value of air in a preprocessed `image` (what patches and planes are padded with).

    Per-volume normalisations ("zscore", "equalize") map air to the volume's minimum.
    """
    preset = get_preset(preset)
    if preset.normalization in PER_VOLUME:
        return float(np.min(image))
    return float(apply_preset(np.full((1, 1, 1), AIR_HU, np.float32), preset)[0, 0, 0])


def foreground_samples(array_hu, label, num_samples=10000, seed=0):
    """Up to `num_samples` HU values drawn from the labelled (liver/tumor) voxels.

    nnU-Net's fingerprint draws 10,000 foreground voxels per training case; the
    "ct_percentile" statistics are computed over the pooled samples (`ct_statistics`).
    """
    values = np.asarray(array_hu)[np.asarray(label) > 0]
    if values.size > num_samples:
        values = np.random.default_rng(seed).choice(values, num_samples, replace=False)
    return values.astype(np.float64)


def ct_statistics(samples):
    """(p0.5, p99.5, mean, std) of pooled foreground HU samples, as nnU-Net computes them.

    Example:
        >>> [round(v, 1) for v in ct_statistics(np.arange(1001.0))]
        [5.0, 995.0, 500.0, 289.0]
    """
    samples = np.concatenate([np.ravel(s) for s in samples]) if isinstance(samples, (list, tuple)) else samples
    if samples.size == 0:
        raise DataError("no labelled foreground voxels to compute CT normalisation statistics from")
    lo, hi = np.percentile(samples, [0.5, 99.5])
    return float(lo), float(hi), float(samples.mean()), float(samples.std())


def with_ct_statistics(preset, samples):
    """A copy of a "ct_percentile" preset with statistics from `samples` (others unchanged)."""
    preset = get_preset(preset)
    if preset.normalization != "ct_percentile":
        return preset
    lo, hi, mean, std = ct_statistics(samples)
    return dataclasses.replace(preset, window=(round(lo, 4), round(hi, 4)), mean=round(mean, 4), std=round(std, 4))


def prepare_volume(array_hu, spacing, preset, label=None, *, inplane_size=None, target_spacing=None,
                   inplane_spacing=None):
    """The full preprocessing of one case: padding, geometry, then intensity.

    Steps: `fill_padding`; `resample` to the target spacing (if any); `resize_inplane` to the
    preset's square in-plane size (non-square slices are stretched, as a plain resize does);
    resize to `num_slices` (3DYNet); `apply_preset`. Images are interpolated linearly,
    labels by nearest neighbour.

    Args:
        array_hu: `(X, Y, Z)` HU volume (canonical orientation).
        spacing: `(3,)` voxel size in mm.
        preset: name or `Preset`.
        label: optional `(X, Y, Z)` uint8 label.
        inplane_size: overrides the preset's in-plane size (0 keeps the slices as they are).
        target_spacing: overrides the preset's target spacing.
        inplane_spacing: mm per pixel of the working plane (`working_plane`); overrides
            `inplane_size` and the preset's.

    Resampling to a spacing (`target_spacing` or `inplane_spacing`) smooths the image before
    an axis shrinks (`zoom_to(antialias=True)`): every scan looks as if reconstructed at that
    spacing, and training shards written at a target spacing match what inference draws at
    the same in-plane spacing. A plain `inplane_size` stretch is not smoothed.

    Returns:
        `(image float32, label uint8 or None, spacing (3,) float)` after preprocessing.

    Example:
        >>> image, label, spacing = prepare_volume(ct.array, ct.spacing, "lv_net", ct.label)  # doctest: +SKIP
    """
    preset = get_preset(preset)
    size = preset.inplane_size if inplane_size is None else (inplane_size or None)
    target = preset.target_spacing if target_spacing is None else target_spacing
    spacing = np.asarray(spacing, float)
    image = fill_padding(array_hu)
    shape = image.shape
    if target is not None:
        shape = resampled_shape(shape, spacing, target)
    plane = working_plane(image.shape, spacing, size, inplane_spacing)
    if plane is not None:
        shape = plane + (shape[2],)
    if preset.num_slices is not None:
        shape = (shape[0], shape[1], preset.num_slices)
    new_spacing = spacing * np.asarray(image.shape) / np.asarray(shape)
    image = apply_preset(zoom_to(image, shape, 1, antialias=bool(inplane_spacing) or target is not None), preset)
    if label is not None:
        label = zoom_to(np.asarray(label, np.uint8), shape, 0)
    return image, label, new_spacing
