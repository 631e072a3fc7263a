"""Slice-stack (2.5D) and sub-volume (3D) sampling in NumPy.

This is the reference the tf.data reader (`liverzoo.data.tfrecord`) implements in graph ops,
and what inference uses to build stacks. Volumes are `(X, Y, Z)`; 2.5D stacks come out as
`(X, Y, T)` (slices as channels); 3D patches come out as `(D, H, W)` = `(Z, X, Y)`, the 3D
models' order.
"""
import numpy as np

from liverzoo.errors import ConfigError


def stack_offsets(num_slices_in_stack, stride=1):
    """Slice offsets of a stack relative to its centre slice: `(t - T // 2) * s`, t = 0..T-1.

    For T = 3 these are `-(T//2 + s - 1), 0, +(T//2 + s - 1)`, Eq. (1) of
    000_ebe0050d52f538d0.txt; for larger T the neighbours keep the same step s (s = 1 dense:
    adjacent slices, s = 2 sparse: every other slice).

    Example:
        >>> stack_offsets(7, 2).tolist()
        [-6, -4, -2, 0, 2, 4, 6]
    """
    t, s = num_slices_in_stack, stride
    if not (isinstance(t, (int, np.integer)) and t >= 1 and t % 2 == 1):
        raise ConfigError(f"stack size T must be a positive odd integer, got {t!r}")
    if not (isinstance(s, (int, np.integer)) and s >= 1):
        raise ConfigError(f"stack stride must be a positive integer, got {s!r}")
    return (np.arange(t) - t // 2) * s


def stack_indices(i, num_slices, T, stride=1):
    """Slice indices of the T-slice stack centred on slice i (Eq. 1 of the DS nnU-Net paper).

    Slices beyond either end of the volume repeat the edge slice, as the paper does.

    Args:
        i: centre slice, 0 <= i < num_slices.
        num_slices: slices in the volume.
        T: stack thickness (odd).
        stride: 1 for dense, 2 for sparse stacks.

    Returns:
        int64 array of T indices in [0, num_slices).

    Example:
        >>> stack_indices(0, 10, 3, 2).tolist()
        [0, 0, 2]
    """
    if not 0 <= i < num_slices:
        raise ConfigError(f"centre slice {i} outside a volume of {num_slices} slices")
    return np.clip(i + stack_offsets(T, stride), 0, num_slices - 1).astype(np.int64)


def extract_stack(volume_xyz, i, T, stride=1):
    """The `(X, Y, T)` stack of `volume_xyz` centred on slice i (see `stack_indices`).

    Example:
        >>> extract_stack(np.zeros((4, 4, 10)), 5, 7).shape
        (4, 4, 7)
    """
    return volume_xyz[:, :, stack_indices(i, volume_xyz.shape[2], T, stride)]


def patch_origin(shape, patch_shape, center=None, rng=None):
    """Corner of a patch: uniform over valid positions, or holding voxel `center`.

    Along an axis shorter than the patch the volume is centred in it (negative origin; the
    rest is padding). With `center`, the patch is centred on it and shifted to stay inside
    the volume, so it always contains `center`.

    Args:
        shape: volume shape.
        patch_shape: patch shape (same rank).
        center: a voxel index that the patch must contain, or None for a uniform draw.
        rng: `np.random.Generator` for the uniform draw.

    Returns:
        int64 array, the patch's first voxel (may be negative).
    """
    shape, size = np.asarray(shape), np.asarray(patch_shape)
    lo = np.minimum(0, (shape - size) // 2)
    hi = np.maximum(shape - size, lo)
    if center is None:
        return np.array([rng.integers(a, b + 1) for a, b in zip(lo, hi)], np.int64)
    return np.clip(np.asarray(center) - size // 2, lo, hi).astype(np.int64)


def crop_or_pad(volume, origin, patch_shape, pad_value=0):
    """The `patch_shape` block of `volume` starting at `origin`; outside voxels get `pad_value`.

    Crops the leading `len(patch_shape)` axes; any further axes (e.g. the T slices of a
    stack) are kept whole.

    Example:
        >>> crop_or_pad(np.ones((2, 2)), (-1, 0), (3, 2)).tolist()
        [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]
    """
    patch_shape = tuple(int(p) for p in patch_shape)
    out = np.full(patch_shape + volume.shape[len(patch_shape):], pad_value, dtype=volume.dtype)
    src, dst = [], []
    for o, n, p in zip(origin, volume.shape, patch_shape):
        a, b = max(int(o), 0), min(int(o) + p, n)
        src.append(slice(a, max(a, b)))
        dst.append(slice(a - int(o), a - int(o) + max(0, b - a)))
    out[tuple(dst)] = volume[tuple(src)]
    return out


def foreground_center(label, rng):
    """A random labelled voxel: first a class among those present (1, 2), then a voxel of it.

    nnU-Net's foreground oversampling picks a class first, so small tumors are sampled as
    often as the liver. Returns None if nothing is labelled.
    """
    classes = [c for c in (1, 2) if np.any(label == c)]
    if not classes:
        return None
    coords = np.argwhere(label == classes[rng.integers(len(classes))])
    return coords[rng.integers(len(coords))]


def sample_subvolume(volume_xyz, label_xyz, patch_shape, rng, foreground_fraction=0.5, pad_value=0.0):
    """Draws one 3D patch, foreground-centred with probability `foreground_fraction`.

    Args:
        volume_xyz: `(X, Y, Z)` preprocessed image.
        label_xyz: `(X, Y, Z)` labels.
        patch_shape: `(D, H, W)`, e.g. (12, 256, 256) for LW-HCN, (16, 256, 256) for LV-Net.
        rng: `np.random.Generator`.
        foreground_fraction: share of patches centred on a labelled voxel.
        pad_value: image value where the patch leaves the volume (label 0 there).

    Returns:
        `(image (D, H, W), label (D, H, W), origin (3,))`, origin in `(D, H, W)` order.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> img, lab, origin = sample_subvolume(np.zeros((64, 64, 20)), np.zeros((64, 64, 20), np.uint8),
        ...                                      (12, 32, 32), rng)
        >>> img.shape
        (12, 32, 32)
    """
    image = np.transpose(volume_xyz, (2, 0, 1))
    label = np.transpose(label_xyz, (2, 0, 1))
    center = foreground_center(label, rng) if rng.random() < foreground_fraction else None
    origin = patch_origin(image.shape, patch_shape, center, rng)
    return crop_or_pad(image, origin, patch_shape, pad_value), crop_or_pad(label, origin, patch_shape, 0), origin
