"""Paired comparisons on the same examples (atamp_tf/tools/paired.py) and the run comparison
(python -m atamp_tf.reproduction --compare_runs, atamp_tf/tools/comparison.py)."""
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from atamp_tf import export, rundir
from atamp_tf.tools import comparison, paired

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "docs" / "zoo" / "mnist_linf_published.csv"
EXAMPLES = "the first 10 examples of the test split in its own order"


def test_mcnemar_exact_p_values_by_hand():
    assert paired.mcnemar_p(0, 0) == 1.0
    assert paired.mcnemar_p(3, 3) == 1.0
    assert paired.mcnemar_p(0, 5) == pytest.approx(2 / 32)  # all five discordant one way
    assert paired.mcnemar_p(5, 0) == pytest.approx(2 / 32)
    assert paired.mcnemar_p(1, 9) == pytest.approx(2 * (1 + 10) / 1024)


def test_paired_difference_counts_only_the_discordant_examples():
    base = np.array([1, 1, 1, 0, 0, 1, 0, 1], bool)
    other = np.array([1, 0, 1, 1, 1, 1, 1, 1], bool)
    d = paired.paired_difference(base, other)
    assert (d.n, d.only_baseline, d.only_other) == (8, 1, 3)
    assert d.difference == pytest.approx(2 / 8) == d.other - d.baseline
    assert d.se == pytest.approx(math.sqrt(4 - 4 / 8) / 8)
    assert d.p_value == pytest.approx(paired.mcnemar_p(1, 3))
    same = paired.paired_difference(base, base)
    assert same.difference == 0 and same.se == 0 and same.p_value == 1.0
    with pytest.raises(ValueError, match="same examples"):
        paired.paired_difference(base, other[:4])


def test_compared_columns_need_both_sides_of_some_pair():
    mask = np.ones(3, bool)
    pair_a = (({}, {"natural": mask, "pgd20": mask}), ({}, {"natural": mask}))
    pair_b = (({}, {"autoattack": mask}), ({}, {"autoattack": mask, "cw_inf": mask}))
    columns = ["natural", "pgd20", "cw_inf", "autoattack"]
    assert paired.compared_columns([pair_a], columns) == ["natural"]
    assert paired.compared_columns([pair_a, pair_b], columns) == ["natural", "autoattack"]
    assert paired.compared_columns([], columns) == []


def test_format_difference():
    d = paired.PairedDifference(10000, 0.93, 0.9365, 0.0065, 40, 105, 0.0012, 8e-8)
    assert paired.format_difference(d) == "+0.65 ± 0.12 (p 8e-08)"


def _run(tmp_path, name, *, delta, correct, examples=EXAMPLES, eps=0.3):
    """A finished, evaluated run directory: the files train and evaluate write."""
    run = tmp_path / name
    run.mkdir()
    rows = [{"epoch": 1, "lr": 0.1, "train_loss": 1.0, "train_adv_acc": 0.5,
             "train_natural_acc": 0.9, "train_robust_acc": 0.5, "test_natural_acc": 0.9,
             "test_robust_acc": 0.8, "robust_gap": 0.1, "seconds": 1.0,
             "holdout_natural_acc": 0.9, "holdout_robust_acc": 0.85}]
    rundir.atomic_write_text(str(run / "metrics.csv"), rundir.metrics_csv_text(rows))
    rundir.atomic_write_json(str(run / "summary.json"), {
        **rundir.summarize(rows, epochs=1, eval_info={}), "train_seconds": 7200.0})
    rundir.atomic_write_json(str(run / "run_config.json"), {
        "method": "at", "amp_delta": delta, "amp_scope": "tensor", "arch": "trades_small_cnn",
        "attack_steps": 10, "step_size_text": "0.075", "step_size": 0.075,
        "eps_ramp_epochs": 5})
    (run / "eval").mkdir()
    masks = {k: np.array(v, bool) for k, v in correct.items()}
    np.savez_compressed(run / "eval" / "per_example.npz",
                        **{f"correct_{k}": v for k, v in masks.items()})
    rundir.atomic_write_json(str(run / "eval" / "report.json"), {
        "dataset": "mnist", "split": "test", "examples": examples, "num_examples": 10,
        "threat_model": {"norm": "linf", "eps": eps, "eps_text": f"{eps:g}"},
        "accuracy": {k: float(v.mean()) for k, v in masks.items()}, "checks_passed": True,
        "attacks": {"autoattack": {"autoattack_settings": {"version": "standard"}}},
        "per_example": {"file": "per_example.npz"}})
    return str(run)


def _pair(tmp_path, amp_only=None, **both):
    """PGD-AT and AT-AMP runs; amp_only: settings of the AT-AMP run alone."""
    base = _run(tmp_path, "pgd_at", delta=0.0,
                correct={"natural": [1] * 10, "autoattack": [1] * 6 + [0] * 4}, **both)
    amp = _run(tmp_path, "pgd_at_amp", delta=0.06, **{
        "correct": {"natural": [1] * 9 + [0], "autoattack": [1] * 5 + [0] + [1] * 3 + [0]},
        **both, **(amp_only or {})})
    return base, amp


def test_comparison_puts_published_rows_beside_ours_and_pairs_each_run(tmp_path):
    base, amp = _pair(tmp_path)
    path = comparison.write_comparison([base, amp], str(PUBLISHED), str(tmp_path / "out"))
    text = Path(path).read_text()
    assert "| Madry et al. 2018, PGD-AT" in text and "| 89.62 | 98.53 | 88.50 | - |" in text
    assert "| **ours: PGD-AT** (`pgd_at`) | 10 | - | 100.00 | 60.00 (standard) | pass |" in text
    assert "| **ours: PGD-AT-AMP, delta 0.06** (`pgd_at_amp`) | 10 | - | 90.00 | " in text
    assert "| PGD-AT-AMP, delta 0.06 | trades_small_cnn | 1 | PGD-10, step 0.075, eps ramp 5 " \
           "epochs | 1 (held-out) | 2.0 h |" in text
    # AutoAttack: example 5 only PGD-AT, examples 6-8 only AT-AMP -> +2 of 10
    d = paired.paired_difference([1] * 6 + [0] * 4, [1] * 5 + [0] + [1] * 3 + [0])
    assert (f"| PGD-AT-AMP, delta 0.06 | AutoAttack | 60.00 | 80.00 | "
            f"{paired.format_difference(d)} | 1 | 3 |") in text


def test_comparison_refuses_other_examples_threat_models_and_missing_results(tmp_path):
    base, amp = _pair(tmp_path, amp_only={"examples": "the first 10 examples of the train split"})
    with pytest.raises(ValueError, match="--compare_runs: .*differ in examples"):
        comparison.load_runs([base, amp])
    other = tmp_path / "eps"
    other.mkdir()
    base2, amp2 = _pair(other, eps=0.1)
    with pytest.raises(ValueError, match="--compared_with: its results are mnist linf eps 0.3"):
        comparison.write_comparison([base2, amp2], str(PUBLISHED), str(tmp_path / "o"))
    (Path(amp2) / "eval" / "per_example.npz").unlink()
    with pytest.raises(ValueError, match="no per-example results"):
        comparison.load_runs([base2, amp2])
    report = {"dataset": "mnist", "split": "test", "examples": EXAMPLES, "num_examples": 10,
              "threat_model": {"norm": "linf", "eps": 0.3}}
    with pytest.raises(ValueError, match="lacks split: cannot tell"):
        paired.check_same_examples(report, {**report, "split": None}, "compare_runs")
    with pytest.raises(ValueError, match="at least one other"):
        comparison.load_runs([base2])


def test_cli_compare_runs(tmp_path):
    base, amp = _pair(tmp_path)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "atamp_tf.reproduction",
                           f"--compare_runs={base},{amp}", f"--compared_with={PUBLISHED}",
                           f"--output_dir={out}"], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert (out / "comparison.md").is_file()
    alone = subprocess.run([sys.executable, "-m", "atamp_tf.reproduction",
                            f"--compared_with={PUBLISHED}", f"--sweep_runs={base}",
                            f"--output_dir={out}"], cwd=ROOT, capture_output=True, text=True,
                           check=False)
    assert alone.returncode != 0 and "--compared_with: only with --compare_runs" in alone.stderr
    assert "Traceback" not in alone.stderr


def test_comparison_of_last_checkpoints_reads_eval_last(tmp_path):
    """--compare_checkpoint=last compares the last checkpoints' evaluations (eval_last/), the
    ones a zoo entry that ships its last epoch records, and says so; the best's are not read."""
    base, amp = _pair(tmp_path)
    for run in (base, amp):
        (Path(run) / "eval").rename(Path(run) / "eval_last")
    with pytest.raises(ValueError, match="pgd_at/eval has no report.json"):
        comparison.load_runs([base, amp])
    text = Path(comparison.write_comparison([base, amp], None, str(tmp_path / "out"),
                                            checkpoint="last")).read_text()
    assert "Ours: the last checkpoint of each run (no epoch chosen)." in text
    assert "| model | examples | Natural | AutoAttack | checks |" in text  # nothing published
    assert "| run | architecture | epochs | training attack | epoch | training time |" in text
    assert "| PGD-AT-AMP, delta 0.06 | trades_small_cnn | 1 | PGD-10, step 0.075, eps ramp 5 " \
           "epochs | 1 (last) | 2.0 h |" in text
    d = paired.paired_difference([1] * 6 + [0] * 4, [1] * 5 + [0] + [1] * 3 + [0])
    assert f"| {paired.format_difference(d)} | 1 | 3 |" in text
    out = tmp_path / "cli"
    done = subprocess.run([sys.executable, "-m", "atamp_tf.reproduction",
                           f"--compare_runs={base},{amp}", "--compare_checkpoint=last",
                           f"--output_dir={out}"], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert (out / "comparison.md").read_text() == text
    alone = subprocess.run([sys.executable, "-m", "atamp_tf.reproduction",
                            "--compare_checkpoint=last", f"--sweep_runs={base}",
                            f"--output_dir={out}"], cwd=ROOT, capture_output=True, text=True,
                           check=False)
    assert alone.returncode != 0
    assert "--compare_checkpoint: only with --compare_runs" in alone.stderr
    assert "Traceback" not in alone.stderr


def test_docs_runs_mnist_comparison_is_what_the_command_makes_from_the_committed_runs():
    """docs/runs/mnist/comparison.md (the zoo's MNIST reading) quotes the committed runs
    exactly, both evaluated on all 10,000 test images with the standard AutoAttack and
    every sanity check passed."""
    mnist = ROOT / "docs" / "runs" / "mnist"
    published = export.read_compared_with(str(PUBLISHED))
    runs = comparison.load_runs([str(mnist / "pgd_at"), str(mnist / "pgd_at_amp")], published)
    assert (mnist / "comparison.md").read_text() == comparison.comparison_markdown(runs, published)
    for run in runs:
        assert run.report["num_examples"] == 10000
        assert run.report["checks_passed"], f"{run.name}: evaluation sanity checks failed"
        assert run.report["attacks"]["autoattack"]["settings"]["version"] == "standard"
        assert run.summary["evaluation"]["holdout_examples"] == 5000  # best chosen off the test set
