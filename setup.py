"""Build shim: the metadata, dependencies and scripts are in pyproject.toml. Here only the
zoo's size rule: a model file in atamp_tf/zoo/models/ above BUNDLE_MAX_BYTES (defined in
atamp_tf/zoo/manifest.py) stays out of the wheel; its manifest entry points at a hosted copy.
"""
import ast
import os
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


def bundle_max_bytes():
    """BUNDLE_MAX_BYTES as written in atamp_tf/zoo/manifest.py (parsed, not imported)."""
    with open(os.path.join(HERE, "atamp_tf", "zoo", "manifest.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == [
                "BUNDLE_MAX_BYTES"]:
            return ast.literal_eval(node.value)
    raise RuntimeError("atamp_tf/zoo/manifest.py: no BUNDLE_MAX_BYTES = <integer> line.")


class BuildPy(build_py):
    """build_py that leaves the zoo's model files above the size rule out of the build."""

    _reported = set()  # setuptools asks for the data files several times per build

    def find_data_files(self, package, src_dir):
        files = super().find_data_files(package, src_dir)
        if package != "atamp_tf.zoo":
            return files
        limit, kept = bundle_max_bytes(), []
        for path in files:
            in_models = os.path.relpath(path, src_dir).split(os.sep)[0] == "models"
            if in_models and os.path.getsize(path) > limit:
                if path not in self._reported:
                    self._reported.add(path)
                    print(f"atamp_tf: not bundling {path} ({os.path.getsize(path)} bytes > "
                          f"{limit}); its manifest entry must give a hosted URL.", file=sys.stderr)
                continue
            kept.append(path)
        return kept


setup(cmdclass={"build_py": BuildPy})
