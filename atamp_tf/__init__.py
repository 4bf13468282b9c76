"""atamp-tf: adversarial training with adversarial model perturbation (AT-AMP), TF2/Keras 3.

Importing the package registers its Keras objects (AMPModel, Standardize), so `.keras` files
written by atamp-tf load with `keras.saving.load_model`.
"""
from atamp_tf.amp import AMPModel  # noqa: F401
from atamp_tf.data import get_spec, load_arrays, make_dataset  # noqa: F401
from atamp_tf.models import build_model  # noqa: F401

__version__ = "0.1.0"
