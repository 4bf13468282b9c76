"""atamp-tf: adversarial training with adversarial model perturbation (AT-AMP), TF2/Keras 3.

The public names are imported on first use, so `import atamp_tf` (and every command-line
program's flag checking) does not wait for TensorFlow. `atamp_tf.register_keras_objects()`
registers the Keras classes (AMPModel, Standardize) that `.keras` files written here need.
"""
import importlib
import os

# oneDNN's CPU kernels. TensorFlow turns them on by itself only on CPUs with AVX-512 class
# features; elsewhere (AVX2) it falls back to Eigen, whose convolution gradients made the train
# step 2x slower (docs/bench/README.md). Takes effect when atamp_tf is imported before
# TensorFlow, as every `python -m atamp_tf.X` does; an explicit setting is kept.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"

_LAZY = {
    "AMPModel": "atamp_tf.train.amp",
    "build_model": "atamp_tf.models",
    "make_dataset": "atamp_tf.data",
    "load_arrays": "atamp_tf.data",
    "get_spec": "atamp_tf.data",
}

__all__ = ["AMPModel", "build_model", "get_spec", "load_arrays", "make_dataset",
           "register_keras_objects"]


def register_keras_objects():
    """Import the modules whose Keras classes `.keras` files refer to."""
    importlib.import_module("atamp_tf.train.amp")
    importlib.import_module("atamp_tf.models")


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'atamp_tf' has no attribute {name!r}")
