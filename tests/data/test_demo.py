"""liverzoo.data.demo: the embedded files are the real CT of its manifest, attributed, and the demo
split validates on tumors that no training case contains."""
import hashlib
import json
import os

import numpy as np
import pytest
from scipy import ndimage

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


def test_demo_split_validates_on_unseen_tumors():
    cases = {c.case_id: c for c in demo.demo_cases()}
    assert list(cases) == list(demo.DEMO_SPLIT)
    assert demo.demo_split() == {"train": ["totalseg", "dcmqi", "lits117_inferior"], "val": ["lits117_superior"]}
    lits = demo.load_demo_volume("lits117")
    np.testing.assert_array_equal(cases["lits117_inferior"].array, lits.array[:, :, 0:59])
    np.testing.assert_array_equal(cases["lits117_superior"].label, lits.label[:, :, 79:128])
    # The superior case's affine places its first slice where slice 79 of the whole volume is.
    np.testing.assert_allclose(cases["lits117_superior"].affine[:3, 3], (lits.affine @ [0, 0, 79, 1])[:3])
    assert (cases["lits117_superior"].label == 2).sum() > 1000 and (cases["lits117_inferior"].label == 2).sum() > 1000
    # No tumor (26-connected component) reaches into both the training and validation slices.
    components, count = ndimage.label(lits.label == 2, structure=np.ones((3, 3, 3)))
    train = set(np.unique(components[:, :, slice(*demo.LITS117_TRAIN_SLICES)])) - {0}
    val = set(np.unique(components[:, :, slice(*demo.LITS117_VAL_SLICES)])) - {0}
    assert count > 10 and train and val and not train & val


def test_write_demo_tfrecords(tmp_path):
    pytest.importorskip("tensorflow")
    manifest = demo.write_demo_tfrecords(str(tmp_path), preset="residual_unet", inplane_size=32)
    assert manifest["splits"] == {"train": ["dcmqi", "lits117_inferior", "totalseg"], "val": ["lits117_superior"]}
    val = [c for c in manifest["cases"] if c["split"] == "val"]
    assert val[0]["label_voxels"]["2"] > 0 and val[0]["num_slices"] == 49
