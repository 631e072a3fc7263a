"""liverzoo.data.sampling: Eq. (1) of 000_ebe0050d52f538d0.txt incl. edges, patches, foreground share."""
import numpy as np
import pytest

from liverzoo.data import sampling
from liverzoo.errors import ConfigError


@pytest.mark.parametrize("num_slices", [1, 2, 5, 10])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_t3_is_equation_1_literally(num_slices, stride):
    # I_ds = {S_(i - (T//2 + s - 1))} u {S_i} u {S_(i + (T//2 + s - 1))}, edges repeated.
    T = 3
    for i in range(num_slices):
        d = T // 2 + stride - 1
        expected = [min(max(i - d, 0), num_slices - 1), i, min(i + d, num_slices - 1)]
        assert sampling.stack_indices(i, num_slices, T, stride).tolist() == expected


STACKS = [  # (i, num_slices, T, stride, expected)
    (5, 10, 7, 1, [2, 3, 4, 5, 6, 7, 8]),
    (0, 10, 7, 1, [0, 0, 0, 0, 1, 2, 3]),
    (9, 10, 7, 1, [6, 7, 8, 9, 9, 9, 9]),
    (5, 10, 7, 2, [0, 1, 3, 5, 7, 9, 9]),
    (1, 10, 7, 2, [0, 0, 0, 1, 3, 5, 7]),
    (0, 1, 7, 2, [0] * 7),
    (4, 10, 1, 2, [4]),
    (2, 3, 5, 2, [0, 0, 2, 2, 2]),
]


@pytest.mark.parametrize("i,num_slices,T,stride,expected", STACKS)
def test_dense_and_sparse_stacks_table(i, num_slices, T, stride, expected):
    assert sampling.stack_indices(i, num_slices, T, stride).tolist() == expected
    volume = np.random.default_rng(0).normal(size=(3, 4, num_slices))
    np.testing.assert_array_equal(sampling.extract_stack(volume, i, T, stride), volume[:, :, expected])


@pytest.mark.parametrize("args", [(0, 10, 4, 1), (0, 10, 0, 1), (0, 10, 3, 0), (10, 10, 3, 1), (-1, 10, 3, 1)])
def test_bad_stack_parameters(args):
    with pytest.raises(ConfigError):
        sampling.stack_indices(*args)


def test_crop_or_pad_against_padded_slicing():
    rng = np.random.default_rng(1)
    volume = rng.normal(size=(5, 6, 7))
    padded = np.pad(volume, 20, constant_values=-9.0)
    for _ in range(50):
        size = tuple(rng.integers(1, 12, 3))
        origin = tuple(rng.integers(-8, 8, 3))
        expected = padded[tuple(slice(o + 20, o + 20 + s) for o, s in zip(origin, size))]
        np.testing.assert_array_equal(sampling.crop_or_pad(volume, origin, size, -9.0), expected)


def test_patch_origin_contains_the_centre_and_stays_in_bounds():
    rng = np.random.default_rng(2)
    for _ in range(200):
        shape = rng.integers(1, 40, 3)
        size = rng.integers(1, 40, 3)
        center = np.array([rng.integers(n) for n in shape])
        origin = sampling.patch_origin(shape, size, center)
        assert np.all(origin <= center) and np.all(center < origin + size)
        uniform = sampling.patch_origin(shape, size, rng=rng)
        fits = shape >= size
        assert np.all(uniform[fits] >= 0) and np.all(uniform[fits] + size[fits] <= shape[fits])
        assert np.all(uniform[~fits] == (shape[~fits] - size[~fits]) // 2)


@pytest.mark.parametrize("fraction", [0.0, 0.5, 1.0])
def test_sample_subvolume_foreground_share(fraction):
    rng = np.random.default_rng(3)
    image = rng.normal(size=(64, 64, 40)).astype(np.float32)
    label = np.zeros(image.shape, np.uint8)
    label[50:56, 5:9, 30:33] = 1  # small: a uniform patch rarely hits it
    label[52, 6, 31] = 2
    hits, draws = 0, 200
    for _ in range(draws):
        patch, patch_label, origin = sampling.sample_subvolume(image, label, (8, 16, 16), rng, fraction, pad_value=-5)
        assert patch.shape == patch_label.shape == (8, 16, 16)
        expected = sampling.crop_or_pad(np.transpose(image, (2, 0, 1)), origin, (8, 16, 16), -5)
        np.testing.assert_array_equal(patch, expected)
        hits += bool(patch_label.any())
    share = hits / draws
    assert share >= fraction - 0.1
    if fraction == 1.0:
        assert hits == draws
    if fraction == 0.0:
        assert share < 0.2
