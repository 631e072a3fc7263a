"""Reading CT volumes (NIfTI files, DICOM series) and writing masks back.

Every volume is brought to the closest canonical orientation (RAS+, as nibabel's
`as_closest_canonical`), so the last array axis is the slice (z) axis. The reorientation is
kept in the `CTVolume`, so `save_mask` writes a mask with the source file's affine, shape and
axis order: it opens aligned on the CT in 3D Slicer or ITK-SNAP.

This module imports only NumPy, nibabel and pydicom (no TensorFlow), so `liverzoo.lite`
can use it on machines without TensorFlow.
"""
import dataclasses
import gzip
import os
import pathlib
import re
import shutil
import tempfile
import zlib

import nibabel as nib
import numpy as np
from nibabel import orientations

from liverzoo.errors import DataError

#: Largest difference allowed between the image and label affines (mm, and direction cosines).
AFFINE_TOLERANCE = 1e-3
#: Label values of the LiTS convention: background, liver, tumor.
LABEL_VALUES = (0, 1, 2)
_CANONICAL = orientations.axcodes2ornt(("R", "A", "S"))


@dataclasses.dataclass
class CTVolume:
    """A CT volume in canonical (RAS+) orientation, with what is needed to write back.

    Attributes:
        array: `(X, Y, Z)` float32 Hounsfield units; Z is the slice axis.
        spacing: `(3,)` voxel size in mm along X, Y, Z.
        affine: 4x4 voxel-to-world (RAS mm) affine of `array`.
        label: `(X, Y, Z)` uint8 labels (0 background, 1 liver, 2 tumor) or None.
        source_affine: affine of the file as stored (for DICOM: the series in slice order).
        source_shape: shape of the file as stored.
        source_ornt: nibabel orientation (3x2) taking the stored axes to `array`'s axes.
        path: the image file or DICOM folder.
        label_path: the label file, or None.
        case_id: a name for the case (set by `CaseSource.load` and the demo data).
        dicom_slices: for a DICOM series, the slice headers (pydicom datasets without pixel
            data) in stored slice order, i.e. along the last axis of the stored array.
    """

    array: np.ndarray
    spacing: np.ndarray
    affine: np.ndarray
    label: np.ndarray = None
    source_affine: np.ndarray = None
    source_shape: tuple = None
    source_ornt: np.ndarray = None
    path: str = ""
    label_path: str = None
    case_id: str = None
    dicom_slices: tuple = dataclasses.field(default=None, repr=False)

    @property
    def shape(self):
        """`(X, Y, Z)` of the canonical array."""
        return self.array.shape

    def to_source(self, array_xyz):
        """Reorients a canonical `(X, Y, Z)` array back to the stored file's axis order."""
        back = orientations.ornt_transform(_CANONICAL, self.source_ornt)
        return orientations.apply_orientation(array_xyz, back)


@dataclasses.dataclass(frozen=True)
class CaseSource:
    """Where one case lives on disk: its id, image path (file or DICOM folder), label path."""

    case_id: str
    image: str
    label: str = None

    def load(self):
        """Loads the case with `load_case`."""
        volume = load_case(self.image, self.label)
        volume.case_id = self.case_id
        return volume


def canonical_orientation(affine, shape, path):
    """(orientation taking the stored axes to RAS+, canonical affine) of a stored array."""
    try:
        ornt = orientations.io_orientation(affine)
    except Exception as e:  # nibabel raises several types for singular affines
        raise DataError(f"{path}: the affine is not a valid voxel-to-world transform ({e})") from None
    if np.isnan(ornt).any():
        raise DataError(f"{path}: the affine is degenerate (an axis has zero length)")
    return ornt, affine @ orientations.inv_ornt_aff(ornt, shape)


def _canonical(data, affine, path):
    """Reorients `data` to RAS+; returns (array, canonical affine, orientation)."""
    ornt, canonical_affine = canonical_orientation(affine, data.shape, path)
    return orientations.apply_orientation(data, ornt), canonical_affine, ornt


def _spacing(affine):
    return np.sqrt((affine[:3, :3] ** 2).sum(axis=0))


def open_nifti(path, **load_kwargs):
    """(nibabel image, 3D shape) of a NIfTI volume, its voxels not read; DataError names the file."""
    path = str(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    try:
        image = nib.load(path, **load_kwargs)
    except Exception as e:  # nibabel raises ImageFileError, gzip/zlib errors, struct errors...
        raise DataError(f"{path}: not a readable NIfTI file: not NIfTI, or truncated/corrupt "
                        f"({type(e).__name__}: {e})") from None
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DataError(f"{path}: not a NIfTI file (nibabel reads it as {type(image).__name__})")
    shape = image.shape
    # A trailing singleton axis (X, Y, Z, 1) is how some tools store a 3D volume.
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise DataError(f"{path}: expected a 3D volume, got shape {image.shape} ({len(image.shape)}D)")
    return image, shape


def _read_nifti(path):
    """Returns (data as stored, affine) of a NIfTI file; DataError names the file."""
    image, shape = open_nifti(path)
    try:
        data = np.asanyarray(image.dataobj).reshape(shape)
    except (EOFError, OSError, zlib.error, ValueError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: the file is truncated or corrupt ({type(e).__name__}: {e})") from None
    return data, image.affine


def check_finite(data, path):
    """DataError naming the file when float voxels are NaN or infinite."""
    if np.issubdtype(data.dtype, np.floating):
        bad = np.count_nonzero(~np.isfinite(data))
        if bad:
            raise DataError(f"{path}: {bad} voxel(s) are NaN or infinite")


def _as_label(data, path):
    """Checks that label voxels are in {0, 1, 2} and returns them as uint8."""
    check_finite(data, path)
    lo, hi = data.min(), data.max()
    if lo >= 0 and hi <= 2 and (np.issubdtype(data.dtype, np.integer) or np.all(data == np.round(data))):
        return data.astype(np.uint8, copy=False)
    bad = data[(data < 0) | (data > 2) | (data != np.round(data))]
    shown = ", ".join(f"{v:g}" for v in np.unique(bad)[:8])
    raise DataError(f"{path}: label values must be in {{0, 1, 2}}, found {shown}")


def load_nifti(path, *, is_label=False):
    """Loads a NIfTI CT image (or label) into a canonical `CTVolume`.

    Args:
        path: a `.nii` or `.nii.gz` file.
        is_label: if True the voxels must be in {0, 1, 2}; they are returned in `label`
            (uint8) and `array` holds the same values as float32.

    Returns:
        A `CTVolume`; `array` is float32 HU in RAS+ orientation.

    Raises:
        DataError: the file is missing, not NIfTI, truncated, not 3D, or holds NaN/inf
            voxels (or label values outside {0, 1, 2}); the message names the file.

    Example:
        >>> ct = load_nifti("volume-0.nii.gz")  # doctest: +SKIP
        >>> ct.array.shape, ct.spacing  # doctest: +SKIP
        ((512, 512, 75), array([0.70, 0.70, 5.0]))
    """
    data, affine = _read_nifti(path)
    if is_label:
        label = _as_label(data, path)
        array, canonical_affine, ornt = _canonical(label, affine, path)
        return CTVolume(array.astype(np.float32), _spacing(canonical_affine), canonical_affine, label=array,
                        source_affine=affine, source_shape=data.shape, source_ornt=ornt, path=str(path))
    data = data.astype(np.float32, copy=False)
    check_finite(data, path)
    array, canonical_affine, ornt = _canonical(data, affine, path)
    return CTVolume(np.ascontiguousarray(array), _spacing(canonical_affine), canonical_affine,
                    source_affine=affine, source_shape=data.shape, source_ornt=ornt, path=str(path))


def load_volume(path):
    """Loads a CT image from a NIfTI file or a DICOM series folder.

    Args:
        path: a `.nii[.gz]` file or a folder of DICOM files of one series.

    Returns:
        A canonical `CTVolume` (no label).

    Raises:
        DataError: a bad file or series (see `load_nifti`, `liverzoo.data.dicom`), or a single
            DICOM file (a SEG, one slice) instead of a series folder.

    Example:
        >>> ct = load_volume("patient1/CT")  # doctest: +SKIP
    """
    if os.path.isdir(path):
        return load_dicom_series(path)
    from liverzoo.data import dicom

    if dicom.is_dicom_file(path):
        dicom.check_not_a_series_file(path)
    return load_nifti(path)


def load_case(image_path, label_path=None, *, affine_tolerance=AFFINE_TOLERANCE):
    """Loads a CT image and its label (LiTS convention) and checks that they belong together.

    Args:
        image_path: NIfTI file or DICOM folder.
        label_path: NIfTI label file, a DICOM SEG of the DICOM series `image_path` (see
            `load_label`), or None for an unlabelled case.
        affine_tolerance: largest allowed difference between the two (NIfTI) affines.

    Returns:
        A `CTVolume` with `label` set (uint8, same canonical shape as `array`).

    Raises:
        DataError: either file is bad, shapes differ, affines disagree, or label values are
            outside {0, 1, 2}.

    Example:
        >>> case = load_case("volume-3.nii", "segmentation-3.nii")  # doctest: +SKIP
        >>> case.array.shape == case.label.shape  # doctest: +SKIP
        True
    """
    volume = load_volume(image_path)
    if label_path is None:
        return volume
    volume.label = _label_on(volume, label_path, affine_tolerance)
    volume.label_path = str(label_path)
    return volume


def load_label(path, reference=None, *, affine_tolerance=AFFINE_TOLERANCE):
    """Loads a label map (LiTS values) from a NIfTI file or a DICOM SEG.

    A DICOM SEG (liverzoo's or another tool's, e.g. dcmqi's) is read onto the grid of the
    series it references, which must be `reference`; see `liverzoo.data.dicom_seg`.

    Args:
        path: `.nii[.gz]` label file, or a DICOM SEG file.
        reference: the image the labels belong to: a `CTVolume` or a path (NIfTI file or DICOM
            series folder). Required for a SEG; for a NIfTI label, when given, shape and affine
            must agree with it.
        affine_tolerance: largest allowed difference between the NIfTI label and image affines.

    Returns:
        A `CTVolume` with `label` set (uint8, canonical); with a reference, its geometry (and
        image) are the reference's.

    Raises:
        DataError: unreadable file, label values outside {0, 1, 2}, a label that does not fit
            the reference, a SEG without reference or referencing another series.

    Example:
        >>> seg = load_label("liver_seg.dcm", "patient1/CT")  # doctest: +SKIP
        >>> seg.label.shape == seg.array.shape  # doctest: +SKIP
        True
    """
    from liverzoo.data import dicom

    if reference is None:
        if dicom.is_dicom_file(path):
            raise DataError(f"{path}: a DICOM file; a DICOM SEG is read onto its source series: give that "
                            "series folder as the reference")
        return load_nifti(path, is_label=True)
    if not isinstance(reference, CTVolume):
        reference = load_volume(reference)
    return dataclasses.replace(reference, label=_label_on(reference, path, affine_tolerance),
                               label_path=str(path))


def _label_on(volume, label_path, affine_tolerance):
    """The canonical uint8 labels of `label_path` (NIfTI or DICOM SEG), checked against `volume`."""
    from liverzoo.data import dicom

    if dicom.is_dicom_file(label_path):
        from liverzoo.data import dicom_seg

        return dicom_seg.read_segmentation(label_path, volume)
    data, affine = _read_nifti(label_path)
    label = _as_label(data, label_path)
    # Compare in canonical space: a label stored in another axis order is still aligned.
    label, label_affine, _ = _canonical(label, affine, label_path)
    if label.shape != volume.array.shape:
        raise DataError(f"{label_path}: label shape {tuple(data.shape)} differs from image shape "
                        f"{tuple(volume.source_shape)} of {volume.path}")
    diff = np.abs(label_affine - volume.affine).max()
    if diff > affine_tolerance:
        raise DataError(f"{label_path}: label affine differs from the affine of {volume.path} by {diff:.4g} "
                        f"(tolerance {affine_tolerance:g})")
    return np.ascontiguousarray(label)


def save_mask(mask_xyz, reference, path):
    """Writes a canonical mask as uint8 NIfTI aligned with the reference's source file.

    The mask is put back in the source file's axis order and written with its affine, so it
    overlays the original CT (NIfTI or DICOM) in any viewer. The file is written to a
    temporary name beside `path` and renamed when complete.

    Args:
        mask_xyz: `(X, Y, Z)` integer mask in the canonical orientation of `reference`, or a
            `liverzoo.maskfile.MaskFile` (written slab by slab, `maskfile.save_nifti`).
        reference: the `CTVolume` (or `liverzoo.streaming.NiftiSlabs`) the mask was computed on.
        path: output `.nii` or `.nii.gz` file.

    Raises:
        DataError: wrong mask shape, values outside 0..255, or the folder is not writable.

    Example:
        >>> save_mask(pred, ct, "volume-0_pred.nii.gz")  # doctest: +SKIP
    """
    from liverzoo import maskfile

    if isinstance(mask_xyz, maskfile.MaskFile):
        return maskfile.save_nifti(mask_xyz, reference, path)
    mask_xyz = np.asarray(mask_xyz)
    if mask_xyz.shape != tuple(reference.shape):
        raise DataError(f"{path}: mask shape {mask_xyz.shape} differs from the CT shape {tuple(reference.shape)}")
    if mask_xyz.size and (mask_xyz.min() < 0 or mask_xyz.max() > 255):
        raise DataError(f"{path}: mask values must fit in uint8")
    data = np.ascontiguousarray(reference.to_source(mask_xyz.astype(np.uint8)))
    image = nib.Nifti1Image(data, reference.source_affine)
    image.set_qform(reference.source_affine, code=1)
    image.set_sform(reference.source_affine, code=1)
    image.set_data_dtype(np.uint8)
    atomic_write(path, lambda tmp: nib.save(image, tmp))


def current_umask():
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path, write):
    """Calls `write(tmp_path)` for a temporary name beside `path`, then renames it to `path`.

    The temporary name keeps the file's suffixes (nibabel picks compression from them).
    Nothing is left behind if `write` fails.

    Raises:
        DataError: the destination folder does not exist or is not writable.
    """
    path = pathlib.Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent or ".")
    except OSError as e:
        raise DataError(f"{path.parent}: cannot write there ({e.strerror})") from None
    os.close(fd)
    try:
        write(tmp)
        # mkstemp creates 0600 files; a mask must be readable as any file the user writes.
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_bytes(path, data):
    """Writes bytes (or text, as UTF-8) to `path` through `atomic_write`, creating its folder."""
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise DataError(f"{path}: cannot write there ({e.strerror or e}: {parent})") from None
    payload = data if isinstance(data, bytes) else data.encode("utf-8")

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(payload)

    atomic_write(path, write)


def atomic_write_folder(path, write):
    """Calls `write(tmp_folder)` for a new folder beside `path`, then renames it to `path`.

    An existing folder at `path` is replaced only once the new one is complete.

    Raises:
        DataError: `path` exists and is not a folder.
    """
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=parent)
    except OSError as e:
        raise DataError(f"{path}: cannot write there ({e.strerror or e}: {parent})") from None
    try:
        write(tmp)
        # mkdtemp creates the folder 0700; a served model must be readable as any folder the user makes.
        os.chmod(tmp, 0o777 & ~current_umask())
        if os.path.lexists(path) and not os.path.isdir(path):
            raise DataError(f"{path}: exists and is not a folder")
        if os.path.lexists(path):
            os.rename(path, tmp + "-old")
        os.rename(tmp, path)
    finally:
        for left in (tmp, tmp + "-old"):
            shutil.rmtree(left, ignore_errors=True)


def check_creatable_dir(folder, flag):
    """DataError naming `flag` unless `folder` is a writable folder or could be created as one;
    creates nothing (a tool checks its output before the work and writes only at the end).

    Example:
        >>> check_creatable_dir("/etc/passwd/out", "--output_dir")  # doctest: +SKIP
        DataError: --output_dir=/etc/passwd/out: /etc/passwd is not a folder
    """
    folder = os.path.abspath(os.fspath(folder))
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise DataError(f"{flag}={folder}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DataError(f"{flag}={folder}: {existing} is not writable")


def check_output_dir(folder):
    """Creates `folder` if needed and checks that files can be written in it.

    Raises:
        DataError: it cannot be created or written to; the message names it.
    """
    folder = str(folder)
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise DataError(f"{folder}: output folder is not writable ({e.strerror or e})") from None


# --- DICOM (liverzoo.data.dicom reads series, liverzoo.data.dicom_seg reads and writes SEG) -----


def load_dicom_series(folder):
    """Loads a DICOM CT series folder; see `liverzoo.data.dicom.load_dicom_series`."""
    from liverzoo.data import dicom

    return dicom.load_dicom_series(folder)


# --- Finding cases in a folder ---------------------------------------------------------------

_NIFTI = re.compile(r"^(?P<stem>.+?)\.nii(\.gz)?$")
_LITS = re.compile(r"^(?P<kind>volume|segmentation)-(?P<num>\d+)\.nii(\.gz)?$")


def nifti_case(path):
    """The case name of a NIfTI file (`dir/volume-3.nii.gz` -> "volume-3"), None for another file."""
    match = _NIFTI.match(os.path.basename(path))
    return match["stem"] if match else None

def _visible_files(folder):
    # macOS archives (the Decathlon tarballs among them) carry "._name" resource files.
    return sorted(n for n in os.listdir(folder) if not n.startswith(".") and os.path.isfile(os.path.join(folder, n)))


def find_cases(input_dir):
    """Lists the labelled cases in a LiTS-named or Decathlon-layout folder.

    LiTS: `volume-N.nii[.gz]` with `segmentation-N.nii[.gz]` in one folder (case id
    `volume-N`). Decathlon: `imagesTr/NAME.nii.gz` with `labelsTr/NAME.nii.gz` (case id
    `NAME`). Files whose name starts with "." are ignored.

    Args:
        input_dir: the folder.

    Returns:
        A list of `CaseSource`, sorted by case number / name.

    Raises:
        DataError: the folder is missing, holds no cases, or an image has no label (or a
            label no image); the message lists the unpaired files.

    Example:
        >>> [c.case_id for c in find_cases("LiTS/train")]  # doctest: +SKIP
        ['volume-0', 'volume-1', ...]
    """
    input_dir = str(input_dir)
    if not os.path.isdir(input_dir):
        raise DataError(f"{input_dir}: input folder does not exist")
    images_tr, labels_tr = os.path.join(input_dir, "imagesTr"), os.path.join(input_dir, "labelsTr")
    if os.path.isdir(images_tr) or os.path.isdir(labels_tr):
        images, labels = {}, {}
        for folder, into in ((images_tr, images), (labels_tr, labels)):
            if os.path.isdir(folder):
                for name in _visible_files(folder):
                    match = _NIFTI.match(name)
                    if match:
                        into[match["stem"]] = os.path.join(folder, name)
        keys = sorted(images, key=_natural_key)
        pairs = [CaseSource(k, images[k], labels.get(k)) for k in keys]
        unpaired = [images[k] for k in images if k not in labels] + [labels[k] for k in labels if k not in images]
    else:
        found = {"volume": {}, "segmentation": {}}
        for name in _visible_files(input_dir):
            match = _LITS.match(name)
            if match:
                found[match["kind"]][int(match["num"])] = os.path.join(input_dir, name)
        images, labels = found["volume"], found["segmentation"]
        pairs = [CaseSource(f"volume-{n}", images[n], labels.get(n)) for n in sorted(images)]
        unpaired = [images[n] for n in images if n not in labels] + [labels[n] for n in labels if n not in images]
    if unpaired:
        raise DataError(f"{input_dir}: unpaired files (image without label or label without image): "
                        + ", ".join(sorted(unpaired)))
    if not pairs:
        raise DataError(f"{input_dir}: no cases found (expected volume-N.nii[.gz] + segmentation-N.nii[.gz], "
                        "or imagesTr/ + labelsTr/)")
    return pairs


def _natural_key(name):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
