"""Shared by the training tests: phantom TFRecord shards and one-step configs of every model."""
import numpy as np

from liverzoo import models, training
from liverzoo.data import io, phantom, tfrecord

PHANTOM_SHAPE = (32, 32, 10)
#: Cases of the phantom shards and their split.
PHANTOM_SPLIT = {"phantom0": "train", "phantom1": "train", "phantom2": "val"}


def write_phantom_shards(folder, split=PHANTOM_SPLIT, shape=PHANTOM_SHAPE, **kwargs):
    """Tiny synthetic CT cases written as TFRecord shards (preset "lw_hcn", slices kept unless
    `kwargs` say otherwise: `tfrecord.write_dataset`'s options)."""
    cases = []
    for k, case_id in enumerate(sorted(split)):
        hu, label = phantom.make_phantom(shape, seed=k, num_tumors=2)
        affine = np.diag([1.5, 1.5, 2.5, 1.0])
        cases.append(io.CTVolume(hu.astype(np.float32), np.array([1.5, 1.5, 2.5]), affine, label=label,
                                 case_id=case_id))
    tfrecord.write_dataset(cases, str(folder), preset="lw_hcn", split=dict(split),
                           **{"inplane_size": 0, "num_shards": 1, **kwargs})
    return str(folder)


#: Narrow widths and fewer blocks for the one-step tests (tracing the train step of the
#: full-size graphs takes a minute each on 2 cores); a model missing here is trained as its
#: builder defaults at its SPECS tiny shape. Entries: (builder kwargs, input shape or None).
TINY = {
    "residual_unet": (dict(base_filters=8), None),
    "ds_nnunet": (dict(filters=(4, 8, 8, 8, 8, 8)), (32, 32, 7)),
    "nnunet_2d": (dict(filters=(4, 8, 8, 8, 8, 8)), (32, 32, 1)),
    "deeplabv3plus": (dict(middle_blocks=1, aspp_filters=16, low_level_filters=8, decoder_filters=16), None),
    "lw_hcn": (dict(encoder_filters=(16, 32), aspp_filters=16, skip_filters=(8, 8), decoder_filters=(16, 16)), None),
    "lv_net": (dict(filters=(4, 8, 8, 16, 16), encoder_blocks=(1, 1, 1, 1), decoder_blocks=(1, 1, 1, 1)), None),
    "vnet": (dict(filters=(4, 8, 8, 16, 16)), None),
    "unet3d": (dict(filters=((4, 8), (8, 8), (8, 16), (16, 16))), None),
    "ynet3d": (dict(base_filters=4), None),
    "ynet3d_ee": (dict(base_filters=4), None),
}


def tiny_config(model, shards, model_dir, **overrides):
    """A one-step run of `model` at its tiny input shape on the phantom shards."""
    kwargs, shape = TINY.get(model, ({}, None))
    args = dict(model=model, model_kwargs=kwargs, data=shards, model_dir=str(model_dir),
                input_shape=shape or models.SPECS[model].tiny_input_shape,
                epochs=1, steps_per_epoch=1, batch_size=2, verbose=0, strategy="one_device", dsd=None)
    args.update(overrides)
    return training.TrainConfig(**args)
