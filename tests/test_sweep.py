"""The delta sweep report (atamp_tf/sweep.py, python -m atamp_tf.reproduction --sweep_runs)."""
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from atamp_tf import rundir
from atamp_tf.tools import paired, sweep

ROOT = Path(__file__).resolve().parents[1]
REGIME = {"method": "at", "dataset": "cifar10", "norm": "l2", "eps_text": "128/255",
          "arch": "preact_resnet18", "width": 16, "train_examples": 1000, "epochs": 3,
          "eval_test_examples": 1000}


def _run(tmp_path, name, *, delta, scope="tensor", robust, seed=0, reports=(), holdout=None,
         masks=None, **regime):
    """A finished sweep run; reports: (checkpoint, AutoAttack accuracy) pairs, each with its
    per-example results masks[checkpoint] (AutoAttack correctness over 1,000) if given."""
    run = tmp_path / name
    run.mkdir()
    rows = [{"epoch": i + 1, "lr": 0.1, "train_loss": 1.0, "train_adv_acc": 0.5,
             "train_natural_acc": 0.9, "train_robust_acc": 0.5, "test_natural_acc": 0.6,
             "test_robust_acc": r, "robust_gap": 0.5 - r, "seconds": 1.0}
            for i, r in enumerate(robust)]
    for row, h in zip(rows, holdout or ()):  # a run with a held-out split selects on it
        row.update(holdout_natural_acc=0.7, holdout_robust_acc=h)
    rundir.atomic_write_text(str(run / "metrics.csv"), rundir.metrics_csv_text(rows))
    rundir.atomic_write_json(str(run / "summary.json"),
                             rundir.summarize(rows, epochs=len(rows), eval_info={}))
    rundir.atomic_write_json(str(run / "run_config.json"),
                             {**REGIME, **regime, "amp_delta": delta, "amp_scope": scope,
                              "seed": seed})
    paths = rundir.RunPaths(str(run))
    for which, aa in reports:
        path = paths.eval_report if which == "best" else paths.eval_last_report
        Path(path).parent.mkdir()
        report = {"num_examples": 1000, "checks_passed": True, "examples": "the first 1000",
                  "dataset": "cifar10", "split": "test",
                  "threat_model": {"norm": "l2", "eps": 128 / 255, "eps_text": "128/255"},
                  "accuracy": {"natural": 0.4, "autoattack": aa},
                  "attacks": {"autoattack": {"autoattack_settings": {"version": "standard"}}}}
        if masks and which in masks:
            np.savez_compressed(Path(path).parent / "per_example.npz",
                                correct_autoattack=np.asarray(masks[which], bool))
            report["per_example"] = {"file": "per_example.npz"}
        rundir.atomic_write_json(path, report)
    return str(run)


def test_binomial_standard_error():
    assert sweep.binomial_se(0.3, 1000) == pytest.approx(math.sqrt(0.21 / 1000))
    assert sweep.binomial_se(0.0, 100) == 0.0


def test_sweep_orders_runs_and_reports_best_last_drop_and_errors(tmp_path):
    runs = [_run(tmp_path, "awp", delta=0.01, scope="awp", robust=[0.2, 0.31, 0.3]),
            _run(tmp_path, "d05", delta=0.05, robust=[0.2, 0.35, 0.34],
                 reports=[("best", 0.3), ("last", 0.29)]),
            _run(tmp_path, "at", delta=0.0, robust=[0.2, 0.33, 0.25], reports=[("best", 0.27)])]
    out = tmp_path / "out"
    paths = sweep.write_sweep(runs, str(out))
    text = (out / "sweep.md").read_text()
    labels = [line.split(" | ")[0] for line in text.splitlines() if line.startswith("| ")
              and "best robust" not in line and "---" not in line]
    assert labels[:3] == ["| PGD-AT", "| AMP (per tensor), delta 0.05", "| AWP scope, gamma 0.01"]
    assert "| PGD-AT | 0 | 33.0 (2) | 25.0 | 8.0 | 60.0 | 60.0 | 25.0 |" in text
    # 0.3 on 1000 examples: standard error sqrt(0.21 / 1000) = 1.45%
    assert ("| AMP (per tensor), delta 0.05 | 0 | best | 1000 | 40.0 ± 1.5 | 30.0 ± 1.4 | "
            "standard | pass |") in text
    assert "| AMP (per tensor), delta 0.05 | 0 | last | 1000 | 40.0 ± 1.5 | 29.0 ± 1.4 |" in text
    assert (out / "sweep.png").stat().st_size > 5000 and len(paths) == 2


def test_sweep_pairs_each_run_against_pgd_at_on_the_same_examples(tmp_path):
    base = np.zeros(1000, bool)
    base[:270] = True
    amp = base.copy()
    amp[260:270] = False  # 10 examples only PGD-AT gets right
    amp[270:310] = True  # 40 only AMP
    runs = sweep.load_runs([
        _run(tmp_path, "at", delta=0.0, robust=[0.3], reports=[("best", 0.27), ("last", 0.2)],
             masks={"best": base}),
        _run(tmp_path, "d05", delta=0.05, robust=[0.3], reports=[("best", 0.3), ("last", 0.3)],
             masks={"best": amp, "last": amp})])
    text = sweep.paired_markdown(runs)
    d = paired.paired_difference(base, amp)
    assert d.difference == pytest.approx(0.03) and (d.only_baseline, d.only_other) == (10, 40)
    assert f"| AMP (per tensor), delta 0.05 | 0 | best | {paired.format_difference(d)} |" in text
    assert "| last |" not in text  # PGD-AT's last checkpoint has no per-example results
    assert "Paired against PGD-AT" in sweep.sweep_markdown(runs)


def test_the_robust_panel_draws_every_run_with_the_same_attack():
    """AutoAttack for some runs and a weaker attack for others on one axis would favour the
    others: the panel's measure is the strongest attack every best and last report has."""
    def run(*reports):
        return SimpleNamespace(reports=dict(zip(("best", "last"), reports)))
    full = {"natural": 0.44, "pgd20": 0.33, "cw_l2": 0.32, "autoattack": 0.31}
    basic = {"natural": 0.41, "pgd20": 0.33, "cw_l2": 0.31, "autoattack": None}
    with_aa, without = run({"accuracy": full}, {"accuracy": full}), run(
        {"accuracy": basic}, {"accuracy": basic})
    assert sweep.plot_measure([with_aa, without]) == "cw_l2"
    assert sweep.plot_measure([with_aa, with_aa]) == "autoattack"
    assert sweep.plot_measure([with_aa, run({"accuracy": basic})]) is None  # no last report
    assert sweep.plot_measure([with_aa, run({"accuracy": {"natural": 0.4}}, {
        "accuracy": {"natural": 0.4}})]) is None


def test_sweep_marks_a_best_epoch_selected_on_held_out_data(tmp_path):
    runs = sweep.load_runs([_run(tmp_path, "at", delta=0.0, robust=[0.2, 0.33, 0.25],
                                 holdout=[0.1, 0.2, 0.3])])
    assert runs[0].per_epoch()["best_epoch"] == 3
    assert "| PGD-AT | 0 | 25.0 (3, held-out) | 25.0 | 0.0 |" in sweep.per_epoch_markdown(runs)


def test_sweep_refuses_runs_of_different_regimes_and_missing_files(tmp_path):
    a = _run(tmp_path, "a", delta=0.0, robust=[0.2])
    b = _run(tmp_path, "b", delta=0.1, robust=[0.2], width=32)
    with pytest.raises(ValueError, match="differ"):
        sweep.load_runs([a, b])
    with pytest.raises(ValueError, match="summary.json"):
        sweep.load_runs([str(tmp_path / "missing")])


def test_cli_sweep_runs_writes_the_sweep(tmp_path):
    a = _run(tmp_path, "a", delta=0.0, robust=[0.2, 0.3])
    b = _run(tmp_path, "b", delta=0.05, robust=[0.25, 0.3])
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "atamp_tf.reproduction", f"--sweep_runs={a},{b}",
                           f"--output_dir={out}"], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert (out / "sweep.md").is_file() and (out / "sweep.png").is_file()
    none = subprocess.run([sys.executable, "-m", "atamp_tf.reproduction", f"--output_dir={out}"],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    assert none.returncode != 0 and "--sweep_runs" in none.stderr
    assert "Traceback" not in none.stderr
