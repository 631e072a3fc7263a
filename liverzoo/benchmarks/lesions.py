"""Lesion benchmark: lesion-wise evaluation of one 512 x 512 x 300 case with 50 lesions.

The phantom is a liver-sized ellipsoid holding 50 spherical lesions of 2-20 voxels radius
(0.8 x 0.8 x 1.5 mm voxels); the prediction shifts every lesion by one voxel, drops five,
bridges two pairs and adds ten false-positive blobs. Timed: `liverzoo.lesions.detect_lesions`
(components, matching, per-lesion Dice and surface distances) on the two tumor masks, the
median of 3 runs after a warm-up. Goal: under 10 s on a 2-core CPU. Not part of `all`.
"""
import numpy as np

from liverzoo.benchmarks import markdown_table, median_time
from liverzoo.errors import ConfigError

SHAPE, SPACING, NUM_LESIONS = (512, 512, 300), (0.8, 0.8, 1.5), 50
MAX_DRAWS = 100_000


def phantom(seed=0, shape=SHAPE, num_lesions=NUM_LESIONS):
    """(predicted tumor mask, reference tumor mask) of the benchmark case."""
    rng = np.random.default_rng(seed)
    ref = np.zeros(shape, bool)
    pred = np.zeros(shape, bool)
    centres = []
    for _ in range(MAX_DRAWS):
        if len(centres) == num_lesions:
            break
        c = rng.integers((60, 60, 40), (shape[0] - 60, shape[1] - 60, shape[2] - 40))
        if all(np.abs(c - o).max() > 45 for o in centres):
            centres.append(c)
    else:
        # Random placement can fill a volume before every lesion has room (it hung here).
        raise ConfigError(f"lesion phantom: no room for {num_lesions} lesions 46 voxels apart in {shape} "
                          f"({len(centres)} placed)")
    for index, c in enumerate(centres):
        r = int(rng.integers(2, 21))
        box = tuple(slice(int(v) - r - 1, int(v) + r + 2) for v in c)
        grid = np.indices([s.stop - s.start for s in box]) - (r + 1)
        ball = (grid ** 2).sum(axis=0) <= r * r
        ref[box] |= ball
        if index % 10 != 9:  # five lesions missed
            pred[tuple(slice(s.start + 1, s.stop + 1) for s in box)] |= ball
    for a, b in (centres[0], centres[1]), (centres[2], centres[3]):  # two bridges: merges
        point = np.array(a)
        for axis in range(3):  # a 2-voxel-thick path from centre a to centre b, one axis at a time
            lo, hi = sorted((int(point[axis]), int(b[axis])))
            box = [slice(int(v), int(v) + 2) for v in point]
            box[axis] = slice(lo, hi + 2)
            pred[tuple(box)] = True
            point[axis] = b[axis]
    for _ in range(10):  # false positives
        c = rng.integers(20, np.array(shape) - 20)
        pred[c[0]:c[0] + 4, c[1]:c[1] + 4, c[2]:c[2] + 3] = True
    return pred, ref


def run(quick=False):
    """Times lesion evaluation on the phantom; returns a Markdown section."""
    from liverzoo import lesions

    shape = (256, 256, 150) if quick else SHAPE
    pred, ref = phantom(shape=shape, num_lesions=10 if quick else NUM_LESIONS)
    result = lesions.detect_lesions(pred, ref, SPACING)
    seconds = median_time(lambda: lesions.detect_lesions(pred, ref, SPACING), repeats=1 if quick else 3)
    row = ["x".join(map(str, shape)), result["num_reference"], result["num_predicted"],
           f"{result['tp']}/{result['fp']}/{result['fn']}", f"{result['merges']}/{result['splits']}", f"{seconds:.2f}"]
    return ("## Lesions: lesion-wise evaluation of one case\n\n"
            + markdown_table(["volume", "reference lesions", "predicted lesions", "TP/FP/FN", "merges/splits",
                              "seconds (median)"], [row]))
