"""The embedded demo data: four real patients' abdominal CT with liver (and tumor) labels.

The files in `liverzoo/data/demo/` are copies of the project's shared real CT (licenses and
attribution in `demo/NOTICE`, checksums in `demo/manifest.json`):

- "lits117": LiTS case 117, a 128^3 liver crop with real liver and tumor labels;
- "totalseg": TotalSegmentator's example CT, femoral heads to lower thorax, 3 mm (liver
  predicted by TotalSegmentator: silver labels); `totalseg_example_ct_sm` is a part of it;
- "dcmqi": three 512x512 slices (-3024 HU padding outside the scan circle);
- "slab": another patient's contrast-enhanced 20-slice slab with a full 500 mm field of view
  (silver labels).

The demo split is by patient, never by file: the model trains on lits117, totalseg and dcmqi
and is validated on the whole slab, a full field of view of a patient it never saw, so the
validation figure says whether it finds the liver among spleen, stomach and kidneys. The
LiTS 117 voxel size is unknown (the header says 1 mm): `load_demo_volume` gives it an
estimated in-plane spacing (`LITS117_SPACING`) so that its liver is drawn at about the size of
the other patients' on a common working plane; millimetre metrics on it are nominal.
"""
import os

import numpy as np

from liverzoo.data import io
from liverzoo.errors import DataError

DEMO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo")
#: (image, label) file names of the embedded volumes, one entry per patient.
FILES = {
    "totalseg": ("totalseg_example_full_ct.nii.gz", "totalseg_example_full_liver_pred.nii.gz"),
    "dcmqi": ("dcmqi_3slice_ct.nii.gz", "dcmqi_3slice_liver.nii.gz"),
    "lits117": ("lits117_crop128_ct.nii.gz", "lits117_crop128_seg.nii.gz"),
    "slab": ("totalseg_dicom_slab_ct.nii.gz", "totalseg_dicom_slab_liver_pred.nii.gz"),
}
#: The patient each embedded file belongs to (a file not listed in FILES is part of a scan that is).
PATIENT_OF_FILE = {name: patient for patient, files in FILES.items() for name in files}
PATIENT_OF_FILE.update({"totalseg_example_ct_sm.nii.gz": "totalseg", "totalseg_example_liver_pred.nii.gz": "totalseg"})
#: Patients whose scan shows the whole abdominal field of view (the liver among other organs).
FULL_FIELD_OF_VIEW = ("totalseg", "dcmqi", "slab")
#: LiTS 117's voxel size as the demo assumes it (the header's 1 mm is a placeholder: the liver's
#: bounding box was resized to 128^3). 1.5 mm in-plane makes the liver 192 mm wide, an adult
#: liver's width; with the header's 1 mm it would be drawn at two thirds of that.
LITS117_SPACING = (1.5, 1.5, 1.0)
#: The fixed demo split, by patient.
DEMO_SPLIT = {"totalseg": "train", "dcmqi": "train", "lits117": "train", "slab": "val"}


def demo_path(name):
    """Absolute path of an embedded file (e.g. "lits117_crop128_ct.nii.gz")."""
    return os.path.join(DEMO_DIR, name)


def load_demo_volume(name):
    """One patient's whole embedded volume (a key of `FILES`) as a labelled `CTVolume`."""
    image, label = FILES[name]
    volume = io.load_case(demo_path(image), demo_path(label))
    volume.case_id = name
    if name == "lits117":
        scale = np.asarray(LITS117_SPACING) / volume.spacing
        volume.spacing = np.asarray(LITS117_SPACING, float)
        volume.affine = volume.affine.copy()
        volume.affine[:3, :3] = volume.affine[:3, :3] * scale
    return volume


def demo_cases():
    """The demo patients as labelled `CTVolume`s (with `case_id`), in `DEMO_SPLIT` order.

    Example:
        >>> [c.case_id for c in demo_cases()]
        ['totalseg', 'dcmqi', 'lits117', 'slab']
    """
    return [load_demo_volume(name) for name in DEMO_SPLIT]


def demo_split():
    """`{"train": [case ids], "val": [case ids]}` of the fixed demo split."""
    return {s: [c for c, v in DEMO_SPLIT.items() if v == s] for s in ("train", "val")}


def check_patient_split(split, what="the split"):
    """Raises DataError when a patient would be in more than one part of `split`, or when no
    validation case shows a full field of view.

    Args:
        split: `{case id or embedded file name: "train" | "val"}`.
        what: how to name the split in the message.
    """
    parts = {}
    for case, part in split.items():
        patient = PATIENT_OF_FILE.get(case, case)
        parts.setdefault(patient, set()).add(part)
    mixed = sorted(p for p, s in parts.items() if len(s) > 1)
    if mixed:
        raise DataError(f"{what}: patient {', '.join(mixed)} would be in both train and validation")
    val = [p for p, s in parts.items() if "val" in s]
    if val and not any(p in FULL_FIELD_OF_VIEW for p in val):
        raise DataError(f"{what}: no validation patient with a full field of view ({', '.join(sorted(val))} "
                        f"only); validate on one of {', '.join(FULL_FIELD_OF_VIEW)}")
def write_demo_tfrecords(output_dir="tfrecords/demo", preset="residual_unet", **kwargs):
    """Writes the demo cases as TFRecords with the fixed demo split.

    Args:
        output_dir: destination folder.
        preset: preprocessing preset name.
        **kwargs: passed to `liverzoo.data.tfrecord.write_dataset` (num_shards,
            compression, inplane_size, progress, ...).

    Returns:
        The manifest dict.

    Example:
        >>> manifest = write_demo_tfrecords("tfrecords/demo", preset="residual_unet")  # doctest: +SKIP
        >>> manifest["splits"]["val"]  # doctest: +SKIP
        ['slab']
    """
    from liverzoo.data import tfrecord

    kwargs.setdefault("num_shards", 2)
    return tfrecord.write_dataset(demo_cases(), output_dir, preset=preset, split=DEMO_SPLIT, **kwargs)
