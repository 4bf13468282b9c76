"""python -m atamp_tf.plot: compare training runs (paper Fig. 6 and 7) in one PNG.

    python -m atamp_tf.plot --run_dirs=runs/at,runs/at_amp --output=cmp.png \
        [--metric=test_robust_acc] [--labels=PGD-AT,PGD-AT-AMP]

Each run directory's own curves (Fig. 1, 3) are already in <run_dir>/plots/accuracy.png.
"""

from absl import flags

from atamp_tf import cli, plots

_RUN_DIRS = flags.DEFINE_list("run_dirs", None, "Comma-separated run directories.")
_OUTPUT = flags.DEFINE_string("output", None, "PNG file to write.")
_METRIC = flags.DEFINE_string("metric", "test_robust_acc", "metrics.csv column to compare, "
                              "e.g. test_robust_acc, test_natural_acc, robust_gap.")
_LABELS = flags.DEFINE_list("labels", None, "Legend labels, one per run (default: the "
                            "directory names).")
_TITLE = flags.DEFINE_string("title", "", "Figure title.")
flags.mark_flags_as_required(["run_dirs", "output"])


def main(argv):
    cli.no_positional(argv)
    print(plots.compare_run_dirs(_RUN_DIRS.value, _OUTPUT.value, metric=_METRIC.value,
                                 labels=_LABELS.value, title=_TITLE.value))


def run():
    cli.run(main)
