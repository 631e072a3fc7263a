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
