"""liverzoo.postprocess: one liver, holes filled, tumor only inside the liver."""
import numpy as np
import pytest

from liverzoo.postprocess import largest_component, postprocess


def ellipsoid(shape, centre, radii):
    grid = np.indices(shape).astype(float)
    d = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii))
    return d <= 1.0


@pytest.fixture(scope="module")
def clean_liver():
    """A liver ellipsoid with a tumor inside and one on its rim (labels 0/1/2)."""
    shape = (40, 36, 24)
    mask = ellipsoid(shape, (18, 18, 12), (12, 10, 8)).astype(np.uint8)
    mask[ellipsoid(shape, (15, 18, 12), (3, 3, 3))] = 2
    mask[ellipsoid(shape, (29, 18, 12), (2, 2, 2))] = 2  # straddles the liver surface
    return mask


def test_removes_planted_distant_blobs(clean_liver):
    noisy = clean_liver.copy()
    noisy[35:39, 30:34, 1:4] = 1  # distant liver false positive
    noisy[1:3, 1:3, 20:23] = 2  # distant tumor false positive
    noisy[2:4, 32:35, 2:3] = 2  # tumor touching only a distant liver blob
    noisy[1:4, 31:35, 1:2] = 1
    out = postprocess(noisy)
    np.testing.assert_array_equal(out, clean_liver)
    assert out.dtype == np.uint8


def test_fills_holes_keeps_inner_tumor(clean_liver):
    holed = clean_liver.copy()
    cavity = ellipsoid(holed.shape, (22, 18, 12), (2, 2, 2))
    holed[cavity] = 0
    out = postprocess(holed)
    assert np.all(out[cavity] == 1)  # enclosed background became liver
    np.testing.assert_array_equal(out, clean_liver)
    # Holes open to the outside are not holes.
    notch = holed.copy()
    notch[18, 18, :] = 0
    assert np.count_nonzero(postprocess(notch) == 0) > np.count_nonzero(clean_liver == 0)


# (switches, expected (distant liver blob kept, enclosed hole kept, distant tumor kept))
SWITCHES = [
    (dict(), (False, False, False)),
    (dict(keep_largest=False), (True, False, True)),
    (dict(fill_holes=False), (False, True, False)),
    (dict(tumor_in_liver=False), (False, False, True)),
]


@pytest.mark.parametrize("kwargs,expected", SWITCHES, ids=["all", "no_largest", "no_fill", "no_tumor_rule"])
def test_switches(clean_liver, kwargs, expected):
    noisy = clean_liver.copy()
    noisy[35:39, 30:34, 1:4] = 1
    noisy[1:3, 1:3, 20:23] = 2
    cavity = ellipsoid(noisy.shape, (22, 18, 12), (2, 2, 2))
    noisy[cavity] = 0
    out = postprocess(noisy, **kwargs)
    kept = (bool(np.all(out[35:39, 30:34, 1:4] == 1)), bool(np.all(out[cavity] == 0)),
            bool(np.all(out[1:3, 1:3, 20:23] == 2)))
    assert kept == expected


def test_largest_component_is_26_connected_and_empty_safe():
    m = np.zeros((6, 6, 6), bool)
    m[0, 0, 0] = m[1, 1, 1] = m[2, 2, 2] = True  # diagonal chain: one 26-component
    m[5, 5, 0] = m[5, 4, 0] = True
    np.testing.assert_array_equal(largest_component(m), m & ~(np.indices(m.shape)[0] == 5))
    assert not largest_component(np.zeros((3, 3, 3), bool)).any()
    assert not postprocess(np.zeros((3, 3, 3), np.uint8)).any()


def test_phantom_label_survives_and_planted_blob_goes():
    from liverzoo.data.phantom import make_phantom

    _, label = make_phantom((48, 40, 16), seed=0)
    assert label.max() == 2
    np.testing.assert_array_equal(postprocess(label), label)  # one liver, no holes: unchanged
    planted = label.copy()
    planted[0:3, 0:3, 0:3] = 1  # far from the phantom's liver
    assert np.all(label[0:3, 0:3, 0:3] == 0)
    np.testing.assert_array_equal(postprocess(planted), label)


def reference_postprocess(mask, keep_largest=True, fill_holes=True, tumor_in_liver=True):
    """The whole-volume SciPy operations `postprocess_slabs` must equal (ndimage.label on the
    organ, argmax of the sizes, ndimage.binary_fill_holes inside the organ's bounding box)."""
    from scipy import ndimage

    out = mask.astype(np.uint8, copy=True)
    organ = out >= 1
    if keep_largest:
        labels, count = ndimage.label(organ, structure=np.ones((3, 3, 3), bool))
        liver = labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1) if count else np.zeros_like(organ)
        if tumor_in_liver:
            out[~liver] = 0
        else:
            out[organ & ~liver & (out == 1)] = 0
        organ = liver
    if fill_holes and organ.any():
        box = ndimage.find_objects(organ.astype(np.uint8))[0]
        region = out[box]
        region[ndimage.binary_fill_holes(organ[box]) & ~organ[box]] = 1
    return out


def random_mask(seed, shape=(23, 19, 37)):
    """Blobs of liver and tumor with cavities and specks: many components, holes across slabs."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.normal(size=shape), 1.5)
    mask = (smooth > np.quantile(smooth, 0.6)).astype(np.uint8)
    mask[ndimage.gaussian_filter(rng.normal(size=shape), 1.0) > 0.12] = 2
    mask[rng.random(shape) < 0.02] = 0  # one-voxel cavities
    mask[rng.random(shape) < 0.01] = 1  # specks
    return mask


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("slab", [1, 2, 5, 37])
@pytest.mark.parametrize("kwargs", [dict(), dict(keep_largest=False), dict(tumor_in_liver=False),
                                    dict(fill_holes=False)], ids=["all", "no_largest", "no_tumor_rule", "no_fill"])
def test_slabs_equal_whole_volume_scipy(seed, slab, kwargs):
    from liverzoo.maskfile import MaskFile
    from liverzoo.postprocess import postprocess_slabs

    mask = random_mask(seed)
    expected = reference_postprocess(mask, **kwargs)
    assert (expected != mask).sum() > 10  # the case exercises removal (and filling)
    with MaskFile(mask.shape) as masks:
        masks.write(0, mask)
        postprocess_slabs(masks, slab=slab, **kwargs)
        np.testing.assert_array_equal(np.asarray(masks), expected)
    np.testing.assert_array_equal(postprocess(mask, **kwargs), expected)


@pytest.mark.parametrize("slab", [1, 3, 8])
def test_slabs_tie_keeps_the_first_component_in_xyz_order(slab):
    from liverzoo.maskfile import MaskFile
    from liverzoo.postprocess import postprocess_slabs

    mask = np.zeros((6, 6, 8), np.uint8)
    mask[4:6, 0:2, 0:3] = 1  # 12 voxels, first voxel (4, 0, 0)
    mask[0:2, 4:6, 5:8] = 1  # 12 voxels, first voxel (0, 4, 5): first in (x, y, z) order
    expected = reference_postprocess(mask)
    assert expected[0, 4, 5] == 1 and expected[4, 0, 0] == 0
    with MaskFile(mask.shape) as masks:
        masks.write(0, mask)
        postprocess_slabs(masks, slab=slab)
        np.testing.assert_array_equal(np.asarray(masks), expected)


def test_slabs_join_diagonal_neighbours_across_slab_faces():
    from liverzoo.maskfile import MaskFile
    from liverzoo.postprocess import postprocess_slabs

    mask = np.zeros((6, 6, 6), np.uint8)
    for z in range(6):
        mask[z, z, z] = 1  # a diagonal chain: one 26-component through every slab face
    mask[5, 0, 0:2] = 2
    with MaskFile(mask.shape) as masks:
        masks.write(0, mask)
        postprocess_slabs(masks, slab=1)
        np.testing.assert_array_equal(np.asarray(masks), reference_postprocess(mask))
    assert np.asarray(reference_postprocess(mask))[:, :, 5].sum() == 1
