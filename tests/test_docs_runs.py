"""Every committed run under docs/ is self-consistent: summary.json agrees with metrics.csv,
and a committed evaluation report agrees with the zoo entry made from it."""
import csv
import glob
import json
import os

import pytest

from atamp_tf import rundir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUMMARIES = sorted(glob.glob(os.path.join(ROOT, "docs", "**", "summary.json"), recursive=True))


def test_there_are_committed_runs():
    assert SUMMARIES, "docs/ should hold the small files of the runs behind the zoo entries"


@pytest.mark.parametrize("summary_path", SUMMARIES,
                         ids=[os.path.relpath(p, ROOT) for p in SUMMARIES])
def test_summary_agrees_with_metrics(summary_path):
    run = os.path.dirname(summary_path)
    with open(summary_path) as f:
        summary = json.load(f)
    with open(os.path.join(run, "metrics.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == list(range(1, len(rows) + 1))
    assert summary["epochs_done"] == len(rows)
    # the best epoch is selected on the held-out split if the run has one, else on the test
    # subset (summaries written before selected_on existed are test-selected)
    key = f"{summary.get('selected_on', 'test')}_robust_acc"
    robust = [float(r[key]) for r in rows]
    best = summary["best"]
    assert best[key] == pytest.approx(max(robust), abs=1e-6)
    assert best["epoch"] == 1 + robust.index(max(robust))  # earliest epoch on ties
    best_row = rows[best["epoch"] - 1]
    assert best["test_natural_acc"] == pytest.approx(float(best_row["test_natural_acc"]), abs=1e-6)
    last = summary["last"]
    assert last["epoch"] == int(rows[-1]["epoch"])
    for key in ("test_robust_acc", "test_natural_acc", "train_robust_acc", "robust_gap"):
        assert last[key] == pytest.approx(float(rows[-1][key]), abs=1e-6)


def test_zoo_metrics_are_the_committed_reports():
    """Each zoo entry's metrics are its run's committed evaluation report, to the digit."""
    with open(os.path.join(ROOT, "atamp_tf", "zoo", "manifest.json")) as f:
        manifest = json.load(f)
    for entry in manifest["models"]:
        # The run's files sit in docs/runs/<group>/<run>/, the last two parts of the run
        # directory it was trained in (its recorded --out_dir): runs/repro/cifar10_l2_pgd_at
        # is docs/runs/repro/cifar10_l2_pgd_at, not the sweep's run of the same name.
        out_dirs = [f.split("=", 1)[1] for f in entry["training"]["flags"]
                    if f.startswith("--out_dir=")]
        assert len(out_dirs) == 1, entry["name"]
        group_and_run = os.path.normpath(out_dirs[0]).split(os.sep)[-2:]
        budget = entry["training"].get("budget") or {}  # the last checkpoint: eval_last/
        evaluation = "eval_last" if budget.get("checkpoint") == "last" else "eval"
        found = glob.glob(os.path.join(ROOT, "docs", "runs", *group_and_run, evaluation,
                                       "report.json"))
        assert len(found) == 1, (f"{entry['name']}: commit its run's files under "
                                 f"docs/runs/{'/'.join(group_and_run)}/")
        with open(found[0]) as f:
            report = json.load(f)
        assert entry["metrics"]["accuracy"] == report["accuracy"], entry["name"]
        if "report_fingerprint" in entry["metrics"]:  # recorded since issue 14: the very report
            assert entry["metrics"]["report_fingerprint"] == rundir.fingerprint(report)
