"""python -m atamp_tf.evaluate end to end on a .keras file, an .onnx file (with and without
its .keras source) and a run directory; flag errors; report.json / report.md contents."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from atamp_tf import checkpoints, data, evaluate
from atamp_tf.attacks import registry, suite
from atamp_tf.attacks import spsa as spsa_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE3_HEADER = ("| Defense | Natural | FGSM | PGD-20 | PGD-100 | CW-inf | SPSA | AutoAttack |")
REPORT_KEYS = {"model", "dataset", "split", "num_examples", "examples", "threat_model",
               "attacks", "skipped", "accuracy", "worst_case", "checks", "seconds"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small CNN trained on digits, saved as .keras and exported to .onnx with tf2onnx."""
    import tf2onnx  # pylint: disable=import-outside-toplevel
    x, y = data.load_arrays("digits", "train")
    keras.utils.set_random_seed(0)
    # functional, like the run directory's checkpoints (tf2onnx 1.17's from_keras fails on a
    # Keras 3 Sequential model: KeyError on its keras_tensor output name)
    inputs = keras.Input((8, 8, 1), name="images")
    hidden = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    hidden = keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(hidden))
    model = keras.Model(inputs, keras.layers.Dense(10)(hidden))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=15, batch_size=64, verbose=0)
    root = tmp_path_factory.mktemp("models")
    keras_path, onnx_path = str(root / "digits_cnn.keras"), str(root / "digits_cnn.onnx")
    model.save(keras_path)
    spec = (tf.TensorSpec((None, 8, 8, 1), tf.float32, name="images"),)
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=onnx_path)
    return {"model": model, "keras": keras_path, "onnx": onnx_path}


def _first(n):
    return data.load_arrays("digits", "test", num_examples=n)


def _cli(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": REPO}
    return subprocess.run([sys.executable, "-m", "atamp_tf.evaluate", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)


def _check_report_files(out_dir, n):
    with open(os.path.join(out_dir, "report.json"), encoding="utf-8") as f:
        report = json.load(f)
    assert REPORT_KEYS <= set(report)
    assert report["num_examples"] == n
    assert report["examples"] == f"the first {n} examples of the test split in its own order"
    assert report["split"] == "test" and report["dataset"] == "digits"
    for name, acc in report["accuracy"].items():
        assert 0.0 <= acc <= 1.0
        assert report["attacks"][name]["accuracy"] == acc
        assert "settings" in report["attacks"][name]
    assert report["worst_case"]["accuracy"] <= min(report["accuracy"].values())
    assert all(set(c) == {"name", "passed", "detail"} for c in report["checks"])
    per_example = np.load(os.path.join(out_dir, "per_example.npz"))
    robust = np.logical_and.reduce([per_example[f"correct_{k}"] for k in report["accuracy"]])
    assert report["worst_case"]["num_robust"] == int(robust.sum())
    with open(os.path.join(out_dir, "leaderboard.json"), encoding="utf-8") as f:
        leaderboard = json.load(f)
    assert leaderboard["clean_acc"] == f"{100 * report['accuracy']['natural']:.2f}"
    assert leaderboard["n_examples"] == n and leaderboard["examples"]["indices"] == f"0-{n - 1}"
    with open(os.path.join(out_dir, "report.md"), encoding="utf-8") as f:
        markdown = f.read()
    return report, markdown


def _report(aa_version="standard", aa=0.40):
    attacks = {"autoattack": {"settings": {"version": aa_version}}} if aa_version else {}
    accuracy = {"natural": 0.9, "pgd20": 0.45, **({"autoattack": aa} if aa_version else {})}
    return {"model_name": "m", "dataset": "cifar10", "split": "test", "num_examples": 1000,
            "threat_model": {"norm": "linf", "eps": 8 / 255, "eps_text": "8/255"},
            "accuracy": accuracy, "attacks": attacks}


def test_leaderboard_entry_has_robustbench_fields_and_only_a_standard_autoattack():
    config = {"arch": "preact_resnet18", "width": 16, "method": "at"}
    entry = evaluate.leaderboard_entry(_report(), config)
    assert {"link", "name", "authors", "additional_data", "number_forward_passes", "dataset",
            "venue", "architecture", "eps", "clean_acc", "reported", "autoattack_acc"} <= set(entry)
    assert (entry["clean_acc"], entry["autoattack_acc"], entry["eps"]) == ("90.00", "40.00",
                                                                         "8/255")
    assert entry["threat_model"] == "Linf" and entry["architecture"] == "preact_resnet18-w16"
    assert entry["additional_data"] is False and entry["examples"]["indices"] == "0-999"
    assert evaluate.leaderboard_entry(_report(), dict(config, method="rst"))["additional_data"]
    custom = evaluate.leaderboard_entry(_report("custom"), config)
    assert "autoattack_acc" not in custom and "'custom'" in custom["footnote"]
    none = evaluate.leaderboard_entry(_report(None), {})
    assert "autoattack_acc" not in none and none["architecture"] == "unknown"
    assert none["additional_data"] is None and "additional_data unknown" in none["footnote"]
    # the test split only; a subset and failed sanity checks are said
    train = evaluate.leaderboard_entry(dict(_report(), split="train"), config)
    assert "autoattack_acc" not in train and "'train' split, not the test set" in train["footnote"]
    assert "a subset: 1000 examples" in entry["footnote"]
    whole = dict(_report(), examples="all 10000 examples of the test split in its own order",
                 checks=[{"name": "autoattack:square_after_white_box", "passed": False}])
    whole = evaluate.leaderboard_entry(whole, config)
    assert whole["autoattack_acc"] == "40.00"
    assert whole["footnote"] == ("sanity checks failed: autoattack:square_after_white_box "
                                 "(report.md)")


def test_cli_on_a_keras_file(saved, tmp_path):
    out = tmp_path / "eval"
    result = _cli(f"--model={saved['keras']}", "--dataset=digits", "--num_examples=40",
                  "--attacks=fgsm,pgd20,cw_inf,spsa", "--eps=0.1", "--spsa_steps=5",
                  "--batch_size=20", f"--output_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    report, markdown = _check_report_files(out, 40)
    assert set(report["accuracy"]) == {"natural", "fgsm", "pgd20", "cw_inf", "spsa"}
    assert report["threat_model"] == {"norm": "linf", "eps": 0.1, "eps_text": "0.1"}
    assert report["attacks"]["pgd20"]["settings"]["steps"] == 20
    assert report["attacks"]["pgd20"]["settings"]["step_size"] == pytest.approx(0.025)
    assert report["attacks"]["spsa"]["settings"]["delta"] == 0.001
    x, y = _first(40)
    natural = float((saved["model"].predict(x, verbose=0).argmax(1) == y).mean())
    assert report["accuracy"]["natural"] == pytest.approx(natural)
    assert report["accuracy"]["pgd20"] < natural
    assert TABLE3_HEADER in markdown
    assert f"| {100 * natural:.2f} |" in markdown
    assert TABLE3_HEADER in result.stdout  # the table is printed too


def test_cli_on_an_onnx_file_runs_gradient_free_attacks_and_says_what_it_skipped(saved,
                                                                                tmp_path):
    out = tmp_path / "eval"
    pytest.importorskip("atamp_tf.attacks.autoattack")  # Square comes from it
    result = _cli(f"--model={saved['onnx']}", "--dataset=digits", "--num_examples=30",
                  "--attacks=fgsm,pgd100,spsa,autoattack,square", "--eps=8/255",
                  "--spsa_steps=3", "--square_queries=30", f"--output_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    report, markdown = _check_report_files(out, 30)
    assert set(report["accuracy"]) == {"natural", "spsa", "square"}
    assert report["attacks"]["spsa"]["run_on"] == "onnx"
    assert report["attacks"]["square"]["run_on"] == "onnx"
    assert report["attacks"]["square"]["autoattack_settings"]["components"] == ["square"]
    assert set(report["skipped"]) == {"fgsm", "pgd100", "autoattack"}
    assert "--keras_model" in report["skipped"]["fgsm"]
    assert "`square`" in report["skipped"]["autoattack"]
    assert report["threat_model"]["eps"] == pytest.approx(8 / 255)
    x, y = _first(30)
    natural = float((saved["model"].predict(x, verbose=0).argmax(1) == y).mean())
    assert report["accuracy"]["natural"] == pytest.approx(natural)
    assert "Skipped" in markdown and "fgsm" in markdown


def test_onnx_with_its_keras_source_runs_white_box_on_keras(saved, tmp_path):
    report = evaluate.evaluate_path(
        saved["onnx"], keras_model=saved["keras"], dataset="digits", num_examples=30,
        attacks="fgsm,spsa", eps="0.1", output_dir=str(tmp_path), verbose=False,
        settings=suite.SuiteSettings(spsa_steps=3))
    assert report["attacks"]["fgsm"]["run_on"] == "keras"
    assert report["attacks"]["spsa"]["run_on"] == "onnx"
    parity = [c for c in report["checks"] if c["name"] == "onnx_keras_parity"]
    assert parity and parity[0]["passed"]
    assert not report["skipped"]


def test_spsa_through_onnxruntime_equals_spsa_on_keras(saved):
    x, y = _first(8)
    fn = evaluate.numpy_as_tf_logits_fn(evaluate.onnx_numpy_fn(
        evaluate.onnx_session(saved["onnx"])), 10)
    kwargs = dict(eps=0.1, steps=4, seed=[3, 1], early_stop=False)
    on_onnx = tf.function(lambda a, b: spsa_lib.spsa(fn, a, b, **kwargs))(x, y).numpy()
    on_keras = spsa_lib.spsa(lambda a: saved["model"](a, training=False), x, y,
                             **kwargs).numpy()
    assert np.abs(on_onnx - x).max() > 0.02
    # same draws; logits agree to ~1e-6, so the paths agree except where Adam amplifies noise
    assert np.mean(np.abs(on_onnx - on_keras) < 1e-4) > 0.99


def test_run_directory_supplies_dataset_and_threat_model(saved, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    saved["model"].save(str(run / "checkpoints" / "last.keras"))
    (run / "run_config.json").write_text(json.dumps(
        {"dataset": "digits", "norm": "l2", "eps": 1.0, "npz_dir": None}))
    with pytest.raises(ValueError, match="best.keras"):
        evaluate.evaluate_path(str(run), attacks="fgsm")
    report = evaluate.evaluate_path(str(run), checkpoint="last", attacks="fgsm,cw_l2",
                                    num_examples=20, verbose=False)
    assert report["threat_model"]["norm"] == "l2" and report["threat_model"]["eps"] == 1.0
    assert report["attacks"]["cw_l2"]["settings"]["step_size"] == pytest.approx(15 / 128)
    assert os.path.isfile(run / "eval_last" / "report.json")  # last: its own default output
    assert not (run / "eval").exists()  # best's default is left alone


def test_parse_eps_accepts_numbers_and_fractions_and_rejects_the_rest():
    assert evaluate.parse_fraction("8/255", "eps") == pytest.approx(8 / 255)
    assert evaluate.parse_fraction("0.5", "eps") == 0.5
    assert evaluate.parse_fraction("0", "eps") == 0.0
    for bad in ("-0.1", "-8/255", "abc", "1/0", "nan", "inf", "1/2/3", ""):
        with pytest.raises(ValueError, match="--eps"):
            evaluate.parse_fraction(bad, "eps")


def test_parse_attacks():
    assert evaluate.parse_attacks(None, "linf") == registry.table3_attacks("linf")
    assert "cw_l2" in evaluate.parse_attacks(None, "l2")
    assert evaluate.parse_attacks(None, "linf", onnx=True)[-1] == "square"
    assert evaluate.parse_attacks("spsa, fgsm", "linf") == ("natural", "fgsm", "spsa")
    with pytest.raises(ValueError, match="--attacks.*pgd7"):
        evaluate.parse_attacks("fgsm,pgd7", "linf")
    with pytest.raises(ValueError, match="--attacks.*cw_l2"):
        evaluate.parse_attacks("cw_inf", "l2")


@pytest.mark.parametrize("bad,message", [
    ({"attacks": "fgsm,deepfool"}, "--attacks: unknown attack 'deepfool'"),
    ({"eps": "-0.03"}, "--eps must be a non-negative number"),
    ({"norm": "l1"}, "--norm must be one of linf, l2"),
    ({"num_examples": 0}, "--num_examples must be"),
    ({"settings": {"spsa_samples": 255}}, "--spsa_samples"),
    ({"settings": {"pgd_step_size": -0.01}}, "--pgd_step_size"),
    ({"settings": {"autoattack_batch_size": 0}}, "--autoattack_batch_size"),
])
def test_bad_arguments_raise_errors_naming_the_flag(saved, tmp_path, bad, message):
    with pytest.raises(ValueError, match=message):
        if "settings" in bad:
            suite.SuiteSettings(**bad["settings"])
        else:
            evaluate.evaluate_path(saved["keras"], dataset="digits", output_dir=str(tmp_path),
                                   **bad)
    assert not os.path.exists(tmp_path / "report.json")


def test_cli_rejects_a_bad_flag_with_a_message_naming_it(saved, tmp_path):
    result = _cli(f"--model={saved['keras']}", "--dataset=digits", "--norm=l1",
                  f"--output_dir={tmp_path}")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "--norm=l1" in errors[0] and "linf|l2" in errors[0], errors
    assert not os.path.exists(tmp_path / "report.json")


def test_importing_the_library_defines_no_flags():
    defined_by = flags.FLAGS.flags_by_module_dict()
    assert not defined_by.get("atamp_tf.evaluate")  # they live in atamp_tf.evaluate.cli
    assert not defined_by.get(evaluate.__name__)


def test_bad_model_paths(saved, tmp_path):
    with pytest.raises(ValueError, match="--model"):
        evaluate.resolve_model(str(tmp_path / "missing.keras"))
    with pytest.raises(ValueError, match="--keras_model"):
        evaluate.resolve_model(saved["keras"], keras_model=saved["keras"])


def test_autoattack_components_subset_runs_only_those_and_says_so(saved):
    """--autoattack_components: a subset runs in order and the report names what ran."""
    x, y = _first(40)
    settings = suite.SuiteSettings(autoattack_components=("apgd-ce",), autoattack_iters=5,
                                   autoattack_batch_size=16)
    report = evaluate.evaluate_model(x, y, norm="linf", eps=0.1, attacks="autoattack",
                                     keras_model=saved["model"], settings=settings,
                                     verbose=False)
    attack = report["attacks"]["autoattack"]
    assert attack["autoattack_settings"]["batch_size"] == 16  # its own, not the suite's 128
    assert attack["autoattack_settings"]["components"] == ["apgd-ce"]
    assert attack["settings"]["components"] == ["apgd-ce"]
    assert set(attack["accuracy_after"]) == {"clean", "apgd-ce"}
    assert report["accuracy"]["autoattack"] <= report["accuracy"]["natural"]
    # the reference's model checks ran on the Keras model, and pass on this plain network
    model_checks = {c["name"]: c["passed"] for c in report["checks"]
                    if c["name"].startswith("model:")}
    assert model_checks == {"model:deterministic": True, "model:outputs_logits": True,
                            "model:nonzero_gradients": True,
                            "model:unbounded_attack_succeeds": True}
    # a reduced AutoAttack is never labelled standard (the reference's name: custom)
    assert attack["settings"]["version"] == attack["autoattack_settings"]["version"] == "custom"
    with pytest.raises(ValueError, match="components"):
        evaluate.evaluate_model(x, y, norm="linf", eps=0.1, attacks="autoattack",
                                keras_model=saved["model"], verbose=False,
                                settings=suite.SuiteSettings(autoattack_components=("fab-x",)))


def test_a_killed_evaluation_resumes_and_matches_an_uninterrupted_one(saved, tmp_path):
    """SIGKILL during AutoAttack, the same command again: the finished attacks are read back,
    AutoAttack continues after its last saved batch, and every per-example result equals an
    uninterrupted run's."""
    import signal
    import time
    common = dict(num_examples=120, attacks="natural,pgd20,autoattack", batch_size=60)
    aa = dict(autoattack_iters=10, square_queries=200, autoattack_batch_size=20)
    whole = evaluate.evaluate_path(saved["keras"], dataset="digits", norm="linf", eps="0.1",
                                   output_dir=str(tmp_path / "whole"), verbose=False,
                                   settings=suite.SuiteSettings(**aa), **common)
    out = tmp_path / "killed"
    args = [f"--model={saved['keras']}", "--dataset=digits", "--norm=linf", "--eps=0.1",
            f"--num_examples={common['num_examples']}", f"--attacks={common['attacks']}",
            f"--batch_size={common['batch_size']}", f"--output_dir={out}",
            *(f"--{k}={v}" for k, v in aa.items())]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": REPO}
    proc = subprocess.Popen([sys.executable, "-m", "atamp_tf.evaluate", *args], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    batches = out / "partial" / "autoattack.batches.npz"
    deadline = time.time() + 300
    while not batches.exists() and proc.poll() is None:
        assert time.time() < deadline, "AutoAttack never saved a batch"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "report.json").exists(), "the kill must land before the end"
    with np.load(out / "partial" / "pgd20.done.npz") as kept:  # the finished attack was kept,
        assert "x_adv" not in kept.files and kept["correct"].shape == (120,)  # as its results
    with np.load(batches) as progress:  # of AutoAttack's outputs only those that changed
        assert len(progress["changed"]) == len(progress["changed_rows"])
        assert len(progress["changed"]) <= (~progress["robust"]).sum() < 120
    done = _cli(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "finished in an earlier run" in done.stderr
    assert "AutoAttack resumes at" in done.stdout  # after its last saved batch, not afresh
    assert not (out / "partial").exists()  # removed once the report is written
    resumed = json.loads((out / "report.json").read_text())
    assert resumed["accuracy"] == whole["accuracy"]
    ours = np.load(out / "per_example.npz")
    reference = np.load(tmp_path / "whole" / "per_example.npz")
    assert sorted(ours.files) == sorted(reference.files)
    for name in reference.files:
        np.testing.assert_array_equal(ours[name], reference[name], err_msg=name)
    ours, reference = (np.load(d / "adversarial.npz") for d in (out, tmp_path / "whole"))
    assert sorted(ours.files) == sorted(reference.files) and reference.files
    for name in reference.files:  # AutoAttack's outputs rebuilt from the changed rows
        np.testing.assert_array_equal(ours[name], reference[name], err_msg=name)


def test_a_mixed_precision_checkpoint_is_attacked_in_float32():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        inputs = keras.Input((8, 8, 1))
        hidden = keras.layers.Dense(16, activation="relu")(keras.layers.Flatten()(inputs))
        mixed = keras.Model(inputs, keras.layers.Dense(10)(hidden))
    finally:
        keras.config.set_dtype_policy("float32")
    full, had = evaluate.as_float32(mixed)
    assert "bfloat16" in had and {layer.compute_dtype for layer in full.layers} == {"float32"}
    x, y = _first(50)
    np.testing.assert_allclose(full(x).numpy(), mixed(x).numpy().astype(np.float32), atol=0.1)
    assert full(x).dtype == tf.float32
    report = evaluate.evaluate_model(x, y, norm="linf", eps=0.1, attacks="natural,fgsm",
                                     keras_model=mixed, verbose=False)
    assert report["precision"]["model_compute_dtypes"] == had
    assert report["precision"]["compute_dtype"] == "float32"
    assert not tf.config.experimental.tensor_float_32_execution_enabled()
    plain, dtypes = evaluate.as_float32(full)
    assert plain is full and dtypes == ["float32"]


def test_state_of_older_code_is_recomputed_not_misread(saved, tmp_path):
    """A finished attack saved in the older format (the whole x_adv) is run again."""
    x, y = _first(40)
    common = dict(norm="linf", eps=0.1, attacks="natural,fgsm", keras_model=saved["model"],
                  verbose=False, state_dir=str(tmp_path))
    first = evaluate.evaluate_model(x, y, **common)
    path = tmp_path / "fgsm.done.npz"
    with np.load(path) as kept:
        meta = json.loads(str(kept["meta"]))
    np.savez(path, meta=np.array(json.dumps({"extra": {}, "seconds": 1.0, "key": meta["key"]})),
             x_adv=np.zeros_like(x))  # the format before session 9
    again = evaluate.evaluate_model(x, y, **common)
    assert again["accuracy"] == first["accuracy"]
    np.testing.assert_array_equal(again["per_example"]["fgsm"], first["per_example"]["fgsm"])
    with np.load(path) as kept:
        assert "correct" in kept.files  # saved again, in the current format


def test_no_state_dir_saves_nothing_and_a_bare_report_still_writes(saved, tmp_path,
                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, y = _first(20)
    report = evaluate.evaluate_model(x, y, norm="linf", eps=0.1, attacks="natural,fgsm",
                                     keras_model=saved["model"], verbose=False, state_dir="")
    assert os.listdir(tmp_path) == []  # "" is no state directory, not the current one
    paths = evaluate.write_report(report, str(tmp_path / "out"))  # no dataset/split keys
    assert json.loads(open(paths["leaderboard"]).read())["n_examples"] == 20


def test_best_and_last_of_a_run_have_their_own_default_output(saved, tmp_path):
    """Evaluating last after best does not overwrite best's report (run/eval vs eval_last)."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    model = keras.saving.load_model(saved["keras"], compile=False)
    model.save(run / "checkpoints" / "best.keras")
    model.save(run / "checkpoints" / "last.keras")
    (run / "run_config.json").write_text(json.dumps({"dataset": "digits", "norm": "linf",
                                                     "eps": 0.1}))
    for checkpoint, where in (("best", "eval"), ("last", "eval_last")):
        evaluate.evaluate_path(str(run), checkpoint=checkpoint, attacks="natural",
                               num_examples=20, verbose=False)
        report = json.loads((run / where / "report.json").read_text())
        assert report["keras_model"].endswith(f"{checkpoint}.keras")
    assert json.loads((run / "eval" / "report.json").read_text())["keras_model"].endswith(
        "best.keras")


def test_the_report_names_the_code_and_a_resume_across_a_code_change_says_so(saved, tmp_path,
                                                                                 monkeypatch):
    from atamp_tf import provenance
    common = dict(dataset="digits", attacks="natural", num_examples=10, norm="linf", eps=0.1,
                  verbose=False)
    report = evaluate.evaluate_path(saved["keras"], output_dir=str(tmp_path / "a"), **common)
    assert report["code_version"] == provenance.code_version()
    assert "code_version_started" not in report
    (tmp_path / "b" / "partial").mkdir(parents=True)  # an evaluation started by older code
    (tmp_path / "b" / "partial" / "code_version.txt").write_text("0123abc\n")
    resumed = evaluate.evaluate_path(saved["keras"], output_dir=str(tmp_path / "b"), **common)
    assert resumed["code_version_started"] == "0123abc"
    monkeypatch.setattr(provenance, "git_code_version",
                        lambda: (_ for _ in ()).throw(ValueError("not a checkout")))
    assert provenance.code_version().endswith("(installed, not a git checkout)")


def test_parse_indices_and_their_ranges(tmp_path):
    assert checkpoints.parse_indices("7, 3,3 10\n9") == [3, 7, 9, 10]
    listed = tmp_path / "indices.txt"
    listed.write_text("5\n1\n2\n")
    assert checkpoints.parse_indices(str(listed)) == [1, 2, 5]
    for bad in ("", "3,x", "-1,2", "1.5"):
        with pytest.raises(ValueError, match="^--indices: expected whole numbers"):
            checkpoints.parse_indices(bad)
    assert checkpoints.index_ranges([0, 1, 2, 7, 9, 10]) == "0-2, 7, 9-10"
    assert checkpoints.index_ranges([4]) == "4"


def test_indices_evaluate_exactly_those_examples_and_say_which(saved, tmp_path):
    """An evaluation of chosen positions: the same per-example results as the whole split's at
    those positions (FGSM is deterministic), the positions in the report and leaderboard."""
    indices = [0, 1, 2, 50, 51, 300]
    common = dict(dataset="digits", norm="linf", eps="0.1", attacks="natural,fgsm",
                  batch_size=64)
    chosen = evaluate.evaluate_path(saved["keras"], indices=indices,
                                    output_dir=str(tmp_path / "chosen"), **common)
    evaluate.evaluate_path(saved["keras"], output_dir=str(tmp_path / "whole"), **common)
    assert chosen["num_examples"] == 6 and chosen["example_indices"] == indices
    assert chosen["examples"] == ("the 6 examples at positions 0-2, 50-51, 300 of the test "
                                  "split in its own order")
    arrays = [np.load(tmp_path / d / "per_example.npz") for d in ("chosen", "whole")]
    for name in ("correct_natural", "correct_fgsm"):
        np.testing.assert_array_equal(arrays[0][name], arrays[1][name][indices])
    with open(tmp_path / "chosen" / "leaderboard.json", encoding="utf-8") as f:
        assert json.load(f)["examples"]["indices"] == "0-2, 50-51, 300"
    with pytest.raises(ValueError, match="--indices: 5000 is past the last example"):
        evaluate.evaluate_path(saved["keras"], indices=[1, 5000], output_dir=str(tmp_path / "x"),
                               **common)
    with pytest.raises(ValueError, match="--indices and --num_examples"):
        evaluate.evaluate_path(saved["keras"], indices=[1], num_examples=3,
                               output_dir=str(tmp_path / "y"), **common)
    result = _cli(f"--model={saved['keras']}", "--dataset=digits", "--indices=1,x",
                  f"--output_dir={tmp_path / 'z'}")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode != 0 and len(errors) == 1 and "--indices" in errors[0], errors
    assert "Traceback" not in result.stderr
