"""Post-processing of a predicted liver/tumor label map (NumPy/SciPy only).

The liver is one organ: keep the largest 3D connected component of the liver (tumor voxels
count as liver, so a tumor on the liver's rim joins it), fill the cavities enclosed by it,
and keep tumor only inside that liver. Many LiTS entries do this (e.g. Chlebus et al., 2018,
"object-based post-processing", cited by ../shared/papers/000_ebe0050d52f538d0.txt).

The liver is also thick: with `opening_mm` (segment's default `OPENING_MM`) an opening
first cuts what joins it through a thin bridge. The largest component is eroded by a ball of
that radius, the largest eroded core is kept, and the organ keeps only what lies within the
radius of that core (the union of the balls that fit inside it). Of what that cuts off, the
pieces smaller than `opening_keep_ml` stay: they are the liver's own thin edges and tips,
while a neighbouring organ is tens of millilitres. Then the steps above. On a whole abdomen the
false positives of a model trained on few patients (bowel below the liver, the right kidney)
touch the liver, so the largest component alone keeps them; README's leave-one-patient-out
table measures what the opening changes.

Example:
    >>> import numpy as np
    >>> from liverzoo.postprocess import postprocess
    >>> mask = np.zeros((9, 9, 9), np.uint8)
    >>> mask[1:6, 1:6, 1:6] = 1; mask[3, 3, 3] = 0; mask[8, 8, 8] = 2
    >>> out = postprocess(mask)
    >>> int(out[3, 3, 3]), int(out[8, 8, 8])
    (1, 0)
"""
import numpy as np
from scipy import ndimage

LIVER, TUMOR = 1, 2

# Radius of the opening `liverzoo.inference.segment` applies (mm); 0 turns it off. Measured on
# the leave-one-patient-out folds (README): a 10 mm ball cuts the bowel and kidney joined to the
# liver of the whole-abdomen patient and costs thin liver edges little.
OPENING_MM = 10.0
# What the opening cuts off stays when a piece (26-connected) is smaller than this (mL): on the
# same folds the cut pieces of the liver's thin edges were at most 1.6 mL, the bowel and kidney
# cut off 8 mL and more; 2-5 mL give the same table within 0.003.
OPENING_KEEP_ML = 2.0

# Full (26-neighbour) connectivity: liver lobes touching along an edge are one organ.
_STRUCTURE = ndimage.generate_binary_structure(3, 3)


def largest_component(mask):
    """The largest 26-connected component of a binary volume.

    Args:
        mask: boolean array (X, Y, Z).

    Returns:
        boolean array of the same shape (all False for an empty mask).

    Example:
        >>> m = np.zeros((5, 5, 5), bool); m[0:2, 0:2, 0:2] = True; m[4, 4, 4] = True
        >>> int(largest_component(m).sum())
        8
    """
    mask = np.asarray(mask, dtype=bool)
    box = ndimage.find_objects(mask.astype(np.uint8))
    if not box:
        return np.zeros_like(mask)
    # Label inside the bounding box only: int32 labels of a whole CT are 4 bytes a voxel.
    box = box[0]
    labels, count = ndimage.label(mask[box], structure=_STRUCTURE)
    out = np.zeros_like(mask)
    if count:
        # ndimage.histogram counts int32 labels in place; np.bincount would first copy
        # them to int64 (630 MB for a 512x512x300 box).
        sizes = ndimage.histogram(labels, 0, count, count + 1)
        sizes[0] = 0
        out[box] = labels == np.argmax(sizes)
    return out


def postprocess(mask, *, keep_largest=True, fill_holes=True, tumor_in_liver=True, opening_mm=0.0, spacing=None,
                opening_keep_ml=OPENING_KEEP_ML):
    """Cleans a predicted label map: one liver, no holes, tumor only inside the liver.

    Args:
        mask: label map (X, Y, Z) with 0 = background, 1 = liver, 2 = tumor.
        opening_mm: radius (mm) of the opening done first (see the module docstring; 0: none).
        spacing: `(x, y, z)` mm per voxel (needed with `opening_mm`).
        opening_keep_ml: pieces the opening cuts off that are smaller than this (mL) stay
            (0: the plain opening).
        keep_largest: keep only the largest connected component of liver-or-tumor.
        fill_holes: label cavities fully enclosed by the liver (3D) as liver.
        tumor_in_liver: drop tumor voxels outside the kept liver (only acts together
            with `keep_largest`, which is what defines "the liver").

    Returns:
        uint8 label map of the same shape (a new array).

    Example:
        >>> m = np.zeros((6, 6, 6), np.uint8); m[1:4, 1:4, 1:4] = 2; m[5, 5, 5] = 1
        >>> int(postprocess(m).sum() // 2)
        27
    """
    from liverzoo.maskfile import ArrayMask

    out = ArrayMask(np.asarray(mask).astype(np.uint8, copy=True))
    postprocess_slabs(out, keep_largest=keep_largest, fill_holes=fill_holes, tumor_in_liver=tumor_in_liver,
                      opening_mm=opening_mm, spacing=spacing, opening_keep_ml=opening_keep_ml)
    return out.array


def postprocess_slabs(masks, *, keep_largest=True, fill_holes=True, tumor_in_liver=True, opening_mm=0.0,
                      spacing=None, opening_keep_ml=OPENING_KEEP_ML, slab=None):
    """`postprocess` in place on a label map read and written in z-slabs (`liverzoo.maskfile`).

    Memory is a few slabs whatever the scan's length. Connected components are labelled per
    slab and joined across slab faces (26-neighbour for the organ, 6-neighbour for the
    background, as `ndimage.label` and `ndimage.binary_fill_holes` connect them); a hole is a
    background component inside the liver's bounding box that reaches none of its faces. The
    result equals the whole-volume operations voxel for voxel, ties between equally large
    components included (the first in (x, y, z) order wins, as `np.argmax` over
    `ndimage.label`'s numbering picks it); tests/test_postprocess.py checks this against
    SciPy on whole arrays.

    Args:
        masks: a `MaskFile` or `ArrayMask` (`shape`, `read(z0, z1)`, `write(z0, block)`).
        keep_largest, fill_holes, tumor_in_liver, opening_mm, spacing, opening_keep_ml: as `postprocess`.
        slab: slices per slab (default `liverzoo.maskfile.SLAB`).
    """
    from liverzoo.maskfile import SLAB, slab_ranges

    ranges = slab_ranges(masks.shape[2], slab or SLAB)
    if opening_mm:
        if spacing is None:
            raise ValueError("opening_mm needs the voxel spacing (spacing=)")
        if keep_largest:
            # The largest component first: the opening then works on the liver alone, and its
            # distance transforms cover the liver's box, not every speck of the scan.
            postprocess_slabs(masks, keep_largest=True, fill_holes=False, tumor_in_liver=tumor_in_liver, slab=slab)
        spacing = tuple(float(s) for s in spacing[:3])
        _open_slabs(masks, float(opening_mm), spacing, ranges, keep_voxels=opening_keep_ml * 1000.0 / np.prod(spacing))
    if not (keep_largest or fill_holes):
        return
    organ = _Components(_STRUCTURE)
    for z0, z1 in ranges:
        organ.add(masks.read(z0, z1) >= LIVER, z0)
    organ.join()
    kept = organ.largest(lambda z0, z1: masks.read(z0, z1) >= LIVER) if keep_largest else organ.all()
    box = organ.box(kept)
    holes = None
    if fill_holes and box is not None:
        (x0, x1), (y0, y1), (bz0, bz1) = box
        background = _Components(ndimage.generate_binary_structure(3, 1))
        for z0, z1 in ranges:
            if z1 > bz0 and z0 < bz1:
                inside = organ.mask(masks.read(z0, z1) >= LIVER, z0, kept)
                za, zb = max(bz0, z0) - z0, min(bz1, z1) - z0
                # Only faces of the box count as outside: x/y faces always, z faces in the end slabs.
                background.add(~inside[x0:x1, y0:y1, za:zb], z0 + za, edge_z=(z0 + za == bz0, z0 + zb == bz1))
        background.join()
        holes = background.enclosed()
    for z0, z1 in ranges:
        block = masks.read(z0, z1)
        is_organ = block >= LIVER
        inside = organ.mask(is_organ, z0, kept)
        if keep_largest:
            if tumor_in_liver:
                block[~inside] = 0
            else:
                block[(block == LIVER) & ~inside] = 0
        if holes is not None and z1 > bz0 and z0 < bz1:
            za, zb = max(bz0, z0) - z0, min(bz1, z1) - z0
            region = block[x0:x1, y0:y1, za:zb]
            region[background.mask(~inside[x0:x1, y0:y1, za:zb], z0 + za, holes)] = LIVER
        masks.write(z0, block)


def _open_slabs(masks, radius, spacing, ranges, keep_voxels=0.0):
    """Opening of the organ (label >= 1) by a ball of `radius` mm, keeping the largest eroded core.

    Equals, voxel for voxel, `organ & binary_dilation(core, ball)` with `core` the largest
    26-connected component of `binary_erosion(organ, ball, border_value=1)` (outside the scan
    counts as organ, so a liver cut by the scan's edge is not eroded from there) and `ball` the
    voxels within `radius` mm, plus the 26-connected pieces of what that cuts off that have
    fewer than `keep_voxels` voxels (tests/test_postprocess.py checks it against SciPy). Distances come
    from exact Euclidean distance transforms of each slab with `radius` mm of neighbours above
    and below, so memory is a few slabs. Nothing changes when no voxel lies deeper than
    `radius` inside the organ (a small or thin prediction is left to the other steps).
    """
    depth = masks.shape[2]
    reach = int(radius // spacing[2])  # slices a ball reaches above and below

    def organ_with_halo(z0, z1):
        a, b = max(0, z0 - reach), min(depth, z1 + reach)
        return masks.read(a, b), z0 - a

    def core_of(z0, z1):
        block, off = organ_with_halo(z0, z1)
        organ = block >= LIVER
        core = np.zeros(organ.shape[:2] + (z1 - z0,), bool)
        crop = _crop(organ, (1, 1))
        if crop is None:
            return core
        part = organ[crop]
        if part.all():  # no background in reach: the scan's edge counts as organ
            inner = part
        else:
            inner = ndimage.distance_transform_edt(part, sampling=spacing) > radius
        core[crop[0], crop[1]] = inner[:, :, off : off + z1 - z0]
        return core

    # Each slab's core is marked in the mask itself (label + 2) as it is found: the next passes
    # read it back instead of computing it again, and marking leaves every voxel organ, so the
    # cores of later slabs (whose halo reads marked slices) are unchanged.
    cores = _Components(_STRUCTURE)
    for z0, z1 in ranges:
        core = core_of(z0, z1)
        cores.add(core, z0)
        if core.any():
            block = masks.read(z0, z1)
            block[core] += 2
            masks.write(z0, block)
    cores.join()
    kept = cores.largest(lambda z0, z1: masks.read(z0, z1) > TUMOR)
    # Unmark the cores that are not the largest.
    for z0, z1 in ranges:
        block = masks.read(z0, z1)
        core = block > TUMOR
        if core.any():
            block[core & ~cores.mask(core, z0, kept)] -= 2
            masks.write(z0, block)
    if not kept.any():
        return
    # Organ voxels farther than `radius` from the kept core are cut off: dropped, or, when small
    # pieces may stay, marked label + 4 until their pieces are measured. Core voxels are never
    # cut, so the core marks (label + 2) the next slab's halo reads stay.
    for z0, z1 in ranges:
        block, off = organ_with_halo(z0, z1)
        marked = (block > TUMOR) & (block <= TUMOR + 2)
        # Organ voxels up to `radius` beyond the core's box may still be near it.
        crop = _crop(marked, (int(radius // spacing[0]), int(radius // spacing[1])))
        near = np.zeros(marked.shape, bool)
        if crop is not None:
            near[crop] = ndimage.distance_transform_edt(~marked[crop], sampling=spacing) <= radius
        block, near = block[:, :, off : off + z1 - z0], near[:, :, off : off + z1 - z0]
        cut = (block >= LIVER) & ~near
        if keep_voxels > 0:
            block[cut] += 4
        else:
            block[cut] = 0
        masks.write(z0, block)
    small = None
    if keep_voxels > 0:
        pieces = _Components(_STRUCTURE)
        for z0, z1 in ranges:
            pieces.add(masks.read(z0, z1) > TUMOR + 2, z0)
        pieces.join()
        if pieces.count:
            small = (pieces.totals() < keep_voxels)[pieces.group]
    for z0, z1 in ranges:
        block = masks.read(z0, z1)
        cut = block > TUMOR + 2
        if cut.any():
            stays = pieces.mask(cut, z0, small)
            block[cut & ~stays] = 0
            block[stays] -= 4
        block[block > TUMOR] -= 2
        masks.write(z0, block)


def _crop(binary, margin):
    """x/y slices of the box around `binary`'s voxels, grown by `margin` (x, y) voxels (all z), or None.

    With a margin of 1 the box keeps a ring of background on every side the array allows: no
    voxel outside it is nearer to the organ than that ring, so distances inside are exact.
    """
    box = ndimage.find_objects(binary.any(axis=2).astype(np.uint8))
    if not box:
        return None
    (x, y) = box[0]
    nx, ny = binary.shape[:2]
    return (slice(max(0, x.start - margin[0]), min(nx, x.stop + margin[0])),
            slice(max(0, y.start - margin[1]), min(ny, y.stop + margin[1])), slice(None))


class _Components:
    """Connected components of a binary volume seen slab by slab, joined across slab faces.

    `add` must see the same slabs in the same order each time a slab's labels are needed again
    (`mask` relabels it): the numbering is ndimage.label's, offset per slab.
    """

    def __init__(self, structure):
        self.structure = structure
        self.offsets, self.sizes, self.boxes, self.edges, self.ranges = {}, [], [], [], []
        self.on_edge, self.count, self._last = [], 0, None

    def _label(self, binary):
        labels, count = ndimage.label(binary, structure=self.structure)
        return labels, count

    def add(self, binary, z0, edge_z=None):
        """Labels one slab `(X, Y, n)` whose first slice is `z0` (slabs in z order)."""
        labels, n = self._label(binary)
        base = self.count
        self.offsets[z0] = base
        self.ranges.append((z0, z0 + binary.shape[2]))
        if n and edge_z is None:
            # Sizes and boxes pick and bound the organ; background components (edge_z given) need neither.
            # ndimage.histogram counts int32 labels in place (np.bincount would copy them to int64).
            self.sizes.append(ndimage.histogram(labels, 0, n, n + 1)[1:].astype(np.int64))
            box = np.array([[s.start for s in b] + [s.stop for s in b] for b in ndimage.find_objects(labels)], np.int64)
            box[:, [2, 5]] += z0
            self.boxes.append(box)
        if n and edge_z is not None:
            # A component on a face of the box is connected to the outside.
            faces = [labels[0], labels[-1], labels[:, 0], labels[:, -1]]
            if edge_z[0]:
                faces.append(labels[:, :, 0])
            if edge_z[1]:
                faces.append(labels[:, :, -1])
            touching = np.unique(np.concatenate([f.ravel() for f in faces]))
            self.on_edge.append(touching[touching > 0] + base)
        first = np.where(labels[:, :, 0] > 0, labels[:, :, 0] + base, 0)
        if self._last is not None and self._last[1] == z0:
            self._pair(self._last[0], first)
        self._last = (np.where(labels[:, :, -1] > 0, labels[:, :, -1] + base, 0), z0 + labels.shape[2])
        self.count += n

    def _pair(self, below, above):
        """Edges between components that touch across a slab face (by the structure's neighbours)."""
        reach = self.structure.shape[0] // 2
        size_x, size_y = below.shape
        for dx in range(-reach, reach + 1):
            for dy in range(-reach, reach + 1):
                if not self.structure[1 + dx, 1 + dy, 2]:
                    continue
                a = below[max(0, -dx) : size_x - max(0, dx), max(0, -dy) : size_y - max(0, dy)]
                b = above[max(0, dx) : size_x - max(0, -dx), max(0, dy) : size_y - max(0, -dy)]
                both = (a > 0) & (b > 0)
                if both.any():
                    self.edges.append(np.unique(np.stack([a[both], b[both]], 1), axis=0))

    def join(self):
        """Groups the slab components into whole-volume components (`self.group[id - 1]`)."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        self.size = np.concatenate(self.sizes) if self.sizes else np.zeros(0, np.int64)
        self.box_of = np.concatenate(self.boxes) if self.boxes else np.zeros((0, 6), np.int64)
        if not self.count:
            self.group = np.zeros(0, np.int64)
            return
        edges = np.concatenate(self.edges) - 1 if self.edges else np.zeros((0, 2), np.int64)
        graph = coo_matrix((np.ones(len(edges), np.int8), (edges[:, 0], edges[:, 1])), shape=(self.count,) * 2)
        self.group = connected_components(graph, directed=False)[1]

    def all(self):
        return np.ones(self.count, bool)

    def totals(self):
        """Voxels of each whole-volume component (indexed by `self.group`'s values)."""
        return np.bincount(self.group, weights=self.size)

    def largest(self, read):
        """Which slab components make up the largest whole-volume component (first in (x, y, z) on ties).

        Args:
            read: `read(z0, z1)` -> the binary slab `add` saw (read again only on a tie).
        """
        if not self.count:
            return np.zeros(0, bool)
        totals = self.totals()
        best = np.flatnonzero(totals == totals.max())
        if len(best) > 1:
            # ndimage.label numbers components by their first voxel in C order: (x, y, z).
            first = {g: (np.inf,) for g in best}
            for z0, z1 in self.ranges:
                labels, n = self._label(read(z0, z1))
                groups = np.concatenate([[-1], self.group[self.offsets[z0] : self.offsets[z0] + n]])[labels]
                for g in best:
                    where = np.argwhere(groups == g)  # C order: the first row is the smallest (x, y, z)
                    if len(where):
                        first[g] = min(first[g], (where[0][0], where[0][1], where[0][2] + z0))
            best = [min(best, key=lambda g: first[g])]
        return self.group == best[0]

    def box(self, kept):
        """((x0, x1), (y0, y1), (z0, z1)) bounding the kept components, or None."""
        if not kept.any():
            return None
        b = self.box_of[kept]
        return tuple((int(b[:, i].min()), int(b[:, i + 3].max())) for i in range(3))

    def mask(self, binary, z0, kept):
        """The voxels of one slab (seen again, as in `add`) that belong to kept components."""
        labels, n = self._label(binary)
        if not n:
            return np.zeros(binary.shape, bool)
        ids = kept[self.offsets[z0] : self.offsets[z0] + n]
        return np.concatenate([[False], ids])[labels]

    def enclosed(self):
        """Slab components whose whole-volume component touches no face of the box."""
        touching = np.zeros(self.count, bool)
        if self.on_edge:
            on_edge = np.concatenate(self.on_edge) - 1
            touching[np.isin(self.group, np.unique(self.group[on_edge]))] = True
        return ~touching
