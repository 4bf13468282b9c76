"""PNG curves of training runs (matplotlib, Agg backend): one run, or several compared.

- `plot_run`: train robust, test robust and robust gap per epoch (paper Fig. 1 and 3), with
  test natural accuracy for reference.
- `plot_compare`: one metric (default test robust accuracy) of several runs (Fig. 6 and 7).
- `plot_panels`: several metrics side by side, each comparing runs (Fig. 3 against Fig. 6).
Accuracies are stored as fractions and drawn in percent, as in the paper.
"""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=wrong-import-position

from atamp_tf import rundir  # noqa: E402  pylint: disable=wrong-import-position

LABELS = {"train_robust_acc": "train robust", "test_robust_acc": "test robust",
          "robust_gap": "robust gap (train - test)", "test_natural_acc": "test natural",
          "train_natural_acc": "train natural", "train_adv_acc": "train adversarial (on the fly)",
          "train_loss": "train loss", "lr": "learning rate",
          "holdout_robust_acc": "held-out robust", "holdout_natural_acc": "held-out natural"}
_PERCENT = {"train_robust_acc", "test_robust_acc", "robust_gap", "test_natural_acc",
            "train_natural_acc", "train_adv_acc", "holdout_robust_acc", "holdout_natural_acc"}


def _series(rows, key):
    points = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None]
    scale = 100.0 if key in _PERCENT else 1.0
    return [p[0] for p in points], [p[1] * scale for p in points]


def save_figure(fig, path):
    """Saves the figure to path through a temporary file and a rename."""
    head, tail = os.path.split(path)
    if head:
        os.makedirs(head, exist_ok=True)
    tmp = os.path.join(head, f".{tail}.tmp{os.getpid()}")
    fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def plot_run(rows, path, *, title=""):
    """Accuracy curves of one run (rows as in metrics.csv) to the PNG file `path`."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    styles = {"train_robust_acc": ("tab:blue", "-"), "test_robust_acc": ("tab:green", "-"),
              "robust_gap": ("tab:red", "-"), "test_natural_acc": ("tab:gray", "--"),
              "holdout_robust_acc": ("tab:purple", ":")}  # drawn only if the run has it
    for key, (color, style) in styles.items():
        xs, ys = _series(rows, key)
        if xs:
            ax.plot(xs, ys, style, color=color, label=LABELS[key], marker="o" if len(xs) < 12
                    else None, markersize=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title or "accuracy per epoch")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    save_figure(fig, path)


def _draw_metric(ax, runs, metric):
    """`metric` per epoch of each (label, rows) run on one axis, labelled and gridded."""
    for label, rows in runs:
        xs, ys = _series(rows, metric)
        ax.plot(xs, ys, label=label, marker="o" if len(xs) < 12 else None, markersize=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel(LABELS.get(metric, metric) + (" (%)" if metric in _PERCENT else ""))
    ax.grid(alpha=0.3)


def plot_compare(runs, path, *, metric="test_robust_acc", title=""):
    """`metric` per epoch for several runs: `runs` is a list of (label, rows)."""
    columns = rundir.METRICS_COLUMNS + rundir.HOLDOUT_COLUMNS
    if metric not in columns or metric == "epoch":
        raise ValueError(f"--metric: expected a metrics.csv column, one of "
                         f"{', '.join(columns[1:])}; got {metric!r}")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    _draw_metric(ax, runs, metric)
    ax.set_title(title or LABELS.get(metric, metric))
    ax.legend(loc="best", fontsize=8)
    save_figure(fig, path)


def plot_panels(runs, path, *, metrics, title=""):
    """One panel per metric side by side, each overlaying the runs (`runs`: (label, rows))."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        _draw_metric(ax, runs, metric)
        ax.set_title(LABELS.get(metric, metric), fontsize=10)
    axes[0][0].legend(loc="best", fontsize=8)
    if title:
        fig.suptitle(title)
    save_figure(fig, path)


def compare_run_dirs(run_dirs, output, *, metric="test_robust_acc", labels=None, title=""):
    """Reads each run directory's metrics.csv and draws `metric` of all of them to output."""
    if not run_dirs:
        raise ValueError("--run_dirs: give at least one run directory")
    if labels is not None and len(labels) != len(run_dirs):
        raise ValueError(f"--labels: {len(labels)} labels for {len(run_dirs)} run directories")
    runs = []
    for i, run_dir in enumerate(run_dirs):
        path = rundir.RunPaths(run_dir).metrics
        if not os.path.isfile(path):
            raise ValueError(f"--run_dirs: {run_dir} has no metrics.csv (is it a run "
                             "directory of python -m atamp_tf.train?)")
        label = labels[i] if labels else os.path.basename(os.path.normpath(run_dir))
        runs.append((label, rundir.read_metrics(path)))
    plot_compare(runs, output, metric=metric, title=title)
    return output
