"""liverzoo.data.augment: label values kept, image and label aligned, samplers vs SciPy."""
import math

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
ndimage = pytest.importorskip("scipy.ndimage")

from liverzoo.data import augment  # noqa: E402
from liverzoo.errors import ConfigError  # noqa: E402

# Everything on: the residual U-Net recipe (rotation 180, zoom 0.2, elastic) plus the rest.
ALL_ON = augment.AugmentConfig(
    rotation=180, zoom=0.2, shift=0.1, elastic=0.03, flip_axes=("d", "h", "w"),
    intensity_scale=0.1, intensity_shift=0.1, noise_std=0.01, organ_contrast=0.3, gamma=0.3, blur=1.0,
    low_resolution=1.0,
)
GEOMETRY_ONLY = augment.AugmentConfig(rotation=180, zoom=0.2, shift=0.1, elastic=0.03, flip_axes=("h", "w"))


def _blob_label(shape, seed=0):
    """A liver-like disc (1) holding a tumor disc (2), placed at random, in (H, W)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    rows, cols = np.mgrid[:h, :w]
    cy, cx = rng.uniform(0.35, 0.65, 2) * (h, w)
    label = np.zeros(shape, np.int32)
    label[(rows - cy) ** 2 + ((cols - cx) * 0.7) ** 2 < (0.3 * h) ** 2] = 1
    label[(rows - cy - 3) ** 2 + (cols - cx) ** 2 < (0.1 * h) ** 2] = 2
    return label


@pytest.mark.parametrize(
    "image_shape, label_shape",
    [((40, 36, 5), (40, 36)), ((4, 40, 36, 1), (4, 40, 36))],
    ids=["2d_stack", "3d_subvolume"],
)
def test_shapes_dtypes_and_label_values_are_kept(image_shape, label_shape):
    rng = np.random.default_rng(1)
    label = np.broadcast_to(_blob_label(label_shape[-2:]), label_shape).copy()
    image = rng.normal(size=image_shape).astype(np.float32)
    fn = tf.function(augment.make_augment(ALL_ON))
    changed = 0
    for _ in range(8):
        out_image, out_label = fn(tf.constant(image), tf.constant(label))
        assert out_image.shape == image_shape and out_image.dtype == tf.float32
        assert out_label.shape == label_shape and out_label.dtype == tf.int32
        assert set(np.unique(out_label.numpy())) <= {0, 1, 2}
        changed += int(np.any(out_label.numpy() != label))
    assert changed >= 6  # the transforms are random and really move the label


def test_2d_image_and_label_stay_aligned():
    """An image made of the label's one-hot channels must agree with the warped label.

    Bilinear weights of the nearest corner are >= 1/4, so the channel of the label picked by
    nearest-neighbour holds at least 0.25 everywhere; inside regions all four corners agree
    and the image is exactly one-hot of the label.
    """
    label = _blob_label((48, 48), seed=2)
    image = np.eye(3, dtype=np.float32)[label]  # (H, W, 3): a 2D stack with T = 3
    fn = tf.function(augment.make_augment(GEOMETRY_ONLY))
    for _ in range(10):
        out_image, out_label = (t.numpy() for t in fn(tf.constant(image), tf.constant(label)))
        picked = np.take_along_axis(out_image, out_label[..., None], axis=-1)[..., 0]
        assert picked.min() >= 0.25 - 1e-5
        pure = out_image.max(-1) > 1 - 1e-5
        assert np.array_equal(out_label[pure], out_image.argmax(-1)[pure])
        assert np.mean(out_image.argmax(-1) == out_label) > 0.97


def test_3d_image_and_label_stay_aligned_and_slices_share_the_warp():
    label2d = _blob_label((40, 40), seed=3)
    label = np.stack([label2d, label2d, np.where(label2d == 2, 1, label2d)])  # (3, H, W)
    image = label.astype(np.float32)[..., None]
    config = augment.AugmentConfig(rotation=90, zoom=0.2, elastic=0.03, flip_axes=("d", "h", "w"))
    fn = tf.function(augment.make_augment(config))
    for _ in range(6):
        out_image, out_label = (t.numpy() for t in fn(tf.constant(image), tf.constant(label)))
        # Rounded bilinear values agree with nearest labels except on a few boundary pixels
        # (an unaligned label agrees on 50-70% here).
        assert np.mean(np.round(out_image[..., 0]) == out_label) > 0.98
        # The slice with tumor relabelled as liver stays the tumor-free copy of the others.
        slices = list(out_label)
        same = [np.array_equal(slices[i], slices[j]) for i, j in ((0, 1), (1, 2), (0, 2))]
        assert same.count(True) == 1
        tumor_free = [s for s in slices if not np.any(s == 2)][0]
        with_tumor = [s for s in slices if np.any(s == 2)][0]
        assert np.array_equal(np.where(with_tumor == 2, 1, with_tumor), tumor_free)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_right_angle_rotation_is_exact(k):
    label = _blob_label((31, 31), seed=4)[..., None]
    rows, cols = augment.affine_coordinates(31, 31, k * math.pi / 2, 1.0, [0.0, 0.0])
    out = augment.sample_nearest(tf.constant(label), rows, cols).numpy()[..., 0]
    rotated = [np.rot90(label[..., 0], k=s * k) for s in (1, -1)]
    assert any(np.array_equal(out, r) for r in rotated)
    assert not np.array_equal(out, label[..., 0])


def test_bilinear_sampler_equals_scipy_mirror_mode():
    rng = np.random.default_rng(5)
    image = rng.normal(size=(20, 17, 2)).astype(np.float32)
    rows = rng.uniform(-8, 28, size=(11, 13)).astype(np.float32)
    cols = rng.uniform(-8, 25, size=(11, 13)).astype(np.float32)
    got = augment.sample_bilinear(tf.constant(image), tf.constant(rows), tf.constant(cols)).numpy()
    for c in range(2):
        want = ndimage.map_coordinates(image[..., c], [rows, cols], order=1, mode="mirror")
        np.testing.assert_allclose(got[..., c], want, atol=1e-5)


def test_zoom_and_shift_match_scipy_affine_transform():
    rng = np.random.default_rng(6)
    image = rng.normal(size=(24, 30, 1)).astype(np.float32)
    rows, cols = augment.affine_coordinates(24, 30, 0.0, 1.25, [2.0, -3.0])
    got = augment.sample_bilinear(tf.constant(image), rows, cols).numpy()[..., 0]
    centre = np.array([23 / 2, 29 / 2])
    want = ndimage.affine_transform(
        image[..., 0], np.eye(2) / 1.25, offset=centre - centre / 1.25 + [2.0, -3.0], order=1, mode="mirror"
    )
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_identity_config_changes_nothing():
    label = _blob_label((16, 16))
    image = np.random.default_rng(7).normal(size=(16, 16, 3)).astype(np.float32)
    out_image, out_label = augment.make_augment()(tf.constant(image), tf.constant(label))
    np.testing.assert_array_equal(out_image.numpy(), image)
    np.testing.assert_array_equal(out_label.numpy(), label)


@pytest.mark.parametrize("layout", ["2d_stack", "3d_subvolume"])
def test_organ_contrast_shifts_only_the_labelled_organ_by_one_offset(layout):
    # Reference: offset * (3x3 mean of the organ mask) added to every slice (SciPy's uniform
    # filter; zero-padded like SAME average pooling counts only inside pixels, so compare the interior).
    label2d = _blob_label((24, 24), seed=3)
    image = np.random.default_rng(4).normal(size=(24, 24, 5)).astype(np.float32)
    config = augment.AugmentConfig(organ_contrast=0.3)
    if layout == "2d_stack":
        out, out_label = augment.augment_example(tf.constant(image), tf.constant(label2d), config)
        delta = out.numpy() - image
        mask = np.repeat((label2d >= 1)[..., None], 5, axis=2)
    else:
        volume = np.transpose(image, (2, 0, 1))[..., None]
        label3d = np.stack([label2d, np.zeros_like(label2d), label2d, label2d, np.zeros_like(label2d)])
        out, out_label = augment.augment_example(tf.constant(volume), tf.constant(label3d), config)
        delta = np.transpose(out.numpy()[..., 0], (1, 2, 0)) - image
        mask = np.transpose(label3d >= 1, (1, 2, 0))
        label2d = label3d
    np.testing.assert_array_equal(out_label.numpy(), label2d)
    soft = ndimage.uniform_filter(mask.astype(np.float64), size=(3, 3, 1), mode="constant")
    inside = soft > 0.999  # the organ's interior: the full offset
    offset = delta[inside].mean()
    assert 0 < abs(offset) <= 0.3
    np.testing.assert_allclose(delta[inside], offset, atol=1e-5)
    np.testing.assert_allclose(delta[1:-1, 1:-1], offset * soft[1:-1, 1:-1], atol=1e-5)
    assert np.all(delta[soft == 0] == 0)  # nothing outside the organ and its 1-pixel rim


def test_organ_augmentations_leave_an_example_without_organ_unchanged():
    image = np.random.default_rng(6).normal(size=(12, 12, 1)).astype(np.float32)
    label = np.zeros((12, 12), np.int32)
    out, out_label = augment.augment_example(tf.constant(image), tf.constant(label),
                                             augment.AugmentConfig(organ_contrast=0.3))
    np.testing.assert_array_equal(out.numpy(), image)
    np.testing.assert_array_equal(out_label.numpy(), label)


@pytest.mark.parametrize("sigma, radius", [(0.7, 3), (1.5, 5)])
def test_gaussian_blur_matches_scipy(sigma, radius):
    image = np.random.default_rng(7).normal(size=(20, 17, 3)).astype(np.float32)
    out = augment.gaussian_blur(tf.constant(image), sigma, radius).numpy()
    # SciPy's kernel spans int(truncate * sigma + 0.5) pixels: the same radius.
    reference = ndimage.gaussian_filter(image.astype(np.float64), sigma=(sigma, sigma, 0), mode="reflect",
                                        truncate=radius / sigma)
    np.testing.assert_allclose(out, reference, atol=1e-5)


def _resize_reference(image, size, method):
    """NumPy half-pixel-centre resizing (nearest: floor of the source coordinate; bilinear: the
    two neighbours, clamped at the border), as TensorFlow documents `tf.image.resize`."""
    out = image.astype(np.float64)
    for axis, n_out in enumerate(size):
        n_in = out.shape[axis]
        src = (np.arange(n_out) + 0.5) * n_in / n_out
        if method == "nearest":
            out = np.take(out, np.minimum(np.floor(src).astype(int), n_in - 1), axis=axis)
            continue
        src -= 0.5
        lo = np.floor(src)
        w = (src - lo).reshape([-1 if a == axis else 1 for a in range(out.ndim)])
        lo_i = np.clip(lo.astype(int), 0, n_in - 1)
        hi_i = np.clip(lo.astype(int) + 1, 0, n_in - 1)
        out = np.take(out, lo_i, axis=axis) * (1 - w) + np.take(out, hi_i, axis=axis) * w
    return out


@pytest.mark.parametrize("factor", [1.0, 1.6, 2.0])
def test_simulated_low_resolution_matches_numpy(factor):
    image = np.random.default_rng(8).normal(size=(24, 20, 2)).astype(np.float32)
    out = augment.simulate_low_resolution(tf.constant(image), tf.constant(factor)).numpy()
    small = (round(24 / factor), round(20 / factor))
    reference = _resize_reference(_resize_reference(image, small, "nearest"), (24, 20), "bilinear")
    np.testing.assert_allclose(out, reference, atol=1e-5)
    if factor == 1.0:
        np.testing.assert_allclose(out, image, atol=1e-6)


def test_gamma_is_a_power_between_the_examples_own_extremes():
    image = np.random.default_rng(9).uniform(-2, 3, size=(10, 9, 3)).astype(np.float32)
    out = augment.apply_gamma(tf.constant(image), 1.4).numpy()
    low, high = image.min(), image.max()
    np.testing.assert_allclose(out, ((image - low) / (high - low)) ** 1.4 * (high - low) + low, atol=1e-5)
    assert out.min() == pytest.approx(low) and out.max() == pytest.approx(high)


def test_image_only_transforms_leave_the_label_alone():
    label = _blob_label((32, 32), seed=5)
    image = np.random.default_rng(10).normal(size=(32, 32, 3)).astype(np.float32)
    config = augment.AugmentConfig(gamma=0.4, blur=1.5, low_resolution=1.0)
    fn = tf.function(augment.make_augment(config))
    outs = [fn(tf.constant(image), tf.constant(label)) for _ in range(4)]
    for out, out_label in outs:
        np.testing.assert_array_equal(out_label.numpy(), label)
        assert np.isfinite(out.numpy()).all()
    # Random strengths: the four draws differ from the input and from each other.
    assert all(not np.allclose(out.numpy(), image) for out, _ in outs)
    assert not np.allclose(outs[0][0].numpy(), outs[1][0].numpy())


def test_works_inside_tf_data_map():
    label = _blob_label((32, 32))
    image = np.eye(3, dtype=np.float32)[label]
    ds = tf.data.Dataset.from_tensors((image, label)).repeat(4).map(augment.make_augment(ALL_ON)).batch(2)
    batches = list(ds)
    assert len(batches) == 2 and batches[0][0].shape == (2, 32, 32, 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(rotation=-1), "rotation"),
        (dict(zoom=1.0), "zoom"),
        (dict(flip_axes=("x",)), "flip_axes"),
        (dict(elastic_grid=1), "elastic_grid"),
        (dict(organ_contrast=-0.1), "organ_contrast"),
        (dict(gamma=1.0), "gamma"),
        (dict(blur=-1), "blur"),
        (dict(low_resolution=-0.5), "low_resolution"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        augment.AugmentConfig(**kwargs)


def test_bad_shapes_raise():
    with pytest.raises(ConfigError, match="augment expects"):
        augment.augment_example(tf.zeros((4, 4)), tf.zeros((4,), tf.int32), ALL_ON)
