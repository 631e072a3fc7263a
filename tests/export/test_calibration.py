"""liverzoo.export.calibration: real CT inputs for calibration and verification, checked."""
import numpy as np
import pytest

from liverzoo import export
from liverzoo.errors import ConfigError, DataError


def test_representative_data_is_checked():
    with pytest.raises(DataError, match=r"representative_data: input of shape \(8, 8, 1\), the model takes"):
        export.calibration_inputs([np.zeros((8, 8, 1))], (16, 16, 1), None)
    with pytest.raises(DataError, match="no calibration inputs"):
        export.calibration_inputs([], (16, 16, 1), None)
    with pytest.raises(ConfigError, match="no preprocessing preset"):
        export.calibration_inputs(None, (16, 16, 1), None)
    with pytest.raises(DataError, match="no TFRecord shards found"):
        export.calibration_inputs("/no/such/shards-*.tfrecord", (16, 16, 1), "residual_unet")
    batch = np.zeros((3, 1, 16, 16, 1), np.float32)  # (1,) + input_shape items are accepted
    assert export.calibration_inputs(batch, (16, 16, 1), None, num_samples=2).shape == (2, 16, 16, 1)


def test_sample_inputs_are_the_preprocessed_stacks(demo_cases):
    from liverzoo.data import preprocess

    case = demo_cases[2]
    image, label, _ = preprocess.prepare_volume(case.array, case.spacing, "ds_nnunet", case.label, inplane_size=32)
    stacks, labels = export.sample_inputs([case], (32, 32, 5), "ds_nnunet", num_samples=3)
    centres = np.linspace(0, image.shape[2] - 1, 5)[1:-1].round().astype(int)
    for stack, lab, centre in zip(stacks, labels, centres):
        np.testing.assert_array_equal(stack, image[:, :, np.clip(np.arange(centre - 2, centre + 3), 0, None)])
        np.testing.assert_array_equal(lab, label[:, :, centre])
    volumes, masks = export.sample_inputs([case], (6, 32, 32, 1), "ds_nnunet", num_samples=1)
    centre = centres[1]
    np.testing.assert_array_equal(volumes[0, ..., 0], np.moveaxis(image[:, :, centre - 3 : centre + 3], 2, 0))
    np.testing.assert_array_equal(masks[0], np.moveaxis(label[:, :, centre - 3 : centre + 3], 2, 0))


def test_sample_inputs_at_a_working_plane_are_cut_or_padded_around_the_centre(demo_cases):
    # A run trained at 3 mm a pixel is calibrated on its 3 mm planes, not on stretched slices:
    # a plane larger than the input is cut around its centre, a smaller one padded with air.
    from liverzoo.data import preprocess

    by_name = {case.case_id: case for case in demo_cases}
    slab, lits = by_name["slab"], by_name["lits117"]
    image, label, _ = preprocess.prepare_volume(slab.array, slab.spacing, "residual_unet", slab.label,
                                                inplane_spacing=6.0)
    assert image.shape[:2] == (83, 83)  # 500 mm field of view at 6 mm a pixel
    stacks, labels = export.sample_inputs([slab], (64, 64, 1), "residual_unet", num_samples=1, inplane_spacing=6.0)
    centre = int(np.linspace(0, image.shape[2] - 1, 3)[1].round())
    np.testing.assert_array_equal(stacks[0, :, :, 0], image[9:73, 9:73, centre])
    np.testing.assert_array_equal(labels[0], label[9:73, 9:73, centre])
    small, _, _ = preprocess.prepare_volume(lits.array, lits.spacing, "residual_unet", lits.label, inplane_spacing=6.0)
    assert small.shape[:2] == (32, 32)  # 128 pixels at an estimated 1.5 mm
    padded, _ = export.sample_inputs([lits], (64, 64, 1), "residual_unet", num_samples=1, inplane_spacing=6.0)
    centre = int(np.linspace(0, small.shape[2] - 1, 3)[1].round())
    np.testing.assert_array_equal(padded[0, 16:48, 16:48, 0], small[:, :, centre])
    assert np.all(padded[0, :16, :, 0] == small.min()) and np.all(padded[0, 48:, :, 0] == small.min())
