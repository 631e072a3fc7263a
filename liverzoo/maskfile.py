"""A uint8 label map kept in a temporary file and handled in z-slabs.

Whole-volume inference (`liverzoo.streaming`) writes each finished block of labels into a
`MaskFile` instead of a whole-volume array, post-processes it slab by slab
(`liverzoo.postprocess.postprocess_slabs`) and writes the NIfTI slab by slab (`save_nifti`),
so a longer scan costs disk, not memory. Reads and writes are explicit (seek, `readinto`,
`write`), not a memory map: mapped file pages would count in the process's resident set.

Example:
    >>> import numpy as np
    >>> masks = MaskFile((4, 4, 3))
    >>> masks.write(1, np.ones((4, 4, 2), np.uint8))
    >>> int(np.asarray(masks).sum()), masks.counts().tolist()
    (32, [16, 32, 0])
"""
import tempfile

import numpy as np

#: Slices read or written at a time: 32 x 512 x 512 labels are 8 MB (32 MB as int32 labels).
SLAB = 32


def slab_ranges(depth, slab=SLAB):
    """`(z0, z1)` of consecutive slabs covering `range(depth)`."""
    return [(z0, min(z0 + slab, depth)) for z0 in range(0, depth, max(int(slab), 1))]


class ArrayMask:
    """An in-memory `(X, Y, Z)` label array with `MaskFile`'s slab interface (read and write in place)."""

    def __init__(self, array):
        self.array, self.shape = array, tuple(array.shape)

    def read(self, z0, z1):
        return np.array(self.array[:, :, z0:z1], np.uint8)

    def write(self, z0, block):
        self.array[:, :, z0 : z0 + block.shape[2]] = block


class MaskFile:
    """A uint8 `(X, Y, Z)` label map in an unnamed temporary file, slice-major.

    Args:
        shape: `(X, Y, Z)`; the file starts as zeros.
        folder: where the temporary file goes (default: the system's temporary folder).
    """

    def __init__(self, shape, folder=None):
        self.shape = tuple(int(s) for s in shape)
        self._plane = self.shape[0] * self.shape[1]
        self._file = tempfile.TemporaryFile(prefix="liverzoo-mask-", dir=folder)
        self._file.truncate(self._plane * self.shape[2])

    def write(self, z0, block):
        """Writes `(X, Y, n)` labels as slices `z0 .. z0 + n - 1`."""
        block = np.asarray(block)
        if block.shape[:2] != self.shape[:2] or z0 < 0 or z0 + block.shape[2] > self.shape[2]:
            raise ValueError(f"block {block.shape} at z {z0} does not fit a mask of shape {self.shape}")
        data = np.ascontiguousarray(np.moveaxis(block.astype(np.uint8, copy=False), 2, 0))
        self._file.seek(z0 * self._plane)
        self._file.write(data.data)

    def read(self, z0, z1):
        """Labels of slices `z0 .. z1 - 1` as a writable uint8 `(X, Y, z1 - z0)` array."""
        count = (z1 - z0) * self._plane
        data = bytearray(count)
        self._file.seek(z0 * self._plane)
        if self._file.readinto(data) != count:  # a buffered file reads all it is asked for
            raise OSError(f"short read from the temporary mask file at slice {z0}")
        return np.moveaxis(np.frombuffer(data, np.uint8).reshape((z1 - z0,) + self.shape[:2]), 0, 2)

    def __array__(self, dtype=None, copy=None):
        """The whole map in memory (what a caller asking for an array gets)."""
        out = np.empty(self.shape, np.uint8)
        for z0, z1 in slab_ranges(self.shape[2]):
            out[:, :, z0:z1] = self.read(z0, z1)
        return out if dtype is None else out.astype(dtype)

    def counts(self, num_labels=3):
        """Voxels per label value `0 .. num_labels - 1` (int64)."""
        total = np.zeros(num_labels, np.int64)
        for z0, z1 in slab_ranges(self.shape[2]):
            total += np.bincount(self.read(z0, z1).ravel(), minlength=num_labels)[:num_labels]
        return total

    def close(self):
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def save_nifti(masks, reference, path):
    """Writes a `MaskFile` as uint8 NIfTI aligned with the reference's source file, slab by slab.

    The same file `liverzoo.data.io.save_mask` writes for the whole array (same header, same
    voxels), without holding it: source slabs along the stored last axis are consecutive
    bytes of the file. A reference stored with another axis as its slice axis (sagittal or
    coronal storage) is written from the whole array.

    Args:
        masks: a `MaskFile` in the canonical orientation of `reference`.
        reference: the `CTVolume` or `liverzoo.streaming.NiftiSlabs` it was computed on.
        path: output `.nii` or `.nii.gz` file (written to a temporary name, then renamed).
    """
    import nibabel as nib
    from nibabel import openers, orientations

    from liverzoo.data import io
    from liverzoo.errors import DataError

    if tuple(masks.shape) != tuple(reference.shape):
        raise DataError(f"{path}: mask shape {masks.shape} differs from the CT shape {tuple(reference.shape)}")
    axes = reference.source_ornt[:, 0].astype(int)
    z_axis = int(np.nonzero(axes == 2)[0][0])  # the stored axis that is canonical z
    if z_axis != 2:
        io.save_mask(np.asarray(masks), reference, path)
        return
    flipped = reference.source_ornt[2, 1] < 0
    back = orientations.ornt_transform(orientations.axcodes2ornt(("R", "A", "S")), reference.source_ornt)
    # The header save_mask's nibabel image gets (affine, qform/sform codes, pixdim, no scaling).
    image = nib.Nifti1Image(np.zeros((1, 1, 1), np.uint8), reference.source_affine)
    image.set_qform(reference.source_affine, code=1)
    image.set_sform(reference.source_affine, code=1)
    image.set_data_dtype(np.uint8)
    image.update_header()
    header = image.header
    header.set_data_shape(tuple(masks.shape[a] for a in axes))  # stored axis i is canonical axis axes[i]
    header.set_slope_inter(1.0, 0.0)  # what nibabel writes for uint8 data saved as uint8
    depth = masks.shape[2]

    def write(tmp):
        with openers.Opener(tmp, "wb") as f:
            header.write_to(f)
            f.write(b"\x00" * (int(header.get_data_offset()) - f.tell()))
            for s0, s1 in slab_ranges(depth):
                # Stored slices s0..s1 are canonical slices (depth - s1)..(depth - s0) when z is flipped.
                z0, z1 = (depth - s1, depth - s0) if flipped else (s0, s1)
                f.write(orientations.apply_orientation(masks.read(z0, z1), back).tobytes(order="F"))

    io.atomic_write(path, write)
