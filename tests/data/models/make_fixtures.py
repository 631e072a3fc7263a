"""Writes tests/data/models/: one tiny `.keras` per model family plus its expected outputs.

The committed files were written by liverzoo at cde630b (before the one-folder-per-family
restructure); tests/models/test_reload_fixtures.py checks that today's code still loads them
with `safe_mode=True` and gives the same outputs. Kernels are rounded to 9 levels and the
archives re-packed deflated (same members, same bytes) so the files stay small. DeepLabV3+ has
no file: its fixed Xception widths make even a tiny one 12 M weights (LW-HCN covers the encoder).

Usage: `PYTHONPATH=. python tests/data/models/make_fixtures.py tests/data/models`
"""
import sys
import tempfile
import zipfile

import keras
import numpy as np
from liverzoo import models

# name -> (input shape, builder options): one small model per family.
FIXTURES = {
    "residual_unet": ((16, 16, 1), dict(base_filters=4, depth=2)),
    "ds_nnunet": ((16, 16, 3), dict(filters=(4, 8, 8))),
    "lw_hcn": ((2, 16, 16, 1), dict(encoder_filters=(4, 4), aspp_filters=4, skip_filters=(4, 4), decoder_filters=(4, 4))),
    "lv_net": ((8, 8, 8, 1), dict(filters=(2, 4, 4, 4), encoder_blocks=(1, 1, 1), decoder_blocks=(1, 1, 1))),
    "unet3d": ((8, 8, 8, 1), dict(filters=((2, 2), (2, 4), (4, 4), (4, 4)))),
    "vnet": ((8, 8, 8, 1), dict(filters=(2, 2, 2, 4), encoder_convs=(1, 2, 1, 1), decoder_convs=(1, 1, 1))),
    "ynet3d_ee": ((16, 16, 16, 1), dict(base_filters=1)),
}


def fixture_input(shape):
    """The fixed input batch (batch 1) the expected outputs were computed on."""
    return np.random.default_rng(0).normal(size=(1,) + tuple(shape)).astype("float32")


def main(out):
    """Writes `<name>.keras` per fixture and `expected_outputs.npz` (main output per name) to `out`."""
    expected = {}
    for name, (shape, kwargs) in FIXTURES.items():
        keras.utils.set_random_seed(0)
        model = models.build(name, input_shape=shape, **kwargs)
        weights = []
        for w in model.get_weights():
            top = np.abs(w).max()
            weights.append(np.round(w / top * 4) * top / 4 if w.ndim > 1 and top > 0 else w)
        model.set_weights(weights)
        y = model(fixture_input(shape), training=False)
        y = y[0] if isinstance(y, (list, tuple)) else y
        expected[name] = np.asarray(y)
        stored = f"{tempfile.mkdtemp()}/{name}.keras"
        model.save(stored)
        with zipfile.ZipFile(stored) as src, zipfile.ZipFile(
            f"{out}/{name}.keras", "w", zipfile.ZIP_DEFLATED, compresslevel=9
        ) as dst:
            for info in src.infolist():
                dst.writestr(info.filename, src.read(info.filename))
        print(name, model.count_params(), flush=True)
    np.savez_compressed(f"{out}/expected_outputs.npz", **expected)


if __name__ == "__main__":
    main(sys.argv[1])
