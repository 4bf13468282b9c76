"""python -m atamp_tf.evaluate: the paper's attack suite (Table 3) on a model -> report.json.

    python -m atamp_tf.evaluate --model=runs/at_amp --num_examples=1000 --output_dir=eval

--model is a run directory (its checkpoints/best.keras, or last.keras with --checkpoint=last;
dataset, data location and threat model default to its run_config.json), a `.keras` file, or
an exported `.onnx` file. An ONNX model answers natural accuracy and the gradient-free attacks
(SPSA, Square) through onnxruntime; the white-box attacks and AutoAttack need gradients, so
they run on the `.keras` checkpoint it was exported from (--keras_model) or are skipped, and
the report says so. Writes report.json (settings, accuracy per attack, worst case per example,
sanity checks), report.md (the Table 3 row), per_example.npz (correctness per attack) and
leaderboard.json (the fields of a RobustBench model_info file; leaderboard_entry).
The flags live in atamp_tf.evaluate.cli, so importing this module defines no absl flags.
The package `atamp_tf.evaluate` re-exports this module's names on first use.
"""
import dataclasses
import datetime
import json
import os
import shutil
import time

import numpy as np
from absl import logging

from atamp_tf import provenance, rundir
from atamp_tf.attacks import geometry, registry, sanity, suite
from atamp_tf.checkpoints import (  # noqa: F401 (public here too)
    PARITY_ATOL,
    ModelSource,
    checkpoint_path,
    index_ranges,
    load_keras_model,
    onnx_session,
    parse_fraction,
    parse_indices,
    resolve_model,
    run_dir_of,
)
from atamp_tf.formatting import percent

DEFAULT_EPS = {"linf": "8/255", "l2": "128/255"}
PARTIAL_DIR = rundir.PARTIAL_DIR  # finished attacks of an unfinished run
MODEL_CHECK_EXAMPLES = 200  # examples the model checks (sanity.check_model) run on
# (export's default too, atamp_tf.export.DEFAULT_ATOL: one tolerance, the README's)

# ---------------------------------------------------------------------------- arguments
DEFAULT_SETTINGS = suite.SuiteSettings()  # frozen: one shared default instance


def parse_attacks(text, norm, *, onnx=False):
    """Attack names from a comma list (None: the defaults, Table 3's, plus Square on an ONNX
    model), in report order (the registry's).

    `natural` is always included: it costs one pass and every sanity check compares with it.
    """
    known = registry.names(norm)
    if text is None:
        return registry.table3_attacks(norm) + (("square",) if onnx else ())
    names = [name.strip() for name in str(text).split(",") if name.strip()]
    for name in names:
        if name in registry.names() and name not in known:
            if registry.get(name).defaults.get("loss") == "cw_margin":
                raise ValueError(f"--attacks: {name} is the CW attack of the other norm; under "
                                 f"--norm={norm} it is called {registry.cw_name(norm)}")
            raise ValueError(f"--attacks: {name} runs under --norm="
                             f"{', '.join(registry.get(name).norms)} only")
        if name not in known:
            raise ValueError(f"--attacks: unknown attack {name!r}; known under --norm={norm}: "
                             f"{', '.join(known)}")
    if not names:
        raise ValueError("--attacks: empty list; name at least one attack")
    return tuple(name for name in known if name in names or name == "natural")


# ---------------------------------------------------------------------------- models

def keras_logits_fn(model):
    """logits_fn of a Keras model in inference mode (BatchNorm uses its moving statistics)."""
    return lambda x: model(x, training=False)



def onnx_numpy_fn(session):
    """numpy images -> numpy logits through an onnxruntime session (first input and output)."""
    name = session.get_inputs()[0].name

    def logits(x):
        return session.run(None, {name: np.ascontiguousarray(x, np.float32)})[0]
    return logits


def numpy_as_tf_logits_fn(fn, num_classes):
    """A traceable logits_fn around a numpy one (no gradient): for gradient-free attacks."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    def logits(x):
        out = tf.numpy_function(fn, [x], tf.float32, stateful=False)
        return tf.ensure_shape(out, [None, num_classes])
    return logits


# ---------------------------------------------------------------------------- evaluation

@dataclasses.dataclass
class _Target:
    """A model the attacks can query: its traceable logits_fn and a numpy predictor."""
    name: str
    logits_fn: object
    predict: object  # numpy images -> numpy logits
    model: object    # what AutoAttack is given: the Keras model, or the numpy logits function


def _keras_target(model, batch_size):
    fn = keras_logits_fn(model)
    compiled = suite.compile_logits(fn)
    return _Target("keras", fn, lambda x: suite.predict(compiled, x, batch_size=batch_size),
                   model)


def _onnx_target(session, num_classes, batch_size):
    fn = onnx_numpy_fn(session)

    def predict(x):
        outs = [fn(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
        return np.concatenate(outs) if outs else np.zeros((0, num_classes), np.float32)
    return _Target("onnx", numpy_as_tf_logits_fn(fn, num_classes), predict, fn)


def _run_autoattack(name, target, x, y, *, norm, eps, num_classes, seed, batch_size, settings,
                    verbose=False, progress=None):
    """x_adv and extra report fields of AutoAttack, or of its Square component alone, on a
    target (a Keras model, or an ONNX session's numpy function for Square)."""
    from atamp_tf.attacks import autoattack as aa  # pylint: disable=import-outside-toplevel
    on_keras = target.name == "keras"
    result = aa.autoattack(
        target.model if on_keras else None, x, y, norm=norm, eps=eps, num_classes=num_classes,
        seed=seed, version=settings.autoattack_version,
        batch_size=settings.autoattack_batch_size or batch_size,
        components=("square",) if name == "square" else
        (tuple(settings.autoattack_components) or None),
        n_iter=settings.autoattack_iters, n_queries=settings.square_queries,
        predict_fn=None if on_keras else target.model, verbose=verbose, progress=progress)
    extra = {"reported_accuracy": float(result.accuracy),
             "accuracy_after": {k: float(v) for k, v in result.accuracy_after.items()},
             "fooled_first_by": {k: int(np.sum(v)) for k, v in result.component_success.items()},
             "autoattack_settings": result.settings,
             # per example, moved out of the JSON report into per_example.npz
             "component_success": {k: np.asarray(v, bool).tolist()
                                   for k, v in result.component_success.items()}}
    return np.asarray(result.x_adv, np.float32), extra


def _check_inputs(x, y, *, norm, eps, batch_size):
    """x, y as float32 / int32 arrays; ValueError for anything the suite cannot run on."""
    geometry.check_norm(norm, "--norm")
    geometry.check_number("eps", eps)
    geometry.check_number("--batch_size", batch_size, low=1, whole=True)
    x = np.asarray(x, np.float32)
    y = np.asarray(y).astype(np.int32)
    if x.ndim != 4 or y.ndim != 1 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"expected NHWC images and one label each, got {x.shape} and {y.shape}")
    if x.min() < 0 or x.max() > 1:
        raise ValueError(f"pixels must be in [0, 1], got [{x.min()}, {x.max()}]")
    return x, y


def as_float32(model):
    """(network computing in float32, the compute dtypes it had): a checkpoint trained under a
    mixed policy (bfloat16 / float16 compute) is rebuilt with float32 layers and the same
    weights, so that no attack is weakened by low-precision gradients."""
    import keras  # pylint: disable=import-outside-toplevel
    had = sorted({layer.compute_dtype for layer in model.layers})
    if had == ["float32"]:
        return model, had

    def float32_layer(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})
    clone = keras.models.clone_model(model, clone_function=float32_layer)
    clone.set_weights(model.get_weights())
    return clone, had


def _float32_everywhere():
    """Attacks in full float32: TensorFloat-32 matmuls and convolutions off (TensorFlow turns
    them on by default on Ampere and later GPUs; a no-op on CPUs)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    tf.config.experimental.enable_tensor_float_32_execution(False)


def _make_targets(keras_model, onnx_path, x, *, num_classes, batch_size):
    """{"keras": ..., "onnx": ...} (whichever were given) and the number of classes."""
    targets = {}
    if keras_model is not None:
        targets["keras"] = _keras_target(keras_model, batch_size)
        num_classes = num_classes or int(keras_model.output_shape[-1])
    if onnx_path is not None:
        session = onnx_session(onnx_path)
        num_classes = num_classes or int(onnx_numpy_fn(session)(x[:1]).shape[-1])
        targets["onnx"] = _onnx_target(session, num_classes, batch_size)
    if not targets:
        raise ValueError("evaluate_model needs keras_model, onnx_path or both")
    return targets, num_classes


def _skip_reason(name, names):
    reason = ("needs gradients, and only an ONNX file was given: pass --keras_model (the "
              ".keras checkpoint it was exported from)")
    if name == "autoattack":
        reason += ("; its gradient-free component ran as `square`" if "square" in names
                   else "; --attacks=square runs its gradient-free component")
    return reason


def _craft(name, target, x, y, *, norm, eps, num_classes, seed, batch_size, settings, verbose,
           progress=None):
    """(x_adv, extra report fields) of one attack on one target (progress: AutoAttack's
    per-batch rundir.Progress, or None)."""
    if name == "natural":
        return x, {}
    if registry.get(name).runner in ("autoattack", "square"):
        return _run_autoattack(name, target, x, y, norm=norm, eps=eps, num_classes=num_classes,
                               seed=seed, batch_size=batch_size, settings=settings,
                               verbose=verbose, progress=progress)
    attack = suite.make_attack(name, target.logits_fn, norm=norm, eps=eps, settings=settings)
    return suite.run_batched(attack, x, y, batch_size=batch_size, seed=seed,
                             stream=registry.get(name).stream,
                             label=registry.get(name).label, verbose=verbose), {}


class _Saved:
    """The finished attacks of an evaluation under state_dir, and AutoAttack's per-batch
    progress; every file is keyed by the evaluation's fingerprint, so another model, examples
    or settings never reuse them. A finished attack keeps what the report needs: the
    per-example correctness, its perturbation check, the report fields, the seconds, and (for
    the attacks whose outputs the report keeps) only the outputs that differ from the inputs.
    So the state stays small enough to carry a long evaluation to another machine."""

    def __init__(self, state_dir, key):
        self.state_dir, self.key = state_dir or None, key

    def progress(self, name, part="done"):
        if self.state_dir is None:
            return None
        return rundir.Progress(os.path.join(self.state_dir, f"{name}.{part}.npz"), self.key)

    def load(self, name, x):
        """(correct, perturbation Check, extra, seconds, x_adv or None) of a finished attack."""
        saved = (self.progress(name).load()
                 if self.state_dir is not None and name != "natural" else None)
        if saved is None or "correct" not in saved[0]:  # none, or older code's format
            return None
        arrays, meta = saved
        x_adv = (geometry.with_rows(x, arrays["changed"], arrays["changed_rows"])
                 if meta["kept_outputs"] else None)
        return (arrays["correct"], sanity.Check(**meta["check"]), meta["extra"],
                meta["seconds"], x_adv)

    def save(self, name, x, correct, check, extra, seconds, x_adv=None):
        if self.state_dir is None or name == "natural":
            return
        outputs = {}
        if x_adv is not None:
            outputs["changed"], outputs["changed_rows"] = geometry.changed_rows(x, x_adv)
        self.progress(name).save({"check": check.as_dict(), "extra": extra, "seconds": seconds,
                                  "kept_outputs": x_adv is not None},
                                 correct=correct, **outputs)


def _evaluation_key(keras_model, onnx_path, x, y, **settings):
    """Fingerprint of what an evaluation computes: the model's weights and ONNX file, the
    examples and every setting."""
    models = [rundir.fingerprint(*keras_model.get_weights()) if keras_model is not None else "",
              rundir.sha256_file(onnx_path) if onnx_path is not None else ""]
    return rundir.fingerprint(x, y, models, {k: str(v) for k, v in settings.items()})


def evaluate_model(x, y, *, norm, eps, attacks=None, keras_model=None, onnx_path=None,
                   num_classes=None, batch_size=128, seed=0,
                   settings=DEFAULT_SETTINGS, verbose=True, state_dir=None):
    """Runs the attack suite on (x, y); returns the report dict (see module docstring).

    state_dir: where finished attacks and AutoAttack's batches are saved as they complete; the
      same call after a kill resumes there and returns the report an uninterrupted run would.

    keras_model: a Keras model mapping [0,1] images to logits (white-box attacks need it).
    onnx_path: an exported ONNX file; if given, natural accuracy and the gradient-free attacks
      are measured on it through onnxruntime.
    attacks: names (sequence or comma string; None: the defaults). The report's
      `per_example` holds numpy correctness masks; write_report moves them to an .npz file.
    """
    import keras  # pylint: disable=import-outside-toplevel
    x, y = _check_inputs(x, y, norm=norm, eps=eps, batch_size=batch_size)
    if attacks is not None and not isinstance(attacks, str):
        attacks = ",".join(attacks)
    names = parse_attacks(attacks, norm, onnx=onnx_path is not None)
    keras.utils.set_random_seed(seed)
    _float32_everywhere()
    compute_dtypes = None
    if keras_model is not None:
        keras_model, compute_dtypes = as_float32(keras_model)
    started = time.time()
    targets, num_classes = _make_targets(keras_model, onnx_path, x, num_classes=num_classes,
                                         batch_size=batch_size)
    primary = targets.get("onnx") or targets["keras"]
    natural_logits = primary.predict(x)
    checks = []
    if len(targets) == 2:
        checks.append(_parity_check(targets["keras"].predict(x), natural_logits))

    state_dir = state_dir or None
    saved = _Saved(state_dir, None if state_dir is None else _evaluation_key(
        keras_model, onnx_path, x, y, norm=norm, eps=eps, names=names, seed=seed,
        batch_size=batch_size, settings=settings))
    results, skipped, correct, fooled_by, adversarial = {}, {}, {}, {}, {}
    for name in names:
        attack = registry.get(name)
        target = targets.get("keras") if attack.needs_gradients else primary
        if target is None:
            skipped[name] = _skip_reason(name, names)
            continue
        done = saved.load(name, x)
        if done is not None:
            correct[name], perturbation, extra, seconds, x_adv = done
            logging.info("%s: finished in an earlier run, read from %s", name, state_dir)
        else:
            tic = time.time()
            try:
                x_adv, extra = _craft(name, target, x, y, norm=norm, eps=eps,
                                      num_classes=num_classes, seed=seed,
                                      batch_size=batch_size, settings=settings,
                                      verbose=verbose, progress=saved.progress(name, "batches"))
            except ImportError as err:  # autoattack / square without the AutoAttack module
                skipped[name] = f"atamp_tf.attacks.autoattack is not available ({err})"
                continue
            seconds = time.time() - tic
            logits = natural_logits if name == "natural" else target.predict(x_adv)
            correct[name] = logits.argmax(1) == y
            perturbation = sanity.check_perturbation(name, x, x_adv, norm=norm, eps=eps)
            saved.save(name, x, correct[name], perturbation, extra, seconds,
                       x_adv if "component_success" in extra else None)
        extra = dict(extra)
        component_success = extra.pop("component_success", None)
        if component_success is not None:  # AutoAttack: who fooled each example, and its output
            fooled_by.update({f"{name}_fooled_by_{c}": np.asarray(v, bool)
                              for c, v in component_success.items()})
            adversarial[name] = x_adv
        if name != "natural":
            checks.append(perturbation)
        results[name] = {"label": attack.label, "kind": attack.kind,
                         "run_on": target.name,
                         "settings": suite.attack_settings(name, norm=norm, eps=eps,
                                                           settings=settings),
                         "accuracy": float(correct[name].mean()),
                         "num_correct": int(correct[name].sum()), "seconds": round(seconds, 3),
                         **extra}
        logging.info("%s: accuracy %.4f (%d/%d) in %.1fs", name, results[name]["accuracy"],
                     results[name]["num_correct"], len(x), seconds)
    accuracy = {name: r["accuracy"] for name, r in results.items()}
    checks += sanity.check_accuracies(accuracy, len(x))
    if "keras" in targets:
        subset = slice(0, min(len(x), MODEL_CHECK_EXAMPLES))
        checks += sanity.check_model(targets["keras"].logits_fn, x[subset], y[subset], norm=norm,
                                     randomised_ok=settings.autoattack_version == "rand")
    for name, r in results.items():
        if "reported_accuracy" in r and settings.autoattack_version != "rand":  # rand: EOT
            checks.append(sanity.check_reported_accuracy(name, r["reported_accuracy"],
                                                         r["accuracy"], len(x)))
    square_fooled = results.get("autoattack", {}).get("fooled_first_by", {}).get("square")
    if square_fooled is not None:
        checks.append(sanity.check_square_after_white_box(square_fooled, len(x)))
    sanity.warn_failures(checks)
    return {
        "threat_model": {"norm": norm, "eps": float(eps)},
        "num_examples": int(len(x)),
        "num_classes": int(num_classes),
        "seed": int(seed),
        "batch_size": int(batch_size),
        "precision": {"compute_dtype": "float32", "tensor_float_32": False,
                      "model_compute_dtypes": compute_dtypes,
                      "note": "the Keras model's attacks run in float32; a model trained "
                              "under a mixed policy is rebuilt with float32 layers (same "
                              "weights)" + ("; the ONNX file runs in the precision it was "
                                            "exported with" if onnx_path else "")},
        "attacks": results,
        "skipped": skipped,
        "accuracy": accuracy,
        "worst_case": _worst_case(correct, list(results)),
        "checks": [check.as_dict() for check in checks],
        "checks_passed": all(check.passed for check in checks),
        "seconds": round(time.time() - started, 3),
        "per_example": correct,
        "per_example_components": fooled_by,
        "adversarial": {name: (x, x_adv) for name, x_adv in adversarial.items()},
    }


def _parity_check(keras_logits, onnx_logits):
    diff = float(np.abs(keras_logits - onnx_logits).max())
    agree = float((keras_logits.argmax(1) == onnx_logits.argmax(1)).mean())
    return sanity.Check("onnx_keras_parity", diff <= PARITY_ATOL,
                        f"largest |Keras - ONNX| logit difference {diff:.3g} (accepted up to "
                        f"{PARITY_ATOL:g}); predictions agree on {agree:.2%} of examples")


def _worst_case(correct, names):
    """Per example: robust only if correct naturally and under every attack that ran."""
    robust = np.logical_and.reduce([correct[name] for name in names])
    broken_first = {}
    for i in np.flatnonzero(~robust):
        first = next(name for name in names if not correct[name][i])
        broken_first[first] = broken_first.get(first, 0) + 1
    return {"accuracy": float(robust.mean()), "num_robust": int(robust.sum()),
            "over": list(names), "broken_first_by": broken_first}


# ---------------------------------------------------------------------------- reports

def _percent(value):
    return percent(value, 2, missing="–")


def markdown_report(report):
    """report.md: failed checks first, then the Table 3 row, attack settings and checks."""
    failed = [c for c in report["checks"] if not c["passed"]]
    lines = []
    if failed:
        lines += ["## WARNING: sanity checks failed", "",
                  "The numbers below may not measure robustness (see Checks).", ""]
        lines += [f"- **{c['name']}**: {c['detail']}" for c in failed] + [""]
    threat = report["threat_model"]
    name = report.get("model_name", "model")
    keras_note = (f" (white-box attacks on `{report['keras_model']}`)"
                  if report.get("keras_model") and report.get("onnx") else "")
    lines += [f"# Robustness of {name}", "",
              f"- model: `{report.get('model', name)}`{keras_note}",
              f"- data: {report.get('dataset', '?')}, "
              f"{report.get('examples', str(report['num_examples']) + ' examples')}",
              f"- threat model: {threat['norm']}, eps = {threat.get('eps_text', threat['eps'])} "
              f"({threat['eps']:.6g})",
              f"- seed {report['seed']}, {report['seconds']:.1f} s", ""]
    norm = threat["norm"]
    columns = list(registry.table3_attacks(norm))
    columns += [name for name in report["accuracy"] if name not in columns]
    acc = report["accuracy"]
    lines += ["| Defense | " + " | ".join(registry.get(c).label for c in columns)
              + " | Worst case |",
              "| --- |" + " ---: |" * (len(columns) + 1),
              f"| {name} | " + " | ".join(_percent(acc.get(c)) for c in columns)
              + f" | {_percent(report['worst_case']['accuracy'])} |", "",
              "Accuracy (%) on the adversarial examples; – = not run. Worst case: correct "
              "naturally and under every attack run.", ""]
    if report["skipped"]:
        lines += ["Skipped:", ""] + [f"- {name}: {why}" for name, why in
                                     report["skipped"].items()] + [""]
    lines += ["## Attacks", "", "| Attack | Run on | Accuracy | Seconds | Settings |",
              "| --- | --- | ---: | ---: | --- |"]
    for r in report["attacks"].values():
        settings = ", ".join(f"{k}={v}" for k, v in r["settings"].items()
                             if k not in ("norm", "eps", "implementation"))
        lines.append(f"| {r['label']} | {r['run_on']} | {_percent(r['accuracy'])} | "
                     f"{r['seconds']:.1f} | {settings} |")
    lines += ["", "## Checks", ""]
    lines += [f"- {'PASS' if c['passed'] else '**FAIL**'} {c['name']}: {c['detail']}"
              for c in report["checks"]]
    return "\n".join(lines) + "\n"


ADDITIONAL_DATA_METHODS = ("rst", "pretrain")  # unlabeled data (RST) or a pre-trained network


def _architecture(config):
    """RobustBench-style architecture name from a run config, e.g. preact_resnet18-w16."""
    if not config.get("arch"):
        return "unknown"
    sizes = "".join(f"-{k[0]}{config[k]}" for k in ("depth", "width") if config.get(k))
    return f"{config['arch']}{sizes}"


def leaderboard_entry(report, run_config=None):
    """The fields of a RobustBench model_info file (robustbench's README) for this report, plus
    the threat model and the exact examples; autoattack_acc only for the standard version on
    the test split (a reduced AutoAttack is not what a leaderboard ranks, so it is left out and
    said why); a footnote also says when the examples are a subset or a sanity check failed."""
    config = run_config or {}
    accuracy, threat = report["accuracy"], report["threat_model"]
    aa = report.get("attacks", {}).get("autoattack", {})
    version = aa.get("settings", {}).get("version")
    entry = {
        "link": "", "name": report.get("model_name", ""), "authors": "", "venue": "",
        "additional_data": (config.get("method") in ADDITIONAL_DATA_METHODS
                            if config.get("method") else None),  # None: no run config says
        "number_forward_passes": 1,
        "dataset": report.get("dataset", ""),
        "threat_model": {"linf": "Linf", "l2": "L2"}[threat["norm"]],
        "architecture": _architecture(config),
        "eps": threat.get("eps_text") or f"{threat['eps']:g}",
        "clean_acc": f"{100 * accuracy['natural']:.2f}",
        "reported": "",
        "n_examples": report["num_examples"],
        "examples": {"split": report.get("split", ""),
                     "indices": (index_ranges(report["example_indices"])
                                 if "example_indices" in report
                                 else f"0-{report['num_examples'] - 1}"),
                     "order": "the split's canonical order (tensorflow-datasets order; the "
                              "official file order for the local .npz arrays)"},
    }
    notes, split = [], report.get("split", "")
    if split != "test":
        notes.append(f"evaluated on the {split!r} split, not the test set: no autoattack_acc")
    elif accuracy.get("autoattack") is not None and version == "standard":
        entry["autoattack_acc"] = f"{100 * accuracy['autoattack']:.2f}"
    else:
        notes.append("no standard AutoAttack in this evaluation" if version is None else
                     f"AutoAttack ran as version {version!r}, not the standard one: "
                     "no autoattack_acc")
    if not str(report.get("examples", "")).startswith("all"):
        which = report.get("examples") or f"{report['num_examples']} examples"
        notes.append(f"a subset: {which}, not the whole split")
    if entry["additional_data"] is None:
        notes.append("additional_data unknown: no run_config.json says how it was trained")
    failed = registry.failed_in_report(report)
    if failed:
        notes.append(f"sanity checks failed: {', '.join(c['name'] for c in failed)} (report.md)")
    if notes:
        entry["footnote"] = "; ".join(notes)
    return entry


def write_report(report, output_dir, run_config=None):
    """Writes report.json, report.md, leaderboard.json (leaderboard_entry) and
    per_example.npz into output_dir; returns their paths."""
    os.makedirs(output_dir, exist_ok=True)
    paths = {"json": os.path.join(output_dir, "report.json"),
             "md": os.path.join(output_dir, "report.md"),
             "leaderboard": os.path.join(output_dir, "leaderboard.json")}
    correct = report.get("per_example")
    if isinstance(correct, dict):
        paths["npz"] = os.path.join(output_dir, "per_example.npz")
        components = report.pop("per_example_components", None) or {}
        np.savez_compressed(paths["npz"], **{f"correct_{k}": v for k, v in correct.items()},
                            **components)
        report["per_example"] = {"file": "per_example.npz",
                                 "arrays": [f"correct_{k}" for k in correct],
                                 "meaning": "bool per example, in the order of `examples`: "
                                            "classified correctly at the attack's output"}
        if components:
            report["per_example"]["component_arrays"] = list(components)
            report["per_example"]["component_meaning"] = (
                "<attack>_fooled_by_<component>: bool per example, that AutoAttack component "
                "was the first to fool it")
    adversarial = report.pop("adversarial", None) or {}
    if adversarial:
        paths["adversarial"] = os.path.join(output_dir, "adversarial.npz")
        arrays = {}
        for name, (x, x_adv) in adversarial.items():
            arrays[f"{name}_indices"], arrays[f"{name}_x_adv"] = geometry.changed_rows(x, x_adv)
        np.savez_compressed(paths["adversarial"], **arrays)
        report["adversarial"] = {
            "file": "adversarial.npz", "arrays": list(arrays),
            "meaning": "<attack>_indices: the examples (positions in `examples`) whose "
                       "adversarial example differs from the clean image; <attack>_x_adv: "
                       "those adversarial examples (float32 NHWC in [0,1]); every other "
                       "example's is its clean image"}
    rundir.atomic_write_text(paths["json"], json.dumps(report, indent=2) + "\n")
    rundir.atomic_write_text(paths["md"], markdown_report(report))
    rundir.atomic_write_json(paths["leaderboard"], leaderboard_entry(report, run_config))
    return paths


def _versions():
    import cleverhans  # pylint: disable=import-outside-toplevel
    import keras  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    return {"tensorflow": tf.__version__, "keras": keras.__version__,
            "cleverhans": getattr(cleverhans, "__version__", "unknown")}


def _code_version_started(state_dir):
    """The code version the evaluation in state_dir started with (recorded on its first
    start, read back on a resume)."""
    path = os.path.join(state_dir, "code_version.txt")
    if not os.path.isfile(path):
        os.makedirs(state_dir, exist_ok=True)
        rundir.atomic_write_text(path, provenance.code_version())
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


def evaluate_path(model, *, checkpoint="best", keras_model=None, dataset=None, split="test",
                  data_dir=None, npz_dir=None, num_examples=None, attacks=None, norm=None,
                  eps=None, batch_size=128, seed=0, output_dir=None,
                  settings=DEFAULT_SETTINGS, verbose=True, indices=None):
    """Resolves the model and data, runs the suite, writes the report; returns the report.

    attacks: comma string or None; eps: number, fraction string or None (run's / default);
    indices: positions in the split to evaluate (parse_indices), instead of num_examples.
    """
    source = resolve_model(model, checkpoint=checkpoint, keras_model=keras_model)
    config = source.run_config
    norm = geometry.check_norm(norm or config.get("norm") or "linf", "--norm")
    eps_text = str(eps) if eps is not None else (
        str(config.get("eps_text") or config["eps"])
        if "eps" in config and config.get("norm") == norm else DEFAULT_EPS[norm])
    eps_value = parse_fraction(eps_text, "eps")
    names = parse_attacks(attacks, norm, onnx=source.onnx_path is not None)
    dataset = dataset or config.get("dataset")
    if not dataset:
        raise ValueError("--dataset is required when --model is not a run directory with a "
                         "run_config.json naming one")
    if num_examples is not None and (int(num_examples) != num_examples or num_examples < 1):
        raise ValueError(f"--num_examples must be a whole number >= 1, got {num_examples!r}")
    if indices is not None and num_examples is not None:
        raise ValueError("--indices and --num_examples: give one of them, not both")
    from atamp_tf import data  # pylint: disable=import-outside-toplevel
    x, y = data.load_arrays(dataset, split, data_dir=data_dir or config.get("data_dir"),
                            npz_dir=npz_dir or config.get("npz_dir"), num_examples=num_examples)
    if indices is not None:
        if indices[-1] >= len(x):
            raise ValueError(f"--indices: {indices[-1]} is past the last example of the {split} "
                             f"split ({len(x)} examples, positions 0-{len(x) - 1})")
        x, y = x[indices], y[indices]
    network = load_keras_model(source.keras_path) if source.keras_path else None
    if output_dir is None and source.kind == "run_dir":  # best and last: each its own default
        paths = rundir.RunPaths(source.path)
        output_dir = paths.eval_last if checkpoint == "last" and not keras_model else paths.eval
    elif output_dir is None:
        output_dir = os.path.splitext(source.path)[0] + "_eval"
    state_dir = os.path.join(output_dir, PARTIAL_DIR)  # resumable; removed once written
    started_with = _code_version_started(state_dir)
    report = evaluate_model(x, y, norm=norm, eps=eps_value, attacks=names, keras_model=network,
                            onnx_path=source.onnx_path, batch_size=batch_size, seed=seed,
                            settings=settings, verbose=verbose, state_dir=state_dir)
    report["threat_model"]["eps_text"] = eps_text
    how = "the first" if num_examples is not None else "all"
    examples = (f"the {len(x)} examples at positions {index_ranges(indices)} of the {split} "
                "split in its own order" if indices is not None
                else f"{how} {len(x)} examples of the {split} split in its own order")
    report = {
        "model": source.path, "model_name": source.name, "model_format": source.kind,
        "keras_model": source.keras_path, "onnx": source.onnx_path,
        "dataset": dataset, "split": split,
        "examples": examples,
        **({"example_indices": list(indices)} if indices is not None else {}),
        **report,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "code_version": provenance.code_version(),
        "versions": _versions(),
    }
    if started_with != report["code_version"]:  # resumed across a code change: both said
        report["code_version_started"] = started_with
    paths = write_report(report, output_dir, run_config=config)
    shutil.rmtree(state_dir, ignore_errors=True)
    logging.info("wrote %s", ", ".join(paths.values()))
    return report

