"""python -m atamp_tf.reproduction: committed runs -> the Table 1 layout and curves, or a delta
sweep's report (library: atamp_tf.tools.reproduction, atamp_tf.tools.sweep)."""
from absl import flags

from atamp_tf import cli
from atamp_tf.tools import reproduction, sweep


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
    flags.DEFINE_string("output_dir", None, "Where tables.md and the curve PNGs go.")
    flags.mark_flags_as_required(["output_dir"])


def main(argv):
    cli.no_positional(argv)
    f = flags.FLAGS
    if not f.runs and not f.sweep_runs:
        raise ValueError("--runs or --sweep_runs: give the run directories to report")
    if f.runs and not f.paper_csv:
        raise ValueError("--paper_csv: needed with --runs (docs/reproduction/paper_table1.csv)")
    paths = reproduction.write_report(f.runs, f.paper_csv, f.output_dir) if f.runs else []
    if f.sweep_runs:
        paths += sweep.write_sweep(f.sweep_runs, f.output_dir)
    print("\n".join(paths))


def run():
    _define_flags()
    cli.run(main)
