"""Build shim: the metadata, dependencies and scripts are in pyproject.toml."""
from setuptools import setup

setup()
