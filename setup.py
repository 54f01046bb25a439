"""Install the `sard` package: Structure-Aware Representation Distillation."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

setup(
    name="sard",
    version="0.1.0",
    description="Structure-Aware Representation Distillation for tiny-dense object segmentation",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["sard", "sard.*"]),
    install_requires=[
        # torch/torchvision left unpinned on purpose: the local store (or the user's CUDA build)
        # decides the version; segment-anything needs torchvision but does not declare it.
        "torch>=2.1",
        "torchvision>=0.16",
        "segment-anything>=1.0",
        "transformers>=4.40",
        "timm>=0.9",
        "pycocotools>=2.0.7",
        "opencv-python-headless>=4.8",
        "fvcore>=0.1.5.post20221221",
        "scipy>=1.10",
        "scikit-image>=0.22",
        "numpy>=1.24",
        "pillow>=9.5",
        "tqdm>=4.65",
        "matplotlib>=3.7",
        "shapely>=2.0",  # make_valid repairs self-intersecting GeoJSON polygons
        "tensorboard>=2.14",
        "onnx>=1.15",
        "onnxruntime>=1.17",
    ],
    extras_require={
        "test": ["pytest>=7.4", "pytest-timeout>=2.2"],
    },
)
