"""Input layouts: what the axes of a model's input mean.

This is the one place that knows a 2D/2.5D model from a 3D one. Everything else asks the
layout (`spec.layout`, `layout_of(input_shape)` or `get_layout(name)`) instead of branching on
`kind == "2d"` or `len(input_shape)`. TensorFlow-free: the LiteRT path uses it too.

- "2d": input `(H, W, T)`, a stack of T neighbouring slices; the model predicts the centre one.
- "3d": input `(D, H, W, 1)`, a sub-volume of D slices; the model predicts all of them.

Example:
    >>> layout = layout_of((128, 128, 3))
    >>> layout.name, layout.plane((128, 128, 3)), layout.stack((128, 128, 3))
    ('2d', (128, 128), 3)
"""
import dataclasses

from liverzoo.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class InputLayout:
    """The meaning of a model's input axes (batch axis excluded).

    Attributes:
        name: "2d" or "3d"; the value stored as `kind` in run configs and file metadata.
        axes: the axes as a user writes them, e.g. "H,W,T".
        rank: number of input axes without the batch axis.
        flip_axes: the in-plane axes (H, W) of a batched input, for flip TTA.
        default_batch: inputs per predict call in whole-volume inference.
    """

    name: str
    axes: str
    rank: int
    flip_axes: tuple
    default_batch: int

    @property
    def is_volume(self):
        """True when the model predicts every slice of its input (a 3D model)."""
        return self.name == "3d"

    def check(self, shape, what="input shape"):
        """`shape` as a tuple of ints/None, or ConfigError naming `what` and the layout."""
        shape = tuple(None if d is None else int(d) for d in shape)
        ok = len(shape) == self.rank and (shape[-1] == 1 if self.is_volume else shape[-1] is not None)
        if not ok:
            raise ConfigError(f"a {self.name} model takes ({', '.join(self.axes.split(','))}) inputs; "
                              f"got {what} {shape}")
        return shape

    def plane(self, shape):
        """(H, W) of an input shape."""
        return tuple(shape[-3:-1]) if self.is_volume else tuple(shape[:2])

    def stack(self, shape):
        """Slices per input: T (stack size) for "2d", D (depth) for "3d"."""
        return shape[0] if self.is_volume else shape[-1]

    def patch(self, shape):
        """The spatial extent sampled for training: (H, W) or (D, H, W)."""
        return tuple(shape[:3]) if self.is_volume else tuple(shape[:2])

    def input_shape(self, plane, stack):
        """The input shape with plane (H, W) and `stack` slices."""
        h, w = plane
        return (stack, h, w, 1) if self.is_volume else (h, w, stack)


STACK_2D = InputLayout("2d", "H,W,T", 3, (1, 2), 8)
VOLUME_3D = InputLayout("3d", "D,H,W,1", 4, (2, 3), 1)
LAYOUTS = {layout.name: layout for layout in (STACK_2D, VOLUME_3D)}


def get_layout(name):
    """The layout called `name` ("2d" or "3d"); ConfigError otherwise."""
    if isinstance(name, InputLayout):
        return name
    if name not in LAYOUTS:
        raise ConfigError(f"kind must be one of {', '.join(LAYOUTS)}, got {name!r}")
    return LAYOUTS[name]


def layout_of(input_shape):
    """The layout of a model input shape (batch axis excluded), told by its rank."""
    for layout in LAYOUTS.values():
        if len(input_shape) == layout.rank:
            return layout
    raise ConfigError(f"cannot tell the layout of input shape {tuple(input_shape)}: expected 3 axes "
                      "(H, W, T) or 4 axes (D, H, W, 1)")
