"""Export: ONNX parity on real data, loud failure, manifest entry and card, the CLI."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnxruntime
import pytest
import zoo_helpers

from atamp_tf import export, rundir, zoo
from atamp_tf.zoo import manifest as zoo_manifest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def model():
    return zoo_helpers.train_tiny_model()


@pytest.fixture(scope="module")
def examples():
    return zoo_helpers.check_examples()


def _bn(model):
    return next(layer for layer in model.layers if layer.__class__.__name__ == "BatchNormalization")


def test_export_model_parity_on_real_digits(model, examples, tmp_path):
    x, _ = examples
    bn = _bn(model)
    # Trained BatchNorm: inference uses moving statistics far from the initial 0 / 1.
    assert np.abs(np.asarray(bn.moving_mean)).max() > 1e-3
    assert np.abs(np.asarray(bn.moving_variance) - 1).max() > 1e-2
    path = tmp_path / "tiny.onnx"
    result = export.export_model(model, path, x_check=x)
    assert result.passed and result.predictions_equal
    assert result.max_abs_diff <= 1e-4 and result.num_examples == len(x)
    assert result.opset == export.DEFAULT_OPSET
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.shape, inp.type) == ("images", ["batch", 8, 8, 1], "tensor(float)")
    assert (out.name, out.shape) == ("logits", ["batch", 10])
    for batch in (1, 7):  # dynamic batch dimension, logits (not probabilities)
        got = session.run(None, {"images": x[:batch]})[0]
        want = model.predict(x[:batch], verbose=0)
        np.testing.assert_allclose(got, want, atol=1e-4)
        assert not np.allclose(got.sum(axis=1), 1.0)
    assert list(os.listdir(tmp_path)) == ["tiny.onnx"]


def test_broken_parity_fails_loudly_and_writes_nothing(model, examples, tmp_path, monkeypatch):
    x, _ = examples
    real = export.onnx_logits
    monkeypatch.setattr(export, "onnx_logits", lambda *a, **k: real(*a, **k) + 1e-3)
    with pytest.raises(export.ParityError, match="max .logit difference. 0.001"):
        export.export_model(model, tmp_path / "tiny.onnx", x_check=x)
    assert os.listdir(tmp_path) == []


def test_changed_predictions_fail_even_within_tolerance(model, examples, tmp_path, monkeypatch):
    x, _ = examples
    real = export.onnx_logits
    monkeypatch.setattr(export, "onnx_logits",
                        lambda *a, **k: np.roll(real(*a, **k), 1, axis=1))
    with pytest.raises(export.ParityError, match="DIFFER"):
        export.export_model(model, tmp_path / "tiny.onnx", x_check=x, atol=1e9)
    assert os.listdir(tmp_path) == []


def test_check_images_must_be_unit_range_float32_nhwc(model, examples, tmp_path):
    x, _ = examples
    with pytest.raises(ValueError, match=r"x_check: pixels must be finite and in \[0, 1\]"):
        export.export_model(model, tmp_path / "a.onnx", x_check=x * 255)
    with pytest.raises(ValueError, match="x_check: expected float32 images"):
        export.export_model(model, tmp_path / "a.onnx", x_check=x[:, :4])
    assert os.listdir(tmp_path) == []


def _export_run(run_dir, tmp_path, report, **kwargs):
    keras_path, meta, _ = export.read_run_dir(run_dir, "best")
    x, y = zoo_helpers.check_examples()
    return export.export_to_zoo(
        keras_path, meta, report, x, y, name="digits-linf-tiny", out_dir=tmp_path / "zoo/models",
        card_dir=tmp_path / "zoo/cards", manifest_path=tmp_path / "zoo/manifest.json",
        code_version="0123abc", created="2025-01-02", **kwargs)


def test_export_to_zoo_from_run_dir_writes_valid_entry_and_card(model, examples, tmp_path):
    x, y = examples
    report = zoo_helpers.make_report(model, x, y)
    run_dir = zoo_helpers.make_run_dir(str(tmp_path / "run"), model, report)
    assert export.read_report(os.path.join(run_dir, "eval", "report.json")) == report
    entry = _export_run(run_dir, tmp_path, report, include_keras=True, notes="  ")
    assert "notes" not in entry  # blank notes: no field, no Scope section

    manifest = zoo_manifest.read_manifest(tmp_path / "zoo/manifest.json")  # validates
    assert manifest["models"] == [entry]
    onnx_path = tmp_path / "zoo/models/digits-linf-tiny.onnx"
    assert entry["file"] == {"url": "models/digits-linf-tiny.onnx", "format": "onnx",
                             "size": os.path.getsize(onnx_path),
                             "sha256": zoo.sha256_file(onnx_path)}
    assert entry["keras_sha256"] == zoo.sha256_file(run_dir + "/checkpoints/best.keras")
    assert entry["keras_url"] == "models/digits-linf-tiny.keras"
    # Metrics come from the report, untouched; training metadata from run_config / flags.cfg.
    for key in ("split", "num_examples", "examples", "accuracy", "attacks", "worst_case"):
        assert entry["metrics"][key] == report[key]
    assert entry["threat_model"] == {"norm": "linf", "eps": 0.1}
    assert entry["training"]["amp"] == {"delta": 0.1, "xi": 1.0, "steps": 1, "scope": "tensor",
                                        "warmup_epochs": 0}
    assert entry["training"]["flags"] == ["--dataset=digits", "--norm=linf"]
    assert entry["input"]["shape"] == [None, 8, 8, 1] and entry["output"]["num_classes"] == 10
    assert entry["parity"]["max_abs_diff"] <= 1e-4 and entry["parity"]["num_examples"] == len(x)
    card = (tmp_path / "zoo" / entry["card"]).read_text()
    assert entry["card"] == "cards/digits-linf-tiny.md" and "## Scope" not in card
    assert entry["file"]["sha256"] in card and "first 120 of test" in card
    natural = f"{100 * report['accuracy']['natural']:.2f}%"
    assert f"| natural | {natural} |" in card
    assert f"Worst case per example: {natural} (robust to every one of natural)" in card

    # Re-export under the same name replaces the entry; a second name is added beside it.
    _export_run(run_dir, tmp_path, report)
    other = dict(entry, name="digits-linf-tiny-b")
    export.add_manifest_entry(tmp_path / "zoo/manifest.json", other)
    listed = zoo_manifest.read_manifest(tmp_path / "zoo/manifest.json")["models"]
    names = [m["name"] for m in listed]
    assert names == ["digits-linf-tiny", "digits-linf-tiny-b"]


def test_report_of_another_checkpoint_is_refused(model, examples, tmp_path):
    x, y = examples
    report = zoo_helpers.make_report(model, x, y)
    report["accuracy"]["natural"] = (round(report["accuracy"]["natural"] * len(y)) - 1) / len(y)
    run_dir = zoo_helpers.make_run_dir(str(tmp_path / "run"), model, report)
    with pytest.raises(export.ExportError, match="is --report the evaluation of this checkpoint"):
        _export_run(run_dir, tmp_path, report, include_keras=True)
    assert os.listdir(tmp_path / "zoo/models") == []
    assert not (tmp_path / "zoo/manifest.json").exists()


def test_failed_reexport_keeps_the_published_file(model, examples, tmp_path):
    x, y = examples
    good = zoo_helpers.make_report(model, x, y)
    run_dir = zoo_helpers.make_run_dir(str(tmp_path / "run"), model, good)
    _export_run(run_dir, tmp_path, good)
    published = tmp_path / "zoo/models/digits-linf-tiny.onnx"
    before = zoo.sha256_file(published)
    bad = dict(good, accuracy=dict(good["accuracy"]))
    bad["accuracy"]["natural"] = (round(good["accuracy"]["natural"] * len(y)) - 1) / len(y)
    with pytest.raises(export.ExportError):
        _export_run(run_dir, tmp_path, bad)
    assert zoo.sha256_file(published) == before
    assert os.listdir(tmp_path / "zoo/models") == ["digits-linf-tiny.onnx"]
    entry = zoo_manifest.read_manifest(tmp_path / "zoo/manifest.json")["models"][0]
    assert entry["file"]["sha256"] == before


def test_report_for_another_threat_model_is_refused(model, examples, tmp_path):
    x, y = examples
    report = zoo_helpers.make_report(model, x, y, norm="l2", eps=0.5)
    run_dir = zoo_helpers.make_run_dir(str(tmp_path / "run"), model, report)
    with pytest.raises(ValueError, match="threat model .* but the model was trained for"):
        _export_run(run_dir, tmp_path, report)


def test_report_of_chosen_positions_is_refused(model, examples, tmp_path):
    """A zoo entry's numbers are a prefix of the split (or all of it), which the zoo
    reproduces; an evaluation of chosen positions (evaluate --indices) is not one."""
    x, y = examples
    report = zoo_helpers.make_report(model, x, y)
    report.update(example_indices=[0, 5], examples="the 2 examples at positions 0, 5 of the "
                  "test split in its own order")
    run_dir = zoo_helpers.make_run_dir(str(tmp_path / "run"), model, report)
    with pytest.raises(ValueError, match="evaluated chosen positions"):
        _export_run(run_dir, tmp_path, report)


def test_run_dir_checks():
    with pytest.raises(ValueError, match="--checkpoint: expected 'best' or 'last'"):
        export.read_run_dir("/nonexistent", "final")
    with pytest.raises(ValueError, match="--run_dir: .*best.keras does not exist"):
        export.read_run_dir("/nonexistent", "best")
    with pytest.raises(ValueError, match="missing AMP setting 'xi'"):
        export.meta_from_run_config({k: v for k, v in zoo_helpers.RUN_CONFIG.items()
                                     if k != "amp_xi"})


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "atamp_tf.export", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_cli_exports_run_dir_and_fails_with_nonzero_exit(model, examples, tmp_path):
    x, y = examples
    report = zoo_helpers.make_report(model, x, y)
    run_dir = zoo_helpers.make_run_dir(str(tmp_path / "run"), model, report)
    common = [f"--run_dir={run_dir}", f"--out_dir={tmp_path}/zoo/models",
              f"--card_dir={tmp_path}/zoo/cards", f"--manifest={tmp_path}/zoo/manifest.json",
              "--code_version=0123abc"]
    notes = "Reduced-scale model: a tiny CNN on 8x8 digits; not comparable to the paper."
    ok = _cli(*common, "--checkpoint=best", f"--notes={notes}")
    assert ok.returncode == 0, ok.stderr[-3000:]
    manifest = json.loads((tmp_path / "zoo/manifest.json").read_text())
    zoo_manifest.validate_manifest(manifest)
    (entry,) = manifest["models"]
    assert entry["name"] == "digits-linf-tiny-cnn-at-amp" and entry["dataset"] == "digits"
    assert entry["metrics"]["accuracy"] == report["accuracy"]
    assert entry["notes"] == notes
    card = (tmp_path / "zoo" / entry["card"]).read_text()
    assert f"(pixels in [0, 1]).\n\n## Scope\n{notes}\n\n## Use\n" in card

    later = "Trained before a fix: to be replaced."  # --set_notes: notes and card, nothing else
    noted = _cli(f"--manifest={tmp_path}/zoo/manifest.json", f"--name={entry['name']}",
                 "--set_notes", f"--notes={later}")
    assert noted.returncode == 0, noted.stderr[-3000:]
    (renoted,) = json.loads((tmp_path / "zoo/manifest.json").read_text())["models"]
    assert renoted == {**entry, "notes": later}
    assert (tmp_path / "zoo" / entry["card"]).read_text() == card.replace(notes, later)
    unknown = _cli(f"--manifest={tmp_path}/zoo/manifest.json", "--name=digits-none",
                   "--set_notes", "--notes=x")
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert "no zoo entry 'digits-none'" in unknown.stderr

    wrong = dict(report, accuracy=dict(report["accuracy"], natural=0.0))
    (tmp_path / "wrong.json").write_text(json.dumps(wrong))
    bad = _cli(*common, f"--report={tmp_path}/wrong.json", "--name=digits-wrong")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    (line,) = [ln for ln in bad.stderr.splitlines() if ln.startswith("error: ")]
    assert "is --report the evaluation" in line
    assert not (tmp_path / "zoo/models/digits-wrong.onnx").exists()


def test_package_zoo_refuses_a_bundled_file_above_the_size_rule(tmp_path):
    """Into the package's own manifest, a file above BUNDLE_MAX_BYTES may only go under a
    hosted URL (setup.py would leave it out of the wheel); other manifests take any size."""
    limit = zoo_manifest.BUNDLE_MAX_BYTES
    big, small = tmp_path / "big.onnx", tmp_path / "small.onnx"
    with open(big, "wb") as f:
        f.truncate(limit + 1)  # sparse: no disk cost
    with open(small, "wb") as f:
        f.truncate(limit)
    package = zoo_manifest.PACKAGE_MANIFEST
    with pytest.raises(export.ExportError, match=f"models/big.onnx: {limit + 1} bytes is above"):
        export._check_bundle_rule(package, [("models/small.onnx", small), ("models/big.onnx", big)])
    export._check_bundle_rule(package, [("https://host/zoo/big.onnx", big)])
    export._check_bundle_rule(tmp_path / "zoo/manifest.json", [("models/big.onnx", big)])


SUMMARY = zoo_helpers.SUMMARY


def test_budget_from_run_records_the_selection_and_refuses_a_test_selected_best():
    config = {"attack_steps": 10}
    assert export.budget_from_run(config, SUMMARY, "best") == {
        "epochs": 40, "attack_steps": 10, "train_seconds": 7200.0, "checkpoint": "best",
        "epoch": 31, "selected_on": "holdout"}
    last = export.budget_from_run(config, SUMMARY, "last")
    assert (last["epoch"], last["selected_on"]) == (40, "last")
    on_test = dict(SUMMARY, selected_on="test")
    with pytest.raises(export.ExportError, match="best epoch on the test set"):
        export.budget_from_run(config, on_test, "best")
    assert export.budget_from_run(config, on_test, "last")["epoch"] == 40
    with pytest.raises(ValueError, match="summary.json lacks \\['train_seconds'\\]"):
        export.budget_from_run(config, {k: v for k, v in SUMMARY.items()
                                        if k != "train_seconds"}, "best")


def test_export_from_a_run_with_a_summary_records_its_budget_on_entry_and_card(
        model, examples, tmp_path):
    x, y = examples
    report = zoo_helpers.make_report(model, x, y)
    run_dir = zoo_helpers.make_run_dir(str(tmp_path / "run"), model, report)
    with open(os.path.join(run_dir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(SUMMARY, f)
    mnist = export.read_compared_with(os.path.join(REPO, "docs/zoo/mnist_linf_published.csv"))
    with pytest.raises(ValueError, match="--compared_with: its results are mnist linf eps 0.3, "
                                         "but the model is digits linf eps 0.1"):
        _export_run(run_dir, tmp_path, report, compared_with=mnist)
    assert not (tmp_path / "zoo/manifest.json").exists()  # refused before anything is written
    digits = dict(mnist, threat_model={"dataset": "digits", "norm": "linf", "eps": 0.1})
    entry = _export_run(run_dir, tmp_path, report, compared_with=digits)
    assert entry["training"]["budget"]["selected_on"] == "holdout"
    assert entry["compared_with"]["rows"][0]["autoattack"] == 0.885
    zoo_manifest.read_manifest(tmp_path / "zoo/manifest.json")  # validates the new fields
    on_test = {**entry["training"], "budget": {**entry["training"]["budget"],
                                               "selected_on": "test"}}
    with pytest.raises(zoo_manifest.ManifestError, match="selected_on"):
        zoo_manifest.validate_entry({**entry, "training": on_test})
    card = (tmp_path / "zoo/cards/digits-linf-tiny.md").read_text()
    assert "- Training budget: 40 epochs, 10-step attack per batch, 2.00 h" in card
    assert "`best` = epoch 31, the epoch with the best held-out robust accuracy" in card
    assert "same threat model (digits, linf eps 0.1; source: AutoAttack README" in card
    assert "## Compared with" in card and "| 98.53% | 89.62% | 88.50% |" in card
    assert "| **this model** (" in card
    with open(os.path.join(run_dir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(dict(SUMMARY, selected_on="test"), f)
    with pytest.raises(export.ExportError, match="test set"):
        export.read_run_dir(run_dir, "best")
    # the same checkpoint through --keras_model is refused too: the run directory is found
    keras_path = os.path.join(run_dir, "checkpoints", "best.keras")
    with pytest.raises(export.ExportError, match="test set"):
        export.budget_of_keras_file(keras_path)
    shutil.copy(keras_path, os.path.join(run_dir, "checkpoints", "last.keras"))
    assert export.budget_of_keras_file(os.path.join(run_dir, "checkpoints",
                                                    "last.keras"))["selected_on"] == "last"
    loose = tmp_path / "loose.keras"
    shutil.copy(keras_path, loose)
    assert export.budget_of_keras_file(str(loose)) is None  # no run: nothing recorded
    os.remove(os.path.join(run_dir, "summary.json"))  # no record of how best was chosen
    with pytest.raises(export.ExportError, match="no record of how"):
        export.read_run_dir(run_dir, "best")
    with pytest.raises(export.ExportError, match="no record of how"):
        export.budget_of_keras_file(keras_path)
    assert export.read_run_dir(run_dir, "last")[1].budget is None


def _parity_table(sha256, *, norm="linf", eps=0.1, read_from=None):
    """The parts of a reference_cli parity.json that --add_parity reads (read_from: the
    fingerprint of the evaluation report ours was read back from)."""
    versions = {"pyautoattack": "0.2.0", "torch": "2.13.0", "onnx2torch": "1.5.15"}
    return {"onnx_sha256": sha256, "num_examples": 64, "examples": "the first 64 examples",
            "threat_model": {"norm": norm, "eps": eps}, "agreement": 62 / 64,
            "ours": {"robust_accuracy": 0.5,
                     "settings": {"version": "standard", "read_from_fingerprint": read_from},
                     "model": "keras (read from run/eval/report.json)"},
            "reference": {"robust_accuracy": 0.515625, "settings": versions},
            "disagreements": [{"index": 40}, {"index": 7}]}


def test_add_parity_records_the_reference_comparison_on_entry_and_card(
        model, examples, tmp_path):
    x, y = examples
    report = zoo_helpers.make_report(model, x, y)
    run_dir = zoo_helpers.make_run_dir(str(tmp_path / "run"), model, report)
    entry = _export_run(run_dir, tmp_path, report)
    assert entry["metrics"]["report_fingerprint"] == rundir.fingerprint(report)
    manifest = tmp_path / "zoo/manifest.json"
    parity = tmp_path / "parity.json"
    own = entry["metrics"]["report_fingerprint"]
    parity.write_text(json.dumps(_parity_table(entry["file"]["sha256"], read_from=own)))
    updated = export.add_reference_parity(str(manifest), entry["name"], str(parity))
    block = zoo_manifest.read_manifest(manifest)["models"][0]["reference_parity"]
    assert block == updated["reference_parity"]
    assert (block["num_disagree"], block["disagree_indices"]) == (2, [7, 40])
    card = (tmp_path / "zoo/cards/digits-linf-tiny.md").read_text()
    assert "## AutoAttack against the reference" in card
    assert "robust accuracy 50.00% (ours) and 51.56% (reference)" in card
    assert "agree on 96.88% of the examples; 2 differ (examples 7, 40)" in card
    assert "Ours there is this card's own evaluation, read back." in card
    assert block["ours_evaluation"] == own
    parity.write_text(json.dumps(_parity_table(entry["file"]["sha256"], read_from="f" * 64)))
    export.add_reference_parity(str(manifest), entry["name"], str(parity))
    card = (tmp_path / "zoo/cards/digits-linf-tiny.md").read_text()  # another evaluation
    assert "own evaluation" not in card
    assert "read back from another evaluation of this model, not the one above" in card
    legacy = json.loads(manifest.read_text())  # an entry exported before fingerprints
    del legacy["models"][0]["metrics"]["report_fingerprint"]
    legacy_manifest = tmp_path / "legacy" / "manifest.json"
    legacy_manifest.parent.mkdir()
    legacy_manifest.write_text(json.dumps(legacy))
    (tmp_path / "legacy" / "cards").mkdir()
    export.add_reference_parity(str(legacy_manifest), entry["name"], str(parity))
    card = (tmp_path / "legacy" / "cards" / "digits-linf-tiny.md").read_text()
    assert "an evaluation that this entry cannot identify" in card and "own evaluation" not in card
    rerun = _parity_table(entry["file"]["sha256"])
    rerun["ours"]["model"] = "onnx (torch gradients)"
    parity.write_text(json.dumps(rerun))
    assert export.add_reference_parity(str(manifest), entry["name"], str(parity))[
        "reference_parity"]["ours"] == "onnx (torch gradients)"
    card = (tmp_path / "zoo/cards/digits-linf-tiny.md").read_text()
    assert "a separate run of our AutoAttack (onnx (torch gradients))" in card
    # the comparison's version must be the entry's own AutoAttack's
    unversioned = _parity_table(entry["file"]["sha256"])
    del unversioned["ours"]["settings"]["version"]
    custom = json.loads(manifest.read_text())
    custom["models"][0]["metrics"]["attacks"]["autoattack"] = {
        "autoattack_settings": {"version": "custom"}}
    custom_manifest = tmp_path / "custom" / "manifest.json"
    custom_manifest.parent.mkdir()
    custom_manifest.write_text(json.dumps(custom))
    parity.write_text(json.dumps(_parity_table(entry["file"]["sha256"])))
    with pytest.raises(export.ExportError, match="compared the standard AutoAttack, but "
                                                 "digits-linf-tiny's AutoAttack is custom"):
        export.add_reference_parity(str(custom_manifest), entry["name"], str(parity))
    parity.write_text(json.dumps(unversioned))
    with pytest.raises(export.ExportError, match="does not say which AutoAttack version"):
        export.add_reference_parity(str(manifest), entry["name"], str(parity))
    for table, match in [(_parity_table("0" * 64), "not this model"),
                         (_parity_table(entry["file"]["sha256"], norm="l2"), "but digits"),
                         ({"num_examples": 3}, "lacks")]:
        parity.write_text(json.dumps(table))
        with pytest.raises(export.ExportError, match=match):
            export.add_reference_parity(str(manifest), entry["name"], str(parity))
    with pytest.raises(export.ExportError, match="no zoo entry"):
        export.add_reference_parity(str(manifest), "other", str(parity))
    bad = dict(block, disagree_indices=[7])  # fewer indices than num_disagree
    with pytest.raises(zoo_manifest.ManifestError, match="disagree_indices"):
        zoo_manifest.validate_entry({**updated, "reference_parity": bad})
    with pytest.raises(zoo_manifest.ManifestError, match="ours_evaluation"):
        zoo_manifest.validate_entry({**updated, "reference_parity": dict(block,
                                                                         ours_evaluation="x")})


HEADER = "model,natural,reported,autoattack,source,dataset,norm,eps\n"


def test_compared_with_csv_errors_name_the_flag_and_the_schema_checks_rows(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("model,natural,autoattack,source\nm,98,88,s\n")
    with pytest.raises(ValueError, match="--compared_with: .*expected a header"):
        export.read_compared_with(bad)
    bad.write_text(HEADER + "m,98\n")  # a short row
    with pytest.raises(ValueError, match="every row with those 8 fields"):
        export.read_compared_with(bad)
    bad.write_text(HEADER + "m,98,,88,a,mnist,linf,0.3\nn,97,90,88,a,mnist,linf,0.1\n")
    with pytest.raises(ValueError, match=r"one eps for every row, got \['0.1', '0.3'\]"):
        export.read_compared_with(bad)
    bad.write_text(HEADER + "m,98,,88,a,mnist,linf,0.3\nn,97,90,abc,a,mnist,linf,0.3\n")
    with pytest.raises(ValueError, match="autoattack 'abc' is not a percentage"):
        export.read_compared_with(bad)
    with pytest.raises(ValueError, match="does not exist"):
        export.read_compared_with(tmp_path / "missing.csv")
    compared = export.read_compared_with(os.path.join(REPO, "docs/zoo/mnist_linf_published.csv"))
    assert [r["natural"] for r in compared["rows"]] == [0.9853, 0.9948, 0.985]
    assert compared["threat_model"] == {"dataset": "mnist", "norm": "linf", "eps": 0.3}
    checker = zoo_manifest._Checker("entry")  # pylint: disable=protected-access
    own = {"dataset": "mnist", "threat_model": {"norm": "linf", "eps": 0.3}}
    percent = dict(own, compared_with=dict(compared, rows=[dict(compared["rows"][0],
                                                               natural=98.5)]))
    with pytest.raises(zoo_manifest.ManifestError, match=r"compared_with.rows\[0\].natural"):
        zoo_manifest._check_compared_with(checker, percent)  # pylint: disable=protected-access
    other = dict(own, threat_model={"norm": "l2", "eps": 0.3}, compared_with=compared)
    with pytest.raises(zoo_manifest.ManifestError, match=r"compared_with.threat_model"):
        zoo_manifest._check_compared_with(checker, other)  # pylint: disable=protected-access
    zoo_manifest._check_compared_with(checker, dict(own, compared_with=compared))  # pylint: disable=protected-access


def test_a_report_with_failed_sanity_checks_is_refused_unless_allowed_then_on_the_card(
        model, examples, tmp_path):
    x, y = examples
    report = zoo_helpers.make_report(model, x, y)
    report["checks"] = [{"name": "valid_examples:pgd20", "passed": True, "detail": "all valid"},
                        {"name": "autoattack:square_after_white_box", "passed": False,
                         "detail": "Square fooled 9 of 360 examples the white-box components "
                                   "missed (allowed 0.2%)"}]
    run_dir = zoo_helpers.make_run_dir(str(tmp_path / "run"), model, report)
    with pytest.raises(ValueError, match=r"failed its sanity checks \(autoattack:square_after_"
                                         r"white_box;.*--allow_failed_checks"):
        _export_run(run_dir, tmp_path, report)
    assert not (tmp_path / "zoo/manifest.json").exists()  # nothing published
    entry = _export_run(run_dir, tmp_path, report, allow_failed_checks=True)
    assert entry["metrics"]["failed_checks"] == [
        {"name": "autoattack:square_after_white_box", "detail": report["checks"][1]["detail"]}]
    zoo_manifest.read_manifest(tmp_path / "zoo/manifest.json")  # validates
    card = (tmp_path / "zoo" / entry["card"]).read_text()
    warning = card.index("**WARNING: the evaluation failed sanity checks")
    assert warning < card.index("Worst case per example") and "Square fooled 9 of 360" in card
    passing = dict(report, checks=report["checks"][:1])
    assert "failed_checks" not in export.metrics_from_report(passing, export.read_run_dir(
        run_dir, "best")[1])
