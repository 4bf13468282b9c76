"""AutoAttack (Croce & Hein 2020; fra31/auto-attack) for Linf and L2, in TensorFlow: its
standard version, the per-example worst case over APGD-CE, APGD-T, FAB-T and Square, and its
"plus" and "rand" versions.

As the reference's `run_standard_evaluation`: the clean prediction decides who is attacked;
the components run in order, each on the examples still robust, in batches; an example stops
being robust at the first component whose output the model misclassifies, and its adversarial
example is that output. So a point is robust only if every component fails on it, and the
final robust accuracy is at most each component's own. Settings of the standard version:
APGD-CE 100 iterations, 1 restart; APGD-T targeted DLR, 9 targets (the top non-true classes),
100 iterations; FAB-T 9 targets, 100 iterations, alpha_max 0.1, eta 1.05, beta 0.9; Square
5000 queries, p_init 0.8, margin loss. With fewer than 10 classes the targets are all other
classes. The reference's other versions (`set_version`): "plus" runs APGD-CE, APGD-DLR (5
restarts each), untargeted FAB (5 restarts), Square, APGD-T, FAB-T; "rand", for randomised
defences, runs APGD-CE and APGD-DLR with the gradient averaged over 20 calls of the model
(EOT), 1 restart. A run with other components or budgets is "custom", never a named version.

Faithful: the algorithms, their hyper-parameters and schedules, target choice, the order and
the per-example bookkeeping (see each component's module); APGD-T draws a fresh random start
per target and FAB-T runs without the original FAB code's final search, as the reference's.
Differs: APGD stops a batch once all of it is fooled; Square queries fooled examples too (without
updating them); random numbers are TF stateless ones keyed by `seed`, batch and component, not
PyTorch's; the reference's sanity checks (randomised defences, softmax outputs) are left to
`atamp_tf.attacks.sanity`; an output counts only if it also lies in the eps-ball and in [0,1]
(checked again here, the reference trusts its components); the L1 threat model is not
implemented.
Why not IBM ART (checked, 1.20.1): its AutoAttack uses DeepFool instead of FAB; its APGD has no
targeted DLR loss (targeted runs use the untargeted DLR with the target as label), no choice of
the top-k targets, and returns the last iterate rather than any misclassified one; its Square
uses the rescaled p-schedule (not the standard's), a different odd-size L2 tile, global NumPy
randomness and three model calls per iteration.

`predict_fn` (optional): a numpy logits function, float32 [n, H, W, C] in [0,1] ->
logits [n, num_classes], e.g. an ONNX Runtime session wrapped as
`lambda a: session.run(None, {input_name: a})[0]`; Square queries it instead of `model`, and
with model=None only gradient-free components may run (components=("square",)).
"""
import dataclasses
import time

import numpy as np
from absl import logging

from atamp_tf.attacks import _aa_utils as U
from atamp_tf.attacks import apgd, fab, geometry, registry, square

COMPONENTS = ("apgd-ce", "apgd-t", "fab-t", "square")  # the standard version, in its order
# The reference's set_version: each version's components in order, the restarts of its
# untargeted components (APGD-CE, APGD-DLR, FAB) and its EOT iterations (APGD).
VERSION_COMPONENTS = {
    "standard": COMPONENTS,
    "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
    "rand": ("apgd-ce", "apgd-dlr"),
}
VERSION_SETTINGS = {"standard": {"restarts": 1, "eot_iter": 1},
                    "plus": {"restarts": 5, "eot_iter": 1},
                    "rand": {"restarts": 1, "eot_iter": 20}}
VERSIONS = registry.AUTOATTACK_VERSIONS
assert tuple(VERSION_COMPONENTS) == VERSIONS == tuple(VERSION_SETTINGS)
ALL_COMPONENTS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
GRADIENT_FREE = ("square",)
STANDARD_BUDGET = {"n_iter": 100, "n_queries": 5000}  # every version's


def version_label(version, components, n_iter, n_queries):
    """What a run may be called: a version's name ("standard", "plus", "rand") only with that
    version's components in its order and the full budgets; any other subset or budget is
    "custom" (the reference's name for a hand-picked run), never a named version."""
    check_version(version)
    components = tuple(components) if components else VERSION_COMPONENTS[version]
    full = (components == VERSION_COMPONENTS[version] and n_iter == STANDARD_BUDGET["n_iter"]
            and n_queries == STANDARD_BUDGET["n_queries"])
    return version if full else "custom"


def check_version(version):
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
    return version
N_TARGETS = 9
# The reference's FAB-T: no final search (atamp_tf.attacks.fab keeps it as an option).
FAB_SETTINGS = {"alpha_max": 0.1, "eta": 1.05, "beta": 0.9, "final_search_steps": 0}
SQUARE_SETTINGS = {"p_init": 0.8, "loss": "margin"}
BALL_TOLERANCE = 1e-6


@dataclasses.dataclass
class AutoAttackResult:
    """What an AutoAttack run found, per example (arrays in the order of the inputs).

    x_adv: the first adversarial example found for each example, or the clean input if none.
    robust_after: cumulative, name -> bool[n]: still robust after this component and all the
      ones before it ("clean" first: correctly classified); the last entry is the final mask.
    component_success: name -> bool[n]: this component fooled the example (first to do so;
      components only attack examples no earlier component fooled).
    accuracy: final robust accuracy; clean_accuracy; accuracy_after: name -> cumulative
      robust accuracy; settings: everything the run used.
    """
    x_adv: np.ndarray
    robust_after: dict
    component_success: dict
    accuracy: float
    clean_accuracy: float
    accuracy_after: dict
    settings: dict

    @property
    def robust(self):
        """Alias of robust_after (cumulative robust mask per component)."""
        return self.robust_after

    @property
    def robust_mask(self):
        """Final per-example robust mask: correctly classified and no component succeeded."""
        return list(self.robust_after.values())[-1]


def _check_components(components, version="standard"):
    if components is None:
        return VERSION_COMPONENTS[version]
    if isinstance(components, str):
        components = (components,)
    components = tuple(components)
    unknown = [c for c in components if c not in ALL_COMPONENTS]
    if not components or unknown or len(set(components)) != len(components):
        raise ValueError(f"components must be a non-empty sequence of distinct names from "
                         f"{ALL_COMPONENTS}, got {components!r}")
    return components


def _within_threat(x_adv, x, norm, eps):
    dist = geometry.lp_norm_np(x_adv - x, norm)
    inside_box = (x_adv >= 0.0).all(axis=(1, 2, 3)) & (x_adv <= 1.0).all(axis=(1, 2, 3))
    return (dist <= eps + BALL_TOLERANCE) & inside_box


def autoattack(model, x, y, *, norm, eps, num_classes, seed=0, version="standard",
               batch_size=500, components=None, n_iter=100, n_queries=5000, verbose=False,
               predict_fn=None, progress=None):
    """Runs AutoAttack on numpy images x (float32 NHWC in [0,1]) with integer labels y.

    model: a Keras model or TF-traceable function mapping images to logits (None for a
    gradient-free run through predict_fn). eps >= 0 (at 0 no component runs).
    version: "standard", "plus" or "rand" (the components, restarts and EOT iterations of
    VERSION_COMPONENTS / VERSION_SETTINGS). components: names from ALL_COMPONENTS, run in
    the given order with the version's restarts and EOT (default: the version's own); n_iter
    (APGD, FAB) and n_queries (Square) shrink the run for tests; either makes it "custom".
    Returns an AutoAttackResult.
    progress: an atamp_tf.rundir.Progress, saved after every batch of every component; a run
    killed midway and started again with the same arguments (and Progress key) continues after
    the last saved batch and returns what an uninterrupted run returns.
    """
    check_version(version)
    geometry.check_norm(norm)
    geometry.check_number("eps", eps)  # eps = 0: nothing to attack, robust = correct
    num_classes = geometry.check_number("num_classes", num_classes, low=2, whole=True)
    batch_size = geometry.check_number("batch_size", batch_size, low=1, whole=True)
    n_iter = geometry.check_number("n_iter", n_iter, low=1, whole=True)
    n_queries = geometry.check_number("n_queries", n_queries, low=1, whole=True)
    U.check_seed(seed)
    components = _check_components(components, version)
    if model is None and predict_fn is None:
        raise ValueError("model and predict_fn are both None: pass a Keras model / logits "
                         "function, or a numpy predict_fn for gradient-free components")
    needs_gradient = [c for c in components if c not in GRADIENT_FREE]
    if model is None and needs_gradient:
        raise ValueError(f"model is None, so only {GRADIENT_FREE} can run, but components "
                         f"include {needs_gradient}; pass components=('square',)")
    if "apgd-t" in components and num_classes < 4:
        raise ValueError(f"apgd-t (targeted DLR) needs num_classes >= 4, got {num_classes}; "
                         f"leave it out of components")
    if "apgd-dlr" in components and num_classes < 3:
        raise ValueError(f"apgd-dlr (DLR loss) needs num_classes >= 3, got {num_classes}; "
                         f"leave it out of components")
    restarts, eot_iter = (VERSION_SETTINGS[version][k] for k in ("restarts", "eot_iter"))
    x = U.check_images(x)
    y = U.check_labels(y, len(x), num_classes)

    def logits(a):
        if model is not None:
            out = U.predict_logits(model, a, batch_size)
        else:
            out = np.concatenate([np.asarray(predict_fn(a[i:i + batch_size]), np.float32)
                                  for i in range(0, len(a), batch_size)] or
                                 [np.zeros((0, num_classes), np.float32)])
        if len(a) and out.shape != (len(a), num_classes):
            raise ValueError(f"the model must return logits of shape [batch, {num_classes}] "
                             f"(num_classes), got {out.shape}")
        return out

    n_targets = min(N_TARGETS, num_classes - 1)
    robust = logits(x).argmax(axis=1) == y if len(x) else np.zeros(0, bool)
    x_adv = x.copy()
    robust_after = {"clean": robust.copy()}
    success = {}
    if verbose:
        print(f"AutoAttack ({version}, {norm}, eps={eps:.5f}): {', '.join(components)}; "
              f"clean accuracy {robust.mean() if len(x) else 0:.2%}", flush=True)

    resume_at, todo = (0, 0), None
    saved = progress.load() if progress is not None else None
    if saved is not None and "changed" not in saved[0]:  # older code's format: start afresh
        saved = None
    if saved is not None:
        arrays, meta = saved
        robust, todo = arrays["robust"], arrays["todo"]
        x_adv = geometry.with_rows(x, arrays["changed"], arrays["changed_rows"])
        robust_after = {k[len("after_"):]: v for k, v in arrays.items() if k.startswith("after_")}
        success = {k[len("success_"):]: v for k, v in arrays.items()
                   if k.startswith("success_")}
        resume_at = (meta["component"], meta["batch"])
        if verbose:
            where = components[resume_at[0]] if resume_at[0] < len(components) else "the end"
            print(f"AutoAttack resumes at {where}, batch {resume_at[1] + 1}", flush=True)

    def save(component, batch, todo):  # of x_adv only the rows it changed: a small file
        if progress is not None:
            changed, rows = geometry.changed_rows(x, x_adv)
            progress.save({"component": component, "batch": batch}, changed=changed,
                          changed_rows=rows, robust=robust, todo=todo,
                          **{f"after_{k}": v for k, v in robust_after.items()},
                          **{f"success_{k}": v for k, v in success.items()})

    for c_index, name in enumerate(components):
        if c_index < resume_at[0]:
            continue
        if c_index > resume_at[0] or name not in success:  # a component starting afresh
            success[name] = np.zeros(len(x), bool)
            todo = np.flatnonzero(robust) if eps > 0 else np.zeros(0, int)
        num_batches = -(-todo.size // batch_size)
        for b, start in enumerate(range(0, todo.size, batch_size)):
            if (c_index, b) < resume_at:
                continue
            started = time.perf_counter()
            idx = todo[start:start + batch_size]
            batch_seed = int(U.seed_pair(seed, c_index, b)[0])
            adv = _run_component(name, model, predict_fn, x[idx], y[idx], norm=norm, eps=eps,
                                 n_iter=n_iter, n_queries=n_queries, n_targets=n_targets,
                                 seed=batch_seed, batch_size=batch_size, restarts=restarts,
                                 eot_iter=eot_iter)
            fooled = logits(adv).argmax(axis=1) != y[idx]
            valid = _within_threat(adv, x[idx], norm, eps)
            if (fooled & ~valid).any():
                logging.warning("%s returned %d misclassified points outside the threat model "
                                "(ignored)", name, int((fooled & ~valid).sum()))
            fooled &= valid
            x_adv[idx[fooled]] = adv[fooled]
            robust[idx[fooled]] = False
            success[name][idx[fooled]] = True
            if verbose:
                print(f"{name} - batch {b + 1} of {num_batches}: {fooled.sum()} of {len(idx)} "
                      f"fooled ({time.perf_counter() - started:.0f} s)", flush=True)
            save(c_index, b + 1, todo)
        robust_after[name] = robust.copy()
        save(c_index + 1, 0, np.zeros(0, int))
        if verbose:
            print(f"robust accuracy after {name.upper()}: {robust.mean():.2%}", flush=True)

    def mean(m):
        return float(m.mean()) if len(m) else 0.0

    settings = {
        "version": version_label(version, components, n_iter, n_queries), "norm": norm,
        "eps": float(eps), "components": list(components),
        "n_iter": int(n_iter), "n_queries": int(n_queries), "n_target_classes": n_targets,
        "apgd": {"restarts": restarts, "eot_iter": eot_iter, "rho": 0.75,
                 "initial_step": "2 * eps", "targeted_restarts": 1},
        "fab": {**FAB_SETTINGS, "restarts": restarts, "targeted_restarts": 1},
        "square": {**SQUARE_SETTINGS, "restarts": 1}, "seed": int(seed),
        "batch_size": int(batch_size), "num_examples": int(len(x)),
        "num_classes": int(num_classes),
        "square_queries": "predict_fn" if predict_fn is not None else "model",
        "judge": "model" if model is not None else "predict_fn",
    }
    return AutoAttackResult(
        x_adv=x_adv, robust_after=robust_after, component_success=success,
        accuracy=mean(robust), clean_accuracy=mean(robust_after["clean"]),
        accuracy_after={k: mean(v) for k, v in robust_after.items()}, settings=settings)


def _run_component(name, model, predict_fn, x, y, *, norm, eps, n_iter, n_queries, n_targets,
                   seed, batch_size, restarts=1, eot_iter=1):
    """One component on one batch of still-robust examples; returns its candidate points.
    restarts: of the untargeted components (APGD-CE / -DLR, FAB); eot_iter: of APGD-CE / -DLR
    (the reference's apgd object; its targeted components always run once per target)."""
    if name in ("apgd-ce", "apgd-dlr"):
        adv, _ = apgd.apgd_restarts(model, x, y, eps=eps, norm=norm, n_iter=n_iter,
                                    loss=name[len("apgd-"):], n_restarts=restarts, seed=seed,
                                    eot_iter=eot_iter)
    elif name == "fab":
        adv, _ = fab.fab_untargeted(model, x, y, eps=eps, norm=norm, n_iter=n_iter,
                                    n_restarts=restarts, seed=seed, **FAB_SETTINGS)
    elif name == "apgd-t":
        adv, _ = apgd.apgd_targeted(model, x, y, eps=eps, norm=norm, n_iter=n_iter,
                                    n_target_classes=n_targets, seed=seed)
    elif name == "fab-t":
        adv, _ = fab.fab_targeted(model, x, y, eps=eps, norm=norm, n_iter=n_iter,
                                  n_target_classes=n_targets, **FAB_SETTINGS)
    else:
        use_numpy = predict_fn is not None
        adv, _ = square.square(predict_fn if use_numpy else model, x, y, eps=eps, norm=norm,
                               n_queries=n_queries, p_init=SQUARE_SETTINGS["p_init"],
                               seed=seed, numpy_logits=use_numpy, batch_size=batch_size)
    return adv
