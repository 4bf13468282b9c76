"""The reproduction report: our runs in the layout of the paper's Table 1, beside its values.

`python -m atamp_tf.reproduction --runs=docs/runs/repro/a,docs/runs/repro/b,...` reads each run
directory's `summary.json`, `run_config.json`, `metrics.csv` and `eval/report.json` (if
evaluated) and the paper's `results.csv`, and writes into `--output_dir`:
  - `tables.md`: Table 1's layout (best and last test robust and natural accuracy, the
    best-last drop, the robust generalisation gap), the paper's values beside ours, then the
    final evaluation suite of each run's best checkpoint, then each AT-AMP run paired against
    the PGD-AT run of its threat model on the same examples (atamp_tf/tools/paired.py);
  - `curves_<dataset>_<norm>.png`: train robust, test robust and the gap per epoch, PGD-AT
    against PGD-AT-AMP (the paper's Fig. 3 and 6).
Every number comes from those files, so `docs/reproduction.md` can quote the tables verbatim
(tests/test_reproduction.py checks it does). `--sweep_runs` writes the delta sweep's
`sweep.md` and `sweep.png` as well (atamp_tf/sweep.py).
"""
import csv
import os

from atamp_tf import plots, rundir
from atamp_tf.attacks import registry
from atamp_tf.attacks.registry import NORM_LABELS
from atamp_tf.formatting import percent
from atamp_tf.tools import paired
from atamp_tf.zoo import manifest as zoo_manifest


def evaluation_columns(reports):
    """The summary attacks (registry.summary_attacks) that any of the reports measured, in
    report order: the columns of the final-evaluation tables here and in the sweep's."""
    return [c for c in registry.summary_attacks() if any(c in r["accuracy"] for r in reports)]


METHOD_LABELS = {"at": "PGD-AT", "trades": "TRADES", "mart": "MART"}


def method_label(config, radius=False):
    """A run's training method from its run_config: 'PGD-AT', 'PGD-AT-AMP', 'TRADES-AWP';
    with radius, its delta (AMP) or gamma (AWP) too: 'PGD-AT-AMP, delta 0.06'."""
    method = METHOD_LABELS.get(config.get("method", "at"), config.get("method"))
    delta = config.get("amp_delta") or 0
    if not delta:
        return method
    awp = config.get("amp_scope", "tensor") == "awp"
    label = f"{method}-AWP" if awp else f"{method}-AMP"
    return f"{label}, {'gamma' if awp else 'delta'} {delta:g}" if radius else label


def column_labels(columns):
    """The attacks' labels (the registry's), joined as a markdown header's cells."""
    return " | ".join(registry.get(c).label for c in columns)


class Run:
    """One training run directory, as the report needs it."""

    def __init__(self, run_dir):
        paths = rundir.RunPaths(run_dir)
        self.config, self.summary, self.rows = rundir.read_finished_run(run_dir, "runs")
        self.dir = run_dir
        self.name = os.path.basename(os.path.normpath(run_dir))
        self.report, self.masks = (paired.read_per_example(paths.eval, "runs",
                                                           require_masks=False)
                                   if os.path.isfile(paths.eval_report) else (None, {}))
        if self.config.get("method") != "at":
            raise ValueError(f"--runs: {run_dir} trained with method {self.config.get('method')!r}"
                             "; the Table 1 report covers PGD-AT and PGD-AT-AMP only")
        if self.config.get("amp_delta") and self.config.get("amp_scope") == "awp":
            raise ValueError(f"--runs: {run_dir} trained with AWP's scope; the Table 1 report "
                             "covers PGD-AT and PGD-AT-AMP only (--sweep_runs takes it)")

    @property
    def method(self):
        """The paper's method key: pgd_at or pgd_at_amp."""
        return "pgd_at_amp" if self.config["amp_delta"] else "pgd_at"

    @property
    def label(self):
        return method_label(self.config)

    @property
    def key(self):
        return (self.config["dataset"], self.config["norm"], self.method)


def read_paper(path, table="1", arch="preact_resnet18"):
    """{(dataset, norm, method): {"robust": (best, last), "natural": (best, last)}}."""
    if not os.path.isfile(path):
        raise ValueError(f"--paper_csv: no such file {path}")
    values = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["table"] != table or row["arch"] != arch:
                continue
            key = (row["dataset"], row["norm"], row["method"])
            values.setdefault(key, {})[row["metric"]] = (float(row["best"]), float(row["last"]))
    return values


def selection_note(summary):
    """What the tables add after a best epoch: ", held-out" for a run whose best epoch was
    selected on its held-out training examples (summary "selected_on"), nothing for one
    selected on the test subset (the paper's "best"; summaries older than selected_on)."""
    return ", held-out" if summary.get("selected_on") == "holdout" else ""


def _pct(value):
    return percent(value, 1)


def _paper(value):
    return "-" if value is None else f"{value:.2f}"


def _sorted(runs):
    order = {"linf": 0, "l2": 1, "pgd_at": 0, "pgd_at_amp": 1}
    return sorted(runs, key=lambda r: (r.config["dataset"], order.get(r.config["norm"], 9),
                                       order[r.method], r.name))


def table1_markdown(runs, paper):
    """Table 1's layout: ours (percent of the per-epoch PGD-20 subset) beside the paper's."""
    header = ("| dataset | threat | method | best robust | last robust | best - last | "
              "best natural | last natural | gap (last) | paper best robust | "
              "paper last robust | paper best - last | paper best natural | "
              "paper last natural | run |")
    lines = [header, "|" + " --- |" * 3 + " ---: |" * 11 + " --- |"]
    for run in _sorted(runs):
        best, last = run.summary["best"], run.summary["last"]
        ours = [_pct(best["test_robust_acc"]), _pct(last["test_robust_acc"]),
                _pct(best["test_robust_acc"] - last["test_robust_acc"]),
                _pct(best["test_natural_acc"]), _pct(last["test_natural_acc"]),
                _pct(last["robust_gap"])]
        ref = paper.get(run.key, {})
        robust, natural = ref.get("robust", (None, None)), ref.get("natural", (None, None))
        drop = None if robust[0] is None else robust[0] - robust[1]
        theirs = [_paper(robust[0]), _paper(robust[1]), _paper(drop), _paper(natural[0]),
                  _paper(natural[1])]
        lines.append(f"| {run.config['dataset']} | {NORM_LABELS[run.config['norm']]} "
                     f"{run.config['eps_text']} | {run.label} | " + " | ".join(ours + theirs)
                     + f" | `{run.name}` (best epoch {best['epoch']} of "
                     f"{run.summary['epochs_done']}{selection_note(run.summary)}) |")
    return "\n".join(lines)


def autoattack_version_label(report):
    """The AutoAttack version a report ran, its components named when it is not standard
    (a custom AutoAttack is a weaker attack than the standard one, never passed off as it)."""
    version = zoo_manifest.autoattack_version(report)
    if version is None or report.get("accuracy", {}).get("autoattack") is None:
        return "-"
    if version == "standard":
        return version
    components = report["attacks"]["autoattack"]["autoattack_settings"].get("components", [])
    return f"{version}: " + " + ".join(c.upper() for c in components)


def evaluation_markdown(runs):
    """The evaluation suite's accuracies (percent) for each run's evaluated checkpoint."""
    evaluated = [r for r in _sorted(runs) if r.report is not None]
    columns = evaluation_columns([r.report for r in evaluated])
    versioned = "autoattack" in columns
    lines = ["| run | threat | method | examples | "
             + column_labels(columns) + " | worst case | "
             + ("AutoAttack version | " if versioned else "") + "checks |",
             "| --- | --- | --- | ---: |" + " ---: |" * (len(columns) + 1)
             + (" --- |" if versioned else "") + " --- |"]
    for run in evaluated:
        report = run.report
        accuracy = report["accuracy"]
        worst = (report.get("worst_case") or {}).get("accuracy")
        checks = "pass" if report.get("checks_passed") else "**FAILED**"
        lines.append(f"| `{run.name}` | {NORM_LABELS[run.config['norm']]} "
                     f"{run.config['eps_text']} | {run.label} | {report['num_examples']} | "
                     + " | ".join(_pct(accuracy.get(c)) for c in columns)
                     + f" | {_pct(worst)} | "
                     + (f"{autoattack_version_label(report)} | " if versioned else "")
                     + f"{checks} |")
    return "\n".join(lines) if evaluated else "(no run has an eval/report.json yet)"


def paired_markdown(runs):
    """Each evaluated PGD-AT-AMP run against the PGD-AT run of its dataset and threat model,
    example by example (atamp_tf/tools/paired.py): percentage points ± one paired SE."""
    evaluated = [r for r in _sorted(runs) if r.masks]
    baselines = {r.key[:2]: r for r in evaluated if r.method == "pgd_at"}
    pairs = [(baselines[r.key[:2]], r) for r in evaluated
             if r.method == "pgd_at_amp" and r.key[:2] in baselines]
    if not pairs:
        return "(no PGD-AT-AMP run has a PGD-AT run with per-example results beside it)"
    columns = paired.compared_columns(
        [((base.report, base.masks), (run.report, run.masks)) for base, run in pairs],
        evaluation_columns([r.report for pair in pairs for r in pair]))
    lines = ["| threat | PGD-AT-AMP - PGD-AT | " + column_labels(columns) + " |",
             "| --- | --- |" + " ---: |" * len(columns)]
    for base, run in pairs:
        cells = paired.difference_cells((base.report, base.masks), (run.report, run.masks),
                                        columns, "runs")
        lines.append(f"| {NORM_LABELS[run.config['norm']]} {run.config['eps_text']} | "
                     f"`{run.name}` - `{base.name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tables_markdown(runs, paper):
    """The whole tables.md text."""
    return ("## Table 1 layout (test robust and natural accuracy, %, per-epoch PGD-20 subset)\n\n"
            + ("The best epoch is the one with the highest test robust accuracy, as the "
               "paper's, except where marked held-out: there it is selected on held-out "
               "training examples.\n\n"
               if any(r.summary.get("selected_on") == "holdout" for r in runs) else "")
            + table1_markdown(runs, paper)
            + "\n\n## Final evaluation of the best checkpoints (%)\n\n"
            + evaluation_markdown(runs)
            + "\n\n## PGD-AT-AMP against PGD-AT on the same examples (percentage points)\n\n"
            "± one paired standard error, McNemar's exact p (atamp_tf/tools/paired.py).\n\n"
            + paired_markdown(runs) + "\n")


def plot_curves(runs, output_dir):
    """One PNG per (dataset, norm): train robust, test robust and gap, AT vs AT-AMP."""
    groups = {}
    for run in _sorted(runs):
        groups.setdefault((run.config["dataset"], run.config["norm"]), []).append(run)
    paths = []
    for (dataset, norm), members in groups.items():
        path = os.path.join(output_dir, f"curves_{dataset}_{norm}.png")
        plots.plot_panels([(run.label, run.rows) for run in members], path,
                          metrics=("train_robust_acc", "test_robust_acc", "robust_gap"),
                          title=f"{dataset} {NORM_LABELS[norm]} {members[0].config['eps_text']}")
        paths.append(path)
    return paths


def write_report(run_dirs, paper_csv, output_dir):
    """Writes tables.md and the curve PNGs; returns their paths."""
    if not run_dirs:
        raise ValueError("--runs: give at least one run directory")
    runs = [Run(d) for d in run_dirs]
    paper = read_paper(paper_csv)
    os.makedirs(output_dir, exist_ok=True)
    tables = os.path.join(output_dir, "tables.md")
    rundir.atomic_write_text(tables, tables_markdown(runs, paper))
    return [tables] + plot_curves(runs, output_dir)
