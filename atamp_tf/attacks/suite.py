"""The paper's evaluation attacks (Table 3) and the machinery that runs them over a test set.

White-box attacks are CleverHans': FGSM is `fast_gradient_method`; PGD-20, PGD-100 and the
CW variant (PGD-100 on the Carlini-Wagner margin loss) repeat CleverHans' FGM step and its
`clip_eta` projection exactly as its `projected_gradient_descent` does, but inside a
`tf.while_loop`, so a compiled attack holds one step whatever the number of steps (CleverHans'
own Python loop would unroll 100 gradient computations when traced). By default an example
stops moving once misclassified, and PGD-20 / PGD-100 share their random start, so PGD-100
never fools fewer examples than PGD-20 (`early_stop=False` is CleverHans' PGD exactly, as
tests/test_attacks_suite.py checks). SPSA is the batched,
fixed version in `atamp_tf.attacks.spsa`. AutoAttack and Square come from
`atamp_tf.attacks.autoattack` and are wired in by `atamp_tf.evaluate`.

Attack names (keys of report.json's `accuracy` map): natural, fgsm, pgd20, pgd100, cw_inf
(L-inf; the same margin-loss PGD-100 is called cw_l2 under L2), spsa, autoattack, square.
Default step sizes: FGSM one step of eps; PGD and CW eps / 4 under L-inf (2/255 at 8/255,
the usual PGD-20 evaluation step of Rice et al. 2020) and eps * 15 / 128 under L2 (15/255 at
128/255, the paper's L2 step).
"""
import dataclasses

import keras
import numpy as np
import tensorflow as tf
from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method
from cleverhans.tf2.utils import clip_eta

from atamp_tf.attacks import projections
from atamp_tf.attacks import spsa as spsa_lib

NORM_ORD = {"linf": np.inf, "l2": 2}
LABELS = {"natural": "Natural", "fgsm": "FGSM", "pgd20": "PGD-20", "pgd100": "PGD-100",
          "cw_inf": "CW-inf", "cw_l2": "CW-L2", "spsa": "SPSA", "autoattack": "AutoAttack",
          "square": "Square"}
KINDS = {"natural": "clean", "fgsm": "white_box", "pgd20": "white_box", "pgd100": "white_box",
         "cw_inf": "white_box", "cw_l2": "white_box", "spsa": "black_box",
         "autoattack": "ensemble", "square": "black_box"}
PGD_STEPS = {"pgd20": 20, "pgd100": 100, "cw_inf": 100, "cw_l2": 100}


def cw_name(norm):
    """The CW column's attack name under a norm: cw_inf for L-inf, cw_l2 for L2."""
    return "cw_inf" if norm == "linf" else "cw_l2"


def table3_attacks(norm):
    """The paper's Table 3 attacks, in its column order, for a threat model."""
    return ("natural", "fgsm", "pgd20", "pgd100", cw_name(norm), "spsa", "autoattack")


def known_attacks(norm):
    """Every attack name that can run under a norm (Table 3's plus Square)."""
    return table3_attacks(norm) + ("square",)


def default_step_size(norm, eps):
    """PGD / CW step: eps / 4 under L-inf, eps * 15 / 128 under L2 (see module docstring)."""
    return eps / 4.0 if norm == "linf" else eps * 15.0 / 128.0


@dataclasses.dataclass(frozen=True)
class SuiteSettings:
    """Knobs of the attack suite; None step size means `default_step_size`."""
    pgd_step_size: float | None = None
    pgd_early_stop: bool = True
    spsa_steps: int = spsa_lib.DEFAULT_STEPS
    spsa_samples: int = spsa_lib.DEFAULT_NUM_SAMPLES
    spsa_delta: float = spsa_lib.DEFAULT_DELTA
    spsa_learning_rate: float = spsa_lib.DEFAULT_LEARNING_RATE
    spsa_max_batch: int | None = 4096
    spsa_early_stop: bool = True
    autoattack_version: str = "standard"
    autoattack_components: tuple = ()  # empty: all four, the standard version
    autoattack_iters: int = 100
    square_queries: int = 5000

    def __post_init__(self):
        def bad(field, expected):
            raise ValueError(f"{field} (--{field}) must be {expected}, got "
                             f"{getattr(self, field)!r}")

        def whole(value, low):
            return not isinstance(value, bool) and int(value) == value and value >= low
        if self.pgd_step_size is not None and not self.pgd_step_size > 0:
            bad("pgd_step_size", "> 0")
        if not whole(self.spsa_steps, 0):
            bad("spsa_steps", "a whole number >= 0")
        if not whole(self.spsa_samples, 2) or self.spsa_samples % 2:
            bad("spsa_samples", "an even whole number >= 2 (both points of each +-delta pair)")
        for field in ("spsa_delta", "spsa_learning_rate"):
            if not getattr(self, field) > 0:
                bad(field, "> 0")
        if self.spsa_max_batch is not None and not whole(self.spsa_max_batch, 1):
            bad("spsa_max_batch", "a whole number >= 1")
        for field in ("autoattack_iters", "square_queries"):
            if not whole(getattr(self, field), 1):
                bad(field, "a whole number >= 1")


def attack_settings(name, *, norm, eps, settings=SuiteSettings()):
    """The settings an attack runs with, as recorded in report.json."""
    common = {"norm": norm, "eps": float(eps)}
    if name == "natural":
        return {}
    if name == "fgsm":
        return {**common, "steps": 1, "step_size": float(eps), "random_start": False,
                "loss": "cross_entropy", "implementation": "cleverhans fast_gradient_method"}
    if name in PGD_STEPS:
        step = settings.pgd_step_size
        return {**common, "steps": PGD_STEPS[name],
                "step_size": float(default_step_size(norm, eps) if step is None else step),
                "random_start": True, "restarts": 1, "early_stop": settings.pgd_early_stop,
                "random_stream": random_stream(name),
                "loss": "cw_margin" if name.startswith("cw") else "cross_entropy",
                "implementation": "cleverhans fast_gradient_method + clip_eta in tf.while_loop"}
    if name == "spsa":
        return {**common, "steps": settings.spsa_steps,
                "learning_rate": settings.spsa_learning_rate, "delta": settings.spsa_delta,
                "num_samples": settings.spsa_samples,
                "early_stop": settings.spsa_early_stop, "loss": "margin",
                "implementation": "atamp_tf.attacks.spsa (batched CleverHans spsa, issue 1087 "
                                  "fixed)"}
    if name == "autoattack":
        from atamp_tf.attacks import autoattack  # pylint: disable=import-outside-toplevel
        components = list(settings.autoattack_components or autoattack.COMPONENTS)
        version = autoattack.version_label(settings.autoattack_version, components,
                                           settings.autoattack_iters, settings.square_queries)
        return {**common, "version": version, "components": components,
                "n_iter": settings.autoattack_iters, "n_queries": settings.square_queries,
                "implementation": "atamp_tf.attacks.autoattack"}
    if name == "square":
        return {**common, "n_queries": settings.square_queries,
                "implementation": "atamp_tf.attacks.autoattack (Square component)"}
    raise ValueError(f"unknown attack {name!r}; known: {', '.join(known_attacks(norm))}")


def cw_margin_loss(labels, logits):
    """max_{j != y} z_j - z_y per example: the CW loss PGD maximises (positive = misclassified)."""
    return -spsa_lib.margin_loss(logits, labels)


def cross_entropy_loss(labels, logits):
    """Per-example cross-entropy in CleverHans' loss_fn(labels=, logits=) convention."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(labels, tf.int32),
                                                          logits=logits)


def _check(norm, eps):
    if norm not in NORM_ORD:
        raise ValueError(f"norm must be one of {tuple(NORM_ORD)}, got {norm!r}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")


def fgsm(logits_fn, x, y, *, eps, norm):
    """FGSM (FGM under L2): one step of size eps up the cross-entropy, clipped to [0, 1]."""
    _check(norm, eps)
    return fast_gradient_method(logits_fn, x, eps, NORM_ORD[norm], cross_entropy_loss,
                                clip_min=0.0, clip_max=1.0, y=tf.cast(y, tf.int32))


def pgd(logits_fn, x, y, *, eps, norm, steps, step_size, loss="cross_entropy",
        random_start=True, seed=(0, 0), early_stop=True):
    """PGD as CleverHans runs it (FGM step, clip_eta, clip to [0,1]) in one tf.while_loop.

    loss: "cross_entropy" or "cw_margin" (the CW-inf attack); maximised.
    random_start: start uniformly in the ball (stateless, keyed by `seed`, int32 [2]).
    early_stop: an example stops moving once it is misclassified (as Rice et al. 2020's and
      AWP's evaluation PGD do; one extra forward pass per step), so a success is never lost
      and, from the same start, more steps never fool fewer examples. False is CleverHans'
      projected_gradient_descent exactly (the last iterate, fooling or not).
    """
    _check(norm, eps)
    loss_fn = {"cross_entropy": cross_entropy_loss, "cw_margin": cw_margin_loss}.get(loss)
    if loss_fn is None:
        raise ValueError(f"loss must be 'cross_entropy' or 'cw_margin', got {loss!r}")
    ord_ = NORM_ORD[norm]
    x = tf.stop_gradient(tf.convert_to_tensor(x, tf.float32))
    y = tf.cast(y, tf.int32)
    if random_start:
        x_adv = projections.random_in_ball(x, eps=eps, norm=norm, seed=tf.cast(seed, tf.int32))
    else:
        x_adv = x

    def body(i, x_adv):
        x_next = fast_gradient_method(logits_fn, x_adv, step_size, ord_, loss_fn,
                                      clip_min=0.0, clip_max=1.0, y=y)
        x_next = tf.clip_by_value(x + clip_eta(x_next - x, ord_, eps), 0.0, 1.0)
        if early_stop:
            fooled = tf.argmax(logits_fn(x_adv), axis=-1, output_type=tf.int32) != y
            x_next = tf.where(tf.reshape(fooled, [-1] + [1] * (len(x.shape) - 1)), x_adv,
                              x_next)
        return i + 1, tf.ensure_shape(x_next, x.shape)

    _, x_adv = tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), x_adv),
                             parallel_iterations=1)
    return tf.stop_gradient(x_adv)


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
    _check(norm, eps)
    cfg = attack_settings(name, norm=norm, eps=eps, settings=settings)
    if KINDS[name] == "white_box":
        logits_fn = zero_gradient_if_disconnected(logits_fn)
    if name == "natural":
        def attack(x, y, seed):
            return tf.identity(x)
    elif name == "fgsm":
        def attack(x, y, seed):
            return fgsm(logits_fn, x, y, eps=eps, norm=norm)
    elif name in PGD_STEPS:
        def attack(x, y, seed):
            return pgd(logits_fn, x, y, eps=eps, norm=norm, steps=cfg["steps"],
                       step_size=cfg["step_size"], loss=cfg["loss"], seed=seed,
                       early_stop=cfg["early_stop"])
    elif name == "spsa":
        def attack(x, y, seed):
            return spsa_lib.spsa(logits_fn, x, y, eps=eps, norm=norm, steps=cfg["steps"],
                                 learning_rate=cfg["learning_rate"], delta=cfg["delta"],
                                 num_samples=cfg["num_samples"], early_stop=cfg["early_stop"],
                                 seed=seed, max_batch=settings.spsa_max_batch)
    else:
        raise ValueError(f"make_attack builds {', '.join(PGD_STEPS)}, natural, fgsm and spsa; "
                         f"got {name!r}")
    return tf.function(attack, reduce_retracing=True)


def random_stream(name):
    """Which random stream an attack draws from: PGD-20 and PGD-100 share one, so they start
    from the same points and (with early stop) PGD-100 fools every example PGD-20 fools."""
    return {"pgd20": 1, "pgd100": 1}.get(name, 2 + sorted(LABELS).index(name))


def batch_seed(seed, stream, batch):
    """Stateless key of one batch of one attack: distinct per (seed, attack stream, batch)."""
    key = tf.random.experimental.stateless_fold_in(tf.constant([int(seed), 0]), stream)
    return tf.random.experimental.stateless_fold_in(key, batch)


def run_batched(attack, x, y, *, batch_size, seed=0, stream=0, label=None, verbose=True):
    """Runs attack(x, y, seed) over batches of numpy arrays, with a progress bar."""
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
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
