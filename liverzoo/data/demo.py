"""The embedded demo data: three real abdominal CT volumes with liver (and tumor) labels.

The files in `liverzoo/data/demo/` are copies of the project's shared real CT (licenses and
attribution in `demo/NOTICE`): LiTS case 117 (a 128^3 liver crop with real liver and tumor
labels), TotalSegmentator's small example CT (3 mm, liver predicted by TotalSegmentator) and
three dcmqi slices (512x512, -3024 HU padding outside the scan circle).

The demo split: only LiTS 117 has tumor, so it is cut along z into two cases. The inferior
slices 0-58 train, the superior slices 79-127 validate, and the 20 slices between are left
out, so that no tumor (26-connected component of label 2) appears in both: validation
measures tumor the model did not train on. The LiTS 117 voxel size is unknown (the header
says 1 mm); millimetre metrics on it are nominal.
"""
import os

import numpy as np

from liverzoo.data import io

DEMO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo")
#: (image, label) file names of the embedded volumes.
FILES = {
    "lits117": ("lits117_crop128_ct.nii.gz", "lits117_crop128_seg.nii.gz"),
    "totalseg": ("totalseg_example_ct_sm.nii.gz", "totalseg_example_liver_pred.nii.gz"),
    "dcmqi": ("dcmqi_3slice_ct.nii.gz", "dcmqi_3slice_liver.nii.gz"),
}
#: Canonical z ranges [start, stop) of the two LiTS 117 cases; slices 59-78 are not used.
LITS117_TRAIN_SLICES = (0, 59)
LITS117_VAL_SLICES = (79, 128)
#: The fixed demo split by case id.
DEMO_SPLIT = {"totalseg": "train", "dcmqi": "train", "lits117_inferior": "train", "lits117_superior": "val"}


def demo_path(name):
    """Absolute path of an embedded file (e.g. "lits117_crop128_ct.nii.gz")."""
    return os.path.join(DEMO_DIR, name)


def load_demo_volume(name):
    """One whole embedded volume ("lits117", "totalseg" or "dcmqi") as a labelled `CTVolume`."""
    image, label = FILES[name]
    volume = io.load_case(demo_path(image), demo_path(label))
    volume.case_id = name
    return volume


def slab(volume, start, stop, case_id):
    """The canonical slices [start, stop) of a volume as a new `CTVolume` (affine shifted).

    The slab's "source" is its own canonical grid, so `save_mask` on it writes a RAS file.
    """
    affine = volume.affine.copy()
    affine[:3, 3] = volume.affine[:3, :3] @ np.array([0, 0, start]) + volume.affine[:3, 3]
    array = np.ascontiguousarray(volume.array[:, :, start:stop])
    label = None if volume.label is None else np.ascontiguousarray(volume.label[:, :, start:stop])
    return io.CTVolume(array, volume.spacing.copy(), affine, label=label, source_affine=affine,
                       source_shape=array.shape, source_ornt=np.array([[0, 1], [1, 1], [2, 1]], float),
                       path=volume.path, label_path=volume.label_path, case_id=case_id)


def demo_cases():
    """The four demo cases as labelled `CTVolume`s (with `case_id`), in `DEMO_SPLIT` order.

    Returns:
        `[totalseg, dcmqi, lits117_inferior, lits117_superior]`; see `DEMO_SPLIT`.

    Example:
        >>> [c.case_id for c in demo_cases()]
        ['totalseg', 'dcmqi', 'lits117_inferior', 'lits117_superior']
    """
    lits = load_demo_volume("lits117")
    return [load_demo_volume("totalseg"), load_demo_volume("dcmqi"),
            slab(lits, *LITS117_TRAIN_SLICES, "lits117_inferior"),
            slab(lits, *LITS117_VAL_SLICES, "lits117_superior")]


def demo_split():
    """`{"train": [case ids], "val": [case ids]}` of the fixed demo split."""
    return {s: [c for c, v in DEMO_SPLIT.items() if v == s] for s in ("train", "val")}


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
        ['lits117_superior']
    """
    from liverzoo.data import tfrecord

    kwargs.setdefault("num_shards", 2)
    return tfrecord.write_dataset(demo_cases(), output_dir, preset=preset, split=DEMO_SPLIT, **kwargs)
