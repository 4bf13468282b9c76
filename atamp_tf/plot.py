"""python -m atamp_tf.plot: runs atamp_tf.tools.plot_cli (tools: atamp_tf/tools/)."""
if __name__ == "__main__":
    from atamp_tf.tools import plot_cli

    plot_cli.run()
