"""A new paper is one folder plus one line: the toy family in tests/toy_family/ joins the zoo with
`models.add_family`, then trains one step, segments a real CT volume and exports to TFLite
through the same generic paths as the zoo's models, with no edit anywhere in liverzoo/."""
import os

import numpy as np
import pytest

from liverzoo import export, lite, models, runtime, training
from tests.toy_family import spec as toy
from tests.training.helpers import write_phantom_shards


@pytest.fixture(scope="module")
def toy_family():
    names = models.add_family(toy.SPECS)  # the one line
    yield names
    for name in names:
        models.SPECS.pop(name)
        models.MODELS.pop(name)


def test_toy_family_trains_segments_and_exports(toy_family, ct_volume, tmp_path):
    assert toy_family == ["toy_unet"] and models.build("toy_unet").name == "toy_unet"
    shards = write_phantom_shards(tmp_path / "shards")
    result = training.train(training.TrainConfig(model="toy_unet", data=shards, model_dir=str(tmp_path / "run"),
                                                 epochs=1, steps_per_epoch=1, batch_size=2, verbose=0,
                                                 strategy="one_device"))
    best = os.path.join(result["model_dir"], "best.keras")
    assert os.path.exists(best)

    segmenter = runtime.load_segmenter(best)
    # The preset the phantom shards were written with (their manifest's), not the toy spec's own.
    assert (segmenter.name, segmenter.kind, segmenter.preset) == ("toy_unet", "2d", "lw_hcn")
    mask = segmenter.segment(ct_volume, postprocess=False)
    assert mask.shape == ct_volume.array.shape and mask.dtype == np.uint8

    tflite = str(tmp_path / "toy.tflite")
    export.export_model(tflite, model_path=best, log=lambda *_: None)
    assert lite.read_metadata(tflite)["model"] == "toy_unet"
    lite_mask = runtime.load_segmenter(tflite).segment(ct_volume, postprocess=False)
    assert np.mean(lite_mask == mask) > 0.999


def test_taken_names_and_non_specs_are_refused(toy_family):
    from liverzoo.errors import ConfigError

    with pytest.raises(ConfigError, match="already taken"):
        models.add_family(toy.SPECS)
    with pytest.raises(ConfigError, match="ModelSpec"):
        models.add_family(("toy",))
