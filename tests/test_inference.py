"""liverzoo.inference: sliding stacks, overlapping windows, tiles, TTA, back to the CT grid."""
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

from liverzoo import inference
from liverzoo.data.phantom import make_phantom
from liverzoo.data.preprocess import apply_preset
from liverzoo.data.sampling import extract_stack
from liverzoo.errors import ConfigError, DataError

from tests.conftest import REPO


def softmax(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def pointwise_fn(batch):
    """Per-voxel probabilities from the channels: no spatial context, so tiles/windows are exact."""
    w = np.linspace(-1.0, 1.5, batch.shape[-1], dtype=np.float32)
    x = (batch * w).sum(axis=-1, keepdims=True)
    return softmax(np.concatenate([-x, 0.3 * x, 2 * x - 1], axis=-1))


@pytest.fixture(scope="module")
def phantom():
    """A small synthetic abdominal CT (HU) with liver and tumors."""
    return make_phantom((40, 36, 13), seed=3)[0]


@pytest.fixture(scope="module")
def volume(phantom):
    """The phantom preprocessed with the LW-HCN preset (values in [-1, 1]), times 3."""
    return apply_preset(phantom, "lw_hcn") * 3


# (input_shape, stride): whole plane / fixed tiles, dense / sparse stacks.
CASES_2D = [((None, None, 3), 1), ((None, None, 5), 2), ((16, 16, 3), 1), ((40, 20, 1), 1)]


@pytest.mark.parametrize("input_shape,stride", CASES_2D)
def test_2d_equals_slice_by_slice(volume, input_shape, stride):
    t = input_shape[-1]
    calls = []

    def fn(batch):
        calls.append(batch.shape)
        return pointwise_fn(batch)

    probs = inference.predict_volume(fn, volume, kind="2d", input_shape=input_shape, stride=stride, batch_size=4)
    expected = np.stack([pointwise_fn(extract_stack(volume, z, t, stride)[None])[0] for z in range(volume.shape[2])],
                        axis=2)
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    # Batches of at most 4 stacks of model size: the T-channel volume is never built.
    assert all(s[0] <= 4 and s[3] == t for s in calls)


def test_3d_windows_and_tiles_equal_whole_volume(volume):
    whole = pointwise_fn(volume[..., None])
    for input_shape, weighting in [((None, None, None, 1), "mean"), ((5, 16, 24, 1), "gaussian"),
                                   ((20, 40, 36, 1), "mean")]:  # depth > Z: edge slice repeated
        probs = inference.predict_volume(pointwise_fn, volume, kind="3d", input_shape=input_shape,
                                         window=6, step=4, weighting=weighting)
        np.testing.assert_allclose(probs, whole, atol=1e-6, err_msg=str(input_shape))


@pytest.mark.parametrize("weighting", ["mean", "gaussian"])
def test_3d_overlap_weighting(weighting):
    """Each window predicts its own constant; voxels get the weighted mean of their windows."""
    size_z, window, step = 23, 8, 5
    starts = inference.window_starts(size_z, window, step)
    assert starts == [0, 5, 10, 15]
    calls = iter(range(100))

    def fn(batch):
        value = next(calls)
        return np.full(batch.shape[:-1] + (2,), value, np.float32)

    probs = inference.predict_volume(fn, np.zeros((4, 4, size_z), np.float32), kind="3d",
                                     input_shape=(None, 4, 4, 1), window=window, step=step,
                                     weighting=weighting, num_classes=2)
    w = inference.window_weights(window, weighting)
    num, den = np.zeros(size_z), np.zeros(size_z)
    for k, s in enumerate(starts):
        num[s : s + window] += k * w
        den[s : s + window] += w
    np.testing.assert_allclose(probs[0, 0, :, 0], num / den, rtol=1e-5)
    if weighting == "gaussian":
        assert w[window // 2] > 10 * w[0]


def test_tta_flip_averages_flipped_predictions(volume):
    ramp = np.linspace(-2, 2, volume.shape[0], dtype=np.float32)[None, :, None, None]

    def fn(batch):  # not flip-equivariant: depends on the position along X
        return pointwise_fn(batch + ramp)

    probs = inference.predict_volume(fn, volume, kind="2d", input_shape=(None, None, 1), tta_flip=True)
    stacks = np.moveaxis(volume, 2, 0)[..., None]
    expected = sum(np.flip(fn(np.flip(stacks, axes)), axes) for axes in [(), (1,), (2,), (1, 2)]) / 4
    np.testing.assert_allclose(probs, np.moveaxis(expected, 0, 2), atol=1e-6)
    plain = inference.predict_volume(fn, volume, kind="2d", input_shape=(None, None, 1))
    assert np.abs(plain - probs).max() > 1e-3


BAD = [
    (dict(kind="2d", input_shape=(64, 64, 3)), DataError, "smaller than the model's input"),
    (dict(kind="2d", input_shape=(None, None, 3), num_classes=4), DataError, "4 classes"),
    (dict(kind="2d", input_shape=(None, None, 3), stack_size=5), ConfigError, "stack_size"),
    (dict(kind="2d", input_shape=(None, None, None)), ConfigError, "T known"),
    (dict(kind="3d", input_shape=(None, None, 3)), ConfigError, r"\(D, H, W, 1\)"),
    (dict(kind="2.5d", input_shape=(None, None, 3)), ConfigError, "kind"),
    (dict(kind="3d", input_shape=(None, None, None, 1), weighting="max"), ConfigError, "weighting"),
]


@pytest.mark.parametrize("kwargs,error,match", BAD)
def test_bad_arguments_raise(volume, kwargs, error, match):
    with pytest.raises(error, match=match):
        inference.predict_volume(pointwise_fn, volume, **kwargs)


def test_probabilities_to_grid_matches_scipy_zoom():
    rng = np.random.default_rng(1)
    probs = softmax(rng.normal(size=(9, 7, 5, 3)))
    out = np.empty((20, 16, 11, 3), np.float32)
    labels = inference.probabilities_to_grid(probs, (20, 16, 11), out=out)
    zoomed = ndimage.zoom(probs, (20 / 9, 16 / 7, 11 / 5, 1), order=1, grid_mode=True, mode="nearest",
                          prefilter=False)
    np.testing.assert_allclose(out, zoomed, atol=1e-6)
    np.testing.assert_array_equal(labels, zoomed.argmax(-1))


def test_segment_on_raw_hu_equals_manual_pipeline(phantom):
    """segment = prepare_volume + predict_volume + resize back + argmax (+ postprocess)."""
    from liverzoo.data.io import CTVolume
    from liverzoo.data.preprocess import prepare_volume

    hu = phantom.astype(np.float32)
    ct = CTVolume(hu, np.array([0.8, 0.8, 2.0]), np.eye(4))
    kwargs = dict(kind="2d", preset="lw_hcn", input_shape=(None, None, 3))
    same = inference.segment(pointwise_fn, ct, inplane_size=0, postprocess=False, **kwargs)
    image, _, _ = prepare_volume(hu, ct.spacing, "lw_hcn", inplane_size=0)
    expected = inference.predict_volume(pointwise_fn, image, kind="2d", input_shape=(None, None, 3)).argmax(-1)
    np.testing.assert_array_equal(same, expected)

    labels, probs = inference.segment(pointwise_fn, ct, inplane_size=24, return_probabilities=True, **kwargs)
    assert labels.shape == hu.shape and labels.dtype == np.uint8 and probs.shape == hu.shape + (3,)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    # Resized to 24x24 and back: the manual pipeline, and mostly the full-resolution labels.
    small = inference.segment(pointwise_fn, ct, inplane_size=24, postprocess=False, **kwargs)
    image, _, _ = prepare_volume(hu, ct.spacing, "lw_hcn", inplane_size=24)
    probs_24 = inference.predict_volume(pointwise_fn, image, kind="2d", input_shape=(None, None, 3))
    np.testing.assert_array_equal(small, inference.probabilities_to_grid(probs_24, hu.shape))
    assert np.mean(small == same) > 0.8
    from liverzoo.postprocess import OPENING_MM, postprocess

    np.testing.assert_array_equal(labels, postprocess(probs.argmax(-1), opening_mm=OPENING_MM, spacing=ct.spacing))
    no_opening = inference.segment(pointwise_fn, ct, inplane_size=24, opening_mm=0, **kwargs)
    np.testing.assert_array_equal(no_opening, postprocess(probs.argmax(-1)))


def test_liver_threshold_labels_against_numpy():
    """`probabilities_to_grid(liver_threshold=t)`: liver where liver + tumor >= t, then the
    larger of the two; None is the argmax; both on the interpolated probabilities."""
    rng = np.random.default_rng(0)
    probs = rng.dirichlet((1.0, 1.0, 0.5), size=(6, 5, 4)).astype(np.float32)
    full = np.empty((12, 10, 7, 3), np.float32)
    argmax = inference.probabilities_to_grid(probs, (12, 10, 7), out=full)
    np.testing.assert_array_equal(argmax, full.argmax(-1))
    for t in (0.3, 0.5, 0.7):
        labels = inference.probabilities_to_grid(probs, (12, 10, 7), liver_threshold=t)
        foreground = full[..., 1] + full[..., 2] >= t
        np.testing.assert_array_equal(labels, np.where(foreground, np.where(full[..., 2] > full[..., 1], 2, 1), 0))
        assert labels.dtype == np.uint8
    low = inference.probabilities_to_grid(probs, (12, 10, 7), liver_threshold=0.3)
    assert (low >= 1).sum() > (argmax >= 1).sum()


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, True, "0.3"])
def test_liver_threshold_must_be_a_probability(volume, bad):
    from liverzoo.data.io import CTVolume

    ct = CTVolume(volume, np.ones(3), np.eye(4))
    with pytest.raises(ConfigError, match="liver_threshold must be a probability between 0 and 1"):
        inference.segment(pointwise_fn, ct, kind="2d", preset="lw_hcn", input_shape=(None, None, 3),
                          liver_threshold=bad)


def test_segment_needs_kind_and_preset(volume):
    from liverzoo.data.io import CTVolume

    ct = CTVolume(volume, np.ones(3), np.eye(4))
    with pytest.raises(ConfigError, match="preset"):
        inference.segment(pointwise_fn, ct, kind="2d", input_shape=(None, None, 1))


def test_import_does_not_load_tensorflow(tmp_path):
    """liverzoo.lite runs inference without TensorFlow: the modules must not import it."""
    code = (
        "import sys, numpy as np\n"
        "import liverzoo.inference as inf, liverzoo.metrics, liverzoo.postprocess\n"
        "fn = lambda b: np.repeat(b[..., :1], 3, axis=-1)\n"
        "inf.predict_volume(fn, np.zeros((4, 4, 3), np.float32), kind='2d', input_shape=(4, 4, 3))\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TF imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


@pytest.fixture(scope="module")
def tiny_models():
    """A 2.5D model (T=3) with deep supervision, and a 3D model with no z context."""
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input((None, None, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    main = keras.layers.Conv2D(3, 3, padding="same", activation="softmax")(h)
    aux = keras.layers.Conv2D(3, 1, activation="softmax")(h)
    model_2d = keras.Model(x, [main, aux])
    v = keras.Input((None, None, None, 1))
    h = keras.layers.Conv3D(4, (1, 3, 3), padding="same", activation="relu")(v)
    model_3d = keras.Model(v, keras.layers.Conv3D(3, (1, 3, 3), padding="same", activation="softmax")(h))
    return model_2d, model_3d


def test_keras_2d_model_equals_slice_by_slice(volume, tiny_models):
    model_2d, _ = tiny_models
    probs = inference.predict_volume(inference.keras_predict_fn(model_2d), volume, kind="2d",
                                     input_shape=(None, None, 3), batch_size=5)
    for z in range(volume.shape[2]):
        expected = np.asarray(model_2d(extract_stack(volume, z, 3)[None])[0])[0]
        np.testing.assert_allclose(probs[:, :, z], expected, atol=1e-5)


def test_keras_3d_model_equals_slice_by_slice(volume, tiny_models):
    _, model_3d = tiny_models
    done = []
    probs = inference.predict_volume(inference.keras_predict_fn(model_3d), volume, kind="3d",
                                     input_shape=(4, None, None, 1), step=2, progress=lambda d, n: done.append((d, n)))
    for z in range(volume.shape[2]):
        expected = np.asarray(model_3d(volume[None, None, :, :, z, None]))[0, 0]
        np.testing.assert_allclose(probs[:, :, z], expected, atol=1e-5)
    assert done[-1] == (13, 13) and len(done) == len(inference.window_starts(13, 4, 2))


def test_keras_input_mismatch_is_a_data_error(tiny_models):
    model_2d, _ = tiny_models
    with pytest.raises(DataError, match="cannot take an input of shape"):
        inference.keras_predict_fn(model_2d)(np.zeros((1, 8, 8, 5), np.float32))


def test_keras_wrappers_of_many_models_do_not_warn_of_retracing(caplog):
    """Each wrapped model traces once or twice; TensorFlow must not sum the traces of all of
    them (it did while the traced function was one lambda) and warn of excessive retracing, as
    it did in the quickstart notebook after the validation, segment and runtime wrappers."""
    import keras

    fns = []
    for i in range(4):
        inputs = keras.Input((None, None, 1))
        fns.append(inference.keras_predict_fn(keras.Model(inputs, keras.layers.Conv2D(3, 1)(inputs), name=f"m{i}")))
    with caplog.at_level("WARNING", logger="tensorflow"):
        for fn in fns:
            for batch in (4, 3, 2):  # a full batch, then the partial last ones
                assert fn(np.zeros((batch, 8, 8, 1), np.float32)).shape == (batch, 8, 8, 3)
    assert not [r for r in caplog.records if "retracing" in r.getMessage()]
