"""`ModelSpec`: everything the rest of liverzoo needs to know about one zoo model.

Each family folder (`liverzoo/models/<family>/spec.py`) declares its specs with keyword
arguments; `liverzoo/models/__init__.py` lists the families. Imports nothing heavy (no
TensorFlow), so the spec type can be read where only the layout matters.

Example:
    >>> from liverzoo.layout import get_layout
    >>> spec = ModelSpec(name="toy", builder=print, layout=get_layout("2d"), preset="residual_unet",
    ...                  default_input_shape=(64, 64, 1), paper_input_shape=(256, 256, 1),
    ...                  tiny_input_shape=(32, 32, 1), reference=Paper(file="002_7138868b57b69ed8.txt", title="t"))
    >>> spec.kind, spec.paper
    ('2d', '002_7138868b57b69ed8.txt')
"""
import dataclasses

from liverzoo.layout import InputLayout


@dataclasses.dataclass(frozen=True, kw_only=True)
class Paper:
    """The paper a model follows.

    Attributes:
        file: its text in ../shared/papers (e.g. "004_e35520e2e41b14d6.txt").
        title: the paper's title and authors, as the README cites it.
        url: a public link, or None where none could be verified.
    """

    file: str
    title: str
    url: object = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExportHints:
    """How the export benchmark and checks treat a model.

    Attributes:
        fine_tune_steps: Adam steps before int8 agreement is measured (more for slow learners,
            whose scores stay near-tied after 10 steps).
        bench_input_shape: input shape of the export benchmark where the paper's size is
            impractical on a 2-core CPU (None: the paper's).
        bench_kwargs: builder options that go with `bench_input_shape`.
        bench_why: why the benchmark does not use the paper's size (printed under its table).
    """

    fine_tune_steps: int = 10
    bench_input_shape: object = None
    bench_kwargs: dict = dataclasses.field(default_factory=dict)
    bench_why: object = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ParamVariant:
    """A paper figure for builder options other than the defaults (an ablation, a baseline).

    Attributes:
        kwargs: the builder options, e.g. `{"conv_type": "standard"}`.
        paper_params: the paper's parameter count for them.
        tolerance: relative tolerance of the comparison (None: not compared).
    """

    kwargs: dict
    paper_params: object
    tolerance: object = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recipe:
    """The training set-up of one paper, declared by its family's spec (`ModelSpec.recipe`).

    Every field can be overridden by a `liverzoo.training.TrainConfig` option. Where a paper
    does not state a value, the family's spec.py says so and what is used instead.

    Attributes:
        name: the recipe's name (one per paper; stored as "recipe" in a run's config.json).
        paper: file in ../shared/papers.
        optimizer: "adam" or "sgd" (SGD: Nesterov momentum 0.99, as nnU-Net).
        learning_rate: initial learning rate.
        schedule: name in `liverzoo.schedules.SCHEDULES`.
        loss: name in `liverzoo.losses.LOSSES`.
        class_weights: weights of "weighted_ce" (background, liver, tumor), else None.
        aux_weights: deep-supervision weights rule: "lv_net" (0.2, 0.4, 0.6, 0.8), "halving"
            (nnU-Net: 1/2, 1/4, ... from fine to coarse) or None.
        weight_decay: L2 coefficient lambda of LV-Net Eq. 3 (0 for none).
        sampling: "dense", "sparse" or "dense_sparse" for 2D models; "volume" for 3D.
        dsd: Dense-Sparse then Dense training (paper 000).
        batch_size: the paper's batch size.
        epochs: the paper's number of epochs (of `PAPER_STEPS_PER_EPOCH` steps).
        patch: the paper's training input `(H, W)` (2D) or `(D, H, W)` (3D).
        augment: `liverzoo.data.augment.AugmentConfig` fields.
        recompute: gradient checkpointing (LW-HCN's paper uses it to reach batch 6).
    """

    name: str
    paper: str
    optimizer: str
    learning_rate: float
    schedule: str
    loss: str
    class_weights: tuple
    aux_weights: str
    weight_decay: float
    sampling: str
    dsd: bool
    batch_size: int
    epochs: int
    patch: tuple
    augment: dict
    recompute: bool


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """What the trainer, inference, export and benchmarks need to know about a model.

    Attributes:
        name: the zoo name (`liverzoo.models.build(name)`).
        builder: `build_<name>(input_shape, num_classes=3, *, ...) -> keras.Model`.
        layout: the `liverzoo.layout.InputLayout` of its input: "2d" `(H, W, T)`, predicts
            the centre slice; "3d" `(D, H, W, 1)`, predicts every slice.
        preset: name of the preprocessing preset in `liverzoo.data.preprocess.PRESETS`.
        default_input_shape: shape used when none is given (demo-friendly).
        paper_input_shape: the input size of the paper (for parameter/FLOP tables).
        tiny_input_shape: a small shape for unit tests.
        tiny_kwargs: builder options for unit tests, only where the paper's widths make a
            test unaffordable (e.g. 3DYNet's 186 M weights): `build(name,
            input_shape=spec.tiny_input_shape, **spec.tiny_kwargs)`.
        paper_params: parameter count reported by the paper (None when it reports none).
        params_tolerance: relative tolerance within which the default build at
            `paper_input_shape` must meet `paper_params` (None: not compared).
        paper_variants: `ParamVariant`s, the paper's counts for other builder options.
        reference: the `Paper` the model follows.
        recipe: the paper's training `Recipe` (None: the model cannot be trained by
            `liverzoo.training`).
        export: `ExportHints`.
    """

    name: str
    builder: object
    layout: InputLayout
    preset: str
    default_input_shape: tuple
    paper_input_shape: tuple
    tiny_input_shape: tuple
    tiny_kwargs: dict = dataclasses.field(default_factory=dict)
    paper_params: object = None
    params_tolerance: object = None
    paper_variants: tuple = ()
    reference: Paper
    recipe: Recipe = None
    export: ExportHints = dataclasses.field(default_factory=ExportHints)

    @property
    def kind(self):
        """"2d" or "3d": the layout's name, the value stored in configs and file metadata."""
        return self.layout.name

    @property
    def paper(self):
        """The paper's file in ../shared/papers."""
        return self.reference.file
