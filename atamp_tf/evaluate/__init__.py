"""Stage 2, evaluation: `python -m atamp_tf.evaluate` (cli.py) runs the paper's attack suite
on a model and writes report.json (evaluation.py); reference.py and reference_cli.py compare
our AutoAttack with the reference one (pyautoattack) example by example.

The library's names (evaluate_path, evaluate_model, markdown_report, ...) live in evaluation.py
and are imported from it on first use, so the command's --help and flag errors come before
TensorFlow.
"""
import importlib
import importlib.util


def __getattr__(name):
    if name.startswith("__") or importlib.util.find_spec(f"{__name__}.{name}") is not None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.evaluation"), name)
    globals()[name] = value
    return value
