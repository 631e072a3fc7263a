"""liverzoo.streaming: slab-by-slab segmentation gives the whole-volume path's masks exactly."""
import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from liverzoo import inference, maskfile, streaming
from liverzoo.data import io, preprocess
from liverzoo.errors import DataError

from tests.conftest import REPO

DEMO = REPO / "liverzoo" / "data" / "demo"
LITS = DEMO / "lits117_crop128_ct.nii.gz"  # real CT, stored R-P-I: canonical z is flipped


def softmax(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def context_fn(batch):
    """Probabilities with spatial context (a 3-voxel box filter, and across the stack or depth).

    Every output voxel depends on its neighbours, so wrong halos, tiles or window edges show.
    """
    x = np.asarray(batch, np.float32)
    size = (1, 3, 3, x.shape[-1]) if x.ndim == 4 else (1, 3, 3, 3, 1)
    smooth = ndimage.uniform_filter(x, size=size, mode="nearest")
    smooth = smooth.mean(axis=-1, keepdims=True) + 0.2 * x[..., :1]
    return softmax(np.concatenate([-2 * smooth, 0.5 * smooth, 3 * smooth - 1.2], axis=-1))


class ContextModel:
    """A predict_fn with the input shape a loaded model would report."""

    def __init__(self, input_shape):
        self.input_shape = input_shape

    def __call__(self, batch):
        return context_fn(batch)


# (model input shape, preset, predict options): 2.5D dense/sparse stacks, tiles, TTA; 3D windows.
CASES = [
    ((None, None, 5), "residual_unet", {"inplane_size": 64}),  # histogram equalisation
    ((None, None, 3), "lv_net", {"inplane_size": 48, "stride": 2, "tta_flip": True}),  # z-score
    ((32, 32, 3), "ds_nnunet", {"inplane_size": 48, "batch_size": 3}),  # in-plane tiles
    ((None, 32, 32, 1), "lw_hcn", {"inplane_size": 32, "window": 12, "step": 5}),  # 3D sub-volumes
    ((7, 32, 32, 1), "lv_net", {"inplane_size": 32, "weighting": "gaussian", "step": 3, "tta_flip": True}),
]


@pytest.mark.parametrize("input_shape,preset,options", CASES)
@pytest.mark.parametrize("postprocess", [False, True])
def test_streaming_equals_whole_volume_on_real_ct(input_shape, preset, options, postprocess):
    model = ContextModel(input_shape)
    ct = io.load_volume(LITS)
    reference = inference.segment(model, ct, preset=preset, streaming=False, postprocess=postprocess, **options)
    assert len(np.unique(reference)) > 1  # a mask worth comparing
    # Slabs of 5 native slices: boundaries fall inside stacks and windows.
    lazy = streaming.NiftiSlabs(LITS)
    slabbed = streaming.segment_slabs(model, lazy, layout=inference.layout_of(input_shape), preset=preset,
                                      input_shape=input_shape, postprocess=postprocess, slab=5, **options)
    np.testing.assert_array_equal(slabbed, reference)
    if postprocess:
        # The mask left in its temporary file (what tools/predict.py and lite.segment_nifti write from).
        with inference.segment(model, lazy, preset=preset, as_file=True, **options) as masks:
            assert isinstance(masks, maskfile.MaskFile)
            np.testing.assert_array_equal(np.asarray(masks), reference)
    # segment streams by default, from a loaded volume too.
    np.testing.assert_array_equal(inference.segment(model, ct, preset=preset, postprocess=postprocess, **options),
                                  reference)


def test_streaming_equals_whole_volume_with_a_liver_threshold():
    """The slab-by-slab path applies `liver_threshold` as the whole-volume path does, and it
    changes the mask."""
    model = ContextModel((None, None, 3))
    ct = io.load_volume(LITS)
    options = dict(preset="lv_net", inplane_size=48, postprocess=True, liver_threshold=0.3)
    reference = inference.segment(model, ct, streaming=False, **options)
    slabbed = streaming.segment_slabs(model, streaming.NiftiSlabs(LITS), layout="2d", input_shape=(None, None, 3),
                                      slab=5, **options)
    np.testing.assert_array_equal(slabbed, reference)
    assert (reference != inference.segment(model, ct, preset="lv_net", inplane_size=48)).any()


@pytest.mark.parametrize("spacing,input_shape", [(2.0, (64, 64, 3)),  # 96x96 plane: tiles
                                                 (4.0, (64, 64, 3)),  # 48x48 plane: padded to the input
                                                 (3.0, (None, None, 3))])  # free input: the whole plane
def test_inplane_spacing_draws_the_scan_at_that_scale(spacing, input_shape):
    """The working plane at `inplane_spacing` mm a pixel, padded with air when smaller than the
    model's input (as training patches are): streaming equals the whole-volume path, and the
    padding equals predicting on a plane padded by hand."""
    model = ContextModel(input_shape)
    ct = io.load_volume(LITS)  # 128 x 128 at the header's 1.5 mm
    ct.spacing = np.array([1.5, 1.5, 1.0])
    options = dict(preset="lv_net", inplane_spacing=spacing)
    reference = inference.segment(model, ct, streaming=False, postprocess=False, **options)
    np.testing.assert_array_equal(inference.segment(model, ct, postprocess=False, **options), reference)
    image, _, _ = preprocess.prepare_volume(ct.array, ct.spacing, "lv_net", inplane_spacing=spacing)
    assert image.shape[:2] == (round(192 / spacing),) * 2
    tile = input_shape[0] or image.shape[0]
    padded = np.full((max(tile, image.shape[0]),) * 2 + image.shape[2:], preprocess.air_value("lv_net", image),
                     np.float32)
    padded[: image.shape[0], : image.shape[1]] = image
    probs = inference.predict_volume(context_fn, padded, kind="2d", input_shape=input_shape)
    expected = inference.probabilities_to_grid(probs[: image.shape[0], : image.shape[1]], ct.array.shape)
    np.testing.assert_array_equal(reference, expected)
    if input_shape[0] and image.shape[0] < input_shape[0]:
        with pytest.raises(DataError, match="smaller than the model's input"):
            inference.predict_volume(context_fn, image, kind="2d", input_shape=input_shape)


@pytest.mark.parametrize("axcodes_order", [(0, 1, 2), (2, 0, 1), (1, 2, 0)])
def test_nifti_slabs_read_the_canonical_volume(tmp_path, axcodes_order):
    """Any stored axis order and flips: slabs are the canonical array's slices."""
    image = nib.load(LITS)
    data = np.transpose(np.asanyarray(image.dataobj)[:, :70:, ::-1], axcodes_order)
    flip = np.diag([1.0, 1.0, -1.0, 1.0])
    perm = np.eye(4)
    perm[:3, :3] = np.eye(3)[:, list(axcodes_order)]
    path = tmp_path / "reoriented.nii.gz"
    nib.save(nib.Nifti1Image(data, image.affine @ flip @ perm), path)
    ct = io.load_volume(path)
    lazy = streaming.NiftiSlabs(path)
    assert lazy.shape == ct.shape
    np.testing.assert_array_equal(lazy.spacing, ct.spacing)
    for z0, z1 in [(0, 4), (30, 31), (lazy.shape[2] - 3, lazy.shape[2])]:
        np.testing.assert_array_equal(lazy.read(z0, z1), ct.array[:, :, z0:z1])
    # The mask is written back aligned exactly as from the loaded volume.
    mask = (ct.array > 0).astype(np.uint8)
    io.save_mask(mask, lazy, tmp_path / "a.nii.gz")
    io.save_mask(mask, ct, tmp_path / "b.nii.gz")
    a, b = nib.load(tmp_path / "a.nii.gz"), nib.load(tmp_path / "b.nii.gz")
    np.testing.assert_array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj))
    np.testing.assert_array_equal(a.affine, b.affine)


def test_truncated_nifti_is_a_data_error(tmp_path):
    raw = tmp_path / "raw.nii"
    nib.save(nib.load(LITS), raw)
    cut = tmp_path / "cut.nii"
    cut.write_bytes(raw.read_bytes()[: raw.stat().st_size // 2])
    with pytest.raises(DataError, match="cut.nii"):
        lazy = streaming.NiftiSlabs(cut)
        for z0 in range(0, lazy.shape[2], 16):
            lazy.read(z0, z0 + 16)


def test_keras_model_streams_with_tta(tmp_path):
    """A real (untrained) Keras 2.5D model, TTA on: the same mask either way."""
    import keras

    from liverzoo.models import build

    keras.utils.set_random_seed(0)
    model = build("residual_unet", input_shape=(32, 32, 3), base_filters=4)
    ct = io.load_volume(DEMO / "totalseg_example_full_ct.nii.gz")
    options = {"preset": "residual_unet", "inplane_size": 32, "tta_flip": True, "postprocess": False}
    reference = inference.segment(model, ct, streaming=False, **options)
    np.testing.assert_array_equal(inference.segment(model, streaming.NiftiSlabs(ct.path), **options), reference)
