"""liverzoo.data.demo: the embedded files are the real CT of its manifest, attributed, and the demo
split validates on tumors that no training case contains."""
import hashlib
import json
import os

import numpy as np
import pytest

from liverzoo.data import demo


def test_embedded_files_are_the_shared_real_ct():
    # manifest.json is the shared data's own manifest, copied unchanged beside the files.
    manifest = json.load(open(demo.demo_path("manifest.json")))
    assert len(manifest) == 10
    for image, label in demo.FILES.values():
        assert image in manifest and label in manifest
    for name, entry in manifest.items():
        data = open(demo.demo_path(name), "rb").read()
        assert len(data) == entry["bytes"] and hashlib.sha256(data).hexdigest() == entry["sha256"], name


def test_notice_carries_every_license_and_attribution():
    notice = open(os.path.join(demo.DEMO_DIR, "NOTICE")).read()
    for line in ("CC BY-SA 4.0", "Bilic et al.", "Antonelli et al.", "Apache-2.0", "TotalSegmentator",
                 "BSD-3-Clause", "QIICR/dcmqi", "liver-ct-segmentation-package"):
        assert line in notice
    for name in json.load(open(demo.demo_path("manifest.json"))):
        assert name in notice
    assert os.path.exists(demo.demo_path("LICENSE-Apache-2.0-TotalSegmentator.txt"))


def test_demo_split_is_by_patient_and_validates_on_a_full_field_of_view():
    cases = {c.case_id: c for c in demo.demo_cases()}
    assert list(cases) == list(demo.DEMO_SPLIT) == list(demo.FILES)
    assert demo.demo_split() == {"train": ["totalseg", "dcmqi", "lits117"], "val": ["slab"]}
    demo.check_patient_split(demo.DEMO_SPLIT)
    # Every embedded CT belongs to exactly one patient, and no patient is in both parts.
    manifest = json.load(open(demo.demo_path("manifest.json")))
    assert set(demo.PATIENT_OF_FILE) == set(manifest)
    for part in ("train", "val"):
        others = {demo.PATIENT_OF_FILE[f] for f in manifest} - set(demo.demo_split()[part])
        assert not others & set(demo.demo_split()[part])
    # The validation patient shows the whole abdomen: liver plus plenty of other tissue in view.
    slab = cases["slab"]
    assert slab.array.shape == (512, 512, 20) and 0.02 < (slab.label == 1).mean() < 0.2


@pytest.mark.parametrize("split,message", [
    ({"totalseg": "train", "totalseg_example_ct_sm.nii.gz": "val"}, "patient totalseg would be in both"),
    ({"slab": "train", "lits117": "val"}, "no validation patient with a full field of view"),
])
def test_patient_split_refusals(split, message):
    from liverzoo.errors import DataError

    with pytest.raises(DataError, match=message):
        demo.check_patient_split(split)


def test_write_demo_tfrecords(tmp_path):
    pytest.importorskip("tensorflow")
    manifest = demo.write_demo_tfrecords(str(tmp_path), preset="residual_unet", inplane_size=32)
    assert manifest["splits"] == {"train": ["dcmqi", "lits117", "totalseg"], "val": ["slab"]}
    val = [c for c in manifest["cases"] if c["split"] == "val"]
    assert val[0]["label_voxels"]["1"] > 0 and val[0]["num_slices"] == 20
