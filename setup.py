"""Packages of the wheel: everything under src/, plus ``colorcli.shipped`` mapped onto the
repository's ``weights/`` folder (the shipped .safetensors and their .onnx twins), so installed
copies carry the models as package data while the files stay where they are. The rest of the
configuration is in pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages("src"), "colorcli.shipped"],
    package_dir={"": "src", "colorcli.shipped": "weights"},
)
