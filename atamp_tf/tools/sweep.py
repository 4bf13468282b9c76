"""The delta sweep (the paper's Fig. 4 at reduced scale): runs of one regime against delta.

`python -m atamp_tf.reproduction --sweep_runs=DIR1,DIR2,... --output_dir=DIR` writes
`sweep.md` (per-epoch best/last, gap, drop; the final evaluation of the best and last
checkpoints with binomial standard errors; each run paired against PGD-AT on the same examples)
and `sweep.png` (robust accuracy, natural accuracy, robust gap and best-last drop against
delta, PGD-AT as the delta = 0 point, AWP's scope as a separate marker; the robust panel draws
every run with the same attack, plot_measure's, and AutoAttack beside it where only some runs
have it). The final evaluation of a run is `<run>/eval/report.json` (best checkpoint,
`python -m atamp_tf.evaluate`'s default) and `<run>/eval_last/report.json`
(`--checkpoint=last --output_dir=<run>/eval_last`).
"""
import math
import os

from atamp_tf import plots, rundir
from atamp_tf.attacks.registry import NORM_LABELS
from atamp_tf.formatting import percent
from atamp_tf.tools import paired
from atamp_tf.tools.reproduction import column_labels, evaluation_columns, selection_note
from atamp_tf.zoo import manifest as zoo_manifest

SCOPE_NAMES = {"tensor": "AMP (per tensor)", "global": "AMP (global)", "awp": "AWP scope"}


def binomial_se(p, n):
    """Standard error of an accuracy p measured on n independent examples."""
    return math.sqrt(max(p * (1.0 - p), 0.0) / n) if n else float("nan")


class SweepRun:
    """One run of the sweep: its config, per-epoch rows, summary and final evaluations."""

    def __init__(self, run_dir):
        paths = rundir.RunPaths(run_dir)
        self.config, self.summary, self.rows = rundir.read_finished_run(run_dir, "sweep_runs")
        self.dir, self.name = run_dir, os.path.basename(os.path.normpath(run_dir))
        self.evaluations = {  # which checkpoint -> (report, per-example masks)
            which: paired.read_per_example(eval_dir, "sweep_runs", require_masks=False)
            for which, eval_dir in (("best", paths.eval), ("last", paths.eval_last))
            if os.path.isfile(os.path.join(eval_dir, "report.json"))}
        self.reports = {which: e[0] for which, e in self.evaluations.items()}

    @property
    def delta(self):
        return float(self.config["amp_delta"])

    @property
    def scope(self):
        """tensor / global / awp for AMP runs; None for PGD-AT (delta 0)."""
        return self.config.get("amp_scope", "tensor") if self.delta > 0 else None

    @property
    def label(self):
        if self.scope is None:
            return "PGD-AT"
        name = "gamma" if self.scope == "awp" else "delta"
        return f"{SCOPE_NAMES[self.scope]}, {name} {self.delta:g}"

    @property
    def seed(self):
        return int(self.config.get("seed", 0))

    @property
    def regime(self):
        c = self.config
        return (c.get("dataset"), c.get("norm"), c.get("eps_text"), c.get("arch"),
                c.get("width"), c.get("train_examples"), c.get("epochs"), c.get("method"))

    def per_epoch(self):
        """Percent numbers of the per-epoch subset: best, its epoch, last, drop, last gap."""
        best, last = self.summary["best"], self.summary["last"]
        return {"best": best["test_robust_acc"], "best_epoch": best["epoch"],
                "last": last["test_robust_acc"],
                "drop": best["test_robust_acc"] - last["test_robust_acc"],
                "best_natural": best["test_natural_acc"], "last_natural": last["test_natural_acc"],
                "gap": last["robust_gap"]}


def load_runs(run_dirs):
    """SweepRuns of one regime, sorted PGD-AT first, then by scope and delta, then seed."""
    if not run_dirs:
        raise ValueError("--sweep_runs: give at least one run directory")
    runs = [SweepRun(d) for d in run_dirs]
    regimes = {r.regime for r in runs}
    if len(regimes) > 1:
        raise ValueError("--sweep_runs: the runs differ in more than delta, scope and seed "
                         f"(dataset, norm, eps, arch, width, examples, epochs, method): "
                         f"{sorted(map(str, regimes))}")
    order = {None: 0, "tensor": 1, "global": 2, "awp": 3}
    return sorted(runs, key=lambda r: (order[r.scope], r.delta, r.seed, r.name))


def _pct(value, se=None):
    return percent(value, 1, se=se)


def per_epoch_markdown(runs):
    lines = ["| run | seed | best robust (epoch) | last robust | best - last | best natural | "
             "last natural | gap (last) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for run in runs:
        m = run.per_epoch()
        lines.append(f"| {run.label} | {run.seed} | {_pct(m['best'])} ({m['best_epoch']}"
                     f"{selection_note(run.summary)}) | "
                     f"{_pct(m['last'])} | {_pct(m['drop'])} | {_pct(m['best_natural'])} | "
                     f"{_pct(m['last_natural'])} | {_pct(m['gap'])} |")
    return "\n".join(lines)


def evaluation_markdown(runs):
    """Final evaluation of best and last checkpoints, percent ± one binomial standard error."""
    evaluated = [(run, which, run.reports[which]) for run in runs
                 for which in ("best", "last") if which in run.reports]
    if not evaluated:
        return "(no run has an evaluation report yet)"
    columns = evaluation_columns([rep for _, _, rep in evaluated])
    lines = ["| run | seed | checkpoint | examples | "
             + column_labels(columns) + " | AutoAttack version | checks |",
             "| --- | ---: | --- | ---: |" + " ---: |" * len(columns) + " --- | --- |"]
    for run, which, report in evaluated:
        n, accuracy = report["num_examples"], report["accuracy"]
        cells = [_pct(accuracy[c], binomial_se(accuracy[c], n)) if accuracy.get(c) is not None
                 else "-" for c in columns]
        version = zoo_manifest.autoattack_version(report) or "-"
        checks = "pass" if report.get("checks_passed") else "**FAILED**"
        lines.append(f"| {run.label} | {run.seed} | {which} | {n} | " + " | ".join(cells)
                     + f" | {version} | {checks} |")
    return "\n".join(lines)


def paired_markdown(runs):
    """Each run's checkpoint against PGD-AT's same checkpoint (the first PGD-AT run), example by
    example: the difference ± one paired standard error and McNemar's p, per attack."""
    baseline = next((r for r in runs if r.scope is None), None)
    pairs = [(run, which) for run in runs if baseline is not None and run is not baseline
             for which in ("best", "last")
             if run.evaluations.get(which, ({}, {}))[1]
             and baseline.evaluations.get(which, ({}, {}))[1]]
    if not pairs:
        return "(no run and PGD-AT both have per-example results of the same checkpoint yet)"
    columns = paired.compared_columns(
        [(baseline.evaluations[which], run.evaluations[which]) for run, which in pairs],
        evaluation_columns([run.reports[which] for run, which in pairs]))
    lines = ["| run | seed | checkpoint | " + column_labels(columns) + " |",
             "| --- | ---: | --- |" + " ---: |" * len(columns)]
    for run, which in pairs:
        cells = paired.difference_cells(baseline.evaluations[which], run.evaluations[which],
                                        columns, "sweep_runs")
        lines.append(f"| {run.label} | {run.seed} | {which} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sweep_markdown(runs):
    c = runs[0].config
    head = (f"{c.get('dataset')} {NORM_LABELS.get(c.get('norm'), c.get('norm'))} "
            f"{c.get('eps_text')}, {c.get('arch')} width {c.get('width')}, "
            f"{c.get('train_examples')} training images, {c.get('epochs')} epochs")
    return (f"## Delta sweep: {head}\n\n"
            "### Per-epoch test subset (%, the attack of `--eval_attack_steps`)\n\n"
            + per_epoch_markdown(runs)
            + "\n\n### Final evaluation (%, ± one binomial standard error)\n\n"
            + evaluation_markdown(runs)
            + "\n\n### Paired against PGD-AT (percentage points, the same examples)\n\n"
            "Each run's checkpoint minus PGD-AT's same checkpoint, ± one paired standard error "
            "(McNemar's exact p; atamp_tf/tools/paired.py): sharper than the binomial errors "
            "above, which treat the two models' examples as independent.\n\n"
            + paired_markdown(runs) + "\n")


def plot_measure(runs):
    """The robust accuracy every point of the robust panel shares, so that no run is drawn with
    a stronger attack than another: the strongest attack (lowest mean accuracy) that every
    run's best and last final evaluation has, or None (the per-epoch PGD) if any lacks one."""
    reports = [run.reports.get(which) for run in runs for which in ("best", "last")]
    if not reports or any(report is None for report in reports):
        return None
    common = set.intersection(*({name for name, value in report["accuracy"].items()
                                 if value is not None and name != "natural"}
                                for report in reports))
    if not common:
        return None
    return min(sorted(common), key=lambda name: sum(r["accuracy"][name] for r in reports))


def _robust_for_plot(run, which, measure):
    """(accuracy, examples) of `measure` (plot_measure's) in run's `which` evaluation, or of the
    per-epoch subset when measure is None."""
    if measure is not None:
        report = run.reports[which]
        return report["accuracy"][measure], report["num_examples"]
    per_epoch = run.per_epoch()
    return per_epoch["best" if which == "best" else "last"], run.config.get(
        "eval_test_examples") or 0


def _autoattack(run, which):
    """AutoAttack accuracy of run's `which` final evaluation, or None where it did not run."""
    report = run.reports.get(which)
    return None if report is None else report["accuracy"].get("autoattack")


def _measure_label(runs, measure):
    if measure is None:
        return "per-epoch PGD"
    report = runs[0].reports["best"]
    return report.get("attacks", {}).get(measure, {}).get("label", measure)


def plot_sweep(runs, path):
    """Four panels against delta; error bars are one binomial standard error."""
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    series = {}
    for run in runs:
        series.setdefault(run.scope, []).append(run)
    styles = {None: ("k", "s"), "tensor": ("C0", "o"), "global": ("C2", "^"), "awp": ("C3", "D")}
    measure = plot_measure(runs)
    drew_autoattack = False
    for scope, members in series.items():
        color, marker = styles[scope]
        name = "PGD-AT (delta 0)" if scope is None else SCOPE_NAMES[scope]
        xs = [0.0 if scope is None else r.delta for r in members]
        for which, fill in (("best", color), ("last", "none")):
            values = [_robust_for_plot(r, which, measure) for r in members]
            axes[0].errorbar(xs, [100 * v for v, _ in values],
                             yerr=[100 * binomial_se(v, n) for v, n in values],
                             color=color, marker=marker, mfc=fill, ls="none", capsize=3,
                             label=f"{name}, {which}")
            if measure != "autoattack":  # AutoAttack where it ran, beside the shared measure
                with_aa = [(x, _autoattack(r, which)) for x, r in zip(xs, members)
                           if _autoattack(r, which) is not None]
                drew_autoattack |= bool(with_aa)
                if with_aa:
                    axes[0].plot([x for x, _ in with_aa], [100 * v for _, v in with_aa],
                                 color=color, marker="x" if which == "best" else "+",
                                 ls="none", ms=8, label=f"{name}, {which}, AutoAttack")
        natural = [r.per_epoch()["last_natural"] for r in members]
        n_nat = [r.config.get("eval_test_examples") or 0 for r in members]
        axes[1].errorbar(xs, [100 * v for v in natural],
                         yerr=[100 * binomial_se(v, n) for v, n in zip(natural, n_nat)],
                         color=color, marker=marker, ls="none", capsize=3, label=name)
        axes[2].plot(xs, [100 * r.per_epoch()["gap"] for r in members], color=color,
                     marker=marker, ls="none", label=name)
        axes[3].plot(xs, [100 * r.per_epoch()["drop"] for r in members], color=color,
                     marker=marker, ls="none", label=name)
    robust_title = f"robust accuracy ({_measure_label(runs, measure)}, every run)"
    if drew_autoattack:
        robust_title += "; x/+: AutoAttack"
    titles = [robust_title, "natural accuracy (last)",
              "robust gap (last epoch)", "best - last robust (per epoch)"]
    for ax, title in zip(axes, titles):
        ax.set_xscale("symlog", linthresh=0.01)
        ax.set_xlabel("delta (gamma for the AWP scope)")
        ax.set_ylabel("%")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    plots.save_figure(fig, path)
    return path


def write_sweep(run_dirs, output_dir):
    """Writes sweep.md and sweep.png into output_dir; returns their paths."""
    runs = load_runs(run_dirs)
    os.makedirs(output_dir, exist_ok=True)
    table = os.path.join(output_dir, "sweep.md")
    rundir.atomic_write_text(table, sweep_markdown(runs))
    return [table, plot_sweep(runs, os.path.join(output_dir, "sweep.png"))]
