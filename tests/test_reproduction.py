"""The reproduction report (python -m atamp_tf.reproduction): Table 1's layout from run files,
and docs/reproduction.md quoting exactly what the committed runs say."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from atamp_tf import rundir
from atamp_tf.tools import comparison, paired, reproduction, sweep
from atamp_tf.zoo import manifest as zoo_manifest

ROOT = Path(__file__).resolve().parents[1]
# The rows of the paper's results table (../shared/paper/results.csv) that the report quotes.
PAPER_CSV = ROOT / "docs" / "reproduction" / "paper_table1.csv"
REPRO_RUNS = sorted(p for p in (ROOT / "docs" / "runs" / "repro").glob("*")
                    if (p / "summary.json").is_file())


def _fake_run(tmp_path, name, *, norm, delta, robust, natural, train_robust, holdout=None):
    """A run directory with the files train writes, from per-epoch test/train accuracies
    (and held-out robust accuracies, for a run with a held-out split)."""
    run = tmp_path / name
    run.mkdir()
    rows = [{"epoch": i + 1, "lr": 0.1, "train_loss": 1.0, "train_adv_acc": 0.5,
             "train_natural_acc": 0.9, "train_robust_acc": t, "test_natural_acc": n,
             "test_robust_acc": r, "robust_gap": t - r, "seconds": 1.0}
            for i, (r, n, t) in enumerate(zip(robust, natural, train_robust))]
    for row, h in zip(rows, holdout or ()):
        row.update(holdout_natural_acc=0.9, holdout_robust_acc=h)
    rundir.atomic_write_text(str(run / "metrics.csv"), rundir.metrics_csv_text(rows))
    rundir.atomic_write_json(str(run / "summary.json"),
                             rundir.summarize(rows, epochs=len(rows), eval_info={}))
    rundir.atomic_write_json(str(run / "run_config.json"),
                             {"method": "at", "amp_delta": delta, "dataset": "cifar10",
                              "norm": norm, "eps_text": "8/255" if norm == "linf" else "128/255"})
    return str(run)


def _paper_csv(tmp_path):
    path = tmp_path / "results.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["table", "dataset", "norm", "arch", "method", "metric", "best",
                         "best_std", "last", "last_std"])
        writer.writerow([1, "cifar10", "linf", "preact_resnet18", "pgd_at", "robust", 51.77, 0.19,
                         44.36, 0.34])
        writer.writerow([1, "cifar10", "linf", "preact_resnet18", "pgd_at", "natural", 81.68,
                         0.19, 81.57, 0.21])
        writer.writerow([2, "cifar10", "linf", "wrn34_10", "pgd_at", "robust", 1, 0, 1, 0])
    return str(path)


def test_table_has_best_last_drop_and_gap_from_the_files(tmp_path):
    at = _fake_run(tmp_path, "at", norm="linf", delta=0.0, robust=[0.20, 0.30, 0.25],
                   natural=[0.40, 0.50, 0.55], train_robust=[0.2, 0.4, 0.45])
    amp = _fake_run(tmp_path, "amp", norm="linf", delta=0.1, robust=[0.22, 0.28, 0.29],
                    natural=[0.40, 0.45, 0.47], train_robust=[0.2, 0.3, 0.31])
    runs = [reproduction.Run(amp), reproduction.Run(at)]  # sorted into AT first
    table = reproduction.table1_markdown(runs, reproduction.read_paper(_paper_csv(tmp_path)))
    lines = table.splitlines()
    assert len(lines) == 4
    # AT: best 30.0 at epoch 2 (natural 50.0), last 25.0 (natural 55.0), drop 5.0, gap 20.0;
    # paper: Table 1's PreAct row (not Table 2's WRN), its drop 51.77 - 44.36 = 7.41.
    assert lines[2].startswith("| cifar10 | L-inf 8/255 | PGD-AT | 30.0 | 25.0 | 5.0 | 50.0 | "
                               "55.0 | 20.0 | 51.77 | 44.36 | 7.41 | 81.68 | 81.57 |")
    assert "(best epoch 2 of 3)" in lines[2]
    # AT-AMP: best is the last epoch, no paper row given -> dashes.
    assert lines[3].startswith("| cifar10 | L-inf 8/255 | PGD-AT-AMP | 29.0 | 29.0 | 0.0 | 47.0 "
                               "| 47.0 | 2.0 | - | - | - | - | - |")


def test_the_final_evaluation_names_a_custom_autoattack_by_its_components():
    def report(version, components, accuracy=0.3):
        return {"accuracy": {"autoattack": accuracy}, "attacks": {"autoattack": {
            "autoattack_settings": {"version": version, "components": components}}}}
    label = reproduction.autoattack_version_label
    assert label(report("standard", ["apgd-ce", "apgd-t", "fab-t", "square"])) == "standard"
    assert label(report("custom", ["apgd-ce", "apgd-t"])) == "custom: APGD-CE + APGD-T"
    assert label(report("custom", ["apgd-ce"], accuracy=None)) == "-"
    assert label({"accuracy": {"natural": 0.5}, "attacks": {}}) == "-"


def test_a_held_out_selection_is_reported_as_such(tmp_path):
    """A run whose best epoch was chosen on held-out training data: its best columns are the
    test accuracies of that epoch (3, not the test-best 2), marked held-out; curves still draw."""
    at = _fake_run(tmp_path, "at", norm="linf", delta=0.0, robust=[0.20, 0.30, 0.25],
                   natural=[0.40, 0.50, 0.55], train_robust=[0.2, 0.4, 0.45],
                   holdout=[0.3, 0.35, 0.4])
    plain = _fake_run(tmp_path, "plain", norm="linf", delta=0.1, robust=[0.2, 0.3],
                      natural=[0.4, 0.5], train_robust=[0.2, 0.3])
    runs = [reproduction.Run(at), reproduction.Run(plain)]
    text = reproduction.tables_markdown(runs, reproduction.read_paper(_paper_csv(tmp_path)))
    row = next(line for line in text.splitlines() if "| PGD-AT |" in line)
    assert row.startswith("| cifar10 | L-inf 8/255 | PGD-AT | 25.0 | 25.0 | 0.0 | 55.0 | 55.0 |")
    assert "(best epoch 3 of 3, held-out)" in row
    assert "(best epoch 2 of 2)" in text and "selected on held-out training examples" in text
    assert len(reproduction.plot_curves(runs, str(tmp_path / "curves"))) == 1


def test_cli_writes_tables_and_curves_and_refuses_bad_runs(tmp_path):
    at = _fake_run(tmp_path, "at", norm="l2", delta=0.0, robust=[0.2, 0.3], natural=[0.4, 0.5],
                   train_robust=[0.3, 0.5])
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "atamp_tf.reproduction", f"--runs={at}",
           f"--paper_csv={_paper_csv(tmp_path)}", f"--output_dir={out}"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert (out / "curves_cifar10_l2.png").stat().st_size > 1000
    text = (out / "tables.md").read_text()
    assert "| cifar10 | L2 128/255 | PGD-AT | 30.0 | 30.0 | 0.0 |" in text
    assert "no run has an eval/report.json yet" in text
    bad = subprocess.run(cmd[:3] + [f"--runs={tmp_path / 'missing'}", cmd[4],
                                    f"--output_dir={out}"],
                         cwd=ROOT, capture_output=True, text=True, check=False)
    assert bad.returncode != 0
    assert "--runs" in bad.stderr and "summary.json" in bad.stderr


@pytest.mark.skipif(not REPRO_RUNS, reason="no reproduction runs committed under docs/runs/repro")
def test_docs_reproduction_quotes_the_committed_runs():
    """docs/reproduction.md holds the tables exactly as the command makes them from docs/runs."""
    runs = [reproduction.Run(str(p)) for p in REPRO_RUNS]
    paper = reproduction.read_paper(str(PAPER_CSV))
    doc = (ROOT / "docs" / "reproduction.md").read_text()
    assert reproduction.table1_markdown(runs, paper) in doc
    assert reproduction.evaluation_markdown(runs) in doc
    assert reproduction.paired_markdown(runs) in doc
    assert "(no PGD-AT-AMP run" not in reproduction.paired_markdown(runs)
    for run in runs:  # every committed reproduction run was evaluated, and passed the checks
        assert run.report is not None, f"{run.dir} has no eval/report.json"
        assert run.report["checks_passed"], f"{run.dir}: evaluation sanity checks failed"
        assert run.report["num_examples"] >= 1000
        assert os.path.isfile(os.path.join(run.dir, "flags.cfg"))


SWEEP_RUNS = sorted(str(p) for p in (ROOT / "docs" / "runs" / "sweep").glob("*")
                    if (p / "summary.json").is_file())


def test_docs_reproduction_and_docs_sweep_quote_the_committed_sweep_runs():
    """The sweep section of docs/reproduction.md and docs/sweep/sweep.md are exactly what
    --sweep_runs makes from the committed sweep runs."""
    text = sweep.sweep_markdown(sweep.load_runs(SWEEP_RUNS))
    assert text in (ROOT / "docs" / "reproduction.md").read_text()
    assert text == (ROOT / "docs" / "sweep" / "sweep.md").read_text()


def test_paired_table_pairs_each_amp_run_with_the_pgd_at_run_of_its_threat_model(tmp_path):
    at = _fake_run(tmp_path, "at", norm="l2", delta=0.0, robust=[0.3], natural=[0.4],
                   train_robust=[0.4])
    amp = _fake_run(tmp_path, "amp", norm="l2", delta=0.1, robust=[0.3], natural=[0.4],
                    train_robust=[0.4])
    alone = _fake_run(tmp_path, "alone", norm="linf", delta=0.1, robust=[0.3], natural=[0.4],
                      train_robust=[0.4])
    masks = {"at": [1, 1, 0, 0], "amp": [1, 0, 1, 1], "alone": [1, 1, 1, 1]}
    for run, correct in zip((at, amp, alone), masks.values()):
        os.makedirs(os.path.join(run, "eval"))
        np.savez_compressed(os.path.join(run, "eval", "per_example.npz"),
                            correct_pgd20=np.array(correct, bool))
        rundir.atomic_write_json(os.path.join(run, "eval", "report.json"), {
            "num_examples": 4, "examples": "the first 4", "checks_passed": True,
            "dataset": "cifar10", "split": "test", "threat_model": {"norm": "l2", "eps": 0.5},
            "accuracy": {"pgd20": float(np.mean(correct))}, "per_example": {}})
    runs = [reproduction.Run(d) for d in (amp, alone, at)]
    text = reproduction.paired_markdown(runs)
    d = paired.paired_difference(masks["at"], masks["amp"])
    assert f"| L2 128/255 | `amp` - `at` | {paired.format_difference(d)} |" in text
    assert "`alone`" not in text  # no L-inf PGD-AT to pair it with


def test_method_label_names_method_perturbation_and_radius():
    assert reproduction.method_label({"method": "at", "amp_delta": 0.0}) == "PGD-AT"
    amp = {"method": "at", "amp_delta": 0.06, "amp_scope": "tensor"}
    assert reproduction.method_label(amp) == "PGD-AT-AMP"
    assert reproduction.method_label(amp, radius=True) == "PGD-AT-AMP, delta 0.06"
    awp = {"method": "trades", "amp_delta": 0.01, "amp_scope": "awp"}
    assert reproduction.method_label(awp, radius=True) == "TRADES-AWP, gamma 0.01"


def test_table1_runs_refuse_other_methods_and_awp_scope(tmp_path):
    for name, changes, match in (("trades", {"method": "trades"}, "method 'trades'"),
                                 ("awp", {"amp_scope": "awp"}, "AWP's scope")):
        run = _fake_run(tmp_path, name, norm="l2", delta=0.01, robust=[0.2], natural=[0.4],
                        train_robust=[0.3])
        config = rundir.read_json(os.path.join(run, "run_config.json"))
        rundir.atomic_write_json(os.path.join(run, "run_config.json"), {**config, **changes})
        with pytest.raises(ValueError, match=match):
            reproduction.Run(run)


# docs/reproduction.md's final evaluation with the fixed code: the last checkpoints of the runs
# that replaced the reproduction's four (issue 14), each pair's comparison.md as
# `python -m atamp_tf.reproduction --compare_runs=... --compare_checkpoint=last` writes it.
FINAL_PAIRS = {"final_l2": ["sweep/cifar10_l2_pgd_at", "sweep/cifar10_l2_pgd_at_amp_d0.05"]}


@pytest.mark.parametrize("name", sorted(FINAL_PAIRS))
def test_docs_reproduction_quotes_the_fixed_code_final_evaluation(name):
    runs = comparison.load_runs([str(ROOT / "docs" / "runs" / r) for r in FINAL_PAIRS[name]],
                                checkpoint="last")
    text = comparison.comparison_markdown(runs)
    assert (ROOT / "docs" / "reproduction" / name / "comparison.md").read_text() == text
    doc = (ROOT / "docs" / "reproduction.md").read_text()
    assert comparison.results_markdown(runs, None) in doc
    assert comparison.paired_markdown(runs) in doc
    for run in runs:  # the standard AutoAttack, every check passed, on the 1,000 test images
        assert zoo_manifest.autoattack_version(run.report) == "standard"
        assert run.report["checks_passed"] and run.report["num_examples"] == 1000
