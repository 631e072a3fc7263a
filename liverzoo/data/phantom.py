"""Synthetic abdominal CT: a seeded phantom of any size, for tests and scale benchmarks.

An axial cross-section of the upper abdomen in canonical RAS+ orientation (x towards the
patient's right, y anterior, z superior): air, a body ellipse with a subcutaneous fat
layer and an abdominal-wall muscle ring, soft tissue, a vertebral body with spinal canal, a
contrast-filled aorta, kidneys, spleen, lung bases at the top, and a two-lobed liver on the
right with hypodense tumors inside it. Values are typical portal-venous-phase HU plus
Gaussian noise. Anatomy scales with the field of view, so any shape works; structures are
drawn inside their bounding boxes, so a 512x512x300 volume takes a few seconds.
"""
import numpy as np

from liverzoo.errors import ConfigError

#: Mean HU of each tissue (portal venous phase).
HU = {"air": -1000, "lung": -850, "fat": -100, "soft": 30, "muscle": 50, "bone": 700, "marrow": 250,
      "aorta": 180, "kidney": 150, "spleen": 110, "liver": 100, "tumor": 40}


class _Grid:
    """Normalised coordinates in [-1, 1] per axis (voxel centres), as broadcastable vectors."""

    def __init__(self, shape):
        self.shape = shape
        self.axes = [(np.arange(n, dtype=np.float32) + 0.5) / n * 2 - 1 for n in shape]

    def box(self, center, radii):
        """Slices of the voxels whose normalised coordinate lies within center +- radii."""
        out = []
        for axis, c, r, n in zip(self.axes, center, radii, self.shape):
            lo, hi = np.searchsorted(axis, c - r), np.searchsorted(axis, c + r, side="right")
            out.append(slice(int(min(lo, n)), int(max(min(hi, n), lo))))
        return tuple(out)

    def ellipsoid(self, center, radii):
        """(box, mask within the box) of an axis-aligned ellipsoid."""
        box = self.box(center, radii)
        parts = [((a[s] - c) / r) ** 2 for a, s, c, r in zip(self.axes, box, center, radii)]
        return box, parts[0][:, None, None] + parts[1][None, :, None] + parts[2][None, None, :] <= 1.0

    def ellipse(self, center, radii):
        """2D (X, Y) mask of an ellipse (a cylinder along z)."""
        x, y = self.axes[0][:, None], self.axes[1][None, :]
        return ((x - center[0]) / radii[0]) ** 2 + ((y - center[1]) / radii[1]) ** 2 <= 1.0


def make_phantom(shape=(128, 128, 64), spacing=(1.5, 1.5, 2.5), seed=0, num_tumors=3, noise_hu=12.0,
                 fov_padding=False):
    """Generates a synthetic abdominal CT volume with liver and tumor labels.

    Args:
        shape: `(X, Y, Z)` voxels, any size (each at least 1).
        spacing: voxel size in mm (only recorded by callers; anatomy scales with `shape`).
        seed: seeds tumor placement and noise; the same seed gives the same volume.
        num_tumors: hypodense tumors placed inside the liver.
        noise_hu: standard deviation of the Gaussian noise.
        fov_padding: set voxels outside the inscribed scan circle to -3024 HU, as many
            scanners (and the dcmqi demo slices) do.

    Returns:
        `(hu int16 (X, Y, Z), label uint8 (X, Y, Z))`, labels 0 background, 1 liver, 2 tumor.

    Example:
        >>> hu, label = make_phantom((64, 64, 32), seed=1)
        >>> hu.dtype, sorted(set(label.ravel().tolist()))
        (dtype('int16'), [0, 1, 2])
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"phantom shape must be three positive sizes, got {shape}")
    if len(spacing) != 3:
        raise ConfigError(f"phantom spacing must have three values, got {spacing}")
    rng = np.random.default_rng(seed)
    g = _Grid(shape)
    # Draw tissue indices (uint8) first and convert to HU in slabs: a quarter of the memory
    # traffic of drawing float32 HU directly.
    lut = [HU["air"]]

    def code(value):
        lut.append(value)
        return len(lut) - 1

    tissue = np.zeros(shape, np.uint8)
    label = np.zeros(shape, np.uint8)

    # Cylinders along z: body, fat layer, muscle wall, soft-tissue interior, spine, aorta.
    for name, radii in (("fat", (0.85, 0.65)), ("muscle", (0.78, 0.58)), ("soft", (0.72, 0.52))):
        tissue[g.ellipse((0.0, 0.0), radii)] = code(HU[name])
    tissue[g.ellipse((0.0, -0.38), (0.12, 0.12))] = code(HU["bone"])
    tissue[g.ellipse((0.0, -0.38), (0.09, 0.09))] = code(HU["marrow"])
    tissue[g.ellipse((0.0, -0.55), (0.04, 0.05))] = code(HU["soft"])  # spinal canal
    tissue[g.ellipse((-0.06, -0.18), (0.055, 0.055))] = code(HU["aorta"])

    # Ellipsoids: lung bases (top), kidneys, spleen (patient's left = -x).
    for center, radii, name in (
        ((0.35, -0.15, 1.0), (0.28, 0.32, 0.35), "lung"),
        ((-0.35, -0.15, 1.0), (0.28, 0.32, 0.35), "lung"),
        ((0.32, -0.28, -0.45), (0.12, 0.14, 0.35), "kidney"),
        ((-0.32, -0.28, -0.35), (0.12, 0.14, 0.35), "kidney"),
        ((-0.45, -0.05, 0.3), (0.16, 0.24, 0.35), "spleen"),
    ):
        box, mask = g.ellipsoid(center, radii)
        tissue[box][mask] = code(HU[name])

    # Liver: a large right lobe and a smaller left lobe reaching across the midline.
    liver_code = code(HU["liver"])
    for center, radii in (((0.35, 0.05, 0.2), (0.32, 0.38, 0.6)), ((0.0, 0.2, 0.35), (0.3, 0.18, 0.3))):
        box, mask = g.ellipsoid(center, radii)
        tissue[box][mask] = liver_code
        label[box][mask] = 1

    # Tumors: spheres (in normalised x/y, stretched in z by the aspect) centred in the liver.
    candidates = np.flatnonzero(label)
    for _ in range(num_tumors if candidates.size else 0):
        c = np.unravel_index(candidates[rng.integers(candidates.size)], shape)
        center = [g.axes[a][c[a]] for a in range(3)]
        r = float(rng.uniform(0.04, 0.1))
        box, mask = g.ellipsoid(center, (r, r, r * 1.5))
        mask &= label[box] > 0
        tissue[box][mask] = code(HU["tumor"] + rng.normal(0, 5))
        label[box][mask] = 2

    lut = np.asarray(lut, np.float32)
    outside = None if not fov_padding else ~g.ellipse((0.0, 0.0), (1.0, 1.0))
    hu = np.empty(shape, np.int16)
    step = max(1, (1 << 22) // (shape[0] * shape[1]))
    for z in range(0, shape[2], step):
        part = lut[tissue[:, :, z:z + step]]
        part += rng.standard_normal(part.shape, dtype=np.float32) * np.float32(noise_hu)
        if outside is not None:
            part[outside] = -3024
        hu[:, :, z:z + step] = np.clip(np.rint(part), -3024, 3071)
    return hu, label


def phantom_affine(shape, spacing):
    """RAS affine with `spacing` and the volume centred on the origin."""
    affine = np.diag([*map(float, spacing), 1.0])
    affine[:3, 3] = -0.5 * (np.asarray(shape) - 1) * np.asarray(spacing, float)
    return affine


def save_phantom(image_path, label_path, shape=(128, 128, 64), spacing=(1.5, 1.5, 2.5), seed=0, **kwargs):
    """Writes a phantom as an int16 CT NIfTI and a uint8 label NIfTI (same affine).

    Args:
        image_path: output CT file (`.nii` or `.nii.gz`).
        label_path: output label file.
        shape, spacing, seed, **kwargs: as `make_phantom`.

    Returns:
        `(hu, label)` arrays.

    Example:
        >>> save_phantom("volume-0.nii.gz", "segmentation-0.nii.gz", (512, 512, 300), (0.8, 0.8, 1.0))  # doctest: +SKIP
    """
    import nibabel as nib

    from liverzoo.data.io import atomic_write

    hu, label = make_phantom(shape, spacing, seed, **kwargs)
    affine = phantom_affine(shape, spacing)
    for data, path in ((hu, image_path), (label, label_path)):
        image = nib.Nifti1Image(data, affine)
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
        atomic_write(path, lambda tmp, image=image: nib.save(image, tmp))
    return hu, label
