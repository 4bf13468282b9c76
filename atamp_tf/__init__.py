"""atamp-tf: adversarial training with adversarial model perturbation (AT-AMP), TF2/Keras 3."""
from atamp_tf.amp import AMPModel  # noqa: F401

__version__ = "0.1.0"
