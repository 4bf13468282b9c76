"""python -m atamp_tf.landscape: runs atamp_tf.tools.landscape_cli (tools: atamp_tf/tools/)."""
if __name__ == "__main__":
    from atamp_tf.tools import landscape_cli

    landscape_cli.run()
