"""python -m atamp_tf.reproduction: runs atamp_tf.tools.reproduction_cli (atamp_tf/tools/)."""
if __name__ == "__main__":
    from atamp_tf.tools import reproduction_cli

    reproduction_cli.run()
