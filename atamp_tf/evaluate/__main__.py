"""python -m atamp_tf.evaluate (the flags and main: atamp_tf/evaluate/cli.py)."""
from atamp_tf.evaluate import cli

cli.run()
