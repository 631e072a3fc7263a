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
    export: ExportHints = dataclasses.field(default_factory=ExportHints)

    @property
    def kind(self):
        """"2d" or "3d": the layout's name, the value stored in configs and file metadata."""
        return self.layout.name

    @property
    def paper(self):
        """The paper's file in ../shared/papers."""
        return self.reference.file
