"""liverzoo.data.preprocess against closed forms: windowing formula, textbook histogram
equalisation, exact resampling of a linear ramp, padding, and every preset."""
import numpy as np
import pytest

from liverzoo.data import io, preprocess
from liverzoo.errors import ConfigError

LINEAR = [(name, p) for name, p in preprocess.PRESETS.items() if p.normalization == "linear"]


@pytest.mark.parametrize("name,preset", LINEAR, ids=[n for n, _ in LINEAR])
def test_linear_presets_follow_the_window_formula(name, preset):
    hu = np.random.default_rng(0).uniform(-1200, 1500, 1000).astype(np.float32)
    lo, hi = preset.window
    b_min, b_max = preset.out_range
    expected = (np.clip(hu.astype(np.float64), lo, hi) - lo) / (hi - lo) * (b_max - b_min) + b_min
    np.testing.assert_allclose(preprocess.apply_preset(hu, name), expected, atol=1e-6)
    np.testing.assert_allclose(preprocess.apply_preset(np.array([lo, hi]), name), [b_min, b_max], atol=1e-6)


def test_paper_windows_are_the_papers():
    windows = {n: p.window for n, p in preprocess.PRESETS.items()}
    assert windows["lw_hcn"] == (-200, 250) and preprocess.PRESETS["lw_hcn"].out_range == (-1, 1)
    assert windows["residual_unet"] == (-100, 200) and preprocess.PRESETS["residual_unet"].normalization == "equalize"
    assert windows["ynet3d"] == (-175, 250) and preprocess.PRESETS["ynet3d"].num_slices == 64
    assert windows["lv_net"] == (-200, 200) and preprocess.PRESETS["lv_net"].normalization == "zscore"


def test_equalize_histogram_matches_the_textbook_formula():
    volume = np.random.default_rng(1).gamma(2.0, 30.0, (20, 20, 10)).astype(np.float32)
    out = preprocess.equalize_histogram(volume, num_levels=64)
    # Independent reference: rank of each voxel's grey level among all voxels.
    levels = np.rint((volume - volume.min()) / (volume.max() - volume.min()) * 63).astype(int).ravel()
    ordered = np.sort(levels)
    cdf = np.searchsorted(ordered, levels, side="right")
    cdf_min = np.searchsorted(ordered, ordered[0], side="right")
    expected = (cdf - cdf_min) / (levels.size - cdf_min)
    np.testing.assert_allclose(out.ravel(), expected, atol=1e-6)
    assert out.min() == 0.0 and out.max() == 1.0
    # Equalised: the output is close to uniform (up to the grey-level quantisation).
    fine = preprocess.equalize_histogram(np.random.default_rng(2).normal(0, 1, 200000), num_levels=4096)
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        assert abs(np.mean(fine <= q) - q) < 0.01


def test_zscore_with_and_without_mask():
    volume = np.random.default_rng(3).normal(40, 9, (10, 10, 10)).astype(np.float32)
    out = preprocess.zscore(volume)
    assert abs(out.mean()) < 1e-5 and abs(out.std() - 1) < 1e-5
    mask = volume > 40
    masked = preprocess.zscore(volume, mask)
    assert abs(masked[mask].mean()) < 1e-5 and abs(masked[mask].std() - 1) < 1e-5


@pytest.mark.parametrize("shape,spacing,target", [
    ((20, 16, 12), (1.0, 1.5, 2.0), (0.5, 0.75, 4.0)),
    ((9, 11, 7), (0.8, 0.8, 5.0), (1.2, None, 1.0)),
])
def test_resample_reproduces_a_linear_ramp(shape, spacing, target):
    # Voxel centres sit at (i + 0.5) * spacing (edges aligned); linear interpolation is exact
    # for a linear function inside the outermost voxel centres.
    def ramp(shape, spacing):
        x, y, z = np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing)], indexing="ij")
        return 2 * x + 3 * y - z

    out = preprocess.resample(ramp(shape, spacing).astype(np.float32), spacing, target)
    new_shape = preprocess.resampled_shape(shape, spacing, target)
    assert out.shape == new_shape
    new_spacing = np.asarray(spacing) * shape / np.asarray(new_shape)
    expected = ramp(new_shape, new_spacing)
    inside = np.ones(new_shape, bool)
    for axis, (n, s, ns) in enumerate(zip(shape, spacing, new_spacing)):
        centre = (np.arange(new_shape[axis]) + 0.5) * ns
        ok = (centre >= 0.5 * s - 1e-6) & (centre <= (n - 0.5) * s + 1e-6)
        inside &= np.expand_dims(ok, [a for a in range(3) if a != axis])
    assert inside.sum() > 0.3 * inside.size
    np.testing.assert_allclose(out[inside], expected[inside], atol=1e-3)


def test_label_resampling_is_nearest_and_resize_inplane():
    label = np.random.default_rng(4).integers(0, 3, (30, 30, 5)).astype(np.uint8)
    out = preprocess.resample(label, (1, 1, 1), (0.7, 1.3, 2.0), order=0)
    assert out.dtype == np.uint8 and set(np.unique(out)) <= {0, 1, 2}
    assert preprocess.resize_inplane(label, 60, order=0).shape == (60, 60, 5)
    doubled = preprocess.resize_inplane(label, (60, 60), order=0)
    np.testing.assert_array_equal(doubled[::2, ::2], label)  # nearest, exact factor 2
    same = preprocess.resize_inplane(label.astype(np.float32), (30, 30))
    np.testing.assert_array_equal(same, label)


def test_padding_outside_the_scan_field(real_ct_dir):
    ct = io.load_nifti(real_ct_dir / "dcmqi_3slice_ct.nii.gz")
    padding = ct.array == -3024
    assert padding.sum() > 100000
    filled = preprocess.fill_padding(ct.array)
    assert filled.min() >= preprocess.AIR_HU
    np.testing.assert_array_equal(filled[padding], preprocess.AIR_HU)
    np.testing.assert_array_equal(filled[~padding], ct.array[~padding])
    # The preprocessed scan is the same as if the scanner had written air there.
    for name in preprocess.PRESETS:
        with_padding = preprocess.prepare_volume(ct.array, ct.spacing, name, inplane_size=128)[0]
        as_air = preprocess.prepare_volume(np.where(padding, preprocess.AIR_HU, ct.array), ct.spacing, name, inplane_size=128)[0]
        np.testing.assert_allclose(with_padding, as_air, atol=1e-5, err_msg=name)


def test_window_variants_are_the_papers_window_without_the_per_volume_step():
    hu = np.array([-1024.0, -100.0, 0.0, 46.0, 93.0, 200.0, 500.0], np.float32)
    np.testing.assert_allclose(preprocess.apply_preset(hu, "residual_unet_window"),
                               (np.clip(hu, -100, 200) + 100) / 300, atol=1e-6)
    np.testing.assert_allclose(preprocess.apply_preset(hu, "lv_net_window"), (np.clip(hu, -200, 200) + 200) / 400,
                               atol=1e-6)
    # The same HU gives the same value whatever else the scan holds (equalisation does not).
    liver_in_crop = preprocess.apply_preset(np.array([46.0, 50.0, 60.0]), "residual_unet_window")[0]
    liver_in_abdomen = preprocess.apply_preset(np.array([46.0, -900.0, 150.0]), "residual_unet_window")[0]
    assert liver_in_crop == liver_in_abdomen
    assert (preprocess.apply_preset(np.array([46.0, 50.0, 60.0]), "residual_unet")[0]
            != preprocess.apply_preset(np.array([46.0, -900.0, 150.0]), "residual_unet")[0])
    assert preprocess.window_variant("residual_unet") == "residual_unet_window"
    assert preprocess.window_variant("ds_nnunet") == "ds_nnunet"  # dataset statistics: no variant
    assert preprocess.air_value("residual_unet_window", np.zeros((2, 2, 2), np.float32)) == 0.0


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ConfigError) as info:
        preprocess.apply_preset(np.zeros(3), "unet_9000")
    for name in preprocess.PRESETS:
        assert name in str(info.value)
    assert "unet_9000" in str(info.value)


def test_ds_nnunet_default_statistics_are_the_demo_foreground(real_ct_dir):
    ct = io.load_case(real_ct_dir / "lits117_crop128_ct.nii.gz", real_ct_dir / "lits117_crop128_seg.nii.gz")
    lo, hi, mean, std = preprocess.ct_statistics(ct.array[ct.label > 0].astype(np.float64))
    preset = preprocess.PRESETS["ds_nnunet"]
    np.testing.assert_allclose(preset.window, (lo, hi), atol=0.01)
    np.testing.assert_allclose((preset.mean, preset.std), (mean, std), atol=0.01)
    out = preprocess.apply_preset(ct.array, preset)
    np.testing.assert_allclose(out, (np.clip(ct.array, lo, hi) - preset.mean) / preset.std, atol=1e-4)
    fg = preprocess.apply_preset(ct.array[ct.label > 0], preset)
    assert abs(fg.mean()) < 0.05 and abs(fg.std() - 1) < 0.05


@pytest.mark.parametrize("name", sorted(preprocess.PRESETS))
def test_prepare_volume_every_preset(name):
    from liverzoo.data.phantom import make_phantom

    hu, label = make_phantom((40, 36, 12), seed=0, fov_padding=True)
    preset = preprocess.PRESETS[name]
    image, out_label, spacing = preprocess.prepare_volume(hu, (1.0, 1.0, 2.0), name, label, inplane_size=24)
    depth = preset.num_slices or 12
    assert image.shape == out_label.shape == (24, 24, depth) and image.dtype == np.float32
    np.testing.assert_allclose(spacing, [40 / 24, 36 / 24, 2.0 * 12 / depth])
    assert set(np.unique(out_label)) <= {0, 1, 2} and np.isfinite(image).all()
    manual = preprocess.apply_preset(preprocess.resize_inplane(preprocess.fill_padding(hu), 24), name)
    if preset.num_slices is None:
        np.testing.assert_allclose(image, manual, atol=1e-6)
    if preset.normalization == "zscore":
        assert abs(image.mean()) < 1e-4 and abs(image.std() - 1) < 1e-4
    assert preprocess.Preset.from_dict(preset.to_dict()) == preset


def test_antialiased_zoom_averages_noise_as_a_coarser_pixel_does():
    """Shrinking 4x in-plane: plain resampling keeps white noise strong (each output
    pixel blends 2x2 input pixels: std 0.5), the antialiased one smooths it as a 4x larger pixel
    would (std ~1/4 for a box average; the Gaussian rule gives 0.19); a constant stays
    constant, a kept axis is untouched (slab-wise equality), and labels are never smoothed."""
    noise = np.random.default_rng(0).normal(0.0, 1.0, (256, 256, 3)).astype(np.float32)
    plain = preprocess.zoom_to(noise, (64, 64, 3), 1)
    smooth = preprocess.zoom_to(noise, (64, 64, 3), 1, antialias=True)
    assert plain.std() > 0.45 and 0.12 < smooth.std() < 0.3
    np.testing.assert_allclose(preprocess.zoom_to(np.full((256, 256, 3), 40.0), (64, 64, 3), 1, antialias=True), 40.0,
                               rtol=1e-6)
    slab = preprocess.zoom_to(noise[:, :, 1:2], (64, 64, 1), 1, antialias=True)
    np.testing.assert_array_equal(slab, smooth[:, :, 1:2])
    labels = (noise > 0).astype(np.uint8)
    np.testing.assert_array_equal(preprocess.zoom_to(labels, (64, 64, 3), 0, antialias=True),
                                  preprocess.zoom_to(labels, (64, 64, 3), 0))
    # Growing is never smoothed.
    np.testing.assert_array_equal(preprocess.zoom_to(noise, (300, 300, 3), 1, antialias=True),
                                  preprocess.zoom_to(noise, (300, 300, 3), 1))
