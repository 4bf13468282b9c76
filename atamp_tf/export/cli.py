"""Command line of the exporter: python -m atamp_tf.export --run_dir=RUN --report=REPORT.

    python -m atamp_tf.export --run_dir=runs/cifar10_linf --checkpoint=best \
        --report=runs/cifar10_linf/eval/report.json --name=cifar10-linf-preactresnet18-at-amp

writes atamp_tf/zoo/models/<name>.onnx (parity-checked on the report's examples),
atamp_tf/zoo/cards/<name>.md and the entry in atamp_tf/zoo/manifest.json (paths relative to the
current directory: run it from the checkout's root), keeping a replaced entry's file as a
previous version. Instead of --run_dir, --keras_model=FILE.keras with the training metadata
flags (--dataset, --norm, --eps, --arch, --method, --amp_*). Flags live here rather than in
atamp_tf.export so that importing the library defines no absl flags.
"""
import dataclasses
import os

from absl import app, flags

from atamp_tf import checkpoints, cli, export, rundir

_RUN_DIR = flags.DEFINE_string("run_dir", None, "Training run directory (atamp_tf.train).")
_CHECKPOINT = flags.DEFINE_enum("checkpoint", "best", ["best", "last"],
                                "Which checkpoint of --run_dir to export.")
_KERAS_MODEL = flags.DEFINE_string("keras_model", None, "A .keras file, instead of --run_dir.")
_REPORT = flags.DEFINE_string("report", None, "Evaluation report.json of this checkpoint "
                              "(python -m atamp_tf.evaluate); default where evaluate writes it: "
                              "<run_dir>/eval/report.json for best, <run_dir>/eval_last/"
                              "report.json for last.")
_NAME = flags.DEFINE_string("name", None, "Zoo name, e.g. cifar10-linf-preactresnet18-at-amp "
                            "(default <dataset>-<norm>-<arch>-<method>[-amp]).")
_OUT_DIR = flags.DEFINE_string("out_dir", "atamp_tf/zoo/models",
                               "Where <name>.onnx is written.")
_CARD_DIR = flags.DEFINE_string("card_dir", "atamp_tf/zoo/cards",
                                "Where the model card <name>.md goes.")
_MANIFEST = flags.DEFINE_string("manifest", "atamp_tf/zoo/manifest.json",
                                "Manifest to add the entry to.")
_BASE_URL = flags.DEFINE_string("base_url", "", "If set, file URLs are <base_url>/<file name> "
                                "(e.g. GitHub raw; required for a file above the package's "
                                "5 MB bundle limit); else paths relative to the manifest.")
_INCLUDE_KERAS = flags.DEFINE_bool("include_keras", False, "Also publish the .keras file.")
_LICENCE = flags.DEFINE_string("licence", "MIT", "Licence of the published weights.")
_CREATED = flags.DEFINE_string("created", None, "Creation date YYYY-MM-DD (default today).")
_CODE_VERSION = flags.DEFINE_string("code_version", None, "Default: git HEAD of this checkout.")
_COMPARED_WITH = flags.DEFINE_string(
    "compared_with", None, "CSV of published results for the card's 'Compared with' section "
    "(columns model,natural,reported,autoattack,source; percentages; e.g. "
    "docs/zoo/mnist_linf_published.csv).")
_NOTES = flags.DEFINE_string("notes", "", "Free-text notes on the model's scope (e.g. "
                             "'Reduced-scale model: ...'), recorded as the entry's notes and "
                             "shown as the card's Scope section; omitted when empty.")
_ALLOW_FAILED_CHECKS = flags.DEFINE_bool(
    "allow_failed_checks", False, "Publish a report whose sanity checks failed (refused by "
    "default); the failures are recorded in the entry and shown on its card.")
_ADD_PARITY = flags.DEFINE_string(
    "add_parity", None, "Instead of exporting: record this parity.json of python -m "
    "atamp_tf.evaluate.reference_cli (our AutoAttack against the reference, on the entry's "
    "own ONNX file) on the existing zoo entry --name, and rewrite its card.")
_SET_NOTES = flags.DEFINE_bool(
    "set_notes", False, "Instead of exporting: replace the notes of the existing zoo entry "
    "--name with --notes (empty: none) and rewrite its card; the model and its numbers stay.")
_OPSET = flags.DEFINE_integer("opset", export.DEFAULT_OPSET, "ONNX opset.", lower_bound=13)
_ATOL = flags.DEFINE_float("atol", export.DEFAULT_ATOL, "Largest allowed |logit difference| "
                           "between Keras and onnxruntime.", lower_bound=0.0)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Inference batch size.", lower_bound=1)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir (default: the run's).")
_NPZ_DIR = flags.DEFINE_string("npz_dir", None, "Local .npz data dir (default: the run's).")
# Training metadata, only with --keras_model (a run directory records it in run_config.json).
_DATASET = flags.DEFINE_string("dataset", None, "Dataset the model was trained on.")
_NORM = flags.DEFINE_enum("norm", None, ["linf", "l2"], "Threat model norm.")
_EPS = flags.DEFINE_string("eps", None, "Threat model radius, a number or fraction (8/255).")
_ARCH = flags.DEFINE_string("arch", None, "Architecture name (atamp_tf.models).")
_WIDTH = flags.DEFINE_integer("width", None, "Architecture width, if any.")
_DEPTH = flags.DEFINE_integer("depth", None, "Architecture depth, if any.")
_METHOD = flags.DEFINE_string("method", None, "Training method (at, trades, mart, rst).")
_AMP_DELTA = flags.DEFINE_float("amp_delta", None, "AMP radius delta.")
_AMP_XI = flags.DEFINE_float("amp_xi", None, "AMP inner step size xi.")
_AMP_STEPS = flags.DEFINE_integer("amp_steps", None, "AMP inner iterations.")
_AMP_SCOPE = flags.DEFINE_string("amp_scope", None, "AMP norm scope (tensor, global, awp).")
_TRAIN_FLAGFILE = flags.DEFINE_string(
    "train_flagfile", "", "Repository flagfile that trained it (recorded as training.flagfile; "
    "with --keras_model its lines are also recorded as training.flags).")

_META_FLAGS = ("dataset", "norm", "eps", "arch", "width", "depth", "method", "amp_delta",
               "amp_xi", "amp_steps", "amp_scope")


def _meta_from_flags():
    """ModelMeta from the explicit metadata flags (--keras_model mode)."""
    config = {k: flags.FLAGS[k].value for k in _META_FLAGS}
    config["eps"] = checkpoints.parse_fraction(_EPS.value, "eps") if _EPS.value else None
    config = {k: v for k, v in config.items() if v is not None}
    lines = []
    if _TRAIN_FLAGFILE.value:
        with open(_TRAIN_FLAGFILE.value, encoding="utf-8") as f:
            lines = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
    return export.meta_from_run_config(config, lines, flagfile=_TRAIN_FLAGFILE.value,
                                       where="--keras_model metadata flags (--dataset ...)")


def _model_source():
    """(keras path, ModelMeta, run_config) from --run_dir or --keras_model + metadata flags."""
    if bool(_RUN_DIR.value) == bool(_KERAS_MODEL.value):
        raise app.UsageError("pass exactly one of --run_dir and --keras_model.")
    if _RUN_DIR.value:
        given = [f"--{k}" for k in _META_FLAGS if flags.FLAGS[k].present]
        if given:
            raise app.UsageError(f"{', '.join(given)}: with --run_dir the metadata comes from "
                                 "its run_config.json; drop these flags.")
        return export.read_run_dir(_RUN_DIR.value, _CHECKPOINT.value,
                                   flagfile=_TRAIN_FLAGFILE.value)
    meta = _meta_from_flags()
    budget = export.budget_of_keras_file(_KERAS_MODEL.value)  # inside a run directory
    if budget is not None:
        meta = dataclasses.replace(meta, budget=budget)
    return _KERAS_MODEL.value, meta, {}


def _default_report():
    """The checkpoint's evaluation where evaluate writes it by default (<run_dir>/eval/ for
    best, <run_dir>/eval_last/ for last), else <run_dir>/report.json."""
    if not _RUN_DIR.value:
        return None
    paths = rundir.RunPaths(_RUN_DIR.value)
    for path in (paths.eval_last_report if _CHECKPOINT.value == "last" else paths.eval_report,
                 os.path.join(_RUN_DIR.value, "report.json")):
        if os.path.isfile(path):
            return path
    return None


def main(argv):
    cli.no_positional(argv)
    if _ADD_PARITY.value:
        if not _NAME.value:
            raise app.UsageError("--add_parity needs --name, the zoo entry it is about.")
        entry = export.add_reference_parity(_MANIFEST.value, _NAME.value, _ADD_PARITY.value)
        parity = entry["reference_parity"]
        print(f"{entry['name']}: reference parity on {parity['num_examples']} examples, "
              f"agreement {parity['agreement']:.4f} ({parity['num_disagree']} differ); "
              f"manifest {_MANIFEST.value}, card {entry['card']}.")
        return
    if _SET_NOTES.value:
        if not _NAME.value:
            raise app.UsageError("--set_notes needs --name, the zoo entry it is about.")
        entry = export.set_notes(_MANIFEST.value, _NAME.value, _NOTES.value)
        print(f"{entry['name']}: notes {'set' if entry.get('notes') else 'removed'}; manifest "
              f"{_MANIFEST.value}, card {entry['card']}.")
        return
    _export()


def _export():
    keras_path, meta, config = _model_source()
    report_path = _REPORT.value or _default_report()
    if not report_path:
        raise app.UsageError("--report: required with --keras_model, or when --run_dir has no "
                             "eval/report.json (python -m atamp_tf.evaluate writes it).")
    report = export.read_report(report_path)
    compared_with = (export.read_compared_with(_COMPARED_WITH.value)
                     if _COMPARED_WITH.value else None)
    from atamp_tf import data  # pylint: disable=import-outside-toplevel

    x, y = data.load_arrays(meta.dataset, report["split"], num_examples=report["num_examples"],
                            data_dir=_DATA_DIR.value or config.get("data_dir"),
                            npz_dir=_NPZ_DIR.value or config.get("npz_dir"))
    amp_tag = "-amp" if meta.amp["delta"] else ""
    default_name = f"{meta.dataset}-{meta.norm}-{meta.arch}-{meta.method}{amp_tag}"
    name = _NAME.value or default_name.lower().replace("_", "-")
    entry = export.export_to_zoo(
        keras_path, meta, report, x, y, name=name,
        out_dir=_OUT_DIR.value, card_dir=_CARD_DIR.value, manifest_path=_MANIFEST.value,
        base_url=_BASE_URL.value, include_keras=_INCLUDE_KERAS.value, licence=_LICENCE.value,
        created=_CREATED.value, code_version=_CODE_VERSION.value, opset=_OPSET.value,
        atol=_ATOL.value, batch_size=_BATCH_SIZE.value, notes=_NOTES.value,
        compared_with=compared_with, allow_failed_checks=_ALLOW_FAILED_CHECKS.value)
    print(f"exported {entry['name']}: {entry['file']['url']} ({entry['file']['size']} bytes, "
          f"sha256 {entry['file']['sha256']}); parity max |diff| "
          f"{entry['parity']['max_abs_diff']:.2e} on {entry['parity']['num_examples']} examples; "
          f"natural accuracy {entry['metrics']['accuracy']['natural']:.4f}; manifest "
          f"{_MANIFEST.value}, card {entry['card']}.")
    if entry.get("previous_versions"):
        newest = entry["previous_versions"][0]["file"]
        print(f"{len(entry['previous_versions'])} earlier version(s) stay addressable "
              f"(--revision=SHA256); the newest of them, {newest['sha256'][:16]}, is at "
              f"{newest['url']} (upload it there too when that URL is remote).")


def run():
    cli.run(main, errors=(export.ExportError,))
