"""A toy model family, kept outside the package: the proof that a new paper is one folder
(builder + spec) plus one line (`models.add_family(spec.SPECS)`, or an entry in `FAMILIES`)."""
from tests.toy_family.toy_unet import build_toy_unet  # noqa: F401
