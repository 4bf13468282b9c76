"""Stage 1, training: `python -m atamp_tf.train` (cli.py, flags.py) runs a TrainConfig
(atamp_tf.config) through training.py (setup, fit, resume) on AMPModel (amp.py: the AT-AMP
train_step; weight_perturbation.py: Delta), recording the run with callbacks.py.

Importing this package loads nothing heavy, so the command's flag errors come before TensorFlow.
"""
