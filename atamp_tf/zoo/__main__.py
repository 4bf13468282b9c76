"""python -m atamp_tf.zoo (the flags and main: atamp_tf/zoo/cli.py)."""
from atamp_tf.zoo import cli

cli.run()
