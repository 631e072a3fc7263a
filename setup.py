"""liverzoo: lightweight liver and liver-tumor segmentation models for abdominal CT."""
from setuptools import find_packages, setup

setup(
    name="liverzoo",
    version="0.1.0",
    description="TensorFlow/Keras model zoo for lightweight liver and liver-tumor CT segmentation",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["liverzoo", "liverzoo.*"]),
    package_data={"liverzoo.data": ["demo/*.nii.gz", "demo/NOTICE", "demo/*.md", "demo/*.json", "demo/LICENSE-*"]},
    include_package_data=True,
    install_requires=[
        "tensorflow==2.21.*",
        "keras>=3.15,<3.16",  # liverzoo/_keras_internals.py TESTED_KERAS
        "numpy>=1.26",
        "scipy>=1.11",
        "nibabel>=5.2",
        # Random access into .nii.gz for nibabel's array proxies (liverzoo.streaming reads slabs).
        "indexed_gzip>=1.8",
        "pydicom>=3.0",
        # DICOM is a core input: SEG output, and the JPEG 2000 / JPEG-LS / JPEG decoders that
        # compressed clinical series need (pydicom finds the pylibjpeg plugins by itself).
        "highdicom==0.28.*",
        "pylibjpeg>=2.0",
        "pylibjpeg-openjpeg>=2.0",
        "pylibjpeg-libjpeg>=2.1",
        "absl-py>=2.1",
        "ai-edge-litert>=2.0",
        "matplotlib>=3.8",
    ],
    extras_require={
        # Apache Beam pipeline for make_tfrecords --runner; Beam 2.77 needs protobuf<7 (TF 2.21 allows <8).
        "beam": ["apache-beam>=2.77,<3", "protobuf>=6.31.1,<7"],
        "test": [
            "pytest>=8",
            "pytest-xdist>=3.5",
            "medpy==0.5.2",
            "nbmake>=1.5",
            "ipykernel>=6",
            # CI runs the Beam pipeline's tests (the "beam" extra).
            "apache-beam>=2.77,<3",
            "protobuf>=6.31.1,<7",
        ],
    },
)
