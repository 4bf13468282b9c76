"""python -m atamp_tf.train (the flags and main: atamp_tf/train/cli.py)."""
from atamp_tf.train import cli

cli.run()
