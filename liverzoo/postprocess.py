"""Post-processing of a predicted liver/tumor label map (NumPy/SciPy only).

The liver is one organ: keep the largest 3D connected component of the liver (tumor voxels
count as liver, so a tumor on the liver's rim joins it), fill the cavities enclosed by it,
and keep tumor only inside that liver. Many LiTS entries do this (e.g. Chlebus et al., 2018,
"object-based post-processing", cited by ../shared/papers/000_ebe0050d52f538d0.txt).

Example:
    >>> import numpy as np
    >>> from liverzoo.postprocess import postprocess
    >>> mask = np.zeros((9, 9, 9), np.uint8)
    >>> mask[1:6, 1:6, 1:6] = 1; mask[3, 3, 3] = 0; mask[8, 8, 8] = 2
    >>> out = postprocess(mask)
    >>> int(out[3, 3, 3]), int(out[8, 8, 8])
    (1, 0)
"""
import numpy as np
from scipy import ndimage

LIVER, TUMOR = 1, 2

# Full (26-neighbour) connectivity: liver lobes touching along an edge are one organ.
_STRUCTURE = ndimage.generate_binary_structure(3, 3)


def largest_component(mask):
    """The largest 26-connected component of a binary volume.

    Args:
        mask: boolean array (X, Y, Z).

    Returns:
        boolean array of the same shape (all False for an empty mask).

    Example:
        >>> m = np.zeros((5, 5, 5), bool); m[0:2, 0:2, 0:2] = True; m[4, 4, 4] = True
        >>> int(largest_component(m).sum())
        8
    """
    mask = np.asarray(mask, dtype=bool)
    box = ndimage.find_objects(mask.astype(np.uint8))
    if not box:
        return np.zeros_like(mask)
    # Label inside the bounding box only: int32 labels of a whole CT are 4 bytes a voxel.
    box = box[0]
    labels, count = ndimage.label(mask[box], structure=_STRUCTURE)
    out = np.zeros_like(mask)
    if count:
        # ndimage.histogram counts int32 labels in place; np.bincount would first copy
        # them to int64 (630 MB for a 512x512x300 box).
        sizes = ndimage.histogram(labels, 0, count, count + 1)
        sizes[0] = 0
        out[box] = labels == np.argmax(sizes)
    return out


def postprocess(mask, *, keep_largest=True, fill_holes=True, tumor_in_liver=True):
    """Cleans a predicted label map: one liver, no holes, tumor only inside the liver.

    Args:
        mask: label map (X, Y, Z) with 0 = background, 1 = liver, 2 = tumor.
        keep_largest: keep only the largest connected component of liver-or-tumor.
        fill_holes: label cavities fully enclosed by the liver (3D) as liver.
        tumor_in_liver: drop tumor voxels outside the kept liver (only acts together
            with `keep_largest`, which is what defines "the liver").

    Returns:
        uint8 label map of the same shape (a new array).

    Example:
        >>> m = np.zeros((6, 6, 6), np.uint8); m[1:4, 1:4, 1:4] = 2; m[5, 5, 5] = 1
        >>> int(postprocess(m).sum() // 2)
        27
    """
    mask = np.asarray(mask)
    out = mask.astype(np.uint8, copy=True)
    organ = out >= LIVER
    if keep_largest:
        liver = largest_component(organ)
        if tumor_in_liver:
            out[~liver] = 0
        else:
            out[organ & ~liver & (out == LIVER)] = 0
        organ = liver
    if fill_holes and organ.any():
        box = ndimage.find_objects(organ.astype(np.uint8))[0]
        filled = ndimage.binary_fill_holes(organ[box])
        region = out[box]
        region[filled & ~organ[box]] = LIVER
    return out
