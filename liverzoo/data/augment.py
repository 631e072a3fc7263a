"""On-the-fly augmentation in TensorFlow graph ops, for `make_dataset(..., augment=...)`.

One random in-plane warp (rotation, zoom, shift and an elastic displacement field) is drawn
per example and applied to the image with bilinear and to the label with nearest-neighbour
interpolation at the same source coordinates, so the label keeps its values {0, 1, 2} and
stays aligned with the image. Flips and the image-only transforms follow (organ contrast,
blur, simulated low resolution, brightness/contrast, gamma, noise: nnU-Net's set, each with a
strength drawn from its range for every example).

Works on both example layouts of docs/design.md:
    2D stacks: image `(H, W, T)` float32, label `(H, W)` int32;
    3D sub-volumes: image `(D, H, W, 1)` float32, label `(D, H, W)` int32.
The warp is in-plane (the H, W axes) and shared by all slices: CT slices are anisotropic
and the papers augment in-plane. Flips may include the slice axis ("d"; for a 2D stack it
reverses the order of the T slices, whose centre stays the centre).

Why not Keras' preprocessing layers: they reject 5D input and interpolate integer masks.
Why not `keras.ops.image.map_coordinates`: it gathers 2^rank corners of a rank-3 array
(8 for an in-plane warp of a stack); the sampler below gathers 4 rows of all slices at once.

Papers (../shared/papers): 002_7138868b57b69ed8.txt (rotations up to 180 degrees, elastic
deformation, zoom 0.2); 003_1722e7be9c09b159.txt (flipping, shifting, scaling).
"""
import dataclasses
import math

import tensorflow as tf

from liverzoo.errors import ConfigError

FLIP_AXES = ("d", "h", "w")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random transforms; zero (or empty) switches a transform off.

    Attributes:
        rotation: maximum in-plane rotation in degrees (uniform in [-r, r]).
        zoom: in-plane scale drawn uniformly from [1 - zoom, 1 + zoom].
        shift: maximum translation as a fraction of the in-plane size.
        elastic: standard deviation of the elastic displacement, as a fraction of the size.
        elastic_grid: control points per side of the smooth elastic field.
        flip_axes: axes among "d", "h", "w", each flipped with probability 0.5.
        intensity_scale: image multiplied by a factor in [1 - s, 1 + s].
        intensity_shift: image shifted by an offset in [-s, s].
        noise_std: standard deviation of additive Gaussian noise on the image.
        organ_contrast: the labelled organ (liver and tumor together) shifted by an offset in
            [-s, s] against the rest of the image, edges softened over 3 pixels: the liver's
            brightness against muscle and bowel depends on the contrast phase (in the demo's
            scans it is 40-60 HU brighter than muscle with contrast, iso-dense without), so
            the model must not tell liver by brightness alone.
        gamma: intensities put on [0, 1] by the example's own minimum and maximum, raised to
            a power drawn from [1 - g, 1 + g] and put back (nnU-Net's gamma transform, g < 1).
        blur: in-plane Gaussian blur with a standard deviation drawn from [0, b] pixels (scans
            reconstructed with softer kernels).
        low_resolution: the slices resampled to 1/f of their size (nearest) and back
            (bilinear), f drawn from [1, 1 + r] (nnU-Net's simulated low resolution; thicker
            or coarser acquisitions).
    """

    rotation: float = 0.0
    zoom: float = 0.0
    shift: float = 0.0
    elastic: float = 0.0
    elastic_grid: int = 4
    flip_axes: tuple = ()
    intensity_scale: float = 0.0
    intensity_shift: float = 0.0
    noise_std: float = 0.0
    organ_contrast: float = 0.0
    gamma: float = 0.0
    blur: float = 0.0
    low_resolution: float = 0.0

    def __post_init__(self):
        for field in ("rotation", "zoom", "shift", "elastic", "intensity_scale", "intensity_shift", "noise_std",
                      "organ_contrast", "gamma", "blur", "low_resolution"):
            if getattr(self, field) < 0:
                raise ConfigError(f"augmentation {field} must be >= 0, got {getattr(self, field)}")
        if self.zoom >= 1:
            raise ConfigError(f"augmentation zoom must be < 1, got {self.zoom}")
        if self.gamma >= 1:
            raise ConfigError(f"augmentation gamma must be < 1, got {self.gamma}")
        if self.elastic_grid < 2:
            raise ConfigError(f"augmentation elastic_grid must be >= 2, got {self.elastic_grid}")
        bad = set(self.flip_axes) - set(FLIP_AXES)
        if bad:
            raise ConfigError(f"augmentation flip_axes must be among {FLIP_AXES}, got {sorted(bad)}")

    @property
    def warps(self):
        return any((self.rotation, self.zoom, self.shift, self.elastic))


def affine_coordinates(height, width, angle, scale, shift):
    """Source coordinates `(rows, cols)`, each `(H, W)`, of a rotation+zoom+shift about the centre.

    Output pixel p samples the input at `R(angle) (p - c) / scale + c + shift`, with c the
    image centre: an inverse mapping, so every output pixel gets a value.

    Args:
        height, width: in-plane size (int scalars or tensors).
        angle: rotation in radians.
        scale: zoom factor (> 1 enlarges the content).
        shift: `(2,)` translation in pixels (rows, cols).

    Returns:
        Two float32 tensors `(H, W)`.

    Example:
        >>> rows, cols = affine_coordinates(64, 64, math.pi / 2, 1.0, [0.0, 0.0])
    """
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    angle, scale = tf.cast(angle, tf.float32), tf.cast(scale, tf.float32)
    shift = tf.cast(shift, tf.float32)
    rows, cols = tf.meshgrid(tf.range(h) - (h - 1) / 2, tf.range(w) - (w - 1) / 2, indexing="ij")
    cos, sin = tf.cos(angle), tf.sin(angle)
    src_rows = (cos * rows - sin * cols) / scale + (h - 1) / 2 + shift[0]
    src_cols = (sin * rows + cos * cols) / scale + (w - 1) / 2 + shift[1]
    return src_rows, src_cols


def _random_coordinates(height, width, config):
    """Source coordinates of one random rotation + zoom + shift + elastic warp."""
    size = tf.cast(tf.stack([height, width]), tf.float32)
    angle = tf.random.uniform([], -config.rotation, config.rotation) * (math.pi / 180.0)
    scale = tf.random.uniform([], 1.0 - config.zoom, 1.0 + config.zoom)
    shift = tf.random.uniform([2], -config.shift, config.shift) * size
    src_rows, src_cols = affine_coordinates(height, width, angle, scale, shift)
    if config.elastic:
        # A smooth field: Gaussian noise on a coarse grid, upsampled bicubically.
        grid = config.elastic_grid
        coarse = tf.random.normal([1, grid, grid, 2]) * (config.elastic * tf.reduce_min(size))
        field = tf.image.resize(coarse, tf.stack([height, width]), method="bicubic")[0]
        src_rows += field[..., 0]
        src_cols += field[..., 1]
    return src_rows, src_cols


def _mirror(index, size):
    """Reflects out-of-range integer indices back into [0, size - 1] (edge pixel not repeated)."""
    period = tf.maximum(2 * (size - 1), 1)
    index = tf.math.floormod(index, period)
    return tf.minimum(index, period - index)


def _gather(array, rows, cols):
    """array[rows, cols, :] for integer index maps of shape (H, W), mirrored at the borders."""
    height, width = tf.shape(array)[0], tf.shape(array)[1]
    flat = tf.reshape(array, tf.concat([[height * width], tf.shape(array)[2:]], 0))
    return tf.gather(flat, _mirror(rows, height) * width + _mirror(cols, width))


def sample_bilinear(array, src_rows, src_cols):
    """Bilinear resampling of `array` (H, W, C) at float source coordinates, mirrored borders.

    Args:
        array: `(H, W, C)` float tensor.
        src_rows, src_cols: `(H', W')` float source coordinates.

    Returns:
        `(H', W', C)`: scipy.ndimage.map_coordinates(order=1, mode="mirror") per channel.

    Example:
        >>> warped = sample_bilinear(image_hwc, *affine_coordinates(h, w, 0.3, 1.1, [0, 0]))
    """
    r0, c0 = tf.floor(src_rows), tf.floor(src_cols)
    wr, wc = (src_rows - r0)[..., None], (src_cols - c0)[..., None]
    r0, c0 = tf.cast(r0, tf.int32), tf.cast(c0, tf.int32)
    top = _gather(array, r0, c0) * (1 - wc) + _gather(array, r0, c0 + 1) * wc
    bottom = _gather(array, r0 + 1, c0) * (1 - wc) + _gather(array, r0 + 1, c0 + 1) * wc
    return top * (1 - wr) + bottom * wr


def sample_nearest(array, src_rows, src_cols):
    """Nearest-neighbour resampling of `(H, W, C)`: values are copied, never blended.

    Args:
        array: `(H, W, C)` tensor of any dtype (labels).
        src_rows, src_cols: `(H', W')` float source coordinates.

    Returns:
        `(H', W', C)` with the values of the input pixel nearest to each source point.

    Example:
        >>> warped_label = sample_nearest(label_hwc, rows, cols)
    """
    rows = tf.cast(tf.floor(src_rows + 0.5), tf.int32)
    cols = tf.cast(tf.floor(src_cols + 0.5), tf.int32)
    return _gather(array, rows, cols)


def _to_hwc(image, label):
    """Brings either layout to image (H, W, C) and label (H, W, C) with slices as channels."""
    if image.shape.rank == 4:  # (D, H, W, 1), label (D, H, W)
        return tf.transpose(image[..., 0], (1, 2, 0)), tf.transpose(label, (1, 2, 0))
    return image, label[..., None]  # (H, W, T), label (H, W)


def _from_hwc(image, label, rank):
    if rank == 4:
        return tf.transpose(image, (2, 0, 1))[..., None], tf.transpose(label, (2, 0, 1))
    return image, label[..., 0]


def _random_flip(image, label, axis, flip_label_axis=True):
    flip = tf.random.uniform([]) < 0.5
    image = tf.cond(flip, lambda: tf.reverse(image, [axis]), lambda: image)
    if flip_label_axis:
        label = tf.cond(flip, lambda: tf.reverse(label, [axis]), lambda: label)
    return image, label


def _shift_organ(image, label, limit):
    """Adds one random offset in [-limit, limit] to the pixels labelled >= 1 (H, W, C layout).

    The mask is averaged over 3x3 pixels first, so the organ's edge changes gradually as a
    partial-volume edge does. A 2D stack's label is its centre slice: its mask is used for
    every slice of the stack (neighbouring slices 1-3 mm away differ little).
    """
    mask = tf.cast(label >= 1, tf.float32)
    soft = tf.nn.avg_pool2d(tf.transpose(mask, (2, 0, 1))[..., None], 3, 1, "SAME")
    soft = tf.transpose(soft[..., 0], (1, 2, 0))
    offset = tf.random.uniform([], -limit, limit)
    return image + offset * soft  # (H, W, 1) broadcasts over a stack's T slices


def gaussian_blur(image, sigma, radius):
    """Blurs `(H, W, C)` in-plane with a Gaussian of standard deviation `sigma` pixels.

    The kernel spans `radius` pixels each side (normalised to sum 1); edges are mirrored
    (d c b a | a b c d), as `scipy.ndimage.gaussian_filter(mode="reflect")` does.
    """
    sigma = tf.maximum(tf.cast(sigma, tf.float32), 1e-3)
    taps = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-0.5 * (taps / sigma) ** 2)
    kernel /= tf.reduce_sum(kernel)
    x = tf.transpose(image, (2, 0, 1))[..., None]  # (C, H, W, 1): channels blurred alike
    x = tf.pad(x, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="SYMMETRIC")
    x = tf.nn.conv2d(x, tf.reshape(kernel, (-1, 1, 1, 1)), 1, "VALID")
    x = tf.nn.conv2d(x, tf.reshape(kernel, (1, -1, 1, 1)), 1, "VALID")
    return tf.transpose(x[..., 0], (1, 2, 0))


def simulate_low_resolution(image, factor):
    """`(H, W, C)` resampled to `round(size / factor)` pixels (nearest) and back (bilinear)."""
    size = tf.shape(image)[:2]
    small = tf.maximum(tf.cast(tf.round(tf.cast(size, tf.float32) / factor), tf.int32), 1)
    low = tf.image.resize(image, small, method="nearest")
    return tf.image.resize(low, size, method="bilinear")


def apply_gamma(image, gamma):
    """`image` on [0, 1] by its own minimum and maximum, to the power `gamma`, and back."""
    low, high = tf.reduce_min(image), tf.reduce_max(image)
    span = tf.maximum(high - low, 1e-7)
    return tf.pow((image - low) / span, gamma) * span + low


def augment_example(image, label, config):
    """Applies one random draw of `config` to one example.

    Args:
        image: `(H, W, T)` or `(D, H, W, 1)` float32.
        label: `(H, W)` or `(D, H, W)` integer labels.
        config: an `AugmentConfig`.

    Returns:
        `(image, label)` with the input shapes and dtypes; label values are a subset of the
        input label values.

    Example:
        >>> image, label = augment_example(image, label, AugmentConfig(rotation=180, zoom=0.2))
    """
    rank = image.shape.rank
    if rank not in (3, 4) or label.shape.rank != rank - 1:
        raise ConfigError(
            f"augment expects image (H, W, T) + label (H, W) or image (D, H, W, 1) + label (D, H, W); "
            f"got {image.shape} and {label.shape}"
        )
    label_dtype = label.dtype
    image = tf.cast(image, tf.float32)
    hwc_image, hwc_label = _to_hwc(image, label)
    if config.warps:
        src_rows, src_cols = _random_coordinates(tf.shape(hwc_image)[0], tf.shape(hwc_image)[1], config)
        hwc_image = sample_bilinear(hwc_image, src_rows, src_cols)
        hwc_label = sample_nearest(hwc_label, src_rows, src_cols)
    for name, axis in (("h", 0), ("w", 1), ("d", 2)):
        if name in config.flip_axes:
            # A 2D stack's label is only the centre slice: reversing T leaves it in place.
            hwc_image, hwc_label = _random_flip(hwc_image, hwc_label, axis, flip_label_axis=(name != "d" or rank == 4))
    if config.organ_contrast:
        hwc_image = _shift_organ(hwc_image, hwc_label, config.organ_contrast)
    if config.blur:
        hwc_image = gaussian_blur(hwc_image, tf.random.uniform([], 0.0, config.blur),
                                  radius=max(1, math.ceil(3 * config.blur)))
    if config.low_resolution:
        hwc_image = simulate_low_resolution(hwc_image, tf.random.uniform([], 1.0, 1.0 + config.low_resolution))
    if config.intensity_scale or config.intensity_shift:
        factor = tf.random.uniform([], 1.0 - config.intensity_scale, 1.0 + config.intensity_scale)
        hwc_image = hwc_image * factor + tf.random.uniform([], -config.intensity_shift, config.intensity_shift)
    if config.gamma:
        hwc_image = apply_gamma(hwc_image, tf.random.uniform([], 1.0 - config.gamma, 1.0 + config.gamma))
    if config.noise_std:
        hwc_image += tf.random.normal(tf.shape(hwc_image), stddev=config.noise_std)
    out_image, out_label = _from_hwc(hwc_image, hwc_label, rank)
    out_image = tf.ensure_shape(out_image, image.shape)
    out_label = tf.ensure_shape(tf.cast(out_label, label_dtype), label.shape)
    return out_image, out_label


def make_augment(config=None, **kwargs):
    """Returns `augment(image, label) -> (image, label)` for `make_dataset(augment=...)`.

    Args:
        config: an `AugmentConfig`, or None to build one from `kwargs`.
        **kwargs: `AugmentConfig` fields.

    Returns:
        A function of graph ops (no `py_function`), usable in `tf.data.Dataset.map`.

    Raises:
        ConfigError: a negative range, zoom >= 1 or an unknown flip axis.

    Example:
        >>> augment = make_augment(rotation=180, zoom=0.2, elastic=0.02)  # residual U-Net
        >>> ds = make_dataset(pattern, mode="dense", augment=augment, ...)
    """
    if config is None:
        config = AugmentConfig(**kwargs)
    elif kwargs:
        config = dataclasses.replace(config, **kwargs)

    def augment(image, label):
        return augment_example(image, label, config)

    return augment
