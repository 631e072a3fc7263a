"""liverzoo.data.io: canonical loading vs nibabel, masks written back aligned, DICOM vs NIfTI,
every bad input a DataError naming the file, case discovery, and no TensorFlow import."""
import os
import pathlib
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from liverzoo.data import io
from liverzoo.errors import DataError
from tests.data.helpers import write_dicom_series, write_nifti

REAL_DICOM = pathlib.Path(__file__).resolve().parent / "dicom"

REAL = [  # (image, label, stored orientation)
    ("lits117_crop128_ct.nii.gz", "lits117_crop128_seg.nii.gz", "RPI"),
    ("totalseg_example_ct_sm.nii.gz", "totalseg_example_liver_pred.nii.gz", "RAS"),
    ("dcmqi_3slice_ct.nii.gz", "dcmqi_3slice_liver.nii.gz", "LPS"),
]


@pytest.mark.parametrize("image,label,orientation", REAL)
def test_real_case_is_canonical_like_nibabel(real_ct_dir, image, label, orientation):
    ct = io.load_case(real_ct_dir / image, real_ct_dir / label)
    reference = nib.as_closest_canonical(nib.load(real_ct_dir / image))
    assert "".join(nib.aff2axcodes(nib.load(real_ct_dir / image).affine)) == orientation
    np.testing.assert_array_equal(ct.array, reference.get_fdata(dtype=np.float32))
    np.testing.assert_allclose(ct.affine, reference.affine)
    np.testing.assert_allclose(ct.spacing, reference.header.get_zooms()[:3], rtol=1e-6)
    assert ct.array.dtype == np.float32 and ct.label.dtype == np.uint8
    expected_label = np.asarray(nib.as_closest_canonical(nib.load(real_ct_dir / label)).dataobj)
    np.testing.assert_array_equal(ct.label, expected_label)


@pytest.mark.parametrize("image,label,orientation", REAL)
def test_save_mask_reproduces_the_source_file(real_ct_dir, tmp_path, image, label, orientation):
    ct = io.load_case(real_ct_dir / image, real_ct_dir / label)
    out = tmp_path / "mask.nii.gz"
    io.save_mask(ct.label, ct, out)
    written, source = nib.load(out), nib.load(real_ct_dir / label)
    assert written.shape == source.shape and written.get_data_dtype() == np.uint8
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(written.dataobj), np.asarray(source.dataobj))
    assert os.listdir(tmp_path) == ["mask.nii.gz"]  # no temporary file left
    # Readable like any file the user writes (mkstemp alone would leave it 0600).
    assert os.stat(out).st_mode & 0o777 == 0o666 & ~io.current_umask()


def test_dicom_series_agrees_with_nifti(real_ct_dir, tmp_path):
    nifti = real_ct_dir / "dcmqi_3slice_ct.nii.gz"
    stored = nib.load(nifti)
    folder = write_dicom_series(tmp_path / "dicom", np.asarray(stored.dataobj), stored.affine)
    (tmp_path / "dicom" / "README.txt").write_text("not DICOM")  # ignored
    from_dicom, from_nifti = io.load_volume(folder), io.load_volume(nifti)
    np.testing.assert_array_equal(from_dicom.array, from_nifti.array)  # incl. the -3024 padding
    np.testing.assert_allclose(from_dicom.affine, from_nifti.affine, atol=1e-4)
    np.testing.assert_allclose(from_dicom.spacing, from_nifti.spacing, rtol=1e-6)
    # A mask written for the DICOM series lands on the same world grid.
    io.save_mask(from_dicom.array > 0, from_dicom, tmp_path / "mask.nii")
    back = io.load_nifti(tmp_path / "mask.nii")
    np.testing.assert_array_equal(back.array, (from_nifti.array > 0).astype(np.float32))
    np.testing.assert_allclose(back.affine, from_nifti.affine, atol=1e-4)


def test_dicom_oblique_z_flipped_phantom_agrees_with_nifti(tmp_path):
    from liverzoo.data.phantom import make_phantom

    hu, _ = make_phantom((24, 20, 9), seed=3, fov_padding=True)
    angle = np.deg2rad(10)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.7, 0.9, -2.0])  # slices stored superior to inferior
    affine[:3, 3] = [10.0, -20.0, 35.0]
    folder = write_dicom_series(tmp_path / "dicom", hu, affine, seed=1)
    nifti = write_nifti(tmp_path / "ct.nii.gz", hu, affine)
    from_dicom, from_nifti = io.load_dicom_series(folder), io.load_nifti(nifti)
    np.testing.assert_array_equal(from_dicom.array, from_nifti.array)
    np.testing.assert_allclose(from_dicom.affine, from_nifti.affine, atol=1e-4)


def _dicom_two_series(tmp_path):
    hu = np.zeros((4, 4, 2), np.int16)
    write_dicom_series(tmp_path / "d", hu, np.eye(4))
    write_dicom_series(tmp_path / "d2", hu, np.eye(4))
    os.rename(tmp_path / "d2" / "IM0000.dcm", tmp_path / "d" / "other.dcm")
    return tmp_path / "d"


def _dicom_edited(edit, affine=None):
    """A maker of a 3-slice series in which `edit(ds, first_slice)` changed the slice stored second."""
    import pydicom

    def make(tmp_path):
        folder = write_dicom_series(tmp_path / "d", np.zeros((4, 4, 3), np.int16),
                                    np.eye(4) if affine is None else affine, seed=0)
        ds = pydicom.dcmread(os.path.join(folder, "IM0001.dcm"))
        edit(ds, pydicom.dcmread(os.path.join(folder, "IM0000.dcm")))
        ds.save_as(os.path.join(folder, "IM0001.dcm"))
        return folder

    return make


def _set(keyword, value):
    return lambda ds, first: setattr(ds, keyword, value(first) if callable(value) else value)


def _uneven(ds, first):
    ds.ImagePositionPatient = [*first.ImagePositionPatient[:2], float(first.ImagePositionPatient[2]) + 0.5]


_TILTED = np.array([[1.0, 0, 0, 0], [0, 1.0, 0.35, 0], [0, 0, 2.0, 0], [0, 0, 0, 1]])  # 10 degrees gantry tilt


def _real_copy(tmp_path, name="dcmqi_ct3slice"):
    return shutil.copytree(REAL_DICOM / name, tmp_path / name)


def _seg_in_ct_folder(tmp_path):
    folder = _real_copy(tmp_path)
    shutil.copy(REAL_DICOM / "dcmqi_liver_seg.dcm", folder / "seg.dcm")
    return folder


def _corrupt_jpeg2000(tmp_path):
    import pydicom

    folder = _real_copy(tmp_path, "totalseg_ct_series")
    file = sorted(folder.iterdir())[3]
    ds = pydicom.dcmread(file)
    frame = pydicom.encaps.get_frame(ds.PixelData, 0, number_of_frames=1)
    ds.PixelData = pydicom.encaps.encapsulate([frame[: len(frame) // 3]])
    ds.save_as(file)
    return folder


@pytest.mark.parametrize("make,message", [
    (lambda p: (p / "empty").mkdir() or p / "empty", "no DICOM image slices"),
    (_dicom_two_series, "2 DICOM series"),
    (_dicom_edited(_set("ImagePositionPatient", lambda first: first.ImagePositionPatient)), "same position"),
    (_dicom_edited(lambda ds, first: delattr(ds, "ImagePositionPatient")),
     r"IM0001.dcm: no ImagePositionPatient: the slice cannot be placed"),
    (_dicom_edited(_set("ImageOrientationPatient", [1.0, 0, 0, 0, 0.98, 0.2])),
     r"IM0001.dcm: ImageOrientationPatient \[1.0, 0.0, 0.0, 0.0, 0.98, 0.2\] differs from"),
    (_dicom_edited(_uneven), r"slice spacing is not uniform \(0.500 to 1.000 mm\)"),
    (_dicom_edited(lambda ds, first: None, _TILTED), r"not stacked along the slice normal \(sheared by 9.93 degrees"),
    (_dicom_edited(_set("Modality", "PT")), r"IM0001.dcm: Modality PT \(CT Image Storage\), not CT"),
    (_seg_in_ct_folder, r"seg.dcm: Modality SEG \(Segmentation Storage\), not CT; give the folder of a CT series"),
    (_corrupt_jpeg2000, r"CT\.\S+: cannot decode the JPEG 2000 Image Compression \(Lossless Only\) pixel data"),
], ids=["empty", "two-series", "duplicate", "no-position", "orientation", "uneven", "gantry-tilt", "pet", "seg",
        "corrupt-jpeg2000"])
def test_bad_dicom_folders(tmp_path, make, message):
    folder = make(tmp_path)
    with pytest.raises(DataError, match=message) as info:
        io.load_volume(str(folder))
    assert str(folder) in str(info.value)


def test_series_without_a_decoder_names_the_transfer_syntax_and_the_package(monkeypatch):
    from pydicom.pixels.decoders.base import get_decoder
    from pydicom.uid import JPEG2000Lossless

    monkeypatch.setattr(get_decoder(JPEG2000Lossless), "_available", {})  # as without pylibjpeg-openjpeg
    folder = str(REAL_DICOM / "totalseg_ct_series")
    with pytest.raises(DataError) as info:
        io.load_volume(folder)
    assert str(info.value) == (
        f"{folder}: pixel data is stored as JPEG 2000 Image Compression (Lossless Only) (1.2.840.10008.1.2.4.90) "
        "and no installed decoder reads it; install one: pip install pylibjpeg pylibjpeg-openjpeg")


def test_real_jpeg2000_series_decodes_like_its_nifti(real_ct_dir):
    ct = io.load_volume(str(REAL_DICOM / "totalseg_ct_series"))
    nifti = io.load_nifti(real_ct_dir / "totalseg_dicom_slab_ct.nii.gz")
    np.testing.assert_array_equal(ct.array, nifti.array)
    np.testing.assert_allclose(ct.affine, nifti.affine, atol=1e-4)
    assert len(ct.dicom_slices) == 20 and all("PixelData" not in ds for ds in ct.dicom_slices)


@pytest.mark.parametrize("file,message", [
    ("dcmqi_liver_seg.dcm", r"a single DICOM file, Modality SEG \(Segmentation Storage\); give the folder of a CT"),
    ("dcmqi_ct3slice/01.dcm", r"a single DICOM file, Modality CT \(CT Image Storage\); give the folder"),
])
def test_a_single_dicom_file_is_not_a_series(file, message):
    with pytest.raises(DataError, match=message) as info:
        io.load_volume(str(REAL_DICOM / file))
    assert str(info.value).startswith(str(REAL_DICOM / file))


def test_load_label_nifti_with_and_without_reference(real_ct_dir):
    label = real_ct_dir / "dcmqi_3slice_liver.nii.gz"
    alone = io.load_label(label)
    on_series = io.load_label(label, str(REAL_DICOM / "dcmqi_ct3slice"))
    np.testing.assert_array_equal(alone.label, on_series.label)
    assert on_series.dicom_slices is not None and on_series.label_path == str(label)
    with pytest.raises(DataError, match=r"dcmqi_3slice_liver.nii.gz: label shape \(512, 512, 3\) differs from "
                                        r"image shape \(512, 512, 20\) of .*totalseg_ct_series"):
        io.load_label(label, str(REAL_DICOM / "totalseg_ct_series"))


# --- Bad NIfTI inputs: (writer of (image, label) into tmp_path, the bad file, message) ---------


def _pair(tmp_path, image=None, label=None, label_affine=None):
    image = np.zeros((8, 8, 4), np.int16) if image is None else image
    label = np.zeros(image.shape[:3], np.uint8) if label is None else label
    return (write_nifti(tmp_path / "ct.nii.gz", image),
            write_nifti(tmp_path / "seg.nii.gz", label, label_affine))


def _truncated(tmp_path):
    ct, seg = _pair(tmp_path, np.random.default_rng(0).integers(-1000, 1000, (32, 32, 16)).astype(np.int16))
    data = open(ct, "rb").read()
    open(ct, "wb").write(data[: len(data) // 2])
    return ct, seg


def _not_nifti(tmp_path, name, content):
    ct, seg = _pair(tmp_path)
    path = tmp_path / name
    path.write_bytes(content)
    return str(path), seg


def _nan_or_inf(value):
    def make(tmp_path):
        image = np.zeros((8, 8, 4), np.float32)
        image[1, 2, 3] = value
        return _pair(tmp_path, image)
    return make


BAD_INPUTS = [
    ("not_nifti_gz", lambda p: _not_nifti(p, "notes.nii.gz", b"hello, not a CT"), "image", "not a readable NIfTI"),
    ("not_nifti_txt", lambda p: _not_nifti(p, "notes.txt", b"hello"), "image", "not a readable NIfTI"),
    ("truncated", _truncated, "image", "truncated or corrupt"),
    ("2d", lambda p: _pair(p, np.zeros((8, 8), np.int16), np.zeros((8, 8, 1), np.uint8)), "image", r"\(2D\)"),
    ("4d", lambda p: _pair(p, np.zeros((8, 8, 4, 2), np.int16)), "image", r"\(4D\)"),
    ("shape", lambda p: _pair(p, label=np.zeros((8, 8, 5), np.uint8)), "label", "differs from image shape"),
    ("affine", lambda p: _pair(p, label_affine=np.diag([1.5, 1.5, 2.5, 1.0]) + _shift(1.0)),
     "label", "affine differs"),
    ("nan", _nan_or_inf(np.nan), "image", "NaN or infinite"),
    ("inf", _nan_or_inf(np.inf), "image", "NaN or infinite"),
    ("label_3", lambda p: _pair(p, label=np.full((8, 8, 4), 3, np.uint8)), "label", r"\{0, 1, 2\}, found 3"),
    ("label_half", lambda p: _pair(p, label=np.full((8, 8, 4), 0.5, np.float32)), "label", "found 0.5"),
]


def _shift(mm):
    shift = np.zeros((4, 4))
    shift[0, 3] = mm
    return shift


@pytest.mark.parametrize("name,make,bad,message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_nifti_inputs_raise_dataerror_naming_the_file(tmp_path, name, make, bad, message):
    image, label = make(tmp_path)
    with pytest.raises(DataError, match=message) as info:
        io.load_case(image, label)
    assert (image if bad == "image" else label) in str(info.value)


def test_small_affine_difference_and_trailing_singleton_axis_are_accepted(tmp_path):
    image, label = _pair(tmp_path, np.zeros((8, 8, 4, 1), np.int16), label_affine=np.diag([1.5, 1.5, 2.5, 1.0]) + _shift(1e-5))
    ct = io.load_case(image, label)
    assert ct.array.shape == ct.label.shape == (8, 8, 4)


def test_save_mask_errors(tmp_path):
    image, _ = _pair(tmp_path)
    ct = io.load_nifti(image)
    with pytest.raises(DataError, match="mask shape"):
        io.save_mask(np.zeros((2, 2, 2)), ct, tmp_path / "m.nii.gz")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DataError, match="cannot write there") as info:
        io.save_mask(np.zeros((8, 8, 4)), ct, blocker / "m.nii.gz")
    assert str(blocker) in str(info.value)


def test_find_cases_lits_and_decathlon_layouts(tmp_path):
    lits = tmp_path / "lits"
    lits.mkdir()
    for n in (10, 2):
        for kind in ("volume", "segmentation"):
            (lits / f"{kind}-{n}.nii").write_bytes(b"")
    (lits / "._volume-3.nii").write_bytes(b"")  # macOS resource file: ignored
    assert [(c.case_id, os.path.basename(c.image), os.path.basename(c.label)) for c in io.find_cases(lits)] == [
        ("volume-2", "volume-2.nii", "segmentation-2.nii"), ("volume-10", "volume-10.nii", "segmentation-10.nii")]
    msd = tmp_path / "msd"
    for sub in ("imagesTr", "labelsTr"):
        (msd / sub).mkdir(parents=True)
        for name in ("liver_10.nii.gz", "liver_9.nii.gz", "._liver_9.nii.gz"):
            (msd / sub / name).write_bytes(b"")
    assert [c.case_id for c in io.find_cases(msd)] == ["liver_9", "liver_10"]


@pytest.mark.parametrize("files,message", [
    ([], "no cases found"),
    (["volume-1.nii", "segmentation-1.nii", "volume-2.nii.gz"], "unpaired files.*volume-2.nii.gz"),
    (["segmentation-4.nii"], "unpaired files.*segmentation-4.nii"),
    (["imagesTr/a.nii.gz", "labelsTr/b.nii.gz"], "unpaired files.*a.nii.gz.*b.nii.gz"),
])
def test_find_cases_bad_folders(tmp_path, files, message):
    for name in files:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(DataError, match=message) as info:
        io.find_cases(tmp_path)
    assert str(tmp_path) in str(info.value)
    with pytest.raises(DataError, match="does not exist"):
        io.find_cases(tmp_path / "missing")


def test_io_and_preprocess_do_not_import_tensorflow():
    code = ("import sys; import liverzoo.data.io, liverzoo.data.preprocess, liverzoo.data.sampling, "
            "liverzoo.data.phantom, liverzoo.data.demo, liverzoo.data.dicom, liverzoo.data.dicom_seg, highdicom; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]; print(bad); sys.exit(bool(bad))")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
