"""atamp_tf.train end to end: the run directory, resume after SIGKILL, flagfile smoke runs."""
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from absl import flags

from atamp_tf import data, plots, provenance, rundir
from atamp_tf.train import callbacks, training
from atamp_tf.train import flags as flags_def

FV = flags_def.define_flags(flags.FlagValues())  # not absl's global FLAGS: no clashes
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG = b"\x89PNG\r\n\x1a\n"
TINY = ["--dataset=digits", "--arch=small_cnn", "--width=4", "--batchnorm", "--eps=0.1",
        "--step_size=0.05", "--attack_steps=2", "--eval_attack_steps=2", "--batch_size=32",
        "--crop_padding=1", "--noflip", "--eval_test_examples=40", "--eval_train_examples=24",
        "--eval_batch_size=16", "--lr=0.05", "--amp_delta=0.1", "--amp_warmup_epochs=1"]


def parse(*args):
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        flags_def.parse(["train", *args], FV)
        config, recorded = flags_def.config_from_flags(FV)
        return config, flags_def.flagfile_text(recorded, FV)
    finally:
        os.chdir(cwd)


def run_training(*args):
    config, text = parse(*args)
    run = training.setup(config, text)
    summary = training.fit(run, verbose=0)
    return run, summary


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    run, summary = run_training(*TINY, "--epochs=2", "--steps_per_epoch=3", "--lr_boundaries=1",
                                f"--out_dir={out}")
    return out, run, summary


def test_run_directory_has_every_file(tiny_run):
    out, _, _ = tiny_run
    for name in ("flags.cfg", "run_config.json", "metrics.csv", "summary.json",
                 "checkpoints/best.keras", "checkpoints/last.keras", "plots/accuracy.png",
                 "state/latest"):
        assert (out / name).is_file(), name
    assert (out / "plots/accuracy.png").read_bytes()[:8] == PNG
    # the finished run keeps only the state's record, not its weights
    assert not list((out / "state").rglob("*.weights.h5"))


def test_metrics_csv_has_one_row_per_epoch(tiny_run):
    out, _, _ = tiny_run
    with open(out / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == rundir.METRICS_COLUMNS
        rows = list(reader)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    # the lr drops at the boundary epoch 1, per step: epoch 2 starts at lr * 0.1
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.05, 0.005])
    for r in rows:
        for key in ("train_natural_acc", "train_robust_acc", "test_natural_acc",
                    "test_robust_acc"):
            assert 0.0 <= float(r[key]) <= 1.0
        assert float(r["robust_gap"]) == pytest.approx(
            float(r["train_robust_acc"]) - float(r["test_robust_acc"]), abs=1e-5)
        assert float(r["robust_gap"]) <= 1 and float(r["seconds"]) > 0
        assert float(r["train_loss"]) > 0


def test_summary_is_consistent_with_metrics(tiny_run):
    out, _, summary = tiny_run
    rows = rundir.read_metrics(out / "metrics.csv")
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == summary
    best = max(rows, key=lambda r: (r["test_robust_acc"], -r["epoch"]))
    assert summary["best"]["epoch"] == best["epoch"]
    assert summary["best"]["test_robust_acc"] == pytest.approx(best["test_robust_acc"])
    assert summary["best"]["test_natural_acc"] == pytest.approx(best["test_natural_acc"])
    assert summary["last"]["epoch"] == 2
    assert summary["last"]["test_robust_acc"] == pytest.approx(rows[-1]["test_robust_acc"])
    assert summary["complete"] and summary["epochs_done"] == 2
    assert summary["evaluation"]["attack"] == "PGD-2"
    assert summary["evaluation"]["test_examples"] == 40


def test_flags_cfg_reproduces_the_settings(tiny_run):
    out, run, _ = tiny_run
    text = (out / "flags.cfg").read_text()
    assert text.startswith("#") and "python -m atamp_tf.train --flagfile=" in text
    again, _ = parse(f"--flagfile={out / 'flags.cfg'}")
    assert again == run.config
    assert "--eps=0.1" in text and "--nocrop" not in text and "--noflip" in text


def test_run_config_has_what_evaluate_and_export_read(tiny_run):
    out, _, _ = tiny_run
    config = json.loads((out / "run_config.json").read_text())
    assert config["dataset"] == "digits" and config["norm"] == "linf"
    assert config["eps"] == pytest.approx(0.1) and config["arch"] == "small_cnn"
    assert config["method"] == "at" and config["num_classes"] == 10
    assert config["input_shape"] == [8, 8, 1]
    assert (config["amp_delta"], config["amp_xi"], config["amp_steps"],
            config["amp_scope"]) == (0.1, 1.0, 1, "tensor")
    assert config["amp_warmup_steps"] == 3 and config["steps_per_epoch"] == 3
    assert config["code_versions"] == [{"from_epoch": 0,
                                        "code_version": provenance.code_version()}]


def test_code_versions_keep_which_code_trained_which_epochs(tmp_path, monkeypatch):
    path = tmp_path / "run_config.json"
    rundir.atomic_write_json(str(path), {"code_versions": [{"from_epoch": 0,
                                                            "code_version": "a"}]})
    monkeypatch.setattr(provenance, "code_version", lambda: "b")
    assert training.code_versions(str(path), 3) == [
        {"from_epoch": 0, "code_version": "a"}, {"from_epoch": 3, "code_version": "b"}]
    monkeypatch.setattr(provenance, "code_version", lambda: "a")
    assert training.code_versions(str(path), 3) == [{"from_epoch": 0, "code_version": "a"}]
    assert training.code_versions(str(path), 0) == [{"from_epoch": 0, "code_version": "a"}]


def test_checkpoints_load_predict_and_match_the_metrics(tiny_run):
    out, run, summary = tiny_run
    x, y = data.load_arrays("digits", "test", num_examples=40)
    last = keras.saving.load_model(out / "checkpoints/last.keras", compile=False)
    np.testing.assert_allclose(last.predict(x, verbose=0),
                               run.model.network.predict(x, verbose=0), atol=1e-5)
    best = keras.saving.load_model(out / "checkpoints/best.keras", compile=False)
    assert best.predict(x, verbose=0).shape == (40, 10)
    # best.keras is the network of the best epoch: re-evaluating it with the same seeded
    # PGD gives exactly the recorded accuracies.
    evaluator = callbacks.RobustEvaluator(best, x, y, norm="linf", eps=0.1, step_size=0.05,
                                          steps=2, batch_size=16, seed=run.config.seed * 2 + 1)
    nat, adv = evaluator()
    assert nat == pytest.approx(summary["best"]["test_natural_acc"])
    # the run's test and train evaluators shared one compiled graph, traced once
    epoch_evaluation = run.callbacks[0]
    assert epoch_evaluation.test._counts is epoch_evaluation.train._counts
    assert epoch_evaluation.test._counts.experimental_get_tracing_count() == 1
    assert adv == pytest.approx(summary["best"]["test_robust_acc"])


def test_rerun_of_a_finished_run_trains_nothing_and_other_flags_are_refused(tiny_run):
    out, _, _ = tiny_run
    before = (out / "metrics.csv").read_text()
    _, summary = run_training(*TINY, "--epochs=2", "--steps_per_epoch=3", "--lr_boundaries=1",
                              f"--out_dir={out}")
    assert (out / "metrics.csv").read_text() == before and summary["epochs_done"] == 2
    # where / how it runs may change on resume (here: the evaluation batch size)
    _, summary = run_training(*TINY, "--epochs=2", "--steps_per_epoch=3", "--lr_boundaries=1",
                              "--eval_batch_size=8", f"--out_dir={out}")
    assert summary["epochs_done"] == 2
    config, text = parse(*TINY, "--epochs=3", "--steps_per_epoch=3", "--lr_boundaries=1",
                         f"--out_dir={out}")
    with pytest.raises(ValueError, match="--out_dir.*--epochs=3"):
        training.setup(config, text)


def test_a_recorded_run_without_its_state_is_refused_and_left_as_it_was(tiny_run, tmp_path):
    """A run directory copied without state/ (e.g. a finished run's small files) is not
    trained again from epoch 0 over its records."""
    out, _, _ = tiny_run
    copy = tmp_path / "copied"
    copy.mkdir()
    for name in ("metrics.csv", "summary.json", "flags.cfg", "run_config.json"):
        (copy / name).write_bytes((out / name).read_bytes())
    config, text = parse(*TINY, "--epochs=2", "--steps_per_epoch=3", "--lr_boundaries=1",
                         f"--out_dir={copy}")
    with pytest.raises(ValueError, match=r"--out_dir: .*recorded run \(metrics.csv, "
                                         r"summary.json\) but no resume state"):
        training.setup(config, text)
    assert (copy / "metrics.csv").read_bytes() == (out / "metrics.csv").read_bytes()
    assert not (copy / "state").exists()


def test_compare_plot_of_several_runs(tiny_run, tmp_path):
    out, _, _ = tiny_run
    path = plots.compare_run_dirs([str(out), str(out)], str(tmp_path / "cmp.png"),
                                  labels=["a", "b"])
    assert open(path, "rb").read(8) == PNG
    with pytest.raises(ValueError, match="--run_dirs"):
        plots.compare_run_dirs([str(tmp_path)], str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match="--metric"):
        plots.compare_run_dirs([str(out)], str(tmp_path / "x.png"), metric="nope")


# ----- a held-out split selects the best epoch ----------------------------------------------
HOLDOUT = ["--holdout_examples=300", "--eval_holdout_examples=64"]
HOLDOUT_RUN = [*TINY, *HOLDOUT, "--amp_delta=0", "--eps=0.02", "--step_size=0.01", "--lr=0.1",
               "--notensorboard"]


@pytest.fixture(scope="module")
def holdout_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "holdout"
    run, summary = run_training(*HOLDOUT_RUN, "--epochs=4", "--steps_per_epoch=6",
                                f"--out_dir={out}")
    return out, run, summary


def test_holdout_columns_and_the_best_epoch_selected_on_them(holdout_run, capsys, tmp_path):
    out, run, summary = holdout_run
    with open(out / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == rundir.METRICS_COLUMNS + rundir.HOLDOUT_COLUMNS
        rows = [{k: float(v) for k, v in r.items()} for r in reader]
    assert all(0 <= r[k] <= 1 for r in rows for k in rundir.HOLDOUT_COLUMNS)
    assert summary["selected_on"] == "holdout"
    robust = [r["holdout_robust_acc"] for r in rows]
    assert summary["best"]["epoch"] == 1 + robust.index(max(robust))  # earliest on ties
    assert summary["best"]["holdout_robust_acc"] == pytest.approx(max(robust))
    assert summary["evaluation"]["holdout_examples"] == 64
    # best.keras is that epoch's network: the same seeded PGD on the same held-out examples
    # gives exactly the recorded held-out accuracies
    x, y = data.load_arrays("digits", "holdout", holdout=300, num_examples=64)
    best = keras.saving.load_model(out / "checkpoints/best.keras", compile=False)
    evaluator = callbacks.RobustEvaluator(
        best, x, y, norm="linf", eps=0.02, step_size=0.01, steps=2, batch_size=16,
        seed=run.config.seed * 2 + training.HOLDOUT_SEED_OFFSET)
    assert evaluator() == pytest.approx((summary["best"]["holdout_natural_acc"],
                                         summary["best"]["holdout_robust_acc"]))
    assert (out / "plots/accuracy.png").read_bytes()[:8] == PNG
    path = plots.compare_run_dirs([str(out)], str(tmp_path / "ho.png"), metric="holdout_robust_acc")
    assert open(path, "rb").read(8) == PNG
    # the closing log line says which split chose the best epoch
    print(training.summary_line(summary))
    assert "selected on the held-out robust accuracy" in capsys.readouterr().out


def test_training_leaves_the_held_out_examples_out():
    config, _ = parse(*HOLDOUT_RUN, "--epochs=1", "--steps_per_epoch=0")
    assert training.train_dataset(config, seed=0)[1] == (1437 - 300) // 32
    without, _ = parse(*TINY, "--epochs=1", "--steps_per_epoch=0")
    assert training.train_dataset(without, seed=0)[1] == 1437 // 32


@pytest.mark.parametrize("args,flag", [
    (["--holdout_examples=1437"], "--holdout_examples: holdout=1437 must be below the 1437"),
    (["--holdout_examples=400", "--train_examples=1100"], "--train_examples: num_examples=1100"),
])
def test_split_sizes_are_checked_before_training_naming_the_flag(args, flag, tmp_path):
    config, text = parse(*TINY, *args, "--epochs=1", f"--out_dir={tmp_path / 'run'}")
    with pytest.raises(ValueError, match=re.escape(flag)):
        training.setup(config, text)
    assert not (tmp_path / "run").exists()


def test_summary_selects_on_test_without_a_held_out_split():
    rows = [{"epoch": e, "test_robust_acc": t, "test_natural_acc": 0.5, "train_robust_acc": 0.5,
             "train_natural_acc": 0.5, "robust_gap": 0.0, "seconds": 1.0}
            for e, t in ((1, 0.2), (2, 0.4), (3, 0.3))]
    summary = rundir.summarize(rows, epochs=3, eval_info={})
    assert (summary["selected_on"], summary["best"]["epoch"]) == ("test", 2)
    assert "holdout_robust_acc" not in summary["best"]
    assert rundir.metrics_columns(rows) == rundir.METRICS_COLUMNS
    held = [dict(r, holdout_natural_acc=0.6, holdout_robust_acc=h)
            for r, h in zip(rows, (0.1, 0.2, 0.5))]
    summary = rundir.summarize(held, epochs=3, eval_info={})
    assert (summary["selected_on"], summary["best"]["epoch"]) == ("holdout", 3)
    assert summary["best"]["test_robust_acc"] == 0.3  # reported: the test value of that epoch


# ----- pieces -------------------------------------------------------------------------------
def test_lr_schedule_drops_on_the_first_step_of_the_boundary_epoch():
    config, _ = parse("--epochs=4", "--lr=0.1", "--lr_boundaries=0.5,3")
    schedule = training.lr_schedule(config, steps_per_epoch=5)
    lrs = [float(schedule(step)) for step in range(20)]
    assert lrs == pytest.approx([0.1] * 10 + [0.01] * 5 + [0.001] * 5)


def test_state_switch_is_atomic_and_restores_model_and_optimizer(tmp_path):
    config, _ = parse(*TINY, "--epochs=3")
    spec = data.get_spec("digits")
    model = training.build_model_and_optimizer(config, spec, steps_per_epoch=4)
    x, y = data.load_arrays("digits", "train", num_examples=32)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    state = tmp_path / "state"
    state.mkdir()
    rundir.save_state(str(state), model, {"epoch": 1, "history": []})
    saved = [w.copy() for w in model.get_weights()]
    # a kill while the next state is being written leaves a staging directory and an
    # unreferenced epoch directory behind: the resume state is still epoch 1's
    (state / ".staging123").mkdir()
    (state / "epoch_0002").mkdir()
    (state / "epoch_0002" / "state.json").write_text("{broken")
    meta = rundir.load_state_meta(str(state))
    assert meta["epoch"] == 1
    fresh = training.build_model_and_optimizer(config, spec, steps_per_epoch=4)
    assert int(fresh.optimizer.iterations) == 0
    assert rundir.restore_weights(meta, fresh)
    assert int(fresh.optimizer.iterations) == 2
    for a, b in zip(saved, fresh.get_weights()):
        np.testing.assert_array_equal(a, b)
    momenta = [v.numpy() for v in model.optimizer.variables]
    for a, b in zip(momenta, [v.numpy() for v in fresh.optimizer.variables]):
        np.testing.assert_array_equal(a, b)
    rundir.save_state(str(state), fresh, {"epoch": 2, "history": []})
    assert sorted(os.listdir(state)) == ["epoch_0002", "latest"]


def test_init_checkpoint_gets_a_new_head_for_other_classes(tmp_path):
    from atamp_tf.models import build_model
    net = build_model("small_cnn", input_shape=(8, 8, 1), num_classes=4, width=4)
    path = str(tmp_path / "pre.keras")
    net.save(path)
    loaded = training.load_init_network(path, data.get_spec("digits"), "small_cnn")
    assert loaded.output_shape == (None, 10)
    np.testing.assert_array_equal(loaded.get_layer("conv1").get_weights()[0],
                                  net.get_layer("conv1").get_weights()[0])
    with pytest.raises(ValueError, match="--arch"):
        training.load_init_network(path, data.get_spec("digits"), "wide_resnet")
    with pytest.raises(ValueError, match="--init_checkpoint"):
        training.load_init_network(path, data.get_spec("cifar10"), "small_cnn")


# ----- resume after SIGKILL -----------------------------------------------------------------
def _metric_rows(path):
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_killed_run_resumes_with_every_epoch_exactly_once(tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "atamp_tf.train", *TINY, "--epochs=3", "--steps_per_epoch=40",
           "--attack_steps=3", "--notensorboard", f"--out_dir={out}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while len(_metric_rows(out / "metrics.csv")) < 1 and proc.poll() is None:
        assert time.time() < deadline, "the first epoch never finished"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = _metric_rows(out / "metrics.csv")
    assert 1 <= len(first) < 3, "the kill must land before the end of the run"
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming after epoch {len(first)} of 3" in done.stdout
    rows = _metric_rows(out / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert rows[:len(first)] == first  # finished epochs are kept, not recomputed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["last"]["epoch"] == 3
    assert keras.saving.load_model(out / "checkpoints" / "last.keras").output_shape == (None, 10)


MIRRORED = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from absl import app
from atamp_tf.train import cli as train
app.run(train.main, argv=["train", *sys.argv[1:]])
"""


def test_mirrored_strategy_over_two_logical_cpus(tmp_path):
    out = tmp_path / "mirrored"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-c", MIRRORED, *TINY, "--epochs=1",
                           "--steps_per_epoch=2", "--strategy=mirrored",
                           "--amp_warmup_epochs=1",
                           "--verbose=0", f"--out_dir={out}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "run_config.json").read_text())["num_replicas"] == 2
    assert json.loads((out / "summary.json").read_text())["complete"]


# ----- flagfiles with --smoke ---------------------------------------------------------------
@pytest.fixture(scope="module")
def fake_npz(tmp_path_factory):
    """Random 32x32x3 arrays in the npz layout for svhn and cifar10, plus RST extra data."""
    root = tmp_path_factory.mktemp("npz")
    rng = np.random.default_rng(0)
    for name in ("svhn", "cifar10"):
        (root / name).mkdir()
        for split in ("train", "test"):
            np.savez(root / name / f"{split}.npz",
                     x=rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8),
                     y=rng.integers(0, 10, 32))
    np.savez(root / "extra.npz", x=rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8),
             y=rng.integers(0, 10, 32))
    return root


@pytest.mark.parametrize("flagfile,extra", [
    ("flags/table1/svhn_l2_pgd_at_amp.cfg", []),
    ("flags/table3/rst_amp.cfg", ["--extra_npz={npz}/extra.npz"]),
    ("flags/table3/pretraining_amp.cfg", ["--init_checkpoint={pre}"]),
])
def test_flagfiles_run_with_smoke(flagfile, extra, fake_npz, tmp_path):
    pre = tmp_path / "pre.keras"
    if "pretraining" in flagfile:  # a pre-trained WRN with 100 classes: the head is replaced
        from atamp_tf.models import build_model
        build_model("wide_resnet", input_shape=(32, 32, 3), num_classes=100, width=1,
                    depth=10).save(pre)
    extra = [e.format(npz=fake_npz, pre=pre) for e in extra]
    out = tmp_path / "smoke"
    _, summary = run_training(f"--flagfile={flagfile}", "--smoke", f"--npz_dir={fake_npz}",
                              "--notensorboard", *extra, f"--out_dir={out}")
    assert summary["complete"] and summary["epochs"] == 2
    assert [r["epoch"] for r in rundir.read_metrics(out / "metrics.csv")] == [1, 2]
    assert "--smoke" in (out / "flags.cfg").read_text()


def test_resume_keeps_the_holdout_columns_and_selection(tmp_path, monkeypatch, capsys):
    """Killed after epoch 2's state (before its files): the resumed run carries the held-out
    columns of the restored rows and selects its best epoch on them."""
    out = tmp_path / "resumed"
    args = (*HOLDOUT_RUN, "--epochs=3", "--steps_per_epoch=2", f"--out_dir={out}")
    original = callbacks.RunRecorder.write_outputs

    def dies_at_epoch_2(self, network, *, current_epoch):
        if current_epoch == 2:
            raise KeyboardInterrupt("killed")
        return original(self, network, current_epoch=current_epoch)

    monkeypatch.setattr(callbacks.RunRecorder, "write_outputs", dies_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run_training(*args)
    first = _metric_rows(out / "metrics.csv")
    assert [int(r["epoch"]) for r in first] == [1] and "holdout_robust_acc" in first[0]
    monkeypatch.setattr(callbacks.RunRecorder, "write_outputs", original)
    _, summary = run_training(*args)
    assert "resuming after epoch 2 of 3" in capsys.readouterr().out
    rows = _metric_rows(out / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3] and rows[0] == first[0]
    assert all(r["holdout_robust_acc"] != "" for r in rows)
    robust = [float(r["holdout_robust_acc"]) for r in rows]
    assert summary["selected_on"] == "holdout"
    assert summary["best"]["epoch"] == 1 + robust.index(max(robust))


SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.mark.skipif(not (SHARED_DATA / "mnist").is_dir(),
                    reason=f"the shared MNIST npz files are not at {SHARED_DATA}")
@pytest.mark.parametrize("name", ["pgd_at", "pgd_at_amp", "trades", "trades_amp"])
def test_mnist_flagfiles_run_with_smoke(name, tmp_path, monkeypatch):
    """flags/mnist/ end to end on the real MNIST files: held-out selection, eps ramp."""
    monkeypatch.setenv(data.NPZ_DIR_VARIABLE, str(SHARED_DATA))
    out = tmp_path / name
    run, summary = run_training(f"--flagfile=flags/mnist/{name}.cfg", "--smoke",
                                "--notensorboard", f"--out_dir={out}")
    assert summary["complete"] and summary["selected_on"] == "holdout"
    assert summary["evaluation"]["holdout_examples"] == 16
    rows = rundir.read_metrics(out / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(r["holdout_robust_acc"] is not None for r in rows)
    config = json.loads((out / "run_config.json").read_text())
    assert config["holdout_examples"] == 5000 and config["eps_ramp_steps"] == 2  # 1 smoke epoch
    assert run.model.eps_ramp_steps == 2 and run.model.network.input_shape == (None, 28, 28, 1)


def test_kill_after_the_last_state_save_still_completes_the_run(tmp_path, monkeypatch):
    """A kill between the final epoch's state save and its files: the rerun writes them."""
    out = tmp_path / "late_kill"
    args = (*TINY, "--epochs=2", "--steps_per_epoch=2", "--notensorboard", f"--out_dir={out}")
    original = callbacks.RunRecorder.write_outputs

    def dies_at_the_end(self, network, *, current_epoch):
        if current_epoch == 2:
            raise KeyboardInterrupt("killed")
        return original(self, network, current_epoch=current_epoch)

    monkeypatch.setattr(callbacks.RunRecorder, "write_outputs", dies_at_the_end)
    with pytest.raises(KeyboardInterrupt):
        run_training(*args)
    assert [int(r["epoch"]) for r in _metric_rows(out / "metrics.csv")] == [1]
    monkeypatch.setattr(callbacks.RunRecorder, "write_outputs", original)
    run, summary = run_training(*args)
    assert [int(r["epoch"]) for r in _metric_rows(out / "metrics.csv")] == [1, 2]
    assert summary["complete"] and summary["last"]["epoch"] == 2
    last = keras.saving.load_model(out / "checkpoints" / "last.keras")
    for a, b in zip(last.weights, run.model.network.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_a_run_directory_trains_in_one_process_at_a_time(tmp_path, monkeypatch):
    """A second training of a directory another process holds is refused naming --out_dir,
    before it writes anything; the lock goes with its holder (a SIGKILLed holder's too: the
    killed-run test resumes right after the kill)."""
    out = tmp_path / "locked"
    out.mkdir()
    holder = rundir.lock_run_dir(str(out))
    try:
        with pytest.raises(ValueError, match=r"--out_dir: .*being trained by another process "
                                             rf"\(pid {os.getpid()}\)"):
            run_training(*TINY, "--epochs=1", "--steps_per_epoch=1", f"--out_dir={out}")
        assert sorted(p.name for p in out.iterdir()) == [".lock", "checkpoints", "plots",
                                                         "state"]  # no file written
    finally:
        holder.close()
    # State that changed between the first read and the lock: refused, not trained over
    reads = iter([None, {"epoch": 1}])
    monkeypatch.setattr(rundir, "load_state_meta", lambda _: next(reads))
    with pytest.raises(ValueError, match="another process trained .* while this one started"):
        run_training(*TINY, "--epochs=1", "--steps_per_epoch=1", f"--out_dir={out}")
    monkeypatch.undo()
    _, summary = run_training(*TINY, "--epochs=1", "--steps_per_epoch=1", f"--out_dir={out}")
    assert summary["complete"]
    again = rundir.lock_run_dir(str(out))  # fit released it
    again.close()
