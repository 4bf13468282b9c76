"""python -m atamp_tf.reproduction: committed runs -> the Table 1 layout and curves, a delta
sweep's report, or runs paired against a baseline beside published results (library:
atamp_tf.tools.reproduction, .sweep, .comparison)."""
from absl import flags

from atamp_tf import cli
from atamp_tf.tools import comparison, reproduction, sweep


def _define_flags():
    flags.DEFINE_list("runs", None, "Run directories (train's out_dir, or their copies under "
                      "docs/runs), comma separated.")
    flags.DEFINE_list("sweep_runs", None, "Run directories of one delta sweep (one regime; "
                      "PGD-AT, AMP at several delta, the AWP scope): writes sweep.md and "
                      "sweep.png.")
    flags.DEFINE_string("paper_csv", None, "With --runs: the paper's results table, e.g. "
                        "docs/reproduction/paper_table1.csv (Table 1's PreAct ResNet-18 "
                        "rows; columns table, dataset, norm, arch, method, metric, best, "
                        "best_std, last, last_std).")
    flags.DEFINE_list("compare_runs", None, "Evaluated run directories over the same examples, "
                      "the baseline first (e.g. PGD-AT, then AT-AMP): writes comparison.md "
                      "(results, budgets, each run paired against the baseline).")
    flags.DEFINE_enum("compare_checkpoint", "best", ["best", "last"], "With --compare_runs: "
                      "whose evaluation to compare, the best checkpoint's (eval/) or the "
                      "last's (eval_last/).")
    flags.DEFINE_string("compared_with", None, "With --compare_runs: published results beside "
                        "ours (the CSV export's --compared_with reads, e.g. "
                        "docs/zoo/mnist_linf_published.csv).")
    flags.DEFINE_string("output_dir", None, "Where tables.md, sweep.md, comparison.md and the "
                        "PNGs go.")
    flags.mark_flags_as_required(["output_dir"])


def main(argv):
    cli.no_positional(argv)
    f = flags.FLAGS
    if not f.runs and not f.sweep_runs and not f.compare_runs:
        raise ValueError("--runs, --sweep_runs or --compare_runs: give the run directories to "
                         "report")
    if f.compared_with and not f.compare_runs:
        raise ValueError("--compared_with: only with --compare_runs")
    if f.compare_checkpoint != "best" and not f.compare_runs:
        raise ValueError("--compare_checkpoint: only with --compare_runs")
    if f.runs and not f.paper_csv:
        raise ValueError("--paper_csv: needed with --runs (docs/reproduction/paper_table1.csv)")
    paths = reproduction.write_report(f.runs, f.paper_csv, f.output_dir) if f.runs else []
    if f.sweep_runs:
        paths += sweep.write_sweep(f.sweep_runs, f.output_dir)
    if f.compare_runs:
        paths.append(comparison.write_comparison(f.compare_runs, f.compared_with, f.output_dir,
                                                 f.compare_checkpoint))
    print("\n".join(paths))


def run():
    _define_flags()
    cli.run(main)
