"""Parsing: 2.5D stacks and 3D patches drawn from decoded cases in graph ops (no py_function)."""
import dataclasses

import tensorflow as tf

from liverzoo.data.sampling import stack_offsets

# --- Parsing: sampling stacks and patches in graph ops ----------------------------------------

# Columns of the per-sample uniform draws.
_U_USE_FG, _U_CLASS, _U_COORD, _U_SLICE, _U_STRIDE, _U_AXIS = 0, 1, 2, 3, 4, 5
_NUM_U = 8


def _uniform_int(u, lo, hi):
    """Integer in [lo, hi] from u in [0, 1)."""
    return lo + tf.minimum(tf.cast(tf.floor(u * tf.cast(hi - lo + 1, tf.float32)), tf.int32), hi - lo)


def _bounds(n, size):
    """Origin range [lo, hi] of a patch of `size` in an axis of `n` (centred if n < size)."""
    lo = tf.minimum(0, tf.math.floordiv(n - size, 2))
    return lo, tf.maximum(n - size, lo)


def _foreground_center(case, u):
    """(use_fg, centre (3,)): a stored labelled voxel, class drawn first (nnU-Net style)."""
    n1, n2 = case["fg_counts"][0], case["fg_counts"][1]
    pick_tumor = (n2 > 0) & ((n1 == 0) | (u[_U_CLASS] >= 0.5))
    start = tf.where(pick_tumor, n1, 0)
    count = tf.where(pick_tumor, n2, n1)
    k = start + _uniform_int(u[_U_COORD], 0, tf.maximum(count, 1) - 1)
    return (n1 + n2) > 0, case["fg_coords"][k]


def crop_or_pad(x, origin, size, pad_value):
    """TF version of `sampling.crop_or_pad` on the leading len(size) axes of `x`.

    Slices the in-bounds part, then pads with `pad_value`; origins may be negative or run
    past the end.
    """
    k = len(size)
    ndim_rest = x.shape.rank - k
    shape = tf.shape(x)[:k]
    size = tf.constant(size, tf.int32)
    start = tf.maximum(origin, 0)
    stop = tf.minimum(origin + size, shape)
    extent = tf.maximum(stop - start, 0)
    part = tf.slice(x, tf.concat([start, tf.zeros([ndim_rest], tf.int32)], 0),
                    tf.concat([extent, tf.fill([ndim_rest], -1)], 0))
    before = start - origin
    after = size - extent - before
    paddings = tf.concat([tf.stack([before, after], axis=1), tf.zeros([ndim_rest, 2], tf.int32)], 0)
    return tf.pad(part, paddings, constant_values=tf.cast(pad_value, x.dtype))


@dataclasses.dataclass
class StackSampler:
    """2.5D: `(H, W, T)` stacks around a centre slice (Eq. 1 of 000_ebe0050d52f538d0.txt).

    Attributes:
        stack_size: T (odd); 1 gives single slices for 2D models.
        mode: "dense" (stride 1), "sparse" (stride `sparse_stride`), or "dense_sparse"
            (each stack dense or sparse with probability 1/2: the DS step of DSD training).
        sparse_stride: s of sparse stacks (the paper uses 2).
        foreground_fraction: share of stacks centred on a labelled voxel's slice.
        patch_size: optional `(h, w)` in-plane crop (foreground-centred like the slice).
    """

    stack_size: int = 7
    mode: str = "dense"
    sparse_stride: int = 2
    foreground_fraction: float = 0.5
    patch_size: tuple = None

    def __post_init__(self):
        self._offsets = tf.constant(stack_offsets(self.stack_size, 1), tf.int32)
        stack_offsets(self.stack_size, self.sparse_stride)  # validates

    def _stride(self, u):
        if self.mode == "dense":
            return tf.constant(1, tf.int32)
        if self.mode == "sparse":
            return tf.constant(self.sparse_stride, tf.int32)
        return tf.where(u[_U_STRIDE] < 0.5, 1, self.sparse_stride)

    def extract(self, case, centre, stride, origin):
        """The stack at slice `centre[0]` with `stride`, cropped at in-plane `origin`."""
        depth = tf.shape(case["image"])[0]
        index = tf.clip_by_value(centre[0] + self._offsets * stride, 0, depth - 1)
        image = tf.gather(case["image"], index)  # (T, H, W)
        label = case["label"][centre[0]]
        if self.patch_size is not None:
            image = tf.transpose(crop_or_pad(tf.transpose(image, (1, 2, 0)), origin, self.patch_size,
                                             case["pad_value"]), (2, 0, 1))
            label = crop_or_pad(label, origin, self.patch_size, 0)
        meta = {"case_id": case["case_id"], "slice": centre[0], "stride": stride, "origin": origin}
        return tf.transpose(image, (1, 2, 0)), tf.cast(label, tf.int32), meta

    def sample(self, case, u):
        """One random stack from uniforms `u` (shape (8,))."""
        shape = tf.shape(case["image"])
        use_fg, fg = _foreground_center(case, u)
        use_fg = use_fg & (u[_U_USE_FG] < self.foreground_fraction)
        z = tf.where(use_fg, fg[0], _uniform_int(u[_U_SLICE], 0, shape[0] - 1))
        origin = tf.zeros([2], tf.int32)
        if self.patch_size is not None:
            axes = []
            for a in range(2):
                lo, hi = _bounds(shape[a + 1], self.patch_size[a])
                centred = tf.clip_by_value(fg[a + 1] - self.patch_size[a] // 2, lo, hi)
                axes.append(tf.where(use_fg, centred, _uniform_int(u[_U_AXIS + a], lo, hi)))
            origin = tf.stack(axes)
        return self.extract(case, tf.stack([z]), self._stride(u), origin)

    def sequence(self, case):
        """Every centre slice in order (dense stride; in-plane crop centred)."""
        shape = tf.shape(case["image"])
        origin = tf.zeros([2], tf.int32)
        if self.patch_size is not None:
            origin = tf.stack([tf.math.floordiv(shape[a + 1] - self.patch_size[a], 2) for a in range(2)])
        stride = tf.constant(self.sparse_stride if self.mode == "sparse" else 1, tf.int32)
        centres = tf.range(shape[0])[:, None]
        return tf.data.Dataset.from_tensor_slices(centres).map(lambda c: self.extract(case, c, stride, origin))


@dataclasses.dataclass
class PatchSampler:
    """3D: `(D, H, W, 1)` sub-volumes, foreground-centred with probability `foreground_fraction`.

    Attributes:
        patch_shape: `(D, H, W)` (e.g. (12, 256, 256) LW-HCN, (16, 256, 256) LV-Net), or
            None for the whole volume.
        foreground_fraction: share of patches centred on a labelled voxel.
    """

    patch_shape: tuple = None
    foreground_fraction: float = 0.5

    def extract(self, case, origin):
        """The patch at `origin` (D, H, W), padded with the case's pad value outside."""
        if self.patch_shape is None:
            image, label = case["image"], case["label"]
        else:
            image = crop_or_pad(case["image"], origin, self.patch_shape, case["pad_value"])
            label = crop_or_pad(case["label"], origin, self.patch_shape, 0)
        meta = {"case_id": case["case_id"], "origin": origin}
        return image[..., None], tf.cast(label, tf.int32), meta

    def sample(self, case, u):
        """One random patch from uniforms `u` (shape (8,))."""
        if self.patch_shape is None:
            return self.extract(case, tf.zeros([3], tf.int32))
        shape = tf.shape(case["image"])
        use_fg, fg = _foreground_center(case, u)
        use_fg = use_fg & (u[_U_USE_FG] < self.foreground_fraction)
        axes = []
        for a in range(3):
            lo, hi = _bounds(shape[a], self.patch_shape[a])
            centred = tf.clip_by_value(fg[a] - self.patch_shape[a] // 2, lo, hi)
            axes.append(tf.where(use_fg, centred, _uniform_int(u[_U_AXIS + a], lo, hi)))
        return self.extract(case, tf.stack(axes))

    def sequence(self, case):
        """Patches tiling the whole volume in order (the last one along an axis ends at its end)."""
        if self.patch_shape is None:
            return tf.data.Dataset.from_tensors(self.extract(case, tf.zeros([3], tf.int32)))
        shape = tf.shape(case["image"])
        starts = []
        for a in range(3):
            n, p = shape[a], self.patch_shape[a]
            count = tf.maximum(tf.math.floordiv(n - p + p - 1, p) + 1, 1)
            along = tf.minimum(tf.range(count) * p, n - p)
            starts.append(tf.where(n <= p, tf.math.floordiv(n - p, 2)[None], along))
        grid = tf.meshgrid(*starts, indexing="ij")
        origins = tf.reshape(tf.stack(grid, axis=-1), [-1, 3])
        return tf.data.Dataset.from_tensor_slices(origins).map(lambda o: self.extract(case, o))


