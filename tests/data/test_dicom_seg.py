"""liverzoo.data.dicom_seg on real DICOM: a JPEG 2000 CT series segmented to a SEG and read back
voxel for voxel, liverzoo's SEG against dcmqi's for the same slices frame by frame, dciodvfy and
highdicom reading liverzoo's files, and every bad input one DataError with nothing written."""
import glob
import os
import shutil
import subprocess

import numpy as np
import pydicom
import pytest

from liverzoo.data import dicom_seg, io
from liverzoo.errors import DataError
from tests.conftest import run_tool

DCMQI_LIVER = "dcmqi_3slice_liver.nii.gz"
MODEL = dict(model_name="lv_net", model_path=__file__)  # any file: its hash goes into the SEG


@pytest.fixture(scope="module")
def jpeg2000_series(real_dicom_dir, tmp_path_factory):
    """The real JPEG 2000 series with its study/series/SOP instance UIDs put back.

    Its de-identification emptied them, and a SEG references the source by these UIDs; only
    the headers change here (the pixel data stays JPEG 2000 compressed, byte for byte).
    """
    from pydicom.uid import generate_uid

    folder = tmp_path_factory.mktemp("totalseg_ct_series")
    study, series = generate_uid(entropy_srcs=["liverzoo study"]), generate_uid(entropy_srcs=["liverzoo series"])
    for file in sorted(glob.glob(str(real_dicom_dir / "totalseg_ct_series" / "*"))):
        ds = pydicom.dcmread(file)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.save_as(folder / os.path.basename(file))
    return str(folder)


@pytest.fixture(scope="module")
def jpeg2000_case(jpeg2000_series, real_ct_dir):
    """(CT series volume, label map on its grid): the reference liver mask plus a small synthetic tumor."""
    ct = io.load_volume(jpeg2000_series)
    nifti = io.load_case(real_ct_dir / "totalseg_dicom_slab_ct.nii.gz",
                         real_ct_dir / "totalseg_dicom_slab_liver_pred.nii.gz")
    np.testing.assert_array_equal(ct.array, nifti.array)  # the same scan, the same grid
    np.testing.assert_allclose(ct.affine, nifti.affine, atol=1e-4)
    labels = nifti.label.copy()
    x, y, z = (int(np.median(a)) for a in np.nonzero(labels == 1))
    tumor = np.zeros_like(labels, bool)
    tumor[x - 6:x + 6, y - 5:y + 5, z - 2:z + 3] = True
    labels[tumor & (labels == 1)] = 2
    assert np.count_nonzero(labels == 2) > 500
    return ct, labels


@pytest.fixture(scope="module")
def dcmqi_case(real_dicom_dir, real_ct_dir):
    return io.load_case(str(real_dicom_dir / "dcmqi_ct3slice"), real_ct_dir / DCMQI_LIVER)


@pytest.fixture(scope="module")
def written(jpeg2000_case, dcmqi_case, tmp_path_factory):
    """liverzoo's SEG files: {name: (path, CT volume)}."""
    folder = tmp_path_factory.mktemp("seg")
    ct, labels = jpeg2000_case
    files = {"jpeg2000": (folder / "jpeg2000.dcm", ct), "dcmqi": (folder / "dcmqi.dcm", dcmqi_case),
             "fractional": (folder / "fractional.dcm", dcmqi_case), "empty": (folder / "empty.dcm", dcmqi_case)}
    dicom_seg.write_segmentation(labels, ct, files["jpeg2000"][0], **MODEL)
    dicom_seg.write_segmentation(dcmqi_case.label, dcmqi_case, files["dcmqi"][0], **MODEL)
    dicom_seg.write_segmentation(_probabilities(dcmqi_case.label), dcmqi_case, files["fractional"][0],
                                 fractional=True, **MODEL)
    dicom_seg.write_segmentation(np.zeros_like(dcmqi_case.label), dcmqi_case, files["empty"][0], **MODEL)
    return files


def _probabilities(labels):
    """Soft (X, Y, Z, 3) probabilities whose argmax is `labels` and that vary across the volume."""
    ramp = np.linspace(0.0, 0.3, labels.shape[0], dtype=np.float32)[:, None, None]
    probs = np.full(labels.shape + (3,), 0.0, np.float32)
    for c in range(3):
        probs[..., c] = np.where(labels == c, 0.9 - ramp, (0.1 + ramp) / 2)
    return probs


def _frames(ds):
    """{(segment number, referenced SOP instance UID): (pixels, ImagePositionPatient)} of a SEG."""
    pixels = ds.pixel_array.reshape(int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns))
    out = {}
    for i, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        uid = str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        out[number, uid] = (pixels[i], np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, float))
    return out


def test_round_trip_on_the_real_jpeg2000_series(jpeg2000_series, jpeg2000_case, written, tmp_path):
    ct, labels = jpeg2000_case
    path = written["jpeg2000"][0]
    assert all(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID == pydicom.uid.JPEG2000Lossless
               for f in glob.glob(os.path.join(jpeg2000_series, "*")))
    # Identical voxels to the NIfTI mask written for the same input, and to the labels.
    io.save_mask(labels, ct, tmp_path / "mask.nii.gz")
    from_nifti = io.load_label(tmp_path / "mask.nii.gz", ct).label
    from_seg = io.load_label(path, jpeg2000_series).label
    np.testing.assert_array_equal(from_seg, labels)
    np.testing.assert_array_equal(from_seg, from_nifti)
    np.testing.assert_array_equal(io.load_case(jpeg2000_series, path).label, labels)

    ds = pydicom.dcmread(path)
    source = {str(s.SOPInstanceUID): s for s in ct.dicom_slices}
    assert ds.StudyInstanceUID == ct.dicom_slices[0].StudyInstanceUID
    assert ds.FrameOfReferenceUID == ct.dicom_slices[0].FrameOfReferenceUID
    assert [s.SeriesInstanceUID for s in ds.ReferencedSeriesSequence] == [ct.dicom_slices[0].SeriesInstanceUID]
    assert {str(i.ReferencedSOPInstanceUID) for i in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence} \
        == set(source)
    shared = ds.SharedFunctionalGroupsSequence[0]
    np.testing.assert_allclose(shared.PlaneOrientationSequence[0].ImageOrientationPatient,
                               ct.dicom_slices[0].ImageOrientationPatient, atol=1e-6)
    frames = _frames(ds)
    for (number, uid), (_, position) in frames.items():  # each frame on its source slice
        np.testing.assert_allclose(position, np.asarray(source[uid].ImagePositionPatient, float), atol=1e-4)
    # One frame per non-empty (segment, slice): empty frames are omitted.
    stored = np.transpose(ct.to_source(np.stack([labels >= 1, labels == 2], -1)), (2, 1, 0, 3))
    assert len(frames) == int(ds.NumberOfFrames) == np.count_nonzero(stored.any(axis=(1, 2)))
    assert 0 < np.count_nonzero(stored[..., 1].any(axis=(1, 2))) < len(source)


def test_segments_codes_and_algorithm(written):
    ds = pydicom.dcmread(written["jpeg2000"][0], stop_before_pixels=True)
    assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY" and ds.Manufacturer == "liverzoo"
    liver, tumor = ds.SegmentSequence
    assert (liver.SegmentLabel, tumor.SegmentLabel) == dicom_seg.SEGMENT_LABELS
    code = lambda item, keyword: (item[keyword][0].CodingSchemeDesignator, item[keyword][0].CodeValue)  # noqa: E731
    assert code(liver, "SegmentedPropertyCategoryCodeSequence") == ("SCT", "91723000")  # Anatomical Structure
    assert code(liver, "SegmentedPropertyTypeCodeSequence") == ("SCT", "10200004")  # Liver
    assert code(tumor, "SegmentedPropertyCategoryCodeSequence") == ("SCT", "49755003")  # Morph. Abnormal Structure
    assert code(tumor, "SegmentedPropertyTypeCodeSequence") == ("SCT", "108369006")  # Neoplasm
    assert code(tumor, "AnatomicRegionSequence") == ("SCT", "10200004")
    import liverzoo

    for item in (liver, tumor):
        assert item.SegmentAlgorithmType == "AUTOMATIC" and item.SegmentAlgorithmName == "lv_net"
        algorithm = item.SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm.AlgorithmName == "lv_net" and algorithm.AlgorithmVersion == liverzoo.__version__
        assert dicom_seg.model_sha256(__file__) in algorithm.AlgorithmParameters


def test_matches_dcmqi_frame_by_frame(real_dicom_dir, dcmqi_case, written):
    ours, theirs = pydicom.dcmread(written["dcmqi"][0]), pydicom.dcmread(real_dicom_dir / "dcmqi_liver_seg.dcm")
    assert ours.ReferencedSeriesSequence[0].SeriesInstanceUID == theirs.ReferencedSeriesSequence[0].SeriesInstanceUID
    assert ours.FrameOfReferenceUID == theirs.FrameOfReferenceUID
    ours_frames, their_frames = _frames(ours), _frames(theirs)
    assert set(ours_frames) == set(their_frames) and len(their_frames) == 3  # same instances, no tumor frame
    for key, (pixels, position) in their_frames.items():
        np.testing.assert_array_equal(ours_frames[key][0], pixels)
        np.testing.assert_allclose(ours_frames[key][1], position, atol=1e-3)


def test_spacing_between_slices_as_dcmqi_states_it(real_dicom_dir, written):
    # highdicom computes 0.99999999999999 from the positions; dcmqi's SEG of the same series says 1.
    measures = [pydicom.dcmread(path).SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
                for path in (written["dcmqi"][0], real_dicom_dir / "dcmqi_liver_seg.dcm")]
    ours, theirs = (m.SpacingBetweenSlices for m in measures)
    assert float(theirs) == 1.0 and float(ours) == float(theirs) and str(ours) == "1.0"


def test_reads_dcmqi_seg_to_the_nifti_mask(real_dicom_dir, dcmqi_case):
    labels = io.load_label(real_dicom_dir / "dcmqi_liver_seg.dcm", dcmqi_case).label
    np.testing.assert_array_equal(labels, dcmqi_case.label)
    assert np.count_nonzero(labels) == 107098  # as the README states for both files


def test_fractional(dcmqi_case, written):
    import highdicom as hd

    path = written["fractional"][0]
    seg = hd.seg.segread(path)
    assert seg.SegmentationType == "FRACTIONAL" and seg.SegmentationFractionalType == "PROBABILITY"
    uids = [str(s.SOPInstanceUID) for s in dcmqi_case.dicom_slices]
    fractions = seg.get_pixels_by_source_instance(uids, assert_missing_frames_are_empty=True)
    probs = _probabilities(dcmqi_case.label)
    expected = np.stack([probs[..., 1] + probs[..., 2], probs[..., 2]], -1)
    expected = np.transpose(dcmqi_case.to_source(expected), (2, 1, 0, 3))
    np.testing.assert_allclose(fractions, expected, atol=0.5 / 255 + 1e-6)
    np.testing.assert_array_equal(io.load_label(path, dcmqi_case).label, dcmqi_case.label)


def test_empty_segmentation_round_trips(dcmqi_case, written):
    labels = io.load_label(written["empty"][0], dcmqi_case).label
    assert labels.shape == dcmqi_case.label.shape and not labels.any()


@pytest.mark.parametrize("name", ["jpeg2000", "dcmqi", "fractional", "empty"])
def test_highdicom_reads_liverzoo_seg(written, name):
    import highdicom as hd

    path, ct = written[name]
    seg = hd.seg.segread(path)
    assert list(seg.get_segment_numbers()) == [1, 2]
    uids = [str(s.SOPInstanceUID) for s in ct.dicom_slices]
    pixels = seg.get_pixels_by_source_instance(uids, segment_numbers=[1], assert_missing_frames_are_empty=True)
    expected = np.transpose(ct.to_source(io.load_label(path, ct).label >= 1), (2, 1, 0))
    np.testing.assert_array_equal(pixels[..., 0] >= 0.5, expected)  # binary 0/1, fractions in [0, 1]


@pytest.mark.parametrize("name", ["jpeg2000", "dcmqi", "fractional", "empty"])
def test_dciodvfy_finds_no_errors(written, name):
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy not installed (Debian: apt-get install dicom3tools); .ci/run installs it")
    run = subprocess.run(["dciodvfy", str(written[name][0])], capture_output=True, text=True, check=False)
    lines = (run.stdout + run.stderr).splitlines()
    assert "Segmentation" in lines  # it recognised the IOD it validated
    assert [line for line in lines if line.startswith("Error")] == []


def test_output_format():
    assert dicom_seg.output_format("out/ct_seg.dcm") == "dicom_seg"
    assert dicom_seg.output_format("out/ct_seg.nii.gz") == "nifti"
    assert dicom_seg.output_format("out/folder", "dicom_seg") == "dicom_seg"
    with pytest.raises(DataError, match="rtstruct"):
        dicom_seg.output_format("x.dcm", "rtstruct")


# --- Bad input: one DataError naming the file or series, nothing written ----------------------


def test_deidentified_series_without_uids_is_refused(real_dicom_dir, real_ct_dir, tmp_path):
    ct = io.load_volume(str(real_dicom_dir / "totalseg_ct_series"))  # reads fine: NIfTI output works
    with pytest.raises(DataError, match=r"InstanceUID is empty"):
        dicom_seg.check_reference(ct)  # what predict asks before segmenting
    with pytest.raises(DataError, match=r"totalseg_ct_series.*InstanceUID is empty.*write NIfTI"):
        dicom_seg.write_segmentation(np.zeros(ct.array.shape, np.uint8), ct, tmp_path / "seg.dcm", **MODEL)
    assert os.listdir(tmp_path) == []


def test_nifti_reference_is_refused(real_dicom_dir, real_ct_dir, tmp_path):
    ct = io.load_case(real_ct_dir / "dcmqi_3slice_ct.nii.gz", real_ct_dir / DCMQI_LIVER)
    with pytest.raises(DataError, match="dcmqi_3slice_ct.nii.gz: not a DICOM series"):
        dicom_seg.write_segmentation(ct.label, ct, tmp_path / "seg.dcm", **MODEL)
    with pytest.raises(DataError, match="dcmqi_liver_seg.dcm: a DICOM SEG is read onto its source series; .*"
                                        "dcmqi_3slice_ct.nii.gz is not a DICOM series"):
        io.load_label(real_dicom_dir / "dcmqi_liver_seg.dcm", ct)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("values,kwargs,message", [
    (lambda shape: np.zeros(shape[:2] + (2,), np.uint8), {}, "label map shape"),
    (lambda shape: np.full(shape, 3, np.uint8), {}, r"label values must be in \{0, 1, 2\}, found 3"),
    (lambda shape: np.zeros(shape, np.float32), {"fractional": True}, "FRACTIONAL needs"),
    (lambda shape: np.full(shape + (3,), 2.0, np.float32), {"fractional": True}, r"in \[0, 1\]"),
])
def test_bad_values_are_refused(dcmqi_case, tmp_path, values, kwargs, message):
    path = tmp_path / "seg.dcm"
    with pytest.raises(DataError, match=message) as info:
        dicom_seg.write_segmentation(values(dcmqi_case.array.shape), dcmqi_case, path, **MODEL, **kwargs)
    assert str(path) in str(info.value) and os.listdir(tmp_path) == []


def test_seg_of_another_series_is_refused(real_dicom_dir, jpeg2000_series):
    with pytest.raises(DataError, match=r"dcmqi_liver_seg.dcm: the SEG references series 1\.2\.392\S+, not the "
                                        r"given series \S+ \(.*totalseg_ct_series"):
        io.load_label(real_dicom_dir / "dcmqi_liver_seg.dcm", jpeg2000_series)


def test_seg_needs_its_series(real_dicom_dir):
    with pytest.raises(DataError, match="dcmqi_liver_seg.dcm: a DICOM file; a DICOM SEG is read onto its source"):
        io.load_label(real_dicom_dir / "dcmqi_liver_seg.dcm")


def test_a_ct_slice_is_not_a_seg(real_dicom_dir, dcmqi_case):
    with pytest.raises(DataError, match=r"01.dcm: not a DICOM SEG \(Modality CT \(CT Image Storage\)\)"):
        io.load_label(real_dicom_dir / "dcmqi_ct3slice" / "01.dcm", dcmqi_case)


def test_seg_frames_off_the_series_are_refused(real_dicom_dir, dcmqi_case, tmp_path):
    ds = pydicom.dcmread(real_dicom_dir / "dcmqi_liver_seg.dcm")
    for item in ds.PerFrameFunctionalGroupsSequence:
        del item.DerivationImageSequence  # placed by position alone
        item.PlanePositionSequence[0].ImagePositionPatient[2] += 0.5
    ds.save_as(tmp_path / "shifted.dcm")
    with pytest.raises(DataError, match=r"shifted.dcm: frame 1 at .* lies on no slice of the series"):
        io.load_label(tmp_path / "shifted.dcm", dcmqi_case)


def test_seg_without_liver_segment_is_refused(real_dicom_dir, dcmqi_case, tmp_path):
    ds = pydicom.dcmread(real_dicom_dir / "dcmqi_liver_seg.dcm")
    ds.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue = "T-32000"  # heart
    ds.SegmentSequence[0].SegmentLabel = "Heart"
    ds.save_as(tmp_path / "heart.dcm")
    with pytest.raises(DataError, match=r"heart.dcm: no liver or liver tumor segment.*1 'Heart'"):
        io.load_label(tmp_path / "heart.dcm", dcmqi_case)


def test_predict_writes_a_seg_equal_to_its_nifti_mask(jpeg2000_series, tiny_model_path, tmp_path):
    """tools/predict.py on the real JPEG 2000 series: a `.dcm` output is a SEG that reads back to
    exactly the NIfTI mask predict writes for the same input, one frame per source slice position."""
    from liverzoo import runtime

    nifti = tmp_path / "mask.nii.gz"
    runtime.segment_files(str(tiny_model_path), jpeg2000_series, str(nifti), model="residual_unet",
                          postprocess=False, log=lambda *_: None)
    seg = tmp_path / "mask.dcm"
    result = run_tool("predict", f"--model_path={tiny_model_path}", f"--input={jpeg2000_series}",
                      f"--output={seg}", "--model=residual_unet", "--nopostprocess")
    assert result.returncode == 0, result.stderr[-2000:]
    ct = io.load_volume(jpeg2000_series)
    expected = io.load_label(str(nifti), ct).label
    assert 0 < np.count_nonzero(expected) < expected.size
    np.testing.assert_array_equal(io.load_label(str(seg), ct).label, expected)
    ds = pydicom.dcmread(seg)
    positions = {tuple(np.round(np.asarray(s.ImagePositionPatient, float), 3)) for s in ct.dicom_slices}
    frames = {tuple(np.round(np.asarray(f.PlanePositionSequence[0].ImagePositionPatient, float), 3))
              for f in ds.PerFrameFunctionalGroupsSequence}
    assert frames <= positions
    # The de-identified original has no UIDs to reference: refused before any work, nothing written.
    refused = run_tool("predict", f"--model_path={tiny_model_path}",
                       f"--input={os.path.dirname(__file__)}/dicom/totalseg_ct_series",
                       f"--output={tmp_path / 'no.dcm'}", "--model=residual_unet")
    assert refused.returncode != 0 and "InstanceUID is empty" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "no.dcm").exists()


def test_writing_logs_nothing_below_warning(dcmqi_case, tmp_path, caplog):
    """highdicom's ~10 INFO lines a SEG ("copy attributes of module ...") reached stderr through
    absl's handler in tools/predict.py; held back while liverzoo writes, and the level restored."""
    import logging

    with caplog.at_level("INFO", logger="highdicom"):
        dicom_seg.write_segmentation(dcmqi_case.label, dcmqi_case, tmp_path / "s.dcm", **MODEL)
        assert logging.getLogger("highdicom").level == logging.INFO
    assert (tmp_path / "s.dcm").is_file()
    assert not [r for r in caplog.records if r.name.startswith("highdicom") and r.levelno < logging.WARNING]
