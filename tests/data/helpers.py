"""Small writers for test inputs: NIfTI files and a DICOM CT series (pydicom)."""
import os

import nibabel as nib
import numpy as np


def write_nifti(path, data, affine=None):
    """Writes `data` as NIfTI-1 with `affine` (default 1.5 x 1.5 x 2.5 mm) and returns the path."""
    affine = np.diag([1.5, 1.5, 2.5, 1.0]) if affine is None else affine
    image = nib.Nifti1Image(np.asarray(data), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, str(path))
    return str(path)


def write_dicom_series(folder, hu_xyz, affine_ras, *, slope=0.5, intercept=-1024.0, seed=0):
    """Writes a volume stored `(X, Y, Z)` with a RAS affine as a CT DICOM series.

    One file per slice, with names and InstanceNumbers in a shuffled order (so a reader that
    sorts by either gets it wrong), int16 pixels stored as `(HU - intercept) / slope`.
    Returns the folder.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    os.makedirs(folder, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine_ras, float)
    col_step, row_step = np.linalg.norm(lps[:3, 0]), np.linalg.norm(lps[:3, 1])
    iop = list(lps[:3, 0] / col_step) + list(lps[:3, 1] / row_step)
    series, study = generate_uid(), generate_uid()
    order = np.random.default_rng(seed).permutation(hu_xyz.shape[2])
    for position, k in enumerate(order):
        stored = np.rint((hu_xyz[:, :, k].T.astype(np.float64) - intercept) / slope).astype(np.int16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.Modality = "CT"
        ds.InstanceNumber = int(position + 1)
        ds.ImageOrientationPatient = [float(v) for v in iop]
        ds.ImagePositionPatient = [float(v) for v in lps @ np.array([0.0, 0.0, k, 1.0])][:3]
        ds.PixelSpacing = [float(row_step), float(col_step)]
        ds.SliceThickness = float(np.linalg.norm(lps[:3, 2]))
        ds.Rows, ds.Columns = stored.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.PixelData = stored.tobytes()
        ds.save_as(os.path.join(folder, f"IM{position:04d}.dcm"), enforce_file_format=True)
    return str(folder)


class FailingCase:
    """A case whose `load()` fails other than with DataError, in a worker: `how` is "raise"
    (RuntimeError) or "exit" (the process dies). Module-level so worker processes unpickle it."""

    def __init__(self, case_id, how):
        self.case_id, self.how = case_id, how

    def load(self):
        if self.how == "exit":
            os._exit(3)
        raise RuntimeError("simulated crash")
