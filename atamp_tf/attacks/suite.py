"""The paper's evaluation attacks (Table 3) and the machinery that runs them over a test set.

The attacks, their labels, kinds, order, default settings and random streams are
`atamp_tf.attacks.registry`'s. White-box attacks are CleverHans': FGSM is
`fast_gradient_method`; PGD-20, PGD-100 and the CW variant (PGD-100 on the Carlini-Wagner
margin loss) are `atamp_tf.attacks.pgd` with update="cleverhans": CleverHans' FGM step and
its `clip_eta` projection exactly as its `projected_gradient_descent` does, but inside a
`tf.while_loop`, so a compiled attack holds one step whatever the number of steps (CleverHans'
own Python loop would unroll 100 gradient computations when traced). By default an example
stops moving once misclassified, and PGD-20 / PGD-100 share their random start, so PGD-100
never fools fewer examples than PGD-20 (`early_stop=False` is CleverHans' PGD exactly, as
tests/test_attacks_suite.py checks). SPSA is the batched, fixed version in
`atamp_tf.attacks.spsa`. AutoAttack and Square come from `atamp_tf.attacks.autoattack` and
are wired in by `atamp_tf.evaluate`.

Default step sizes: FGSM one step of eps; PGD and CW eps / 4 under L-inf (2/255 at 8/255,
the usual PGD-20 evaluation step of Rice et al. 2020) and eps * 15 / 128 under L2 (15/255 at
128/255, the paper's L2 step): `registry.PGD_STEP_PER_EPS`.
"""
import dataclasses

import keras
import numpy as np
import tensorflow as tf
from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method

from atamp_tf.attacks import geometry, registry
from atamp_tf.attacks import pgd as pgd_lib
from atamp_tf.attacks import spsa as spsa_lib

_PGD = registry.get("pgd20").defaults
_SPSA = registry.get("spsa").defaults
_AUTOATTACK = registry.get("autoattack").defaults


def default_step_size(norm, eps):
    """PGD / CW step: eps / 4 under L-inf, eps * 15 / 128 under L2 (see module docstring)."""
    return eps * registry.PGD_STEP_PER_EPS[norm]


@dataclasses.dataclass(frozen=True)
class SuiteSettings:
    """Knobs of the attack suite (defaults: the registry's); None step size means
    `default_step_size`."""
    pgd_step_size: float | None = None
    pgd_early_stop: bool = _PGD["early_stop"]
    spsa_steps: int = _SPSA["steps"]
    spsa_samples: int = _SPSA["num_samples"]
    spsa_delta: float = _SPSA["delta"]
    spsa_learning_rate: float = _SPSA["learning_rate"]
    spsa_max_batch: int | None = _SPSA["max_batch"]
    spsa_early_stop: bool = _SPSA["early_stop"]
    autoattack_version: str = _AUTOATTACK["version"]
    autoattack_components: tuple = _AUTOATTACK["components"]  # empty: the version's own
    autoattack_iters: int = _AUTOATTACK["n_iter"]
    square_queries: int = _AUTOATTACK["n_queries"]
    autoattack_batch_size: int | None = None  # None: the evaluation's batch size

    def __post_init__(self):
        def check(field, **kwargs):
            geometry.check_number(f"{field} (--{field})", getattr(self, field), **kwargs)
        if self.pgd_step_size is not None:
            check("pgd_step_size", strict=True)
        check("spsa_steps", whole=True)
        spsa_lib.check_num_samples("spsa_samples (--spsa_samples)", self.spsa_samples)
        check("spsa_delta", strict=True)
        check("spsa_learning_rate", strict=True)
        if self.spsa_max_batch is not None:
            check("spsa_max_batch", low=1, whole=True)
        if self.autoattack_version not in registry.AUTOATTACK_VERSIONS:
            raise ValueError(f"autoattack_version (--autoattack_version) must be one of "
                             f"{', '.join(registry.AUTOATTACK_VERSIONS)}, got "
                             f"{self.autoattack_version!r}")
        check("autoattack_iters", low=1, whole=True)
        check("square_queries", low=1, whole=True)
        if self.autoattack_batch_size is not None:
            check("autoattack_batch_size", low=1, whole=True)


def attack_settings(name, *, norm, eps, settings=SuiteSettings()):
    """The settings an attack runs with, as recorded in report.json."""
    attack = registry.get(name)
    common = {"norm": norm, "eps": float(eps)}
    defaults, runner = attack.defaults, attack.runner
    if runner == "natural":
        return {}
    if runner == "fgsm":
        return {**common, "steps": defaults["steps"], "step_size": float(eps),
                "random_start": defaults["random_start"], "loss": defaults["loss"],
                "implementation": attack.implementation}
    if runner == "pgd":
        step = settings.pgd_step_size
        return {**common, "steps": defaults["steps"],
                "step_size": float(default_step_size(norm, eps) if step is None else step),
                "random_start": defaults["random_start"], "restarts": defaults["restarts"],
                "early_stop": settings.pgd_early_stop, "random_stream": attack.stream,
                "loss": defaults["loss"], "implementation": attack.implementation}
    if runner == "spsa":
        return {**common, "steps": settings.spsa_steps,
                "learning_rate": settings.spsa_learning_rate, "delta": settings.spsa_delta,
                "num_samples": settings.spsa_samples,
                "early_stop": settings.spsa_early_stop, "loss": defaults["loss"],
                "implementation": attack.implementation}
    if runner == "autoattack":
        from atamp_tf.attacks import autoattack  # pylint: disable=import-outside-toplevel
        components = list(settings.autoattack_components or
                          autoattack.VERSION_COMPONENTS[settings.autoattack_version])
        version = autoattack.version_label(settings.autoattack_version, components,
                                           settings.autoattack_iters, settings.square_queries)
        return {**common, "version": version, "components": components,
                "n_iter": settings.autoattack_iters, "n_queries": settings.square_queries,
                "implementation": attack.implementation}
    return {**common, "n_queries": settings.square_queries,
            "implementation": attack.implementation}


def fgsm(logits_fn, x, y, *, eps, norm):
    """FGSM (FGM under L2): one step of size eps up the cross-entropy, clipped to [0, 1]."""
    geometry.check_threat_model(norm, eps)
    return fast_gradient_method(logits_fn, x, eps, geometry.NUMPY_ORD[norm],
                                pgd_lib.cleverhans_loss(geometry.cross_entropy),
                                clip_min=0.0, clip_max=1.0, y=tf.cast(y, tf.int32))


def zero_gradient_if_disconnected(logits_fn):
    """logits_fn plus 0 * (sum of each input): same logits, but a model whose logits have no
    gradient path from the input (stop_gradient, hard quantisation) gives a zero gradient, so
    the white-box attacks run (and fail, which the sanity checks report) instead of CleverHans
    crashing on a None gradient."""
    def logits(x):
        flat = tf.reshape(x, [tf.shape(x)[0], -1])
        return logits_fn(x) + 0.0 * tf.reduce_sum(flat, axis=1, keepdims=True)
    return logits


def make_attack(name, logits_fn, *, norm, eps, settings=SuiteSettings()):
    """A function (x, y, seed) -> x_adv for a suite attack, compiled with tf.function.

    `logits_fn` must be traceable (a Keras model, or numpy wrapped in tf.numpy_function; the
    white-box attacks also need its gradient). autoattack / square are not built here.
    """
    geometry.check_threat_model(norm, eps)
    attack = registry.get(name)
    cfg = attack_settings(name, norm=norm, eps=eps, settings=settings)
    if attack.kind == "white_box":
        logits_fn = zero_gradient_if_disconnected(logits_fn)
    if attack.runner == "natural":
        def run(x, y, seed):
            return tf.identity(x)
    elif attack.runner == "fgsm":
        def run(x, y, seed):
            return fgsm(logits_fn, x, y, eps=eps, norm=norm)
    elif attack.runner == "pgd":
        def run(x, y, seed):
            return pgd_lib.pgd(logits_fn, x, y, eps=eps, norm=norm, steps=cfg["steps"],
                               step_size=cfg["step_size"], loss_fn=geometry.LOSSES[cfg["loss"]],
                               seed=tf.cast(seed, tf.int32), early_stop=cfg["early_stop"],
                               update="cleverhans")
    elif attack.runner == "spsa":
        def run(x, y, seed):
            return spsa_lib.spsa(logits_fn, x, y, eps=eps, norm=norm, steps=cfg["steps"],
                                 learning_rate=cfg["learning_rate"], delta=cfg["delta"],
                                 num_samples=cfg["num_samples"], early_stop=cfg["early_stop"],
                                 seed=seed, max_batch=settings.spsa_max_batch)
    else:
        raise ValueError(f"make_attack builds the natural, fgsm, pgd and spsa attacks; {name} "
                         f"runs through atamp_tf.attacks.autoattack")
    return tf.function(run, reduce_retracing=True)


def batch_seed(seed, stream, batch):
    """Stateless key of one batch of one attack: distinct per (seed, attack stream, batch)."""
    key = tf.random.experimental.stateless_fold_in(tf.constant([int(seed), 0]), stream)
    return tf.random.experimental.stateless_fold_in(key, batch)


def run_batched(attack, x, y, *, batch_size, seed=0, stream=0, label=None, verbose=True):
    """Runs attack(x, y, seed) over batches of numpy arrays, with a progress bar."""
    batch_size = geometry.check_number("batch_size", batch_size, low=1, whole=True)
    out = np.empty_like(x, dtype=np.float32)
    bar = keras.utils.Progbar(len(x), unit_name="example") if verbose and len(x) else None
    if bar is not None and label:
        print(f"{label}:", flush=True)
    for b, start in enumerate(range(0, len(x), batch_size)):
        stop = min(start + batch_size, len(x))
        out[start:stop] = attack(tf.constant(x[start:stop], tf.float32),
                                 tf.constant(y[start:stop], tf.int32),
                                 batch_seed(seed, stream, b)).numpy()
        if bar is not None:
            bar.update(stop)
    return out


def compile_logits(logits_fn):
    """logits_fn compiled once, for `predict` (one trace serves every batch size)."""
    return tf.function(logits_fn, reduce_retracing=True)


def predict(logits_fn, x, *, batch_size):
    """Logits of numpy images, batch by batch, as one numpy array (pass a compiled fn)."""
    outs = [np.asarray(logits_fn(tf.constant(x[i:i + batch_size], tf.float32)))
            for i in range(0, len(x), batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)
