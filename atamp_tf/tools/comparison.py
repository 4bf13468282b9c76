"""Runs evaluated on the same examples, beside published results and paired against a baseline.

`python -m atamp_tf.reproduction --compare_runs=BASE,OTHER,... [--compared_with=CSV]
--output_dir=DIR` reads each run directory's `run_config.json`, `summary.json` and
`eval/report.json` + `per_example.npz` (with `--compare_checkpoint=last`, `eval_last/`: the
last checkpoint's, for runs that publish it) and writes `DIR/comparison.md`: the published rows
(the CSV the export's `--compared_with` reads) beside ours, each run's training budget and
checkpoint selection, and every other run paired against the first, example by example
(atamp_tf.tools.paired). Every number comes from those files.
"""
import os

from atamp_tf import export, rundir
from atamp_tf.attacks import registry
from atamp_tf.attacks.registry import NORM_LABELS
from atamp_tf.formatting import percent
from atamp_tf.tools import paired
from atamp_tf.tools.reproduction import column_labels, evaluation_columns, method_label
from atamp_tf.zoo import manifest as zoo_manifest

FLAG = "compare_runs"
CHECKPOINTS = ("best", "last")


class EvaluatedRun:
    """A finished run with one checkpoint's evaluation (report and per-example masks): the
    best's (`eval/`) or the last's (`eval_last/`)."""

    def __init__(self, run_dir, checkpoint="best"):
        if checkpoint not in CHECKPOINTS:
            raise ValueError(f"--compare_checkpoint: {checkpoint!r}, expected best or last")
        self.config, self.summary, _ = rundir.read_finished_run(run_dir, FLAG)
        self.name = os.path.basename(os.path.normpath(run_dir))
        self.checkpoint = checkpoint
        paths = rundir.RunPaths(run_dir)
        self.evaluation = paired.read_per_example(
            paths.eval if checkpoint == "best" else paths.eval_last, FLAG)

    @property
    def report(self):
        return self.evaluation[0]

    @property
    def label(self):
        return method_label(self.config, radius=True)

    def budget(self):
        """The training budget as one table row's cells."""
        c, s = self.config, self.summary
        ramp = c.get("eps_ramp_epochs") or 0
        return [f"{c['arch']}", f"{s['epochs_done']}", f"PGD-{c['attack_steps']}, step "
                f"{c.get('step_size_text') or c['step_size']}" + (f", eps ramp {ramp:g} epochs"
                                                                  if ramp else ""),
                f"{s['best']['epoch']} ("
                + ("held-out" if s.get("selected_on") == "holdout" else "test subset") + ")"
                if self.checkpoint == "best" else f"{s['last']['epoch']} (last)",
                f"{s.get('train_seconds', 0) / 3600:.1f} h"]


def _pct(value):
    return percent(value, 2)


def load_runs(run_dirs, compared_with=None, checkpoint="best"):
    """EvaluatedRuns over the same examples; the published rows' threat model must be theirs."""
    if not run_dirs or len(run_dirs) < 2:
        raise ValueError(f"--{FLAG}: give a baseline run directory and at least one other")
    runs = [EvaluatedRun(d, checkpoint) for d in run_dirs]
    for run in runs[1:]:
        paired.check_same_examples(runs[0].report, run.report, FLAG)
    report = runs[0].report
    threat = report["threat_model"]
    if compared_with is not None and not zoo_manifest.same_threat_model(
            compared_with["threat_model"], report["dataset"], threat["norm"], threat["eps"]):
        t = compared_with["threat_model"]
        raise ValueError(f"--compared_with: its results are {t['dataset']} {t['norm']} eps "
                         f"{t['eps']:g}, the runs were evaluated on {report['dataset']} "
                         f"{threat['norm']} eps {threat['eps']:g}")
    return runs


def results_markdown(runs, compared_with):
    """Published rows (their paper's own attack as 'reported') beside our evaluations."""
    columns = evaluation_columns([r.report for r in runs])
    reported = compared_with is not None  # the published rows' own attack; ours have none
    lines = ["| model | examples | " + ("reported robust | " if reported else "")
             + column_labels(columns) + " | checks |",
             "| --- | ---: |" + (" ---: |" if reported else "") + " ---: |" * len(columns)
             + " --- |"]
    published = {"natural": "natural", "autoattack": "autoattack"}
    for row in (compared_with or {}).get("rows", []):
        cells = [_pct(row[published[c]]) if c in published else "-" for c in columns]
        lines.append(f"| {row['model']} | - | {_pct(row['reported'])} | " + " | ".join(cells)
                     + " | - |")
    for run in runs:
        accuracy = run.report["accuracy"]
        version = zoo_manifest.autoattack_version(run.report)
        cells = [_pct(accuracy.get(c)) + (f" ({version})" if c == "autoattack" and version
                                          and accuracy.get(c) is not None else "")
                 for c in columns]
        checks = "pass" if run.report.get("checks_passed") else "**FAILED**"
        lines.append(f"| **ours: {run.label}** (`{run.name}`) | {run.report['num_examples']} | "
                     + ("- | " if reported else "") + " | ".join(cells) + f" | {checks} |")
    return "\n".join(lines)


def budget_markdown(runs):
    selected = "best epoch (selected on)" if runs[0].checkpoint == "best" else "epoch"
    lines = [f"| run | architecture | epochs | training attack | {selected} | "
             "training time |",
             "| --- | --- | ---: | --- | ---: | ---: |"]
    lines += [f"| {run.label} | " + " | ".join(run.budget()) + " |" for run in runs]
    return "\n".join(lines)


def paired_markdown(runs):
    """Every other run against the first, per attack, on the same examples."""
    baseline = runs[0]
    columns = evaluation_columns([r.report for r in runs])
    lines = ["| run | attack | " + f"{baseline.label} | run | run - {baseline.label} "
             "(± paired SE, McNemar p) | right only for the baseline | right only for the "
             "run |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for run in runs[1:]:
        differences = paired.paired_rows(baseline.evaluation, run.evaluation, columns)
        for attack, d in differences.items():
            lines.append(f"| {run.label} | {registry.get(attack).label} | "
                         f"{_pct(d.baseline)} | {_pct(d.other)} | "
                         f"{paired.format_difference(d)} | {d.only_baseline} | "
                         f"{d.only_other} |")
    return "\n".join(lines)


def comparison_markdown(runs, compared_with=None):
    report = runs[0].report
    threat = report["threat_model"]
    head = (f"{report['dataset']} {NORM_LABELS[threat['norm']]} eps {threat['eps_text']}, "
            f"{report['examples']}")
    source = (f" Published rows: {compared_with['source']}." if compared_with else "")
    which = ("the best checkpoint of each run, selected as the budget table says"
             if runs[0].checkpoint == "best" else
             "the last checkpoint of each run (no epoch chosen)")
    return (f"## Results: {head} (%)\n\nOurs: {which}.{source}\n\n"
            + results_markdown(runs, compared_with)
            + "\n\n## Training budget\n\n" + budget_markdown(runs)
            + f"\n\n## Paired against {runs[0].label}, example by example\n\n"
            "The difference in percentage points with one paired standard error and McNemar's "
            "exact two-sided p-value (atamp_tf/tools/paired.py): only the examples one model "
            "gets right and the other does not carry it.\n\n" + paired_markdown(runs) + "\n")


def write_comparison(run_dirs, compared_with_csv, output_dir, checkpoint="best"):
    """Writes comparison.md into output_dir; returns its path."""
    compared_with = (export.read_compared_with(compared_with_csv) if compared_with_csv
                     else None)
    runs = load_runs(run_dirs, compared_with, checkpoint)
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "comparison.md")
    rundir.atomic_write_text(path, comparison_markdown(runs, compared_with))
    return path
