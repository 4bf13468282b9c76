"""Per-example parity of our AutoAttack with the reference one (pyautoattack, PyTorch).

    report = reference.compare_autoattack("zoo/models/x.onnx", x, y, norm="linf", eps=0.15,
                                          keras_model=model)   # or keras_model=None
    reference.write_comparison(report, "parity/")   # parity.json, parity.md

The reference is `pyautoattack` 0.2.0 (PyPI; the AutoAttack authors' code, fra31/auto-attack,
whose attack modules it ships unchanged; it is imported as `pyautoattack`, not `autoattack`).
It attacks the exported ONNX file converted to torch by onnx2torch, fed NCHW as it expects
(its Square attack draws its windows over dimensions 2 and 3), while our
`atamp_tf.attacks.autoattack` attacks the Keras model the file was exported from, or, with no
Keras model, the same torch module through a TensorFlow function whose gradients come from
torch autograd (`torch_logits_fn`). The comparison is per example: robust or not on each side,
the indices where the two disagree, and whether the adversarial example one side found also
fools the other side's model.

torch, onnx2torch and pyautoattack are imported only inside the functions that need them
(`pip install -e ".[reference]"`, then `pip install --no-deps onnx2torch==1.5.15`: onnx2torch
requires torchvision, which it imports only for the NonMaxSuppression and RoiAlign converters,
and PyPI's torchvision does not import beside the CPU torch 2.13.0 build; without torchvision
those two modules are given a stand-in while onnx2torch loads, see `import_onnx2torch`).
"""
import contextlib
import dataclasses
import json
import logging as std_logging
import os
import re
import sys
import time
import types

import numpy as np
from absl import logging

from atamp_tf import rundir
from atamp_tf.attacks import geometry, suite
from atamp_tf.formatting import percent
from atamp_tf.rundir import sha256_file

REFERENCE_NORMS = {"linf": "Linf", "l2": "L2"}
BALL_TOLERANCE = 1e-6  # as atamp_tf.attacks.autoattack: float32 rounding of the projections
CONVERSION_ATOL = 1e-4  # largest |torch - onnxruntime| logit difference: the same model
# (evaluate's Keras-vs-ONNX tolerance, atamp_tf.checkpoints.PARITY_ATOL)
_AFTER = re.compile(r"robust accuracy after ([A-Z0-9-]+): ([0-9.]+)%")


# ---------------------------------------------------------------------------- torch side

def _torchvision_imports():
    """True if torchvision imports; False if it is absent or broken (PyPI's build beside the
    CPU torch: "operator torchvision::nms does not exist"), then with its partial modules
    dropped from sys.modules so that a stand-in can take its place."""
    import importlib.util  # pylint: disable=import-outside-toplevel
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        import torchvision  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except (ImportError, RuntimeError) as err:
        logging.warning("torchvision is installed but does not import (%s); onnx2torch gets a "
                        "stand-in without its two detection ops", err)
        for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
            del sys.modules[name]
        return False
    return True


@contextlib.contextmanager
def _torchvision_stand_in():
    """While onnx2torch imports: a `torchvision` whose ops raise, if the real one won't import.

    onnx2torch registers every converter at import time, and two of them (NonMaxSuppression,
    RoiAlign: detection models only) import torchvision; classifiers never reach them. The
    stand-in is removed from sys.modules afterwards, so nothing else sees it."""
    if _torchvision_imports():
        yield
        return

    def missing(*args, **kwargs):
        raise NotImplementedError("this ONNX op needs torchvision, which does not import here")
    ops = types.ModuleType("torchvision.ops")
    ops.nms = ops.roi_align = ops.box_convert = missing
    stand_in = types.ModuleType("torchvision")
    stand_in.ops = ops
    sys.modules.update({"torchvision": stand_in, "torchvision.ops": ops})
    try:
        yield
    finally:
        for name in ("torchvision", "torchvision.ops"):
            if sys.modules.get(name) in (stand_in, ops):
                del sys.modules[name]


def import_onnx2torch():
    """The onnx2torch module (torchvision optional, see _torchvision_stand_in)."""
    if "onnx2torch" in sys.modules:
        return sys.modules["onnx2torch"]
    with _torchvision_stand_in():
        import onnx2torch  # pylint: disable=import-outside-toplevel
    return onnx2torch


REQUIREMENTS = {"torch": "torch==2.13.0", "pyautoattack": "pyautoattack==0.2.0",
                "onnx2torch": "onnx2torch==1.5.15 (pip install --no-deps)"}


def missing_requirements():
    """The pip requirements of the reference stack whose modules are not installed."""
    import importlib.util  # pylint: disable=import-outside-toplevel
    return [req for name, req in REQUIREMENTS.items() if importlib.util.find_spec(name) is None]


def reference_versions():
    """Versions of the reference stack: torch, onnx2torch, pyautoattack."""
    from importlib import metadata  # pylint: disable=import-outside-toplevel
    return {name: metadata.version(name) for name in ("torch", "onnx2torch", "pyautoattack")}


def torch_module(onnx_path):
    """The ONNX file as a torch module in eval mode (onnx2torch), NHWC in, logits out."""
    module = import_onnx2torch().convert(str(onnx_path))
    return module.eval()


def nchw_module(module):
    """A torch module taking NCHW images (the reference's layout) around an NHWC one."""
    import torch  # pylint: disable=import-outside-toplevel

    class FromNCHW(torch.nn.Module):
        """x [n, C, H, W] -> module(x as [n, H, W, C])."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x.permute(0, 2, 3, 1))
    return FromNCHW(module).eval()


@contextlib.contextmanager
def torch_threads(n):
    """torch's intra-op threads set to n for the block (None: unchanged). One thread is the
    fast setting for small models on a busy 2-core machine: the reference issues thousands of
    tiny ops (5000 Square queries), and OpenMP workers waiting on a loaded core cost more than
    they save (measured: 538 s with 2 threads, 51 s with 1, same 100 digits examples)."""
    import torch  # pylint: disable=import-outside-toplevel
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def torch_predict(module, x, batch_size=500):
    """Logits (numpy) of NHWC numpy images through an NHWC torch module, batch by batch."""
    import torch  # pylint: disable=import-outside-toplevel
    with torch.no_grad():
        outs = [module(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size]))).numpy()
                for i in range(0, len(x), batch_size)]
    return np.concatenate(outs).astype(np.float32)


def torch_logits_fn(module, num_classes):
    """A TF-traceable logits function of an NHWC torch module, differentiable: its gradient
    is torch autograd's vector-Jacobian product. Lets our AutoAttack attack the very module the
    reference attacks when there is no Keras model (an ONNX file has no TF gradients)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import torch  # pylint: disable=import-outside-toplevel

    def forward(a):
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(a))).numpy().astype(np.float32)

    def vjp(a, dy):
        a = torch.from_numpy(np.array(a, np.float32)).requires_grad_(True)
        (grad,) = torch.autograd.grad(module(a), a, torch.from_numpy(np.asarray(dy, np.float32)))
        return grad.numpy().astype(np.float32)

    @tf.custom_gradient
    def logits(x):
        out = tf.numpy_function(forward, [x], tf.float32, stateful=False)
        out.set_shape([None, num_classes])

        def grad(dy):
            g = tf.numpy_function(vjp, [x, dy], tf.float32, stateful=False)
            return tf.reshape(g, tf.shape(x))
        return out, grad
    return logits


def conversion_check(onnx_path, module, x, *, atol=CONVERSION_ATOL):
    """{max_abs_diff, predictions_equal, passed} of the torch module against onnxruntime on x."""
    from atamp_tf import evaluate  # pylint: disable=import-outside-toplevel
    ort_logits = evaluate.onnx_numpy_fn(evaluate.onnx_session(str(onnx_path)))(x)
    torch_logits = torch_predict(module, x)
    diff = float(np.abs(ort_logits - torch_logits).max())
    same = bool((ort_logits.argmax(1) == torch_logits.argmax(1)).all())
    return {"max_abs_diff": diff, "predictions_equal": same, "atol": atol,
            "num_examples": int(len(x)), "passed": diff <= atol and same}


def within_threat(x_adv, x, *, norm, eps, tolerance=BALL_TOLERANCE):
    """Per example: x_adv in [0, 1] and within eps (+ tolerance) of x in the norm; and the
    distances (float64)."""
    d = np.asarray(x_adv, np.float64).reshape(len(x), -1) - np.asarray(x, np.float64).reshape(
        len(x), -1)
    dist = np.abs(d).max(axis=1) if norm == "linf" else np.sqrt((d ** 2).sum(axis=1))
    flat = np.asarray(x_adv).reshape(len(x), -1)
    in_box = (flat >= 0).all(axis=1) & (flat <= 1).all(axis=1)
    return (dist <= eps + tolerance) & in_box, dist


class _Collect(std_logging.Handler):
    """Keeps the reference logger's messages (its per-component accuracies and its checks)."""

    def __init__(self):
        super().__init__(std_logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append((record.levelno, record.getMessage()))


@contextlib.contextmanager
def _reference_log():
    """The 'auto-attack' logger's messages, collected (not printed) for the block."""
    logger = std_logging.getLogger("auto-attack")
    handler = _Collect()
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(std_logging.DEBUG)
    logger.propagate = False
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


@dataclasses.dataclass
class ReferenceResult:
    """The reference AutoAttack on a set of examples (arrays in the order of the inputs).

    robust: bool[n], the label it returns equals y (correct on the clean input and on its
    output); clean: bool[n]; x_adv: NHWC float32, its output (the clean input where nothing
    was found); valid: bool[n], x_adv in [0, 1] and in the eps-ball; distance: float[n];
    accuracy_after: component -> robust accuracy as its log prints it (to 0.01%); warnings:
    the messages of its own checks; conversion: conversion_check of the torch module."""
    robust: np.ndarray
    clean: np.ndarray
    x_adv: np.ndarray
    valid: np.ndarray
    distance: np.ndarray
    accuracy_after: dict
    warnings: list
    conversion: dict
    seconds: float
    settings: dict


def _check_inputs(x, y, norm, eps):
    if norm not in REFERENCE_NORMS:
        raise ValueError(f"norm must be one of {', '.join(REFERENCE_NORMS)}, got {norm!r}")
    if not (isinstance(eps, (int, float)) and np.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    x = np.asarray(x, np.float32)
    y = np.asarray(y).astype(np.int64)
    if x.ndim != 4 or y.shape != (len(x),) or len(x) == 0:
        raise ValueError(f"expected NHWC images and one label each, got {x.shape} and {y.shape}")
    if x.min() < 0 or x.max() > 1:
        raise ValueError(f"pixels must be in [0, 1], got [{x.min()}, {x.max()}]")
    return x, y


def reference_autoattack(onnx_path, x, y, *, norm, eps, version="standard", batch_size=250,
                         seed=0, threads=1, module=None, components=None, chunk_size=None,
                         resume_dir=None):
    """Runs pyautoattack's AutoAttack(norm, eps, version) on exactly (x, y) against the ONNX
    file converted by onnx2torch (or `module`, its NHWC torch module, if already converted).
    components: run only these, in this order, with the version's settings (restarts, EOT),
    labelled "custom" unless they are the version's own.

    chunk_size: one run_standard_evaluation per this many examples (default all at once; a
    chunk of batch_size is what our evaluation does per batch); resume_dir: each finished
    chunk is saved there, so a run killed at any point resumes after its last finished chunk
    and recomputes nothing (the seconds are the chunks' own, summed; a chunk saved with other
    settings, torch threads included, is run again).
    x: float32 NHWC in [0, 1]; y: integer labels. threads: torch threads for the run (see
    torch_threads). Returns a ReferenceResult; ValueError if the conversion does not reproduce
    onnxruntime's logits (then the two sides would not attack the same model)."""
    x, y = _check_inputs(x, y, norm, eps)
    if not os.path.isfile(onnx_path):
        raise ValueError(f"--onnx: {onnx_path} is not a file")
    chunk_size = len(x) if chunk_size is None else int(chunk_size)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    run = {"norm": norm, "eps": float(eps), "version": version, "batch_size": int(batch_size),
           "seed": int(seed), "threads": threads, "components": components,
           "onnx_sha256": sha256_file(onnx_path), **reference_versions()}
    with torch_threads(threads):
        module = torch_module(onnx_path) if module is None else module
        conversion = conversion_check(onnx_path, module, x)
        if not conversion["passed"]:
            raise ValueError(f"onnx2torch's conversion of {onnx_path} differs from onnxruntime: "
                             f"{conversion}")
        parts = []
        for start in range(0, len(x), chunk_size):
            part = slice(start, min(start + chunk_size, len(x)))
            progress = rundir.Progress(
                os.path.join(resume_dir, f"reference_{part.start}-{part.stop}.npz"),
                rundir.fingerprint(x[part], y[part], run)) if resume_dir else None
            saved = progress.load() if progress else None
            if saved is None:
                saved = _reference_chunk(nchw_module(module), x[part], y[part], norm=norm,
                                         eps=eps, version=version, batch_size=batch_size,
                                         seed=seed, components=components)
                if progress:
                    progress.save(saved[1], **saved[0])
            else:
                logging.info("reference: examples %d-%d read back from %s", part.start,
                             part.stop, progress.path)
            parts.append(saved)
    x_adv = np.concatenate([arrays["x_adv"] for arrays, _ in parts])
    robust = np.concatenate([arrays["robust"] for arrays, _ in parts])
    clean = np.concatenate([arrays["clean"] for arrays, _ in parts])
    names = [c for c in parts[0][1]["components"]
             if any(c in meta["after"] for _, meta in parts)]
    after = {"clean": float(clean.mean())}
    for name in names:  # weighted by chunk size; a chunk logs no accuracy after a component
        # it skipped, which it does only once nothing is robust: its final accuracy is that
        after[name] = float(sum(meta["after"].get(name, arrays["robust"].mean()) *
                                len(arrays["robust"]) for arrays, meta in parts) / len(x))
    warnings = [text for _, meta in parts for text in meta["warnings"]]
    for text in warnings:
        logging.warning("reference AutoAttack: %s", text)
    valid, distance = within_threat(x_adv, x, norm=norm, eps=eps)
    from atamp_tf.attacks import autoattack  # pylint: disable=import-outside-toplevel
    label = autoattack.version_label(version, components, **autoattack.STANDARD_BUDGET)
    settings = {"implementation": "pyautoattack.AutoAttack", "version": label,
                "norm": REFERENCE_NORMS[norm], "eps": float(eps), "seed": int(seed),
                "batch_size": int(batch_size), "device": "cpu", "torch_threads": threads,
                "chunk_size": chunk_size, "chunks": len(parts),
                "components": parts[0][1]["components"], "input": "NCHW (NHWC model permuted)",
                "model": "onnx2torch conversion of the ONNX file", **reference_versions()}
    return ReferenceResult(robust=robust, clean=clean, x_adv=x_adv, valid=valid,
                           distance=distance, accuracy_after=after, warnings=warnings,
                           conversion=conversion,
                           seconds=float(sum(meta["seconds"] for _, meta in parts)),
                           settings=settings)


def _reference_chunk(model, x, y, *, norm, eps, version, batch_size, seed, components):
    """One run_standard_evaluation on (x, y): ({robust, clean, x_adv}, {seconds, after (the
    per-component accuracies its log prints), warnings, components})."""
    import torch  # pylint: disable=import-outside-toplevel
    from pyautoattack import AutoAttack  # pylint: disable=import-outside-toplevel
    x_nchw = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    labels = torch.from_numpy(y)
    with torch.no_grad():
        clean = (model(x_nchw).argmax(1) == labels).numpy()
    started = time.time()
    with _reference_log() as records:
        attack = AutoAttack(model, norm=REFERENCE_NORMS[norm], eps=float(eps),
                            version=version, seed=int(seed), device="cpu")
        if components is not None:
            attack.attacks_to_run = list(components)
        x_adv, y_adv = attack.run_standard_evaluation(x_nchw, labels, batch_size=int(batch_size))
    seconds = time.time() - started
    x_adv = np.ascontiguousarray(x_adv.detach().numpy().transpose(0, 2, 3, 1), np.float32)
    after = {m.group(1).lower(): float(m.group(2)) / 100 for _, text in records
             for m in [_AFTER.search(text)] if m}
    return ({"robust": y_adv.numpy() == y, "clean": clean, "x_adv": x_adv},
            {"seconds": seconds, "after": after, "components": list(attack.attacks_to_run),
             "warnings": [text for level, text in records if level >= std_logging.WARNING]})


# ---------------------------------------------------------------------------- our side

@dataclasses.dataclass
class OursResult:
    """Our AutoAttack's run: the AutoAttackResult, the model it attacked, the time taken and
    a numpy predictor of that model (for the cross-check)."""
    result: object
    model: str
    seconds: float
    predict: object


def our_autoattack(x, y, *, norm, eps, keras_model=None, module=None, num_classes=None,
                   batch_size=250, seed=0, threads=1, version="standard", components=None):
    """atamp_tf.attacks.autoattack (the given version, optionally only some components) on
    the Keras model (evaluate's path) or, without one, on the torch module through
    torch_logits_fn. Returns an OursResult."""
    from atamp_tf.attacks import autoattack  # pylint: disable=import-outside-toplevel
    x, y = _check_inputs(x, y, norm, eps)
    y = y.astype(np.int32)
    if keras_model is not None:
        compiled = suite.compile_logits(lambda a: keras_model(a, training=False))
        predict = lambda a: suite.predict(compiled, a, batch_size=batch_size)  # noqa: E731
        target, name = keras_model, "keras"
        num_classes = num_classes or int(keras_model.output_shape[-1])
    elif module is not None:
        predict = lambda a: torch_predict(module, a, batch_size)  # noqa: E731
        num_classes = num_classes or int(predict(x[:1]).shape[-1])
        target, name = torch_logits_fn(module, num_classes), "onnx (torch gradients)"
    else:
        raise ValueError("our_autoattack needs keras_model or module")
    context = torch_threads(threads) if keras_model is None else contextlib.nullcontext()
    with context:
        started = time.time()
        result = autoattack.autoattack(target, x, y, norm=norm, eps=float(eps),
                                       num_classes=num_classes, seed=seed, version=version,
                                       batch_size=batch_size, components=components)
        seconds = time.time() - started
    return OursResult(result, name, seconds, predict)


def ours_from_evaluation(eval_dir, x, y, *, predict, dataset, split, norm, eps,
                         version="standard"):
    """Our AutoAttack's run read back from an evaluation's output directory (report.json,
    per_example.npz, adversarial.npz of python -m atamp_tf.evaluate) instead of run again:
    the examples x, y must be its first len(x) examples. predict: a numpy logits function of
    the model compared; its clean predictions must be the report's, example by example (the
    report is then this model's). The time is the evaluation's, scaled to these examples'
    robust count, so seconds per robust example are the whole evaluation's."""
    report_path = os.path.join(eval_dir, "report.json")
    if not os.path.isfile(report_path):
        raise ValueError(f"--ours_from: {report_path} does not exist; expected the output "
                         "directory of python -m atamp_tf.evaluate")
    with open(report_path, encoding="utf-8") as f:
        report = json.load(f)
    attack = report.get("attacks", {}).get("autoattack")
    threat = report.get("threat_model", {})
    where = f"--ours_from: {report_path}"
    if attack is None or "adversarial" not in report:
        raise ValueError(f"{where} has no AutoAttack with saved adversarial examples "
                         "(evaluate with --attacks=...,autoattack)")
    settings = attack["autoattack_settings"]
    wanted = {"dataset": dataset, "split": split, "norm": norm, "version": version}
    found = {"dataset": report.get("dataset"), "split": report.get("split"),
             "norm": threat.get("norm"), "version": settings.get("version")}
    if found != wanted or not np.isclose(threat.get("eps", -1.0), eps, rtol=1e-6):
        raise ValueError(f"{where} is {found}, eps {threat.get('eps')}; the comparison is "
                         f"{wanted}, eps {eps}")
    n = len(x)
    if report.get("num_examples", 0) < n or not str(report.get("examples", "")).startswith(
            ("the first", "all")):  # a prefix of the split in its own order
        raise ValueError(f"{where} covers {report.get('examples')!r}; the comparison needs "
                         f"the first {n} examples of the split")
    per_example = np.load(os.path.join(eval_dir, report["per_example"]["file"]))
    saved = np.load(os.path.join(eval_dir, report["adversarial"]["file"]))
    clean = predict(x).argmax(1) == y
    if not np.array_equal(clean, per_example["correct_natural"][:n]):
        raise ValueError(f"{where}: its natural predictions differ from this model's on "
                         f"{int((clean != per_example['correct_natural'][:n]).sum())} of {n} "
                         "examples: the report is another model's evaluation")
    components = settings["components"]
    success = {c: per_example[f"autoattack_fooled_by_{c}"][:n] for c in components}
    robust_after, robust = {"clean": clean}, clean.copy()
    for c in components:
        robust = robust & ~success[c]
        robust_after[c] = robust.copy()
    keep = saved["autoattack_indices"] < n
    x_adv = geometry.with_rows(x, saved["autoattack_indices"][keep],
                               saved["autoattack_x_adv"][keep])
    total_robust = int(per_example["correct_autoattack"].sum())
    seconds = float(attack["seconds"]) * (robust.sum() / total_robust if total_robust else
                                          n / report["num_examples"])
    from atamp_tf.attacks import autoattack  # pylint: disable=import-outside-toplevel
    result = autoattack.AutoAttackResult(
        x_adv=x_adv, robust_after=robust_after, component_success=success,
        accuracy=float(robust.mean()), clean_accuracy=float(clean.mean()),
        accuracy_after={k: float(v.mean()) for k, v in robust_after.items()},
        settings={**settings, "read_from": report_path,
                  "read_from_fingerprint": rundir.fingerprint(report),
                  "timing": f"the evaluation's {attack['seconds']:.0f} s on "
                            f"{report['num_examples']} examples, scaled by robust count"})
    return OursResult(result, f"keras (read from {report_path})", seconds, predict)


# ---------------------------------------------------------------------------- comparison

def _side(robust, clean, seconds, after, valid):
    n_robust = int(robust.sum())
    return {"clean_accuracy": float(clean.mean()), "robust_accuracy": float(robust.mean()),
            "num_robust": n_robust, "accuracy_after": after,
            "seconds": round(seconds, 3), "seconds_per_example": round(seconds / len(robust), 4),
            "seconds_per_robust_example": round(seconds / n_robust, 4) if n_robust else None,
            "num_invalid": int((~valid & ~robust).sum())}


def compare(ours, ref, x, y, *, norm, eps, reference_predict=None):
    """The per-example agreement table (a JSON-ready dict) of an OursResult and a
    ReferenceResult on the same (x, y). reference_predict (numpy NHWC -> logits of the
    reference's model) adds, for examples only ours broke, whether our adversarial example
    fools the reference's model too."""
    result = ours.result
    ours_robust = np.asarray(result.robust_mask, bool)
    ours_valid, _ = within_threat(result.x_adv, x, norm=norm, eps=eps)
    disagree = np.flatnonzero(ours_robust != ref.robust)
    rows = []
    for i in disagree:
        fooled_by = next((name for name, hit in result.component_success.items() if hit[i]),
                         "clean" if not result.robust_after["clean"][i] else None)
        row = {"index": int(i), "label": int(y[i]), "robust_ours": bool(ours_robust[i]),
               "robust_reference": bool(ref.robust[i]), "ours_fooled_by": fooled_by}
        if ours_robust[i]:  # does the reference's adversarial example fool our model too?
            row["reference_adv_fools_ours"] = bool(
                ours.predict(ref.x_adv[i:i + 1]).argmax(1)[0] != y[i])
        elif reference_predict is not None:
            row["ours_adv_fools_reference"] = bool(
                reference_predict(result.x_adv[i:i + 1]).argmax(1)[0] != y[i])
        rows.append(row)
    n = len(y)
    return {
        "threat_model": {"norm": norm, "eps": float(eps)},
        "num_examples": int(n),
        "ours": {**_side(ours_robust, result.robust_after["clean"], ours.seconds,
                         {k: float(v) for k, v in result.accuracy_after.items()}, ours_valid),
                 "model": ours.model, "settings": result.settings},
        "reference": {**_side(ref.robust, ref.clean, ref.seconds, ref.accuracy_after,
                              ref.valid),
                      "model": "onnx (onnx2torch)",
                      "settings": ref.settings,
                      "warnings": ref.warnings, "conversion": ref.conversion,
                      "max_distance": float(ref.distance.max()),
                      "invalid_indices": [int(i) for i in np.flatnonzero(~ref.valid)]},
        "clean_agree": bool((result.robust_after["clean"] == ref.clean).all()),
        "agreement": float((ours_robust == ref.robust).mean()),
        "num_disagree": int(disagree.size),
        "robust_only_ours": int((ours_robust & ~ref.robust).sum()),
        "robust_only_reference": int((~ours_robust & ref.robust).sum()),
        "disagreements": rows,
    }


def check_same_model(keras_model, module, x, *, atol=CONVERSION_ATOL):
    """ValueError naming --model unless the Keras model ours attacks gives the logits of the
    torch module the reference attacks (the ONNX file's, checked against onnxruntime)."""
    keras_logits = np.asarray(keras_model.predict(x, batch_size=256, verbose=0), np.float32)
    torch_logits = torch_predict(module, x)
    diff = float(np.abs(keras_logits - torch_logits).max())
    if diff > atol or not np.array_equal(keras_logits.argmax(1), torch_logits.argmax(1)):
        raise ValueError(f"--model: its Keras model differs from --onnx on these examples (max "
                         f"|logit difference| {diff:.3g}, tolerance {atol:g}): ours and the "
                         "reference would attack different models")
    return diff


def compare_autoattack(onnx_path, x, y, *, norm, eps, keras_model=None, batch_size=250,
                       seed=0, threads=1, verbose=True, version="standard", components=None,
                       ours_from=None, chunk_size=None, resume_dir=None):
    """Runs both AutoAttacks (the same version and components) on (x, y) and returns
    compare()'s table. The reference attacks the ONNX file (onnx2torch); ours the Keras model
    if given, else the same torch module. ours_from: (eval_dir, dataset, split): read ours
    from that evaluation instead of running it (ours_from_evaluation). chunk_size,
    resume_dir: the reference's (reference_autoattack)."""
    x, y = _check_inputs(x, y, norm, eps)
    with torch_threads(threads):
        module = torch_module(onnx_path)
    ours = None
    if ours_from is None and keras_model is not None:  # before the reference's long run
        check_same_model(keras_model, module, x)
    if ours_from is not None:  # checked before the reference's long run
        eval_dir, dataset, split = ours_from
        ours = ours_from_evaluation(eval_dir, x, y, predict=lambda a: torch_predict(module, a),
                                    dataset=dataset, split=split, norm=norm, eps=eps,
                                    version=version)
    if verbose:
        logging.info("reference AutoAttack (pyautoattack) on %d examples", len(x))
    ref = reference_autoattack(onnx_path, x, y, norm=norm, eps=eps, batch_size=batch_size,
                               seed=seed, threads=threads, module=module, version=version,
                               components=components, chunk_size=chunk_size,
                               resume_dir=resume_dir)
    if verbose:
        logging.info("reference: robust %.4f in %.1f s", ref.robust.mean(), ref.seconds)
    if ours is None:
        ours = our_autoattack(x, y, norm=norm, eps=eps, keras_model=keras_model, module=module,
                              batch_size=batch_size, seed=seed, threads=threads,
                              version=version, components=components)
    report = compare(ours, ref, x, y, norm=norm, eps=eps,
                     reference_predict=lambda a: torch_predict(module, a))
    report["onnx"] = str(onnx_path)
    report["onnx_sha256"] = sha256_file(onnx_path)  # the very file the reference attacked
    if verbose:
        logging.info("ours: robust %.4f in %.1f s; agreement %.4f (%d disagree)",
                     report["ours"]["robust_accuracy"], ours.seconds, report["agreement"],
                     report["num_disagree"])
    return report


# ---------------------------------------------------------------------------- reports

def _pct(value):
    return percent(value, 2, missing="–")


def markdown_comparison(report):
    """parity.md: the two sides' accuracies and times, then every disagreement."""
    ours, ref = report["ours"], report["reference"]
    threat = report["threat_model"]
    lines = [f"# AutoAttack parity: {report.get('model_name', report.get('onnx', 'model'))}", "",
             f"- ONNX: `{report.get('onnx', '?')}`; ours attacked: {ours['model']}"
             + (f" (`{report['keras_model']}`)" if report.get("keras_model") else ""),
             f"- data: {report.get('examples', str(report['num_examples']) + ' examples')}",
             f"- threat model: {threat['norm']}, eps = {threat['eps']:.6g}; "
             f"{ours['settings'].get('version', 'standard')} version "
             f"({', '.join(ours['settings'].get('components', []))}); "
             f"seed {ours['settings']['seed']}, batch size {ours['settings']['batch_size']}",
             f"- reference: pyautoattack {ref['settings'].get('pyautoattack', '?')}, torch "
             f"{ref['settings'].get('torch', '?')}, onnx2torch "
             f"{ref['settings'].get('onnx2torch', '?')}; conversion max |torch - onnxruntime| "
             f"= {ref['conversion']['max_abs_diff']:.3g}", "",
             "| | ours (atamp_tf) | reference (pyautoattack) |", "| --- | ---: | ---: |"]
    for key in ("clean", "apgd-ce", "apgd-t", "fab-t", "square"):
        label = "clean accuracy (%)" if key == "clean" else f"robust after {key} (%)"
        lines.append(f"| {label} | {_pct(ours['accuracy_after'].get(key))} | "
                     f"{_pct(ref['accuracy_after'].get(key))} |")
    lines += [f"| **robust accuracy (%)** | **{_pct(ours['robust_accuracy'])}** | "
              f"**{_pct(ref['robust_accuracy'])}** |",
              f"| robust examples | {ours['num_robust']} | {ref['num_robust']} |",
              f"| seconds | {ours['seconds']:.1f} | {ref['seconds']:.1f} |",
              f"| seconds per robust example | {ours['seconds_per_robust_example']} | "
              f"{ref['seconds_per_robust_example']} |",
              f"| adversarial outputs outside the ball or [0, 1] | {ours['num_invalid']} | "
              f"{ref['num_invalid']} |", "",
              f"Agreement: {report['num_examples'] - report['num_disagree']} of "
              f"{report['num_examples']} examples ({_pct(report['agreement'])}%); clean "
              f"predictions {'agree' if report['clean_agree'] else '**differ**'}; robust only "
              f"for ours: {report['robust_only_ours']}, only for the reference: "
              f"{report['robust_only_reference']}. Largest reference perturbation: "
              f"{ref['max_distance']:.6g}.", ""]
    if report["disagreements"]:
        lines += ["| index | label | robust (ours) | robust (reference) | ours fooled by | "
                  "other side's adversarial example fools this side |",
                  "| ---: | ---: | --- | --- | --- | --- |"]
        for row in report["disagreements"]:
            cross = row.get("reference_adv_fools_ours", row.get("ours_adv_fools_reference"))
            lines.append(f"| {row['index']} | {row['label']} | {row['robust_ours']} | "
                         f"{row['robust_reference']} | {row['ours_fooled_by'] or '–'} | "
                         f"{'–' if cross is None else cross} |")
        lines.append("")
    if ref["warnings"]:
        lines += ["Reference checks:", ""] + [f"- {w}" for w in ref["warnings"]] + [""]
    return "\n".join(lines)


def write_comparison(report, output_dir):
    """Writes parity.json and parity.md into output_dir; returns their paths by kind."""
    os.makedirs(output_dir, exist_ok=True)
    texts = {"json": json.dumps(report, indent=2) + "\n", "md": markdown_comparison(report)}
    paths = {kind: os.path.join(output_dir, f"parity.{kind}") for kind in texts}
    for kind, text in texts.items():
        with open(paths[kind], "w", encoding="utf-8") as f:
            f.write(text)
    return paths


def summary_markdown(reports):
    """One table row per comparison report: examples, both robust accuracies, disagreements
    and times."""
    lines = ["| model | norm, eps | examples | robust (ours) | robust (reference) | agree | "
             "disagree (indices) | s ours | s reference | s/robust ours | s/robust ref |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    for r in reports:
        ours, ref = r["ours"], r["reference"]
        idx = ", ".join(str(row["index"]) for row in r["disagreements"]) or "–"
        lines.append(
            f"| {r.get('model_name') or r.get('onnx') or 'model'} | {r['threat_model']['norm']}, "
            f"{r['threat_model']['eps']:.4g} | {r['num_examples']} | "
            f"{_pct(ours['robust_accuracy'])} | {_pct(ref['robust_accuracy'])} | "
            f"{_pct(r['agreement'])} | {r['num_disagree']} ({idx}) | {ours['seconds']:.0f} | "
            f"{ref['seconds']:.0f} | {ours['seconds_per_robust_example']} | "
            f"{ref['seconds_per_robust_example']} |")
    return "\n".join(lines) + "\n"
