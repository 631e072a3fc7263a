"""liverzoo.train_lib: recipes, config checks, one-step training of every model, DSD, folds.

The SIGKILL-and-resume test is in tests/tools/test_train.py (it runs the CLI); the
distributed tests are in tests/test_distributed.py.
"""
import json
import os

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from liverzoo import models, train_lib  # noqa: E402
from liverzoo.data import io, phantom, tfrecord  # noqa: E402
from liverzoo.errors import ConfigError, DataError  # noqa: E402

PHANTOM_SHAPE = (32, 32, 10)
#: Cases of the phantom shards and their split.
PHANTOM_SPLIT = {"phantom0": "train", "phantom1": "train", "phantom2": "val"}


def write_phantom_shards(folder, split=PHANTOM_SPLIT, shape=PHANTOM_SHAPE):
    """Tiny synthetic CT cases written as TFRecord shards (preset "lw_hcn", slices kept)."""
    cases = []
    for k, case_id in enumerate(sorted(split)):
        hu, label = phantom.make_phantom(shape, seed=k, num_tumors=2)
        affine = np.diag([1.5, 1.5, 2.5, 1.0])
        cases.append(io.CTVolume(hu.astype(np.float32), np.array([1.5, 1.5, 2.5]), affine, label=label,
                                 case_id=case_id))
    tfrecord.write_dataset(cases, str(folder), preset="lw_hcn", split=dict(split), inplane_size=0, num_shards=1)
    return str(folder)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_phantom_shards(tmp_path_factory.mktemp("phantom_shards"))


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
    return train_lib.TrainConfig(**args)


# --- Recipes: the papers' values (written out here, not read back from RECIPES) -------------

PAPER_VALUES = [
    # model, optimizer, lr, schedule, loss, deep supervision, weight decay, sampling, dsd
    ("ds_nnunet", "sgd", 1e-2, "poly", "dice_ce", "halving", 0.0, "dense_sparse", True),
    ("lw_hcn", "adam", 1e-3, "poly", "dice_ce", None, 0.0, "volume", False),
    ("residual_unet", "adam", 1e-3, "constant", "weighted_ce", None, 0.0, "dense", False),
    ("lv_net", "adam", 1e-3, "exponential", "ce", "lv_net", 1e-5, "volume", False),
    ("ynet3d", "adam", 1e-4, "cosine", "dice_ce", None, 0.0, "volume", False),
]


@pytest.mark.parametrize("row", PAPER_VALUES, ids=[r[0] for r in PAPER_VALUES])
def test_recipe_defaults_follow_the_papers(row, tmp_path):
    name, optimizer, lr, schedule, loss, ds, wd, sampling, dsd = row
    if name not in models.MODELS:
        pytest.skip(f"{name} is not registered yet")
    config = train_lib.resolve(train_lib.TrainConfig(model=name, data=str(tmp_path)))
    got = (config.optimizer, config.learning_rate, config.schedule, config.loss, config.deep_supervision,
           config.weight_decay, config.sampling, config.dsd)
    assert got == (optimizer, lr, schedule, loss, ds, wd, sampling, dsd)


def test_paper_specific_settings():
    lw = train_lib.resolve(train_lib.TrainConfig(model="lw_hcn", data="x"))
    assert lw.input_shape == (12, 256, 256, 1) and lw.batch_size == 6 and lw.recompute  # paper 001
    ds = train_lib.resolve(train_lib.TrainConfig(model="ds_nnunet", data="x", epochs=1000))
    assert ds.dsd_epochs == (400, 600) and ds.input_shape[-1] == 7  # paper 000: 400 + 600, T = 7
    ru = train_lib.RECIPES["residual_unet"].augment
    assert ru["rotation"] == 180 and ru["zoom"] == 0.2 and ru["elastic"] > 0  # paper 002


def test_flags_override_the_recipe():
    config = train_lib.resolve(train_lib.TrainConfig(
        model="lw_hcn", data="x", learning_rate=5e-4, schedule="cosine", loss="dice", recompute=False,
        input_shape=(8, 64, 64, 1), batch_size=3))
    assert (config.learning_rate, config.schedule, config.loss, config.recompute) == (5e-4, "cosine", "dice", False)
    assert config.input_shape == (8, 64, 64, 1) and config.batch_size == 3


def test_demo_defaults_are_small():
    config = train_lib.resolve(train_lib.TrainConfig(model="residual_unet"))
    assert config.input_shape == models.SPECS["residual_unet"].default_input_shape
    assert config.epochs == train_lib.DEMO_EPOCHS and config.model_dir == os.path.join("runs", "residual_unet")


BAD_CONFIGS = [
    (dict(model="no_such_model"), ConfigError, "--model='no_such_model' is not a zoo model"),
    (dict(epochs=0), ConfigError, "--epochs must be a positive"),
    (dict(batch_size=-2), ConfigError, "--batch_size"),
    (dict(learning_rate=0.0), ConfigError, "--learning_rate"),
    (dict(schedule="step"), ConfigError, "--schedule='step'"),
    (dict(loss="focal"), ConfigError, "--loss='focal'"),
    (dict(loss="weighted_ce", class_weights=(1.0, 2.0)), ConfigError, "--class_weights has 2 entries"),
    (dict(sampling="random"), ConfigError, "--sampling='random'"),
    (dict(strategy="tpu"), ConfigError, "--strategy='tpu'"),
    (dict(input_shape=(64, 64)), ConfigError, "--input_shape"),
    (dict(input_shape=(64, 64, 2)), ConfigError, "must be odd"),
    (dict(num_folds=3, fold=3), ConfigError, "--fold"),
    (dict(foreground_fraction=1.5), ConfigError, "--foreground_fraction"),
    (dict(dsd_epochs=(2, 3)), ConfigError, "--dsd_epochs needs --dsd"),
    (dict(dsd=True, epochs=4, dsd_epochs=(1, 2)), ConfigError, "do not add up"),
    (dict(dsd=True, sampling="sparse"), ConfigError, "--dsd trains with"),
    (dict(model="lw_hcn", sampling="dense"), ConfigError, "is 3D"),
    (dict(model="lw_hcn", dsd=True), ConfigError, "--dsd is for 2.5D"),
    (dict(model_kwargs={"width": 3}), ConfigError, "has no argument width"),
    (dict(model_kwargs={"input_shape": (1, 1, 1)}), ConfigError, "cannot set input_shape"),
    (dict(strategy="multi_worker"), ConfigError, "TF_CONFIG"),
    (dict(data="/no/such/folder"), DataError, "/no/such/folder"),
    (dict(data="/no/such/shards-*.tfrecord.gz"), DataError, "no TFRecord shards"),
]


@pytest.mark.parametrize("overrides, error, match", BAD_CONFIGS, ids=[m for _, _, m in BAD_CONFIGS])
def test_bad_options_fail_before_anything_starts(overrides, error, match, tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    args = dict(model="residual_unet", model_dir=str(tmp_path / "run")) | overrides
    with pytest.raises(error, match=match.replace("[", r"\[").replace("(", r"\(")):
        train_lib.prepare(train_lib.TrainConfig(**args))
    assert not (tmp_path / "run").exists()  # nothing written


def test_nifti_folder_with_one_case_is_rejected(tmp_path):
    hu, label = phantom.make_phantom((16, 16, 4), seed=0)
    import nibabel as nib

    nib.save(nib.Nifti1Image(hu, np.eye(4)), str(tmp_path / "volume-0.nii.gz"))
    nib.save(nib.Nifti1Image(label, np.eye(4)), str(tmp_path / "segmentation-0.nii.gz"))
    with pytest.raises(DataError, match="at least 2"):
        train_lib.prepare(train_lib.TrainConfig(model="residual_unet", data=str(tmp_path), model_dir=str(tmp_path / "r")))


def test_shards_without_validation_split_need_folds(tmp_path):
    folder = write_phantom_shards(tmp_path / "all_train", split={"a": "train", "b": "train"}, shape=(16, 16, 4))
    with pytest.raises(DataError, match="no validation shards"):
        train_lib.prepare(train_lib.TrainConfig(model="residual_unet", data=folder, model_dir=str(tmp_path / "r")))
    config, source, _ = train_lib.prepare(train_lib.TrainConfig(model="residual_unet", data=folder, num_folds=2,
                                                                 model_dir=str(tmp_path / "r")))
    assert source.case_ids == ("a", "b")


def test_fold_split_is_a_partition():
    ids = [f"case{i}" for i in range(11)]
    folds = [train_lib.fold_split(ids, 4, k, seed=3) for k in range(4)]
    val = [sorted(c for c, s in f.items() if s == "val") for f in folds]
    assert sorted(sum(val, [])) == sorted(ids)  # every case validates exactly once
    assert sorted(len(v) for v in val) == [2, 3, 3, 3]
    assert folds[0] == train_lib.fold_split(list(reversed(ids)), 4, 0, seed=3)  # order-free, seeded
    with pytest.raises(ConfigError, match="needs at least 5 cases"):
        train_lib.fold_split(ids[:4], 5, 0, seed=0)


def test_stage_plan():
    plain = train_lib.resolve(train_lib.TrainConfig(model="residual_unet", epochs=5, sampling="sparse"))
    assert train_lib.stage_plan(plain) == [train_lib.Stage("sparse", 0, 5)]
    dsd = train_lib.resolve(train_lib.TrainConfig(model="residual_unet", epochs=10, dsd=True))
    assert train_lib.stage_plan(dsd) == [train_lib.Stage("dense_sparse", 0, 4), train_lib.Stage("dense", 4, 10)]
    custom = train_lib.resolve(train_lib.TrainConfig(model="residual_unet", dsd=True, dsd_epochs=(3, 2)))
    assert custom.epochs == 5 and train_lib.stage_plan(custom)[1] == train_lib.Stage("dense", 3, 5)


# --- Training ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model", sorted(models.MODELS))
def test_one_step_training_of_every_model(model, shards, tmp_path):
    # One epoch of one step cannot hold DSD's two stages (tested below).
    config = tiny_config(model, shards, tmp_path, dsd=False if models.SPECS[model].kind == "2d" else None)
    result = train_lib.train(config, log=lambda *a: None)
    assert len(result["history"]) == 1 and np.isfinite(result["history"][0]["loss"])
    assert set(result["final"]["cases"]) == {"phantom2"}
    for key in ("liver_dice", "tumor_dice"):
        assert 0.0 <= result["final"][key] <= 1.0
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model"] == model and saved["input_shape"] == list(config.input_shape)
    reloaded = keras.models.load_model(tmp_path / "best.keras", safe_mode=True, compile=False)
    assert tuple(reloaded.input_shape[1:]) == tuple(config.input_shape)
    assert (tmp_path / "last.keras").is_file() and (tmp_path / "backup" / "latest.weights.h5").is_file()


def test_dsd_switches_sampling_at_the_configured_epoch(shards, tmp_path, monkeypatch):
    """Stage 1 reads dense_sparse stacks, stage 2 dense ones, switching after dsd_epochs[0]."""
    events = []
    make_dataset = tfrecord.make_dataset

    def spy(*args, **kwargs):
        events.append(("dataset", kwargs["mode"]))
        return make_dataset(*args, **kwargs)

    def log(message):
        if message.startswith("epoch "):
            events.append(("epoch", int(message.split(":")[0].split()[1])))

    monkeypatch.setattr(tfrecord, "make_dataset", spy)
    # precise_bn_batches=0: no extra dense dataset for BatchNorm statistics in the event list.
    config = tiny_config("residual_unet", shards, tmp_path, input_shape=(32, 32, 3), dsd=True, dsd_epochs=(2, 1),
                         epochs=None, precise_bn_batches=0)
    result = train_lib.train(config, log=log)
    assert events == [("dataset", "dense_sparse"), ("epoch", 1), ("epoch", 2), ("dataset", "dense"), ("epoch", 3)]
    assert [h["sampling"] for h in result["history"]] == [2.0, 2.0, 0.0]
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3]


def test_k_fold_regroups_shards_by_case(shards, tmp_path):
    config, source, _ = train_lib.prepare(train_lib.TrainConfig(model="residual_unet", data=shards, num_folds=3,
                                                                 fold=1, seed=5, model_dir=str(tmp_path)))
    train_files, val_files = train_lib.prepare_data(config, source, str(tmp_path), log=lambda *a: None)
    split = train_lib.fold_split(list(PHANTOM_SPLIT), 3, 1, seed=5)
    got = {s: sorted(c.case_id for c in tfrecord.read_cases(f, split="all")) for s, f in (("train", train_files),
                                                                                       ("val", val_files))}
    assert got == {s: sorted(c for c, v in split.items() if v == s) for s in ("train", "val")}


def test_demo_data_is_prepared_at_the_model_input_size(tmp_path):
    config, source, _ = train_lib.prepare(train_lib.TrainConfig(model="residual_unet", input_shape=(32, 32, 1),
                                                                 model_dir=str(tmp_path)))
    train_files, val_files = train_lib.prepare_data(config, source, str(tmp_path), log=lambda *a: None)
    val = list(tfrecord.read_cases(val_files, split="all"))
    assert [c.case_id for c in val] == ["lits117_superior"]  # the fixed demo split
    assert val[0].image.shape[:2] == (32, 32) and set(np.unique(val[0].label)) == {0, 1, 2}
    assert sorted(c.case_id for c in tfrecord.read_cases(train_files, split="all")) == [
        "dcmqi", "lits117_inferior", "totalseg"]


def _small_functional_model():
    """Conv + BN + skip + two outputs: what RecomputeModel must replay."""
    inputs = keras.Input((4, 8, 8, 1))
    a = keras.layers.Conv3D(4, 3, padding="same")(inputs)
    a = keras.layers.BatchNormalization()(a)
    a = keras.layers.ReLU()(a)
    b = keras.layers.Conv3D(4, 3, padding="same")(a)
    b = keras.layers.BatchNormalization()(b, training=None)
    c = keras.layers.Concatenate()([a, b])
    main = keras.layers.Conv3D(3, 1, activation="softmax", name="main")(c)
    aux = keras.layers.Conv3D(3, 1, activation="softmax", name="aux")(b)
    return keras.Model(inputs, [main, aux])


def test_recompute_gives_the_same_gradients_and_recomputes_the_forward_pass(tmp_path):
    import collections

    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inner = _small_functional_model()
    wrapped = train_lib.RecomputeModel(inner, num_segments=3)
    x = np.random.default_rng(0).normal(size=(2, 4, 8, 8, 1)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 3, size=(2, 4, 8, 8))
    for a, b in zip(wrapped(x), inner(x)):
        np.testing.assert_allclose(a, b, atol=1e-6)

    @tf.function
    def grads(model):
        with tf.GradientTape() as tape:
            outs = model(x, training=True)
            loss = sum(tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, o)) for o in outs)
        return tape.gradient(loss, inner.trainable_variables)

    for a, b in zip(grads(inner), grads(wrapped)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
    conv_ops = [collections.Counter(op.type for op in grads.get_concrete_function(m).graph.get_operations())["Conv3D"]
                for m in (inner, wrapped)]
    assert conv_ops[1] > conv_ops[0]  # forward convolutions run again inside the backward pass
    inner.save(tmp_path / "inner.keras")  # the wrapper leaves the functional graph intact
    keras.models.load_model(tmp_path / "inner.keras", safe_mode=True)


def test_recompute_rejects_shared_layers():
    inputs = keras.Input((8,))
    dense = keras.layers.Dense(8)
    shared = keras.Model(inputs, dense(dense(inputs)))
    with pytest.raises(ConfigError, match="called more than once"):
        train_lib.RecomputeModel(shared)


def test_weight_decay_is_lv_net_eq3_l2_penalty():
    config = train_lib.resolve(train_lib.TrainConfig(model="lv_net", data="x", input_shape=(16, 16, 16, 1),
                                                     model_kwargs={"filters": (4, 8, 8, 16, 16)}))
    assert config.weight_decay == 1e-5
    inner, trainable, num_outputs = train_lib.build_model(config)
    assert trainable is inner and num_outputs == 5  # main + 4 deep-supervision heads
    want = 1e-5 * sum(float(np.sum(np.square(w))) for w in inner.trainable_weights)
    np.testing.assert_allclose(float(sum(inner.losses)), want, rtol=1e-5)


def test_precise_bn_sets_moving_statistics_to_the_batch_average():
    inputs = keras.Input((4, 4, 2))
    norm = keras.layers.BatchNormalization(momentum=0.99)
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1)(norm(inputs)))
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=k, scale=1 + k, size=(3, 4, 4, 2)).astype(np.float32) for k in range(4)]
    for step in (None, train_lib.batchnorm_step(model)):  # eager, then the traced step
        norm.moving_mean.assign(np.zeros(2, np.float32))
        assert train_lib.recompute_batchnorm_statistics(model, iter(batches), step) == 4
        np.testing.assert_allclose(norm.moving_mean, np.mean([b.mean((0, 1, 2)) for b in batches], 0), rtol=1e-5)
        np.testing.assert_allclose(norm.moving_variance, np.mean([b.var((0, 1, 2)) for b in batches], 0), rtol=1e-4)
        assert norm.momentum == 0.99  # restored
    assert train_lib.batchnorm_layers(model) == [norm]


def test_nifti_folder_is_preprocessed_into_shards_with_a_held_out_case(tmp_path):
    import nibabel as nib

    for k in range(3):
        hu, label = phantom.make_phantom((24, 24, 6), seed=k)
        affine = np.diag([1.5, 1.5, 2.5, 1.0])
        nib.save(nib.Nifti1Image(hu, affine), str(tmp_path / f"volume-{k}.nii.gz"))
        nib.save(nib.Nifti1Image(label, affine), str(tmp_path / f"segmentation-{k}.nii.gz"))
    config, source, _ = train_lib.prepare(train_lib.TrainConfig(model="residual_unet", data=str(tmp_path),
                                                                 model_dir=str(tmp_path / "run")))
    assert source.kind == "nifti" and source.case_ids == ("volume-0", "volume-1", "volume-2")
    train_files, val_files = train_lib.prepare_data(config, source, str(tmp_path / "run"), log=lambda *a: None)
    train_ids = [c.case_id for c in tfrecord.read_cases(train_files, split="all")]
    val_ids = [c.case_id for c in tfrecord.read_cases(val_files, split="all")]
    assert len(val_ids) == 1 and sorted(train_ids + val_ids) == list(source.case_ids)
    manifest = json.loads((tmp_path / "run" / "data" / "residual_unet-preset" / "manifest.json").read_text())
    assert manifest["preset"]["name"] == "residual_unet"  # the model's preprocessing


def test_mixed_precision_trains_with_float32_outputs_and_restores_the_policy(shards, tmp_path):
    before = keras.config.dtype_policy().name
    config = tiny_config("residual_unet", shards, tmp_path, mixed_precision=True)
    result = train_lib.train(config, log=lambda *a: None)
    assert np.isfinite(result["history"][0]["loss"])
    assert keras.config.dtype_policy().name == before
    model = keras.models.load_model(tmp_path / "last.keras", compile=False)
    assert model.layers[1].dtype_policy.name == "mixed_float16" and model.outputs[0].dtype == "float32"


def test_auto_strategy_without_tf_config_is_one_device(monkeypatch):
    import tensorflow as tf

    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = train_lib.make_strategy("auto", train_lib.check_strategy("auto"))
    assert isinstance(strategy, tf.distribute.OneDeviceStrategy) and train_lib.is_chief(strategy)


def test_a_model_dir_is_resumed_only_with_the_same_settings(tmp_path):
    first = train_lib.resolve(train_lib.TrainConfig(model="residual_unet", model_dir=str(tmp_path)))
    (tmp_path / "config.json").write_text(first.to_json())
    (tmp_path / "backup").mkdir()
    train_lib.prepare(train_lib.TrainConfig(model="residual_unet", model_dir=str(tmp_path), epochs=20))  # longer: ok
    with pytest.raises(ConfigError, match=r"holds a run with other settings \(learning_rate differ\)"):
        train_lib.prepare(train_lib.TrainConfig(model="residual_unet", model_dir=str(tmp_path), learning_rate=1e-4))
