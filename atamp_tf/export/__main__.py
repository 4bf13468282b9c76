"""python -m atamp_tf.export (the flags and main: atamp_tf/export/cli.py)."""
from atamp_tf.export import cli

cli.run()
