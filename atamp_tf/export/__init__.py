"""Export a trained network to ONNX, prove parity with onnxruntime, and publish it to the zoo.

`export_model` converts with tf2onnx (`tf2onnx.convert.from_keras`; Keras 3.15's
`Model.export(format="onnx")` turned Normalization constants into extra graph inputs here) to
a graph with one input `images` (float32 [batch, H, W, C] in [0, 1], dynamic batch) and one
output `logits`, then compares Keras and onnxruntime logits on real examples and raises
ParityError unless they agree. `export_to_zoo` adds the model card and manifest entry, with
metrics taken from an evaluation report.json. Command line: `python -m atamp_tf.export`
(flags in atamp_tf.export.cli).
"""
import csv
import dataclasses
import datetime
import math
import os
import posixpath
import shutil
import urllib.parse

import numpy as np

from atamp_tf import provenance, rundir
from atamp_tf.attacks import registry
from atamp_tf.checkpoints import PARITY_ATOL, load_keras_model, onnx_session
from atamp_tf.rundir import atomic_write_text, read_json, sha256_file
from atamp_tf.zoo import cards as model_card
from atamp_tf.zoo import manifest as zoo_manifest

DEFAULT_OPSET = 17
DEFAULT_ATOL = PARITY_ATOL  # the same tolerance evaluate's parity check uses
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
REPORT_KEYS = ("dataset", "split", "num_examples", "examples", "threat_model", "attacks",
               "accuracy")


class ExportError(Exception):
    """The export produced something that must not be published."""


class ParityError(ExportError):
    """Keras and onnxruntime disagree on the check examples beyond the tolerance."""


@dataclasses.dataclass(frozen=True)
class ParityResult:
    """Keras vs onnxruntime on the check examples; onnx_predictions are the ONNX argmaxes."""

    max_abs_diff: float
    predictions_equal: bool
    num_examples: int
    atol: float
    opset: int
    onnx_predictions: np.ndarray = dataclasses.field(repr=False, compare=False)

    @property
    def passed(self):
        return self.predictions_equal and self.max_abs_diff <= self.atol

    def to_dict(self):
        """The JSON-able summary recorded in the manifest (entry["parity"])."""
        return {"max_abs_diff": self.max_abs_diff, "num_examples": self.num_examples,
                "atol": self.atol, "opset": self.opset}


def _input_hwc(model):
    shape = tuple(model.input_shape) if not isinstance(model.input_shape, list) else None
    if shape is None or len(shape) != 4 or not all(isinstance(d, int) for d in shape[1:]):
        raise ValueError(f"model: expected one NHWC image input with fixed height, width and "
                         f"channels, got input shape {model.input_shape}.")
    return shape[1:]


def _check_images(x, hwc, what):
    """x as a float32 array of NHWC images in [0, 1] matching hwc; ValueError otherwise."""
    x = np.asarray(x)
    if x.dtype != np.float32 or x.ndim != 4 or tuple(x.shape[1:]) != tuple(hwc) or len(x) == 0:
        shape = ", ".join(map(str, hwc))
        raise ValueError(f"{what}: expected float32 images of shape [n>0, {shape}], "
                         f"got {x.dtype} {x.shape}.")
    if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise ValueError(f"{what}: pixels must be finite and in [0, 1], got range "
                         f"[{x.min()}, {x.max()}].")
    return x


def keras_logits(model, x, *, batch_size=256):
    """Inference-mode logits of a Keras model, batch by batch."""
    import keras  # pylint: disable=import-outside-toplevel

    parts = [keras.ops.convert_to_numpy(model(x[i:i + batch_size], training=False))
             for i in range(0, len(x), batch_size)]
    return np.concatenate(parts).astype(np.float32)


def onnx_logits(onnx_path, x, *, batch_size=256):
    """Logits of the ONNX model at onnx_path under onnxruntime (CPU), batch by batch."""
    session = onnx_session(onnx_path)
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + batch_size]})[0]
                           for i in range(0, len(x), batch_size)])


def convert_to_onnx(model, onnx_path, *, opset=DEFAULT_OPSET):
    """Writes the ONNX graph of model: input `images` [batch, H, W, C], output `logits`."""
    import onnx  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tf2onnx  # pylint: disable=import-outside-toplevel

    if len(model.outputs) != 1:
        raise ValueError(f"model: expected one output (logits), got {len(model.outputs)}.")
    spec = [tf.TensorSpec((None,) + _input_hwc(model), tf.float32, name=INPUT_NAME)]
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    graph = proto.graph
    if graph.output[0].name != OUTPUT_NAME:
        graph.node.append(onnx.helper.make_node("Identity", [graph.output[0].name],
                                                [OUTPUT_NAME], name="logits_identity"))
        graph.output[0].name = OUTPUT_NAME
    for value in (graph.input[0], graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(onnx_path))


def check_parity(model, onnx_path, x_check, *, atol=DEFAULT_ATOL, opset=DEFAULT_OPSET,
                 batch_size=256):
    """Compares Keras and onnxruntime logits on x_check (no exception on disagreement)."""
    expected = keras_logits(model, x_check, batch_size=batch_size)
    got = onnx_logits(onnx_path, x_check, batch_size=batch_size)
    if got.shape != expected.shape:
        raise ParityError(f"ONNX logits have shape {got.shape}, Keras logits {expected.shape}.")
    diff = float(np.max(np.abs(got - expected))) if got.size else 0.0
    diff = diff if math.isfinite(diff) else math.inf
    predictions = np.argmax(got, axis=1)
    return ParityResult(diff, bool(np.array_equal(predictions, np.argmax(expected, axis=1))),
                        len(x_check), atol, opset, predictions)


def export_model(keras_model, onnx_path, *, x_check, opset=DEFAULT_OPSET, atol=DEFAULT_ATOL,
                 batch_size=256):
    """Converts keras_model to ONNX at onnx_path and checks parity on x_check.

    x_check: real float32 NHWC images in [0, 1]. The file appears at onnx_path only if the max
    |logit difference| is <= atol and every argmax agrees; otherwise ParityError is raised and
    nothing is written. A model with a `network` attribute (AMPModel) exports its network.
    """
    network = getattr(keras_model, "network", keras_model)
    x_check = _check_images(x_check, _input_hwc(network), "x_check")
    directory = os.path.dirname(os.path.abspath(onnx_path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(onnx_path)}.{os.getpid()}.tmp")
    try:
        convert_to_onnx(network, tmp, opset=opset)
        result = check_parity(network, tmp, x_check, atol=atol, opset=opset,
                              batch_size=batch_size)
        if not result.passed:
            raise ParityError(
                f"ONNX export of {onnx_path} failed its parity check on {result.num_examples} "
                f"examples: max |logit difference| {result.max_abs_diff:.3g} (allowed {atol:g}), "
                f"predictions {'identical' if result.predictions_equal else 'DIFFER'}. "
                "Nothing was written.")
        os.replace(tmp, onnx_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return result


@dataclasses.dataclass(frozen=True)
class ModelMeta:
    """What the manifest says about how the model was trained (from run_config.json or flags)."""

    dataset: str
    norm: str
    eps: float
    arch: str
    width: object
    depth: object
    method: str
    amp: dict
    flagfile: str = ""
    flags: tuple = ()
    budget: dict | None = None  # manifest training.budget (budget_from_run), when known


_AMP_KEYS = {"delta": ("amp_delta", "delta"), "xi": ("amp_xi", "xi"),
             "steps": ("amp_steps", "steps"), "scope": ("amp_scope", "scope")}


def meta_from_run_config(config, flag_lines=(), *, flagfile="", where="run_config.json"):
    """ModelMeta from a run's run_config.json dict (AMP settings flat or under "amp")."""
    def need(obj, keys, what):
        for key in keys:
            if key in obj:
                return obj[key]
        raise ValueError(f"{where}: missing {what} (looked for {', '.join(map(repr, keys))}).")

    amp_source = config["amp"] if isinstance(config.get("amp"), dict) else config
    amp = {k: need(amp_source, keys, f"AMP setting {k!r}") for k, keys in _AMP_KEYS.items()}
    if "amp_warmup_epochs" in amp_source:
        amp["warmup_epochs"] = amp_source["amp_warmup_epochs"]
    return ModelMeta(
        dataset=need(config, ("dataset",), "'dataset'"), norm=need(config, ("norm",), "'norm'"),
        eps=float(need(config, ("eps",), "'eps'")), arch=need(config, ("arch",), "'arch'"),
        width=config.get("width"), depth=config.get("depth"),
        method=need(config, ("method",), "'method'"), amp=amp,
        flagfile=str(config.get("flagfile") or flagfile), flags=tuple(flag_lines))


def budget_from_run(config, summary, checkpoint):
    """training.budget of a run's checkpoint: epochs trained, training attack steps, training
    seconds, and how the checkpoint was chosen ("holdout": the best epoch on held-out training
    images; "test": the best on the test subset; "last": the last epoch). ExportError for a
    best-epoch checkpoint chosen on the test set: a deployed model is never selected there."""
    selected = summary.get("selected_on", "test") if checkpoint == "best" else "last"
    if selected == "test":
        raise ExportError("--checkpoint=best: this run picked its best epoch on the test set "
                          "(no --holdout_examples), so the test numbers would be optimistic; "
                          "export --checkpoint=last, or train with --holdout_examples.")
    missing = [k for k in ("epochs_done", "train_seconds", checkpoint) if k not in summary]
    if missing or "attack_steps" not in config:
        raise ValueError(f"--run_dir: summary.json lacks {missing or ['run_config attack_steps']}"
                         "; expected a run written by python -m atamp_tf.train.")
    return {"epochs": int(summary["epochs_done"]), "attack_steps": int(config["attack_steps"]),
            "train_seconds": round(float(summary["train_seconds"]), 1),
            "checkpoint": checkpoint, "epoch": int(summary[checkpoint]["epoch"]),
            "selected_on": selected}


def read_run_dir(run_dir, checkpoint="best", *, flagfile=""):
    """(checkpoints/<checkpoint>.keras path, ModelMeta, run_config dict) of a run directory."""
    if checkpoint not in ("best", "last"):
        raise ValueError(f"--checkpoint: expected 'best' or 'last', got {checkpoint!r}.")
    keras_path = os.path.join(run_dir, "checkpoints", f"{checkpoint}.keras")
    config_path = os.path.join(run_dir, "run_config.json")
    for path in (keras_path, config_path):
        if not os.path.isfile(path):
            raise ValueError(f"--run_dir: {path} does not exist; expected a run directory "
                             "written by python -m atamp_tf.train.")
    config = read_json(config_path, "--run_dir")
    flags_path = os.path.join(run_dir, "flags.cfg")
    lines = []
    if os.path.isfile(flags_path):
        with open(flags_path, encoding="utf-8") as f:
            lines = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
    meta = meta_from_run_config(config, lines, flagfile=flagfile, where=config_path)
    summary_path = rundir.RunPaths(run_dir).summary
    if os.path.isfile(summary_path):
        budget = budget_from_run(config, read_json(summary_path, "--run_dir"), checkpoint)
        meta = dataclasses.replace(meta, budget=budget)
    elif checkpoint == "best":
        raise ExportError(f"--checkpoint=best: {summary_path} does not exist, so there is no "
                          "record of how the best epoch was chosen (a deployed checkpoint is "
                          "never selected on the test set); export --checkpoint=last.")
    return keras_path, meta, config


def budget_of_keras_file(keras_path):
    """training.budget of a .keras file that is a run directory's checkpoints/best.keras or
    last.keras (the run's summary.json says how it was chosen; ExportError for a best epoch
    picked on the test set), or None for a file outside a run directory (nothing recorded)."""
    checkpoint_dir, name = os.path.split(os.path.abspath(keras_path))
    run_dir = os.path.dirname(checkpoint_dir)
    paths = rundir.RunPaths(run_dir)
    config_path = os.path.join(run_dir, "run_config.json")
    if (os.path.basename(checkpoint_dir) != "checkpoints" or
            name not in ("best.keras", "last.keras") or not os.path.isfile(config_path)):
        return None
    checkpoint = name[:-len(".keras")]
    if not os.path.isfile(paths.summary):
        if checkpoint == "best":
            raise ExportError(f"--keras_model: {keras_path} is a run's best epoch, but "
                              f"{paths.summary} does not exist, so there is no record of how "
                              "it was chosen (never on the test set for a deployed model).")
        return None
    return budget_from_run(read_json(config_path, "--keras_model"),
                           read_json(paths.summary, "--keras_model"), checkpoint)


def read_report(path):
    """The evaluation report.json at path, checked to have the keys the manifest needs."""
    report = read_json(path, "--report")
    missing = [k for k in REPORT_KEYS if k not in report]
    if missing or "natural" not in report.get("accuracy", {}):
        raise ValueError(f"--report: {path} lacks {missing or ['accuracy.natural']}; expected "
                         "the report.json written by python -m atamp_tf.evaluate.")
    return report


def metrics_from_report(report, meta, *, where="report.json", allow_failed_checks=False):
    """The manifest's metrics block, after checking the report is about this model's setting.
    A report whose sanity checks failed is refused, unless allow_failed_checks: then the
    failures go into the block (metrics.failed_checks) and onto the card."""
    threat = report["threat_model"]
    if report["dataset"] != meta.dataset:
        raise ValueError(f"{where}: dataset {report['dataset']!r} but the model was trained on "
                         f"{meta.dataset!r}.")
    if threat.get("norm") != meta.norm or not math.isclose(threat.get("eps", -1), meta.eps,
                                                           rel_tol=1e-6):
        raise ValueError(f"{where}: threat model {threat} but the model was trained for "
                         f"norm {meta.norm!r}, eps {meta.eps}.")
    if "example_indices" in report:
        raise ValueError(f"{where}: it evaluated chosen positions ({report['examples']}); a "
                         "zoo entry's numbers are the first N examples of the split or all of "
                         "them (python -m atamp_tf.evaluate --num_examples), which the zoo "
                         "reproduces")
    failed = registry.failed_in_report(report)
    if failed and not allow_failed_checks:
        raise ValueError(f"{where}: the evaluation failed its sanity checks "
                         f"({', '.join(c['name'] for c in failed)}; its report.md says why), so "
                         "its numbers are not published; --allow_failed_checks publishes them "
                         "with the failures on the card")
    metrics = {k: report[k] for k in ("split", "num_examples", "examples", "accuracy", "attacks")}
    metrics["worst_case"] = report.get("worst_case")
    metrics["report_fingerprint"] = rundir.fingerprint(report)  # which evaluation this is
    if failed:
        metrics["failed_checks"] = failed
    return metrics


def _url_for(path, manifest_path, base_url):
    if base_url:
        return f"{base_url.rstrip('/')}/{os.path.basename(path)}"
    return os.path.relpath(path, os.path.dirname(os.path.abspath(manifest_path))).replace(
        os.sep, "/")


def read_compared_with(path):
    """compared_with from a CSV of published results: columns model, natural, reported,
    autoattack (percentages; reported may be empty), and source, dataset, norm, eps (one value
    each for every row: the rows' threat model, which the export checks against the model's)."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = [r for r in csv.DictReader(line for line in f if not line.startswith("#"))]
    except FileNotFoundError:
        raise ValueError(f"--compared_with: {path} does not exist.") from None
    columns = ("model", "natural", "reported", "autoattack", "source", "dataset", "norm", "eps")
    if not rows or any(set(r) != set(columns) or None in r.values() for r in rows):
        raise ValueError(f"--compared_with: {path}: expected a header {','.join(columns)} and "
                         f"at least one row, every row with those {len(columns)} fields.")
    shared = {}
    for column in ("source", "dataset", "norm", "eps"):
        values = {r[column].strip() for r in rows}
        if len(values) != 1:
            raise ValueError(f"--compared_with: {path}: one {column} for every row, got "
                             f"{sorted(values)}.")
        shared[column] = values.pop()
    try:
        eps = float(shared["eps"])
    except ValueError:
        raise ValueError(f"--compared_with: {path}: eps {shared['eps']!r} is not a number.") \
            from None

    def fraction(text, column, row):
        try:
            return round(float(text) / 100, 6)
        except (TypeError, ValueError):
            raise ValueError(f"--compared_with: {path}: row {row!r}: {column} {text!r} is not "
                             "a percentage.") from None
    return {"source": shared["source"],
            "threat_model": {"dataset": shared["dataset"], "norm": shared["norm"], "eps": eps},
            "rows": [
        {"model": r["model"], "natural": fraction(r["natural"], "natural", r["model"]),
         "reported": (fraction(r["reported"], "reported", r["model"]) if r["reported"].strip()
                      else None),
         "autoattack": fraction(r["autoattack"], "autoattack", r["model"])} for r in rows]}


def check_compared_with(compared_with, meta):
    """Raises ValueError unless the published rows share the model's dataset and threat model
    (a card must not put an L2 model beside L-inf results, or eps 0.1 beside eps 0.3)."""
    threat = compared_with["threat_model"]
    if not zoo_manifest.same_threat_model(threat, meta.dataset, meta.norm, meta.eps):
        raise ValueError(f"--compared_with: its results are {threat['dataset']} {threat['norm']} "
                         f"eps {threat['eps']:g}, but the model is {meta.dataset} {meta.norm} "
                         f"eps {meta.eps:g}.")


def make_entry(name, meta, metrics, *, onnx_path, url, card, hwc, num_classes, parity, licence,
               created, code_version, keras=None, notes="", compared_with=None):
    """A manifest entry (schema in atamp_tf/zoo/README.md); keras is (url, sha256) or None.

    notes: free text for the card's Scope section; stored (stripped) only when non-blank.
    compared_with: published results for the card (read_compared_with), or None.
    """
    entry = {
        "name": name,
        "dataset": meta.dataset,
        "threat_model": {"norm": meta.norm, "eps": meta.eps},
        "architecture": {"arch": meta.arch, "width": meta.width, "depth": meta.depth},
        "training": {"method": meta.method, "amp": dict(meta.amp), "flagfile": meta.flagfile,
                     "flags": list(meta.flags)},
        "metrics": metrics,
        "file": {"url": url, "size": os.path.getsize(onnx_path), "sha256": sha256_file(onnx_path),
                 "format": "onnx"},
        "input": {"shape": [None, *hwc], "layout": "NHWC", "dtype": "float32",
                  "range": [0.0, 1.0], "name": INPUT_NAME},
        "output": {"kind": "logits", "num_classes": int(num_classes), "name": OUTPUT_NAME},
        "licence": licence,
        "created": created,
        "code_version": code_version,
        "card": card,
        "parity": parity.to_dict(),
    }
    if keras is not None:
        entry["keras_url"], entry["keras_sha256"] = keras
    if notes and notes.strip():
        entry["notes"] = notes.strip()
    if meta.budget is not None:
        entry["training"]["budget"] = dict(meta.budget)
    if compared_with is not None:
        entry["compared_with"] = compared_with
    return entry


def _read_or_empty(manifest_path):
    if os.path.exists(manifest_path):
        return zoo_manifest.read_manifest(manifest_path)
    return zoo_manifest.empty_manifest()


def add_manifest_entry(manifest_path, entry):
    """Adds entry to the manifest at manifest_path (replacing one of the same name), atomically.

    A replaced entry's file is kept as the newest of the new entry's previous_versions (see
    zoo_manifest.upsert_entry). Creates the manifest if it does not exist; validates the
    result first; returns it.
    """
    manifest = zoo_manifest.upsert_entry(_read_or_empty(manifest_path), entry)
    zoo_manifest.write_manifest(manifest_path, manifest)
    return manifest


def _check_bundle_rule(manifest_path, files):
    """Refuses to put a file above the size rule into the package's own zoo under a relative
    URL: it would be left out of the wheel (setup.py) and unreachable once installed."""
    if os.path.realpath(manifest_path) != os.path.realpath(zoo_manifest.PACKAGE_MANIFEST):
        return
    for url, path in files:
        size = os.path.getsize(path)
        if zoo_manifest.is_local_path(url) and size > zoo_manifest.BUNDLE_MAX_BYTES:
            raise ExportError(
                f"{url}: {size} bytes is above the {zoo_manifest.BUNDLE_MAX_BYTES}-byte limit of "
                "files bundled in the package (atamp_tf/zoo/README.md); pass --base_url=https://"
                "... and upload the file there.")


def _file_name(url):
    return posixpath.basename(urllib.parse.urlsplit(url).path)


def keep_previous_file(entry, onnx_path):
    """Before entry's file replaces onnx_path: if the file there is one of entry's previous
    versions, re-addressed to its versioned name because entry's file takes its URL, renames it
    to that name (to be uploaded beside it when the URL is remote). Returns the new path or
    None."""
    if not os.path.isfile(onnx_path):
        return None
    sha256 = sha256_file(onnx_path)
    moved = zoo_manifest.versioned_url(entry["file"]["url"], sha256)
    if not any(v["file"]["sha256"] == sha256 and v["file"]["url"] == moved
               for v in entry.get("previous_versions", [])):
        return None
    target = os.path.join(os.path.dirname(onnx_path), _file_name(moved))
    os.replace(onnx_path, target)
    return target


def export_to_zoo(keras_path, meta, report, x, y, *, name, out_dir, card_dir, manifest_path,
                  base_url="", include_keras=False, licence="MIT", created=None,
                  code_version=None, opset=DEFAULT_OPSET, atol=DEFAULT_ATOL, batch_size=256,
                  notes="", compared_with=None, allow_failed_checks=False):
    """Exports keras_path to <out_dir>/<name>.onnx, writes its card and manifest entry.

    notes: optional free text (e.g. "Reduced-scale model: ..."), recorded as the entry's
    "notes" and shown as the card's Scope section; omitted from the entry when blank.

    x, y: the report's examples (the first report["num_examples"] of its split). Besides the
    parity check, the ONNX model's natural accuracy on them must equal the report's exactly, or
    ExportError is raised (the report is not about this checkpoint) and nothing is published.
    """
    if not zoo_manifest.NAME_PATTERN.match(name or ""):
        raise ValueError(f"--name: {name!r} must match {zoo_manifest.NAME_PATTERN.pattern}.")
    metrics = metrics_from_report(report, meta, allow_failed_checks=allow_failed_checks)
    if compared_with is not None:
        check_compared_with(compared_with, meta)
    n = metrics["num_examples"]
    if len(x) != n or len(y) != n:
        raise ValueError(f"report examples: the report covers {n} examples "
                         f"({metrics['examples']}), got {len(x)} images and {len(y)} labels.")
    model = load_keras_model(keras_path)
    onnx_path = os.path.join(out_dir, f"{name}.onnx")
    # Staged beside the published file, which is replaced only once every check has passed.
    staged = os.path.join(out_dir, f".{name}.onnx.staged")
    parity = export_model(model, staged, x_check=x, opset=opset, atol=atol,
                          batch_size=batch_size)
    correct = int(np.sum(parity.onnx_predictions == np.asarray(y)))
    recorded = round(metrics["accuracy"]["natural"] * n)
    keras, written = None, [staged]
    try:
        if correct != recorded:
            raise ExportError(f"{keras_path}: natural accuracy {correct}/{n} on the report's "
                              f"examples, but the report says {recorded}/{n}: is --report the "
                              "evaluation of this checkpoint?")
        if include_keras:
            keras_copy = os.path.join(out_dir, f"{name}.keras")
            written.append(keras_copy)
            shutil.copyfile(keras_path, keras_copy)
            keras = (_url_for(keras_copy, manifest_path, base_url), sha256_file(keras_copy))
        card_path = os.path.join(card_dir, f"{name}.md")
        entry = make_entry(
            name, meta, metrics, onnx_path=staged,
            url=_url_for(onnx_path, manifest_path, base_url),
            card=_url_for(card_path, manifest_path, ""), hwc=_input_hwc(model),
            num_classes=model.outputs[0].shape[-1], parity=parity, licence=licence,
            created=created or datetime.date.today().isoformat(),
            code_version=code_version or provenance.git_code_version(), keras=keras, notes=notes,
            compared_with=compared_with)
        _check_bundle_rule(manifest_path, [(entry["file"]["url"], staged)] + (
            [(keras[0], written[-1])] if keras else []))
        zoo_manifest.validate_entry(entry, where=f"new entry for {onnx_path}")
        manifest = zoo_manifest.upsert_entry(_read_or_empty(manifest_path), entry)
        zoo_manifest.validate_manifest(manifest)
    except BaseException:
        for path in written:
            if os.path.exists(path):
                os.remove(path)
        raise
    entry = zoo_manifest.find_entry(manifest, name)  # with the replaced one's file as history
    keep_previous_file(entry, onnx_path)
    os.replace(staged, onnx_path)
    os.makedirs(card_dir, exist_ok=True)
    atomic_write_text(card_path, model_card.render_card(entry))
    zoo_manifest.write_manifest(manifest_path, manifest)
    return entry



def reference_parity_block(parity, report_path):
    """The manifest's reference_parity block from a reference_cli table (parity.json)."""
    missing = [k for k in ("onnx_sha256", "num_examples", "ours", "reference", "agreement",
                           "disagreements") if k not in parity]
    if missing:
        raise ExportError(f"--add_parity: {report_path} lacks {missing}; expected the "
                          "parity.json of python -m atamp_tf.evaluate.reference_cli (run "
                          "since session 7, which records the ONNX file's sha256)")
    version = parity["ours"].get("settings", {}).get("version")
    if not version:
        raise ExportError(f"--add_parity: {report_path} does not say which AutoAttack version "
                          "ours ran (ours.settings.version)")
    ref = parity["reference"]["settings"]
    read_from = parity["ours"].get("settings", {}).get("read_from_fingerprint")
    return {
        "report": report_path, "onnx_sha256": parity["onnx_sha256"], "version": version,
        "ours": parity["ours"].get("model") or "not recorded",
        **({"ours_evaluation": read_from} if read_from else {}),
        "examples": parity.get("examples", f"{parity['num_examples']} examples"),
        "num_examples": int(parity["num_examples"]),
        "robust_ours": float(parity["ours"]["robust_accuracy"]),
        "robust_reference": float(parity["reference"]["robust_accuracy"]),
        "agreement": float(parity["agreement"]),
        "num_disagree": len(parity["disagreements"]),
        "disagree_indices": sorted(int(r["index"]) for r in parity["disagreements"]),
        "reference": f"pyautoattack {ref.get('pyautoattack', '?')}, torch {ref.get('torch', '?')}"
                     f", onnx2torch {ref.get('onnx2torch', '?')}",
    }


def add_reference_parity(manifest_path, name, parity_path):
    """Records a reference_cli comparison (parity.json) on zoo entry `name` and rewrites its
    card (the entry's `card`, beside the manifest). ExportError unless the comparison
    attacked this entry's file (same sha256) under its threat model. Returns the entry."""
    manifest, entry = _read_entry(manifest_path, name)
    parity = read_json(parity_path, "--add_parity")
    block = reference_parity_block(parity, parity_path)
    if block["onnx_sha256"] != entry["file"]["sha256"]:
        raise ExportError(f"--add_parity: {parity_path} compared the ONNX file with sha256 "
                          f"{block['onnx_sha256'][:16]}..., but {name}'s file is "
                          f"{entry['file']['sha256'][:16]}...: not this model")
    threat = parity.get("threat_model", {})
    if (threat.get("norm") != entry["threat_model"]["norm"] or not math.isclose(
            threat.get("eps", -1.0), entry["threat_model"]["eps"], rel_tol=1e-6)):
        raise ExportError(f"--add_parity: {parity_path} is at {threat}, but {name} is "
                          f"{entry['threat_model']}")
    headline = zoo_manifest.autoattack_version(entry["metrics"])
    if headline and headline != block["version"]:
        raise ExportError(f"--add_parity: {parity_path} compared the {block['version']} "
                          f"AutoAttack, but {name}'s AutoAttack is {headline}: compare that "
                          "version, or evaluate and export the entry with this one first")
    return _rewrite_entry(manifest_path, manifest, {**entry, "reference_parity": block},
                          "--add_parity")


def set_notes(manifest_path, name, notes):
    """Replaces zoo entry `name`'s notes (its card's Scope section; empty: none) and rewrites
    its card, the model and its numbers untouched. Returns the entry."""
    manifest, entry = _read_entry(manifest_path, name)
    entry = {k: v for k, v in entry.items() if k != "notes"}
    if notes.strip():
        entry["notes"] = notes.strip()
    return _rewrite_entry(manifest_path, manifest, entry, "--set_notes")


def _read_entry(manifest_path, name):
    """(manifest, its entry `name`); ExportError naming --name if there is none."""
    manifest = zoo_manifest.read_manifest(manifest_path)
    entry = zoo_manifest.find_entry(manifest, name)
    if entry is None:
        raise ExportError(f"--name: no zoo entry {name!r} in {manifest_path}")
    return manifest, entry


def _rewrite_entry(manifest_path, manifest, entry, how):
    """Writes the changed entry (validated) into the manifest and its card beside it."""
    zoo_manifest.validate_entry(entry, where=f"{entry['name']} with {how}")
    manifest["models"] = [entry if m["name"] == entry["name"] else m
                          for m in manifest["models"]]
    zoo_manifest.validate_manifest(manifest)
    card_path = os.path.join(os.path.dirname(os.path.abspath(manifest_path)), entry["card"])
    atomic_write_text(card_path, model_card.render_card(entry))
    zoo_manifest.write_manifest(manifest_path, manifest)
    return entry
