"""Reading a DICOM CT series (one folder, one series) into a canonical `CTVolume`.

A clinical series arrives compressed (JPEG 2000, JPEG-LS: decoded by the pylibjpeg plugins the
package installs), sometimes tilted, sometimes mixed with other series or objects. Every such
case is one `DataError` naming the file or folder and what is wrong, before anything is computed.
The slice headers are kept on the volume (`CTVolume.dicom_slices`), so a DICOM SEG written for it
(`liverzoo.data.dicom_seg`) references the source instances.

Imports only NumPy, nibabel and pydicom (no TensorFlow).
"""
import os

import numpy as np

from liverzoo.data.io import AFFINE_TOLERANCE, CTVolume, _canonical, _spacing
from liverzoo.errors import DataError

#: Modalities accepted as an input series.
MODALITIES = ("CT",)
#: Largest in-plane drift (mm) of a slice off the line through the first one along the normal.
SHEAR_TOLERANCE = 0.01


def _decoder_packages(transfer_syntax):
    """The pip packages that decode `transfer_syntax` (a pydicom UID)."""
    from pydicom import uid

    if transfer_syntax in (uid.JPEG2000Lossless, uid.JPEG2000, uid.HTJ2KLossless, uid.HTJ2KLosslessRPCL, uid.HTJ2K):
        return "pylibjpeg pylibjpeg-openjpeg"
    if transfer_syntax in (uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit, uid.JPEGLossless, uid.JPEGLosslessSV1,
                           uid.JPEGLSLossless, uid.JPEGLSNearLossless):
        return "pylibjpeg pylibjpeg-libjpeg"
    return "python-gdcm"


def is_dicom_file(path):
    """True if `path` is a file with the DICOM Part 10 preamble ("DICM" at byte 128)."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def describe(ds):
    """A short name of what a dataset is: its modality and SOP class (e.g. "SEG (Segmentation Storage)")."""
    sop_class = ds.get("SOPClassUID") or getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID")
    name = getattr(sop_class, "name", None) or str(sop_class or "unknown SOP class")
    return f"{ds.get('Modality') or '?'} ({name})"


def check_not_a_series_file(path):
    """Raises a clear error for a single DICOM file given where a series folder is expected.

    Raises:
        DataError: always when `path` is a DICOM file; the message says what it holds.
    """
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    raise DataError(f"{path}: a single DICOM file, Modality {describe(ds)}; give the folder of a CT series")


def _read_files(folder):
    """The (file, dataset) pairs of the image files in `folder`; other DICOM objects are refused."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    slices = []
    for name in sorted(os.listdir(folder)):
        file = os.path.join(folder, name)
        if name.startswith(".") or not os.path.isfile(file):
            continue
        try:
            ds = pydicom.dcmread(file)
        except (InvalidDicomError, EOFError, OSError):
            continue  # not DICOM (a README, a thumbnail): not part of the series
        if "PixelData" not in ds:
            continue  # a DICOMDIR, a structured report: no image
        if ds.get("Modality") not in MODALITIES:
            raise DataError(f"{file}: Modality {describe(ds)}, not CT; give the folder of a CT series")
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise DataError(f"{file}: a multi-frame image ({ds.NumberOfFrames} frames); "
                            "give a series of single-slice CT images")
        slices.append((file, ds))
    if not slices:
        raise DataError(f"{folder}: no DICOM image slices found")
    return slices


def _check_headers(folder, slices):
    """One series, every slice placed, one orientation, one size; returns the orientation."""
    series = {str(ds.get("SeriesInstanceUID", "")) for _, ds in slices}
    if len(series) > 1:
        raise DataError(f"{folder}: holds {len(series)} DICOM series ({', '.join(sorted(series))}); "
                        "give a folder with one series")
    for file, ds in slices:
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if len(ds.get(keyword) or ()) == 0:
                raise DataError(f"{file}: no {keyword}: the slice cannot be placed in the volume")
    first_file, first = slices[0]
    iop = np.asarray(first.ImageOrientationPatient, float)
    shape2d = (int(first.Rows), int(first.Columns))
    for file, ds in slices:
        if (int(ds.Rows), int(ds.Columns)) != shape2d:
            raise DataError(f"{file}: slice size {ds.Rows}x{ds.Columns} differs from {shape2d[0]}x{shape2d[1]} "
                            f"of {os.path.basename(first_file)}")
        other = np.asarray(ds.ImageOrientationPatient, float)
        if np.abs(other - iop).max() > AFFINE_TOLERANCE:
            raise DataError(f"{file}: ImageOrientationPatient {other.round(4).tolist()} differs from "
                            f"{iop.round(4).tolist()} of {os.path.basename(first_file)}")
    return iop


def _sort_slices(folder, slices, normal):
    """Sorts the slices along the normal; checks for duplicates, uneven spacing and gantry tilt."""
    positions = np.array([np.asarray(ds.ImagePositionPatient, float) for _, ds in slices])
    order = np.argsort(positions @ normal, kind="stable")
    slices, positions = [slices[i] for i in order], positions[order]
    steps = np.diff(positions @ normal)
    if len(steps) and steps.min() < 1e-3:
        raise DataError(f"{folder}: two slices share the same position")
    if len(steps) and steps.max() - steps.min() > 0.01 * steps.mean() + 1e-3:
        raise DataError(f"{folder}: slice spacing is not uniform ({steps.min():.3f} to {steps.max():.3f} mm)")
    offsets = positions - positions[0]
    drift = np.linalg.norm(offsets - np.outer(offsets @ normal, normal), axis=1)
    if len(steps) and drift.max() > SHEAR_TOLERANCE:
        # A tilted gantry shifts each slice in-plane: the voxels are not a box grid.
        k = int(drift.argmax())
        angle = np.degrees(np.arctan2(drift[k], abs(offsets[k] @ normal)))
        tilt = slices[0][1].get("GantryDetectorTilt")
        raise DataError(f"{folder}: slices are not stacked along the slice normal (sheared by {angle:.2f} degrees: "
                        f"gantry tilt {tilt if tilt is not None else 'not recorded'}); resample the series "
                        "to an untilted grid first")
    return slices, positions


def _check_decoder(folder, transfer_syntax):
    """Raises one clear error when no installed plugin decodes the series' transfer syntax."""
    from pydicom.pixels.decoders.base import get_decoder

    try:
        available = get_decoder(transfer_syntax).is_available
    except NotImplementedError:  # a transfer syntax pydicom has no decoder for at all
        available = False
    if not available:
        raise DataError(f"{folder}: pixel data is stored as {transfer_syntax.name} ({transfer_syntax}) and no "
                        f"installed decoder reads it; install one: pip install {_decoder_packages(transfer_syntax)}")


def _hounsfield(file, ds, transfer_syntax):
    try:
        pixels = ds.pixel_array
    except Exception as e:  # truncated or corrupt pixel data; decoders raise many types
        raise DataError(f"{file}: cannot decode the {transfer_syntax.name} pixel data "
                        f"({type(e).__name__}: {e})") from None
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return pixels.astype(np.float32) * slope + intercept


def load_dicom_series(folder):
    """Loads a DICOM CT series (one folder, one series) into a canonical `CTVolume`.

    Slices are sorted by `ImagePositionPatient` projected on the slice normal (the cross
    product of the `ImageOrientationPatient` row and column directions), not by file name or
    `InstanceNumber`; `RescaleSlope` / `RescaleIntercept` are applied per slice. The DICOM
    LPS geometry is converted to the RAS affine NIfTI uses. Compressed pixel data (JPEG 2000,
    JPEG-LS, JPEG) is decoded by the pylibjpeg plugins.

    Args:
        folder: a folder of DICOM files; non-DICOM files and DICOM objects without pixel data
            (a DICOMDIR) in it are ignored.

    Returns:
        A `CTVolume` whose `source_affine` is the series' RAS affine in slice order (so
        `save_mask` writes a NIfTI aligned with the series) and whose `dicom_slices` holds the
        slice headers in that order (for `liverzoo.data.dicom_seg`).

    Raises:
        DataError: no slices; several series; a non-CT object (a SEG, a PET image) or a
            multi-frame image; a slice without ImagePositionPatient, ImageOrientationPatient or
            PixelSpacing; differing orientation or size; duplicate or unevenly spaced
            positions; gantry tilt; a transfer syntax no installed decoder reads (the message
            names it and the package to install); unreadable pixel data.

    Example:
        >>> ct = load_dicom_series("patient1/CT")  # doctest: +SKIP
    """
    folder = str(folder)
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: not a folder")
    slices = _read_files(folder)
    iop = _check_headers(folder, slices)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    slices, positions = _sort_slices(folder, slices, normal)
    first = slices[0][1]
    for transfer_syntax in {ds.file_meta.TransferSyntaxUID for _, ds in slices}:
        _check_decoder(folder, transfer_syntax)

    volume = np.empty((int(first.Columns), int(first.Rows), len(slices)), np.float32)  # (columns, rows, slices)
    for k, (file, ds) in enumerate(slices):
        volume[:, :, k] = _hounsfield(file, ds, ds.file_meta.TransferSyntaxUID).T
        del ds.PixelData  # keep the header only: the SEG writer needs no pixels

    row_spacing, col_spacing = (float(v) for v in first.PixelSpacing)
    if len(slices) > 1:
        slice_step = (positions[-1] - positions[0]) / (len(slices) - 1)
    else:
        slice_step = normal * float(first.get("SpacingBetweenSlices", first.get("SliceThickness", 1.0)) or 1.0)
    lps = np.eye(4)
    # Array axis 0 runs along a row (column index), axis 1 down a column (row index).
    lps[:3, 0] = row_dir * col_spacing
    lps[:3, 1] = col_dir * row_spacing
    lps[:3, 2] = slice_step
    lps[:3, 3] = positions[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # DICOM LPS -> NIfTI RAS
    array, canonical_affine, ornt = _canonical(volume, affine, folder)
    return CTVolume(np.ascontiguousarray(array), _spacing(canonical_affine), canonical_affine,
                    source_affine=affine, source_shape=volume.shape, source_ornt=ornt, path=folder,
                    dicom_slices=tuple(ds for _, ds in slices))
