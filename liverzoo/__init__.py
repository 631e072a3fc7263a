"""liverzoo: lightweight liver and liver-tumor segmentation for abdominal CT (TensorFlow/Keras).

Import submodules explicitly (`liverzoo.models`, `liverzoo.data.io`, ...). Importing the
top-level package stays cheap and does not import TensorFlow (the LiteRT path runs without it),
yet it is enough to load any liverzoo `.keras` file: liverzoo's Keras layers and losses are
registered as soon as `keras` is imported, before or after `import liverzoo`.

Example:
    >>> import liverzoo, keras  # doctest: +SKIP
    >>> model = keras.models.load_model("runs/residual_unet/best.keras", safe_mode=True)  # doctest: +SKIP
"""
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"


def register_keras_objects():
    """Registers liverzoo's serializable Keras layers and losses (imports their modules)."""
    import liverzoo.layers  # noqa: F401
    import liverzoo.layers.normalization  # noqa: F401
    import liverzoo.losses  # noqa: F401


class _RegisterAfterKerasImport(importlib.abc.MetaPathFinder):
    """Runs `register_keras_objects` right after `keras` is first imported.

    Keras resolves custom classes only through its registry (it imports modules by name for its
    own packages alone), so the layers must be registered before `load_model`; importing them
    here eagerly would make `import liverzoo` import TensorFlow.
    """

    _finding = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras" or self._finding:
            return None
        # TensorFlow asks find_spec("keras") without importing it: stay installed until keras runs.
        self._finding = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._finding = False
        if spec is not None and spec.loader is not None:
            exec_module = spec.loader.exec_module

            def exec_then_register(module):
                exec_module(module)
                if self in sys.meta_path:
                    sys.meta_path.remove(self)
                register_keras_objects()

            spec.loader.exec_module = exec_then_register
        return spec

if "keras" in sys.modules:
    register_keras_objects()
elif not any(isinstance(f, _RegisterAfterKerasImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterKerasImport())
