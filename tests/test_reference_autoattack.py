"""Our AutoAttack against the reference (pyautoattack 0.2.0, PyTorch), example by example.

A digits small CNN is PGD-trained for a few epochs by atamp_tf.train and exported to ONNX;
ours attacks the Keras model (evaluate's path), the reference its ONNX file converted by
onnx2torch. L-inf runs in this process while L2 runs through the command line in a
subprocess at the same time (the reference costs ~5000 Square queries whatever the number of
examples, so the two norms in a row would take twice as long on 2 cores).

Tolerance: both are the standard version, but their random numbers differ (APGD's random
start, Square's windows and signs: torch's generator against TF's stateless one), so an
example whose fate hangs on the draw may fall on either side. At most MAX_DISAGREE of the
N_EXAMPLES examples may disagree, and the robust accuracies may differ by at most that many
examples (measured on the digits zoo models, docs/eval/reference_parity/: 0 or 1 of 360
each, 3 of 1440 in all; here: see the tables printed with pytest -rP).
"""
import copy
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from absl import flags

from atamp_tf import data, evaluate, export, rundir
from atamp_tf.attacks.autoattack import AutoAttackResult
from atamp_tf.evaluate import reference
from atamp_tf.train import flags as train_flags
from atamp_tf.train import training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_EXAMPLES = 100
MAX_DISAGREE = 3
EPS = {"linf": 0.15, "l2": 0.5}
FV = train_flags.define_flags(flags.FlagValues())  # not absl's global FLAGS

pytestmark = pytest.mark.skipif(  # CI installs the stack: there a missing one fails
    bool(reference.missing_requirements()) and not os.environ.get("CI"),
    reason=f"the reference stack is not installed: {reference.missing_requirements()} "
           f"(pip install -e '.[reference]'; pip install --no-deps onnx2torch==1.5.15)")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run dir, Keras model, ONNX path): PGD-AT on digits, L-inf 0.15, 4 epochs."""
    out = tmp_path_factory.mktemp("parity") / "run"
    cwd = os.getcwd()
    os.chdir(ROOT)  # the flagfile's --flagfile=flags/quickstart.cfg is relative to the repo
    try:
        train_flags.parse(["train", "--flagfile=flags/zoo/digits_linf_pgd_at.cfg",
                           "--epochs=4", "--eval_test_examples=50", "--eval_train_examples=50",
                           "--eval_batch_size=50", "--notensorboard", f"--out_dir={out}"], FV)
        config, recorded = train_flags.config_from_flags(FV)
        run = training.setup(config, train_flags.flagfile_text(recorded, FV))
    finally:
        os.chdir(cwd)
    training.fit(run, verbose=0)
    from atamp_tf.checkpoints import load_keras_model
    model = load_keras_model(str(out / "checkpoints" / "best.keras"))
    x, _ = data.load_arrays("digits", "test", num_examples=N_EXAMPLES)
    onnx_path = str(out / "model.onnx")
    assert export.export_model(model, onnx_path, x_check=x).passed
    return out, model, onnx_path


@pytest.fixture(scope="module")
def examples():
    return data.load_arrays("digits", "test", num_examples=N_EXAMPLES)


@pytest.fixture(scope="module")
def l2_cli(trained, tmp_path_factory):
    """The L2 comparison through the command line, started now, read by test_l2_cli."""
    run_dir, _, onnx_path = trained
    out = tmp_path_factory.mktemp("l2_parity")
    proc = subprocess.Popen(
        [sys.executable, "-m", "atamp_tf.evaluate.reference_cli", f"--model={run_dir}",
         f"--onnx={onnx_path}", "--norm=l2", f"--eps={EPS['l2']}",
         f"--num_examples={N_EXAMPLES}", f"--output_dir={out}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield proc, out
    if proc.poll() is None:
        proc.kill()


def test_onnx2torch_imports_without_torchvision():
    module = reference.import_onnx2torch()
    assert module.convert is not None
    if importlib.util.find_spec("torchvision") is None:
        assert "torchvision" not in sys.modules  # the stand-in is gone again


def test_conversion_and_torch_gradients_match_keras(trained, examples):
    import tensorflow as tf
    _, model, onnx_path = trained
    x, y = examples
    module = reference.torch_module(onnx_path)
    check = reference.conversion_check(onnx_path, module, x)
    assert check["passed"] and check["max_abs_diff"] < 1e-4
    # torch_logits_fn: logits and input gradients of the torch module equal Keras'
    fn = reference.torch_logits_fn(module, 10)
    xt = tf.constant(x[:16])
    grads = []
    for f in (fn, lambda a: model(a, training=False)):
        with tf.GradientTape() as tape:
            tape.watch(xt)
            loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(y[:16], f(xt)))
        grads.append(tape.gradient(loss, xt).numpy())
    np.testing.assert_allclose(fn(xt).numpy(), model(xt, training=False).numpy(), atol=1e-4)
    assert np.abs(grads[0]).max() > 1e-3
    np.testing.assert_allclose(grads[0], grads[1], atol=1e-4)


def test_another_model_is_refused(trained, examples):
    import torch
    _, _, onnx_path = trained
    x, y = examples
    other = copy.deepcopy(reference.torch_module(onnx_path))  # the same network, one weight off
    with torch.no_grad():
        next(other.parameters()).add_(0.5)
    with pytest.raises(ValueError, match="differs from onnxruntime"):
        reference.reference_autoattack(onnx_path, x[:8], y[:8], norm="linf", eps=0.1,
                                       module=other)


def test_a_keras_model_other_than_the_onnx_file_is_refused(trained, examples):
    import keras
    _, model, onnx_path = trained
    x, y = examples
    module = reference.torch_module(onnx_path)
    assert reference.check_same_model(model, module, x) < 1e-4
    other = keras.models.clone_model(model)
    other.set_weights([w + 0.05 for w in model.get_weights()])
    with pytest.raises(ValueError, match="--model: its Keras model differs from --onnx"):
        reference.compare_autoattack(onnx_path, x[:8], y[:8], norm="linf", eps=0.1,
                                     keras_model=other)


def test_linf_agrees_with_the_reference(trained, examples, l2_cli, tmp_path, monkeypatch):
    """Ours as `python -m atamp_tf.evaluate` ran it (its report, per_example.npz and
    adversarial.npz, read back by --ours_from), the reference on the exported ONNX file.
    (l2_cli: the L2 comparison runs meanwhile, through the command line.)"""
    run_dir, _, onnx_path = trained
    x, y = examples
    eval_dir = tmp_path / "eval"
    evaluation = evaluate.evaluate_path(str(run_dir), attacks="natural,autoattack",
                                        num_examples=N_EXAMPLES, norm="linf", eps=EPS["linf"],
                                        batch_size=250, output_dir=str(eval_dir), verbose=False)
    module = reference.torch_module(onnx_path)
    predict = lambda a: reference.torch_predict(module, a)  # noqa: E731
    ours = reference.ours_from_evaluation(str(eval_dir), x, y, predict=predict,
                                          dataset="digits", split="test", norm="linf",
                                          eps=EPS["linf"])
    ref = reference.reference_autoattack(onnx_path, x, y, norm="linf", eps=EPS["linf"],
                                         module=module)
    table = reference.compare(ours, ref, x, y, norm="linf", eps=EPS["linf"],
                              reference_predict=predict)
    print(reference.summary_markdown([table]))  # shown by pytest -rP
    # compare_autoattack(ours_from=...) (the CLI's --ours_from) builds the same table
    monkeypatch.setattr(reference, "reference_autoattack", lambda *a, **k: ref)
    via_cli_path = reference.compare_autoattack(onnx_path, x, y, norm="linf", eps=EPS["linf"],
                                                ours_from=(str(eval_dir), "digits", "test"))
    assert {k: via_cli_path[k] for k in table} == table
    per_example = np.load(eval_dir / "per_example.npz")
    np.testing.assert_array_equal(ours.result.robust_mask, per_example["correct_autoattack"])
    # names the evaluation as export's entry does (metrics.report_fingerprint)
    assert ours.result.settings["read_from_fingerprint"] == rundir.fingerprint(
        export.read_report(str(eval_dir / "report.json")))
    assert table["ours"]["robust_accuracy"] == evaluation["accuracy"]["autoattack"]
    assert table["ours"]["seconds"] == pytest.approx(
        evaluation["attacks"]["autoattack"]["seconds"], rel=1e-3)  # all of them: unscaled
    adv = ours.result.x_adv
    assert (predict(adv).argmax(1) != y)[~ours.result.robust_mask & ours.result.robust_after[
        "clean"]].all()  # every saved adversarial example fools the model
    half = reference.ours_from_evaluation(str(eval_dir), x[:50], y[:50], predict=predict,
                                          dataset="digits", split="test", norm="linf",
                                          eps=EPS["linf"])
    np.testing.assert_array_equal(half.result.robust_mask, ours.result.robust_mask[:50])
    # an evaluation of the whole split ("all N examples") is a prefix too
    whole_split = tmp_path / "whole_split"
    shutil.copytree(eval_dir, whole_split)
    report = json.loads((whole_split / "report.json").read_text())
    report["examples"] = report["examples"].replace("the first", "all")
    (whole_split / "report.json").write_text(json.dumps(report))
    again = reference.ours_from_evaluation(str(whole_split), x, y, predict=predict,
                                           dataset="digits", split="test", norm="linf",
                                           eps=EPS["linf"])
    np.testing.assert_array_equal(again.result.robust_mask, ours.result.robust_mask)
    with pytest.raises(ValueError, match="another model's evaluation"):
        reference.ours_from_evaluation(str(eval_dir), x, y, predict=lambda a: -predict(a),
                                       dataset="digits", split="test", norm="linf",
                                       eps=EPS["linf"])
    with pytest.raises(ValueError, match="the comparison is"):
        reference.ours_from_evaluation(str(eval_dir), x, y, predict=predict, dataset="digits",
                                       split="test", norm="l2", eps=EPS["linf"])
    with pytest.raises(ValueError, match="the first 101 examples"):
        reference.ours_from_evaluation(str(eval_dir), *data.load_arrays(
            "digits", "test", num_examples=N_EXAMPLES + 1), predict=predict,
            dataset="digits", split="test", norm="linf", eps=EPS["linf"])
    # Every reference output lies in the eps-ball and in [0, 1] (the reference trusts its
    # components; recomputed here from its arrays).
    assert ref.x_adv.shape == x.shape and ref.x_adv.min() >= 0 and ref.x_adv.max() <= 1
    assert np.abs(ref.x_adv - x).reshape(len(x), -1).max() <= EPS["linf"] + 1e-6
    assert ref.valid.all() and table["reference"]["num_invalid"] == 0
    _assert_agreement(table)
    assert ref.settings["components"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert set(table["reference"]["accuracy_after"]) == {"clean", "apgd-ce", "apgd-t", "fab-t",
                                                         "square"}


def test_plus_versions_own_components_agree_with_the_reference(trained, examples):
    """The plus version's two components standard lacks, APGD-DLR and untargeted FAB, each
    with plus' 5 restarts, on both sides (the reference's objects set by its set_version)."""
    _, model, onnx_path = trained
    x, y = examples
    module = reference.torch_module(onnx_path)
    components = ("apgd-dlr", "fab")
    ref = reference.reference_autoattack(onnx_path, x, y, norm="linf", eps=EPS["linf"],
                                         module=module, version="plus", components=components)
    ours = reference.our_autoattack(x, y, norm="linf", eps=EPS["linf"], keras_model=model,
                                    version="plus", components=components)
    table = reference.compare(ours, ref, x, y, norm="linf", eps=EPS["linf"])
    print(reference.summary_markdown([table]))
    assert ref.settings["components"] == list(components) and ref.valid.all()
    assert ref.settings["version"] == ours.result.settings["version"] == "custom"
    assert ours.result.settings["apgd"]["restarts"] == ours.result.settings["fab"]["restarts"] == 5
    assert set(table["reference"]["accuracy_after"]) == {"clean", *components}
    _assert_agreement(table)


class _Killed(Exception):
    pass


def test_a_killed_reference_run_resumes_after_its_last_finished_chunk(trained, examples,
                                                                     tmp_path, monkeypatch):
    """Killed in its third chunk, the run resumes there: the two finished chunks are read
    back, not recomputed, and the result is the uninterrupted run's; another run's chunks
    (another eps) are not taken for its own."""
    _, _, onnx_path = trained
    x, y = (a[:40] for a in examples)
    settings = dict(norm="linf", eps=EPS["linf"], module=reference.torch_module(onnx_path),
                    components=("apgd-ce",), chunk_size=16)
    whole = reference.reference_autoattack(onnx_path, x, y, **settings)
    run_chunk, calls, kill = reference._reference_chunk, [], [True]

    def killed_in_the_third(model, x_chunk, *args, **kwargs):
        calls.append(len(x_chunk))
        if kill[0] and len(calls) == 3:
            raise _Killed  # as a SIGKILL: the chunk never saved
        return run_chunk(model, x_chunk, *args, **kwargs)

    monkeypatch.setattr(reference, "_reference_chunk", killed_in_the_third)
    with pytest.raises(_Killed):
        reference.reference_autoattack(onnx_path, x, y, resume_dir=str(tmp_path), **settings)
    assert sorted(os.listdir(tmp_path)) == ["reference_0-16.npz", "reference_16-32.npz"]
    calls.clear()
    kill[0] = False
    resumed = reference.reference_autoattack(onnx_path, x, y, resume_dir=str(tmp_path),
                                             **settings)
    assert calls == [8]  # 40 = 16 + 16 + 8: only the unfinished chunk ran
    np.testing.assert_array_equal(resumed.robust, whole.robust)
    np.testing.assert_array_equal(resumed.x_adv, whole.x_adv)
    assert resumed.accuracy_after == pytest.approx(whole.accuracy_after)
    assert resumed.accuracy_after["apgd-ce"] == pytest.approx(whole.robust.mean(), abs=1e-3)
    assert resumed.settings["chunks"] == 3 and 0 < resumed.robust.sum() < resumed.clean.sum()
    calls.clear()
    reference.reference_autoattack(onnx_path, x, y, resume_dir=str(tmp_path),
                                   **{**settings, "eps": EPS["linf"] / 2})
    assert calls == [16, 16, 8]


def test_l2_cli_agrees_with_the_reference(l2_cli):
    proc, out = l2_cli
    stdout, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr[-3000:]
    table = json.loads((out / "parity.json").read_text())
    assert "# AutoAttack parity" in stdout and (out / "parity.md").is_file()
    assert not (out / "partial").exists()  # the resume state, removed once written
    assert table["ours"]["model"] == "keras" and table["threat_model"]["norm"] == "l2"
    print(reference.summary_markdown([table]))
    assert table["reference"]["num_invalid"] == 0 and table["reference"]["invalid_indices"] == []
    assert table["reference"]["max_distance"] <= EPS["l2"] + 1e-6
    _assert_agreement(table)


def _assert_agreement(table):
    assert table["num_examples"] == N_EXAMPLES and table["clean_agree"]
    ours, ref = table["ours"], table["reference"]
    # a model neither trivially robust nor trivially broken: the attacks have work to do
    assert 0.15 < ref["robust_accuracy"] < ours["clean_accuracy"] - 0.1
    assert table["num_disagree"] <= MAX_DISAGREE, table["disagreements"]
    assert abs(ours["num_robust"] - ref["num_robust"]) <= MAX_DISAGREE
    assert len(table["disagreements"]) == table["num_disagree"]
    assert table["num_disagree"] == table["robust_only_ours"] + table["robust_only_reference"]


def _fake_results():
    """An OursResult / ReferenceResult pair on 4 examples that disagree on examples 1 and 2."""
    x = np.full((4, 2, 2, 1), 0.5, np.float32)
    y = np.array([0, 1, 2, 3])
    clean = np.array([True, True, True, False])
    ours_robust = np.array([True, True, False, False])
    success = {"apgd-ce": np.array([False, False, True, False]),
               "apgd-t": np.zeros(4, bool), "fab-t": np.zeros(4, bool),
               "square": np.zeros(4, bool)}
    ours_adv = x.copy()
    ours_adv[2] += 0.1
    result = AutoAttackResult(
        x_adv=ours_adv, robust_after={"clean": clean, "square": ours_robust},
        component_success=success, accuracy=0.5, clean_accuracy=0.75,
        accuracy_after={"clean": 0.75, "square": 0.5}, settings={"seed": 0, "batch_size": 4})
    ours = reference.OursResult(result, "keras", 2.0, lambda a: np.eye(4)[[3] * len(a)])
    ref_adv = x.copy()
    ref_adv[1] += 0.1
    ref_adv[3] += 0.3  # an output outside the ball: counted, and listed
    valid, dist = reference.within_threat(ref_adv, x, norm="linf", eps=0.1)
    ref = reference.ReferenceResult(
        robust=np.array([True, False, True, False]), clean=clean, x_adv=ref_adv, valid=valid,
        distance=dist, accuracy_after={"clean": 0.75}, warnings=["a check"],
        conversion={"max_abs_diff": 1e-6}, seconds=3.0, settings={"seed": 0})
    return ours, ref, x, y


def test_comparison_table_lists_every_disagreement(tmp_path):
    ours, ref, x, y = _fake_results()
    assert ref.valid.tolist() == [True, True, True, False]
    table = reference.compare(ours, ref, x, y, norm="linf", eps=0.1,
                              reference_predict=lambda a: np.eye(4)[[0] * len(a)])
    assert table["agreement"] == 0.5 and table["num_disagree"] == 2
    assert (table["robust_only_ours"], table["robust_only_reference"]) == (1, 1)
    assert table["ours"]["num_robust"] == 2 and table["reference"]["num_robust"] == 2
    assert table["ours"]["seconds_per_robust_example"] == 1.0
    assert table["reference"]["invalid_indices"] == [3]
    assert table["reference"]["num_invalid"] == 1
    rows = {row["index"]: row for row in table["disagreements"]}
    assert rows[1]["robust_ours"] and not rows[1]["robust_reference"]
    assert rows[1]["reference_adv_fools_ours"]  # ours predicts 3 everywhere, label 1
    assert rows[2]["ours_fooled_by"] == "apgd-ce"
    assert rows[2]["ours_adv_fools_reference"]  # the reference model predicts 0, label 2
    paths = reference.write_comparison(table, tmp_path)
    assert json.loads(open(paths["json"]).read())["num_disagree"] == 2
    md = open(paths["md"]).read()
    assert "2 of 4 examples (50.00%)" in md and "| 2 | 2 | False | True | apgd-ce | True |" in md
    assert "- a check" in md
    assert "| 2 (1, 2) |" in reference.summary_markdown([table])


def test_within_threat_l2_and_box():
    x = np.zeros((3, 2, 2, 1), np.float32)
    adv = x.copy()
    adv[0, 0, 0, 0] = 0.5           # L2 0.5: inside
    adv[1, :, :, 0] = 0.3           # L2 0.6: outside
    adv[2, 0, 0, 0] = -0.1          # outside [0, 1]
    valid, dist = reference.within_threat(adv, x, norm="l2", eps=0.5)
    assert valid.tolist() == [True, False, False]
    np.testing.assert_allclose(dist, [0.5, 0.6, 0.1], atol=1e-6)


def test_cli_bad_input_is_one_error_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "atamp_tf.evaluate.reference_cli",
                           f"--onnx={tmp_path / 'missing.onnx'}", "--dataset=digits",
                           "--norm=linf", "--eps=0.1"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --onnx:")
    assert "Traceback" not in proc.stderr
