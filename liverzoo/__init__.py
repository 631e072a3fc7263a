"""liverzoo: lightweight liver and liver-tumor segmentation for abdominal CT (TensorFlow/Keras).

Import submodules explicitly (`liverzoo.models`, `liverzoo.data.io`, ...); importing the
top-level package stays cheap and does not import TensorFlow.
"""

__version__ = "0.1.0"
