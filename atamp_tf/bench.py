"""python -m atamp_tf.bench: runs atamp_tf.tools.bench_cli (tools: atamp_tf/tools/)."""
if __name__ == "__main__":
    from atamp_tf.tools import bench_cli

    bench_cli.run()
