"""DICOM SEG: liverzoo's segmentation of a DICOM series as a SEG object, and any SEG read back.

A SEG is what a PACS viewer, OHIF or 3D Slicer (QuantitativeReporting) shows over the CT it
references. `write_segmentation` builds one with highdicom from a label map on the series' grid:
it references the series (study, series, SOP instance and frame of reference UIDs, one frame per
non-empty source slice with that slice's position and orientation) and holds two segments,

- 1 "Liver": SNOMED CT category Anatomical Structure (91723000), type Liver (10200004), the
  whole organ (labels 1 and 2, as liverzoo's liver Dice counts it);
- 2 "Liver tumor": category Morphologically Abnormal Structure (49755003), type Neoplasm
  (108369006), anatomic region Liver (label 2);

with the algorithm identification (model name, liverzoo version, the model file's SHA-256).
The segments overlap (a tumor lies in the liver), so the label map comes back unchanged:
`read_segmentation` puts 1 where a liver segment is and 2 where a tumor segment is, on the grid
of the series the SEG references (frames placed by referenced instance, else by position).
"""
import copy
import hashlib
import logging
import os
import warnings

import numpy as np
from nibabel import orientations

from liverzoo import __version__
from liverzoo.data.io import LABEL_VALUES, _as_label, atomic_write
from liverzoo.errors import DataError

LIVER, TUMOR = LABEL_VALUES[1], LABEL_VALUES[2]
#: Output formats of a segmentation: a NIfTI mask, or a DICOM SEG (DICOM series input only).
OUTPUT_FORMATS = ("nifti", "dicom_seg")
#: Segment labels, in segment-number order.
SEGMENT_LABELS = ("Liver", "Liver tumor")
#: Largest distance (mm) between a SEG frame's position and its source slice's position.
POSITION_TOLERANCE = 0.05
#: Segmented property types read as liver / as tumor (SNOMED CT, and the retired SNOMED RT codes dcmqi writes).
LIVER_TYPES = {("SCT", "10200004"), ("SRT", "T-62000")}
TUMOR_TYPES = {("SCT", c) for c in ("108369006", "4147007", "52988006", "372087000", "14799000", "27925004")} | {
    ("SRT", c) for c in ("M-80003", "M-03000", "M-01000")}


def output_format(path, requested=None):
    """The output format for `path`: `requested` if given, else "dicom_seg" for a `.dcm` name.

    Raises:
        DataError: `requested` is not one of `OUTPUT_FORMATS`.
    """
    if requested is None:
        return "dicom_seg" if str(path).lower().endswith(".dcm") else "nifti"
    if requested not in OUTPUT_FORMATS:
        raise DataError(f"output format {requested!r}: expected one of {', '.join(OUTPUT_FORMATS)}")
    return requested


def model_sha256(path):
    """SHA-256 (hex) of a model file, or of a SavedModel folder (its files' names and bytes)."""
    digest = hashlib.sha256()
    path = str(path)
    files = [path] if os.path.isfile(path) else sorted(
        os.path.join(root, name) for root, _, names in os.walk(path) for name in names)
    for file in files:
        if file != path:
            digest.update(os.path.relpath(file, path).encode() + b"\0")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def check_reference(reference):
    """Checks that a SEG can reference `reference` (call before segmenting, to fail early).

    Args:
        reference: a `CTVolume`.

    Returns:
        The slice headers (`reference.dicom_slices`).

    Raises:
        DataError: not a DICOM series, or a series whose UIDs are empty or repeated.
    """
    slices = getattr(reference, "dicom_slices", None)
    if not slices:
        raise DataError(f"{reference.path}: not a DICOM series; a DICOM SEG references the slices of a DICOM "
                        "series (write a NIfTI mask for a NIfTI input)")
    for ds in slices:
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID",
                        "FrameOfReferenceUID"):
            if not ds.get(keyword):
                raise DataError(f"{getattr(ds, 'filename', reference.path)}: {keyword} is empty (removed by "
                                "de-identification?); a DICOM SEG cannot reference this series, write NIfTI")
    if len({ds.SOPInstanceUID for ds in slices}) != len(slices):
        raise DataError(f"{reference.path}: two slices share a SOPInstanceUID; a DICOM SEG cannot reference them")
    return slices


def _for_highdicom(ds):
    copied = copy.deepcopy(ds)
    if "SpecificCharacterSet" in copied and not copied.SpecificCharacterSet:
        del copied.SpecificCharacterSet  # an empty value means the default repertoire; highdicom refuses it
    return copied


def _segment_descriptions(model_name, model_path):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name=model_name, family=codes.cid7162.ArtificialIntelligence, version=__version__,
        source="liverzoo", parameters={"model_file": os.path.basename(os.path.normpath(str(model_path))),
                                       "model_file_sha256": model_sha256(model_path)})
    liver = hd.seg.SegmentDescription(
        1, SEGMENT_LABELS[0], codes.cid7150.AnatomicalStructure, codes.SCT.Liver,
        hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm)
    tumor = hd.seg.SegmentDescription(
        2, SEGMENT_LABELS[1], codes.cid7150.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm,
        hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm, anatomic_regions=[codes.SCT.Liver])
    return [liver, tumor]


def _segment_stack(values, reference, path, fractional):
    """(X, Y, Z, 2) liver and tumor masks (bool) or fractions (float32) from labels or probabilities."""
    values = np.asarray(values)
    shape = reference.array.shape
    if not fractional:
        if values.shape != shape:
            raise DataError(f"{path}: label map shape {values.shape} differs from the series shape {shape}")
        labels = _as_label(values, path)
        return np.stack([labels >= LIVER, labels == TUMOR], axis=-1)
    if values.shape[:3] != shape or values.ndim != 4 or values.shape[3] != len(LABEL_VALUES):
        raise DataError(f"{path}: FRACTIONAL needs (X, Y, Z, {len(LABEL_VALUES)}) class probabilities on the "
                        f"series grid {shape}, got shape {values.shape}")
    if not np.isfinite(values).all() or values.min() < -1e-6 or values.max() > 1 + 1e-6:
        raise DataError(f"{path}: probabilities must be finite and in [0, 1]")
    liver = values[..., LIVER] + values[..., TUMOR]
    return np.clip(np.stack([liver, values[..., TUMOR]], axis=-1), 0.0, 1.0).astype(np.float32)


def write_segmentation(values, reference, path, *, model_name, model_path, fractional=False, series_number=None):
    """Writes a segmentation of a DICOM series as a DICOM SEG (atomically) with highdicom.

    Args:
        values: `(X, Y, Z)` LiTS label map (0 background, 1 liver, 2 tumor) on the canonical grid
            of `reference` (what `liverzoo.inference.segment` returns); with `fractional`,
            `(X, Y, Z, 3)` class probabilities (background, liver, tumor) instead: the liver
            segment holds P(liver) + P(tumor), the tumor segment P(tumor).
        reference: the `CTVolume` of the DICOM series (`liverzoo.data.io.load_volume(folder)`).
        path: the output file (`.dcm`).
        model_name: the zoo model name (Algorithm Name, Manufacturer's Model Name).
        model_path: the model file or SavedModel folder (its SHA-256 goes in the algorithm
            parameters).
        fractional: write a FRACTIONAL (probability, 8-bit) SEG instead of BINARY.
        series_number: the SEG's Series Number (default: the source's plus 1000).

    Raises:
        DataError: `reference` is not a DICOM series or its UIDs are empty (a de-identified
            series), the values do not fit the series, or the folder is not writable. Nothing
            is written then.

    Example:
        >>> labels = segment(model, ct)  # doctest: +SKIP
        >>> write_segmentation(labels, ct, "ct_seg.dcm", model_name="lv_net",
        ...                    model_path="lv_net.keras")  # doctest: +SKIP
    """
    import highdicom as hd

    slices = check_reference(reference)
    stack = _segment_stack(values, reference, path, fractional)
    # Stored order (columns, rows, slices, segment) -> highdicom's (frames, rows, columns, segment).
    frames = np.ascontiguousarray(np.transpose(reference.to_source(stack), (2, 1, 0, 3)))
    source_number = slices[0].get("SeriesNumber")
    # highdicom logs ~10 INFO lines per SEG ("copy attributes of module ..."), which absl's
    # handler in the tools prints to stderr: held back to WARNING while it builds this one.
    logger = logging.getLogger("highdicom")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    with warnings.catch_warnings():
        # highdicom warns about the source's one-component person names; those are not ours to fix.
        warnings.filterwarnings("ignore", message=".*intended person name", category=UserWarning)
        try:
            seg = hd.seg.Segmentation(
                source_images=[_for_highdicom(ds) for ds in slices], pixel_array=frames,
                segmentation_type="FRACTIONAL" if fractional else "BINARY",
                segment_descriptions=_segment_descriptions(model_name, model_path),
                series_instance_uid=hd.UID(), sop_instance_uid=hd.UID(), instance_number=1,
                series_number=int(series_number if series_number is not None else (source_number or 0) + 1000),
                manufacturer="liverzoo", manufacturer_model_name=model_name,
                software_versions=__version__, device_serial_number="0",
                content_label="LIVERZOO", content_description=f"liverzoo {model_name}: liver and liver tumor",
                omit_empty_frames=True)
        except (ValueError, AttributeError) as e:  # a source header highdicom finds incomplete
            raise DataError(f"{reference.path}: cannot build a DICOM SEG for this series ({e})") from None
        finally:
            logger.setLevel(level)
    seg.SeriesDescription = f"liverzoo {model_name} segmentation"[:64]
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    if "SpacingBetweenSlices" in measures:
        # highdicom takes it from float differences of the positions (0.99999999999999 for
        # slices 1 mm apart); the positions carry 6 decimals, so a micrometre is their precision.
        measures.SpacingBetweenSlices = round(float(measures.SpacingBetweenSlices), 6)
    atomic_write(path, seg.save_as)


# --- Reading ---------------------------------------------------------------------------------


def _codes(item, keyword):
    return {(c.CodingSchemeDesignator, str(c.CodeValue)) for c in item.get(keyword, [])}


def segment_values(seg, path):
    """{segment number: LiTS label value} for the liver and tumor segments of a SEG dataset.

    Raises:
        DataError: the SEG has neither; the message lists its segments.
    """
    values = {}
    for item in seg.get("SegmentSequence", []):
        kind = _codes(item, "SegmentedPropertyTypeCodeSequence")
        region = _codes(item, "AnatomicRegionSequence")
        label = str(item.get("SegmentLabel", ""))
        if kind & LIVER_TYPES:
            values[int(item.SegmentNumber)] = LIVER
        elif kind & TUMOR_TYPES and (region & LIVER_TYPES or "liver" in label.lower()):
            values[int(item.SegmentNumber)] = TUMOR
    if not values:
        found = ", ".join(f"{item.SegmentNumber} {item.get('SegmentLabel', '')!r}" for item in seg.SegmentSequence)
        raise DataError(f"{path}: no liver or liver tumor segment (SNOMED CT type Liver or Neoplasm/Mass/Lesion "
                        f"of the liver); segments: {found or 'none'}")
    return values


def _check_seg(seg, path, slices, reference_path):
    from pydicom.uid import SegmentationStorage

    if seg.get("SOPClassUID") != SegmentationStorage:
        from liverzoo.data.dicom import describe

        raise DataError(f"{path}: not a DICOM SEG (Modality {describe(seg)})")
    series_uid = str(slices[0].get("SeriesInstanceUID", ""))
    referenced = [str(item.get("SeriesInstanceUID", "")) for item in seg.get("ReferencedSeriesSequence", [])]
    if referenced and series_uid not in referenced:
        raise DataError(f"{path}: the SEG references series {', '.join(referenced)}, not the given series "
                        f"{series_uid or '(no SeriesInstanceUID)'} ({reference_path})")
    frame_of_reference = str(slices[0].get("FrameOfReferenceUID", ""))
    if seg.get("FrameOfReferenceUID") and frame_of_reference and seg.FrameOfReferenceUID != frame_of_reference:
        raise DataError(f"{path}: FrameOfReferenceUID {seg.FrameOfReferenceUID} differs from the series' "
                        f"{frame_of_reference} ({reference_path})")
    if (int(seg.Rows), int(seg.Columns)) != (int(slices[0].Rows), int(slices[0].Columns)):
        raise DataError(f"{path}: frames are {seg.Rows}x{seg.Columns}, the series' slices "
                        f"{slices[0].Rows}x{slices[0].Columns} ({reference_path})")


def _group(frame_item, shared, keyword):
    """A functional group of one frame: per-frame if present, else shared."""
    for source in (frame_item, shared):
        if source is not None and keyword in source:
            return source[keyword].value[0]
    return None


def _slice_of_frame(i, item, shared, index, positions, iop, path):
    """The source slice index of SEG frame `i`: by referenced instance, else by position."""
    plane = _group(item, shared, "PlanePositionSequence")
    orientation = _group(item, shared, "PlaneOrientationSequence")
    if plane is None:
        raise DataError(f"{path}: frame {i + 1} has no ImagePositionPatient")
    if orientation is not None and np.abs(np.asarray(orientation.ImageOrientationPatient, float) - iop).max() > 1e-3:
        raise DataError(f"{path}: frame {i + 1} orientation differs from the series' ImageOrientationPatient")
    position = np.asarray(plane.ImagePositionPatient, float)
    derivation = _group(item, None, "DerivationImageSequence")
    sources = derivation.get("SourceImageSequence", []) if derivation is not None else []
    uids = [str(s.ReferencedSOPInstanceUID) for s in sources if str(s.ReferencedSOPInstanceUID) in index]
    if sources and not uids:
        raise DataError(f"{path}: frame {i + 1} references instance {sources[0].ReferencedSOPInstanceUID}, "
                        "which is not in the given series")
    k = index[uids[0]] if uids else int(np.linalg.norm(positions - position, axis=1).argmin())
    if np.linalg.norm(positions[k] - position) > POSITION_TOLERANCE:
        raise DataError(f"{path}: frame {i + 1} at {position.round(3).tolist()} lies on no slice of the series "
                        f"(nearest {positions[k].round(3).tolist()})")
    return k


def read_segmentation(path, reference):
    """Reads a DICOM SEG into a LiTS label map on the grid of the series it references.

    Liver segments (SNOMED CT Liver, or dcmqi's SNOMED RT T-62000) give 1, liver tumor segments
    (Neoplasm, Mass, Lesion... of the liver) 2, tumor over liver; other segments are ignored.
    FRACTIONAL segments count where the fraction is at least one half.

    Args:
        path: the SEG file.
        reference: the `CTVolume` of the DICOM series the SEG references.

    Returns:
        `(X, Y, Z)` uint8 labels on the canonical grid of `reference`.

    Raises:
        DataError: not a SEG, a SEG of another series or frame of reference, frames that fit no
            slice of the series, or no liver/tumor segment; the message names the file.

    Example:
        >>> labels = read_segmentation("liver_seg.dcm", load_volume("patient1/CT"))  # doctest: +SKIP
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    slices = getattr(reference, "dicom_slices", None)
    if not slices:
        raise DataError(f"{path}: a DICOM SEG is read onto its source series; {reference.path} is not a DICOM series")
    try:
        seg = pydicom.dcmread(path)
    except (InvalidDicomError, EOFError, OSError) as e:
        raise DataError(f"{path}: not a readable DICOM file ({type(e).__name__}: {e})") from None
    _check_seg(seg, path, slices, reference.path)
    values = segment_values(seg, path)
    try:
        pixels = seg.pixel_array.reshape(int(seg.get("NumberOfFrames", 1) or 1), int(seg.Rows), int(seg.Columns))
    except Exception as e:  # truncated pixel data, missing decoder; pydicom raises many types
        raise DataError(f"{path}: cannot decode the SEG frames ({type(e).__name__}: {e})") from None
    threshold = 1
    if seg.get("SegmentationType") == "FRACTIONAL":
        threshold = int(seg.MaximumFractionalValue) / 2
    shared = seg.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in seg else None
    index = {str(ds.SOPInstanceUID): k for k, ds in enumerate(slices)}
    positions = np.array([np.asarray(ds.ImagePositionPatient, float) for ds in slices])
    iop = np.asarray(slices[0].ImageOrientationPatient, float)
    stored = np.zeros((len(slices), int(seg.Rows), int(seg.Columns)), np.uint8)  # (slices, rows, columns)
    for i, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        number = int(_group(item, shared, "SegmentIdentificationSequence").ReferencedSegmentNumber)
        if number not in values:
            continue
        k = _slice_of_frame(i, item, shared, index, positions, iop, path)
        np.maximum(stored[k], np.where(pixels[i] >= threshold, values[number], 0).astype(np.uint8), out=stored[k])
    # (slices, rows, columns) -> the stored volume's (columns, rows, slices) -> canonical.
    return np.ascontiguousarray(orientations.apply_orientation(stored.T, reference.source_ornt))
