"""liverzoo.data.phantom: any size, seeded, plausible HU per tissue, tumors inside the liver."""
import nibabel as nib
import numpy as np
import pytest

from liverzoo.data import io
from liverzoo.data.phantom import HU, make_phantom, save_phantom
from liverzoo.errors import ConfigError


@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 300, 2), (64, 48, 24), (96, 96, 40)])
def test_any_shape(shape):
    hu, label = make_phantom(shape, seed=0)
    assert hu.shape == label.shape == shape and hu.dtype == np.int16 and label.dtype == np.uint8
    assert set(np.unique(label)) <= {0, 1, 2}


def test_seeded_and_plausible():
    hu, label = make_phantom((96, 96, 40), seed=5, num_tumors=4)
    again, again_label = make_phantom((96, 96, 40), seed=5, num_tumors=4)
    np.testing.assert_array_equal(hu, again)
    np.testing.assert_array_equal(label, again_label)
    assert not np.array_equal(make_phantom((96, 96, 40), seed=6, num_tumors=4)[1], label)
    assert (label == 1).mean() > 0.03 and (label == 2).any()
    # Tissue means within a noise-sized margin of their HU; tumors darker than liver.
    assert abs(hu[label == 1].mean() - HU["liver"]) < 3 and abs(hu[label == 1].std() - 12) < 1.5
    assert abs(hu[label == 2].mean() - HU["tumor"]) < 15
    assert hu[label == 2].mean() < hu[label == 1].mean() - 30
    assert abs(np.median(hu[0, :, :]) - HU["air"]) < 30  # outside the body
    assert hu.max() > 500  # spine
    # Tumors lie inside the liver: filling them gives a single solid liver region.
    from scipy import ndimage

    _, count = ndimage.label(label > 0)
    assert count <= 2  # right lobe and left lobe may touch or not


def test_fov_padding_and_errors():
    hu, _ = make_phantom((64, 64, 4), fov_padding=True)
    assert hu[0, 0, 0] == -3024 and hu[32, 32, 0] > -3024
    with pytest.raises(ConfigError):
        make_phantom((64, 64))


def test_save_phantom_loads_as_a_labelled_case(tmp_path):
    hu, label = save_phantom(tmp_path / "ct.nii.gz", tmp_path / "seg.nii.gz", (40, 30, 10), (0.8, 0.7, 2.0), seed=2)
    ct = io.load_case(tmp_path / "ct.nii.gz", tmp_path / "seg.nii.gz")
    np.testing.assert_array_equal(ct.array, hu)
    np.testing.assert_array_equal(ct.label, label)
    np.testing.assert_allclose(ct.spacing, (0.8, 0.7, 2.0))
    assert nib.load(tmp_path / "ct.nii.gz").get_data_dtype() == np.int16
