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


# --- the opening (opening_mm) --------------------------------------------------------------


def ball(radius, spacing):
    """Voxel offsets within `radius` mm (a closed ball), as a SciPy structuring element."""
    reach = [int(radius // s) for s in spacing]
    grid = np.mgrid[tuple(slice(-k, k + 1) for k in reach)]
    return sum((g * s) ** 2 for g, s in zip(grid, spacing)) <= radius**2


def reference_opening(mask, radius, spacing, keep_voxels=0):
    """Erode the organ by a ball (outside the array counts as organ), keep the largest eroded
    26-component, keep the organ within the ball of it, and of what that cuts off the
    26-connected pieces of fewer than `keep_voxels` voxels: SciPy on the whole array."""
    from scipy import ndimage

    organ = mask >= 1
    core = ndimage.binary_erosion(organ, ball(radius, spacing), border_value=1)
    labels, count = ndimage.label(core, structure=np.ones((3, 3, 3), bool))
    out = mask.astype(np.uint8, copy=True)
    if count:
        core = labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1)
        cut = organ & ~ndimage.binary_dilation(core, ball(radius, spacing))
        pieces, n = ndimage.label(cut, structure=np.ones((3, 3, 3), bool))
        sizes = np.bincount(pieces.ravel(), minlength=n + 1)
        out[cut & (sizes[pieces] >= keep_voxels)] = 0
    return out


def cut_piece_sizes(mask, radius, spacing):
    """Voxel counts of the 26-connected pieces the plain opening cuts off."""
    from scipy import ndimage

    cut = (mask >= 1) & (reference_opening(mask, radius, spacing) == 0)
    pieces, n = ndimage.label(cut, structure=np.ones((3, 3, 3), bool))
    return np.bincount(pieces.ravel())[1:]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("slab", [2, 7, 40])
@pytest.mark.parametrize("keep", [False, True], ids=["plain", "keep_small"])
def test_opening_slabs_equal_scipy_morphology(seed, slab, keep):
    from scipy import ndimage

    from liverzoo.maskfile import ArrayMask, MaskFile
    from liverzoo.postprocess import postprocess_slabs

    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(12, 28, size=3))
    mask = (ndimage.gaussian_filter(rng.random(shape), 2.0) > 0.5).astype(np.uint8)
    mask[(mask == 1) & (rng.random(shape) < 0.2)] = 2
    # Radii off the grid's distances so that no voxel sits exactly on the ball's surface.
    spacing = tuple(float(s) for s in rng.uniform(0.7, 3.0, size=3))
    radius = float(rng.uniform(1.7, 5.0))
    keep_voxels = 0
    if keep:
        # Between piece sizes, so that some cut pieces stay and others go.
        sizes = np.unique(cut_piece_sizes(mask, radius, spacing))
        assert len(sizes) > 1
        keep_voxels = float(sizes[len(sizes) // 2]) - 0.5
    expected = reference_opening(mask, radius, spacing, keep_voxels)
    assert 0 < (expected >= 1).sum() < (mask >= 1).sum()  # every seed's case keeps a core and cuts some
    if keep:
        assert (expected >= 1).sum() > (reference_opening(mask, radius, spacing) >= 1).sum()
    kwargs = dict(keep_largest=False, fill_holes=False, opening_mm=radius, spacing=spacing, slab=slab,
                  opening_keep_ml=keep_voxels * float(np.prod(spacing)) / 1000.0)
    with MaskFile(mask.shape) as masks:
        masks.write(0, mask)
        postprocess_slabs(masks, **kwargs)
        np.testing.assert_array_equal(np.asarray(masks), expected)
    out = ArrayMask(mask.copy())
    postprocess_slabs(out, **kwargs)
    np.testing.assert_array_equal(out.array, expected)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("tumor_in_liver", [True, False])
def test_opening_in_the_whole_postprocess_equals_scipy(seed, tumor_in_liver):
    # Largest component, then the opening on it, then largest component, holes and the tumor rule.
    from liverzoo.maskfile import MaskFile
    from liverzoo.postprocess import postprocess_slabs

    mask = random_mask(seed, shape=(31, 27, 33))
    spacing, radius = (1.1, 0.9, 1.7), 2.3
    first = reference_postprocess(mask, fill_holes=False, tumor_in_liver=tumor_in_liver)
    sizes = np.unique(cut_piece_sizes(first, radius, spacing))
    keep_voxels = float(sizes[len(sizes) // 2]) - 0.5  # some cut pieces stay, others go
    keep_ml = keep_voxels * float(np.prod(spacing)) / 1000.0
    expected = reference_postprocess(reference_opening(first, radius, spacing, keep_voxels),
                                     tumor_in_liver=tumor_in_liver)
    plain = reference_postprocess(reference_opening(first, radius, spacing), tumor_in_liver=tumor_in_liver)
    assert (expected != reference_postprocess(mask, tumor_in_liver=tumor_in_liver)).sum() > 10  # the opening acts
    assert (expected != plain).sum() > 0  # and keeps some small pieces
    for slab in (3, 33):
        for keep, want in ((keep_ml, expected), (0.0, plain)):
            with MaskFile(mask.shape) as masks:
                masks.write(0, mask)
                postprocess_slabs(masks, opening_mm=radius, spacing=spacing, tumor_in_liver=tumor_in_liver, slab=slab,
                                  opening_keep_ml=keep)
                np.testing.assert_array_equal(np.asarray(masks), want)


def test_opening_cuts_a_neighbour_joined_by_a_thin_bridge(clean_liver):
    # A "bowel" blob joined to the liver by a 2-voxel tube: one 26-component, so the largest
    # component alone keeps it; a 4 mm opening (voxels of 1 mm) cuts the tube and drops it.
    shape = clean_liver.shape
    joined = np.pad(clean_liver, ((0, 30), (0, 0), (0, 0)))
    joined[ellipsoid(joined.shape, (52, 18, 12), (7, 7, 6)) & (joined == 0)] = 1
    joined[29:46, 17:19, 11:13] = np.maximum(joined[29:46, 17:19, 11:13], 1)
    plain = postprocess(joined)
    assert plain[52, 18, 12] == 1  # kept by the largest component
    opened = postprocess(joined, opening_mm=4.0, spacing=(1.0, 1.0, 1.0), opening_keep_ml=0)
    assert opened[52, 18, 12] == 0 and opened[40, 18, 12] == 0
    liver = opened[: shape[0]]
    # The liver itself (a 12 x 10 x 8 voxel ellipsoid) keeps all but its thin rim voxels.
    assert (liver >= 1).sum() >= 0.97 * (clean_liver >= 1).sum()
    assert liver[15, 18, 12] == 2  # the inner tumor stays


def test_opening_keeps_a_thin_edge_of_the_liver_and_drops_a_joined_neighbour(clean_liver):
    # The liver with a thin flap (2 voxels thick, 96 voxels) and a "bowel" blob joined by a tube.
    # The plain opening cuts both; with opening_keep_ml the flap, a small piece, stays and the
    # blob (over 1,000 voxels of 1 mm) still goes.
    joined = np.pad(clean_liver, ((0, 30), (0, 0), (0, 0)))
    joined[ellipsoid(joined.shape, (52, 18, 12), (7, 7, 6)) & (joined == 0)] = 1
    joined[29:46, 17:19, 11:13] = np.maximum(joined[29:46, 17:19, 11:13], 1)
    joined[14:22, 2:10, 11:13] = np.maximum(joined[14:22, 2:10, 11:13], 1)  # the flap, beside the liver
    flap = np.zeros(joined.shape, bool)
    flap[14:22, 2:8, 11:13] = True
    spacing = (1.0, 1.0, 1.0)
    plain = postprocess(joined, opening_mm=4.0, spacing=spacing, opening_keep_ml=0)
    assert plain[flap].sum() == 0 and plain[52, 18, 12] == 0
    kept = postprocess(joined, opening_mm=4.0, spacing=spacing, opening_keep_ml=0.5)
    np.testing.assert_array_equal(kept[flap], 1)
    assert kept[52, 18, 12] == 0 and kept[40, 18, 12] == 0
    # The liver's own rounded-off rim is a small piece too: it stays, but where the tube joins.
    liver = postprocess(clean_liver) >= 1
    lost = liver & (kept[: clean_liver.shape[0]] == 0)
    assert (plain[: clean_liver.shape[0]] == 0)[liver].sum() > 80
    assert lost.sum() < 10 and not lost[:27].any()  # the tube starts at x = 29


def test_opening_leaves_a_mask_with_no_deep_voxel_alone():
    # Nothing lies 3 mm inside a 4-voxel-thick plate: the opening must not erase the prediction.
    mask = np.zeros((20, 20, 10), np.uint8)
    mask[2:18, 2:18, 3:7] = 1
    np.testing.assert_array_equal(postprocess(mask, opening_mm=3.0, spacing=(1.0, 1.0, 1.0)), mask)


def test_opening_keeps_an_organ_cut_by_the_scan_edge():
    # The scan's edge counts as organ (as border_value=1): a liver cut by the first slice keeps
    # that slice, while the same opening rounds off its edges inside the scan.
    mask = np.zeros((30, 30, 12), np.uint8)
    mask[5:25, 5:25, 0:8] = 1
    out = postprocess(mask, opening_mm=3.5, spacing=(1.0, 1.0, 1.0), opening_keep_ml=0)
    np.testing.assert_array_equal(out, reference_opening(mask, 3.5, (1.0, 1.0, 1.0)))
    np.testing.assert_array_equal(out[7:23, 7:23, 0], 1)
    assert out[5, 15, 0] == 1 and out[5, 15, 7] == 0  # an edge on the scan's first slice stays, the top one is rounded


def test_opening_needs_the_spacing():
    with pytest.raises(ValueError, match="spacing"):
        postprocess(np.ones((4, 4, 4), np.uint8), opening_mm=5.0)
