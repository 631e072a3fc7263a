"""liverzoo.maskfile: the label map on disk, and its NIfTI written slab by slab."""
import gzip

import nibabel as nib
import numpy as np
import pytest

from liverzoo import maskfile, streaming
from liverzoo.data import io

# Stored orientations: RAS, LPS with z flipped (slices stored head first), sagittal storage.
AFFINES = {
    "ras": np.diag([0.8, 0.7, 2.5, 1.0]),
    "lps_flipped_z": np.array([[-0.8, 0, 0, 10], [0, -0.7, 0, 20], [0, 0, -2.5, 30], [0, 0, 0, 1]]),
    "sagittal": np.array([[0, 0, 2.5, 0], [0.8, 0, 0, 0], [0, 0.7, 0, 0], [0, 0, 0, 1]]),
}


def test_read_write_counts_and_array():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (7, 5, 11)).astype(np.uint8)
    with maskfile.MaskFile(labels.shape) as masks:
        assert not np.asarray(masks).any()  # starts as zeros
        masks.write(0, labels[:, :, :4])
        masks.write(4, labels[:, :, 4:])
        np.testing.assert_array_equal(np.asarray(masks), labels)
        np.testing.assert_array_equal(masks.read(3, 9), labels[:, :, 3:9])
        np.testing.assert_array_equal(masks.counts(), np.bincount(labels.ravel(), minlength=3))
        block = masks.read(0, 2)
        block[:] = 0  # a read is a writable copy, not the file
        np.testing.assert_array_equal(masks.read(0, 2), labels[:, :, :2])
        with pytest.raises(ValueError, match="does not fit"):
            masks.write(10, labels[:, :, :2])


@pytest.mark.parametrize("orientation", sorted(AFFINES))
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_save_nifti_writes_the_file_save_mask_writes(tmp_path, orientation, suffix, monkeypatch):
    stored = np.random.default_rng(1).normal(size=(9, 8, 70)).astype(np.float32)
    ct_path = tmp_path / f"ct{suffix}"
    nib.save(nib.Nifti1Image(stored, AFFINES[orientation]), ct_path)
    reference = streaming.NiftiSlabs(str(ct_path))
    labels = np.random.default_rng(2).integers(0, 3, reference.shape).astype(np.uint8)
    monkeypatch.setattr(maskfile, "SLAB", 16)  # several slabs (70 slices: 16+16+16+16+6)
    whole, slabs = tmp_path / f"whole{suffix}", tmp_path / f"slabs{suffix}"
    io.save_mask(labels, io.load_nifti(str(ct_path)), whole)
    with maskfile.MaskFile(labels.shape) as masks:
        masks.write(0, labels)
        io.save_mask(masks, reference, slabs)

    def raw(path):
        return gzip.open(path).read() if suffix == ".nii.gz" else open(path, "rb").read()

    assert raw(slabs) == raw(whole)  # header and voxels, byte for byte
    np.testing.assert_array_equal(io.load_nifti(str(slabs), is_label=True).array, labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([ct_path.name, whole.name, slabs.name])


def test_save_nifti_refuses_a_mask_of_another_shape(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3), np.float32), np.eye(4)), tmp_path / "ct.nii")
    with maskfile.MaskFile((4, 4, 2)) as masks, pytest.raises(io.DataError, match="mask shape"):
        io.save_mask(masks, streaming.NiftiSlabs(str(tmp_path / "ct.nii")), tmp_path / "m.nii.gz")
    assert not (tmp_path / "m.nii.gz").exists()
