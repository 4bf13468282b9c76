"""Per-example losses of the adversarial training methods, as pure functions of logits.

Each method has an inner loss (what PGD maximises) and an outer loss (what the weights
minimise, and what AMP's weight ascent maximises). All return one value per example; the
train step reduces them.
  AT     (Madry et al.):  inner CE(f(x'), y);  outer CE(f(x'), y)
  TRADES (Zhang et al.):  inner KL(f(x) || f(x'));  outer CE(f(x), y) + beta KL(f(x) || f(x'))
  MART   (Wang et al.):   inner CE(f(x'), y);
                          outer BCE(f(x'), y) + lambda KL(f(x)||f(x')) (1 - f(x)_y)
"""
import dataclasses
from collections.abc import Callable

import tensorflow as tf

from atamp_tf.attacks.geometry import cross_entropy  # the one CE of integer labels

_LOG_EPS = 1e-12


def kl_divergence(logits_p, logits_q):
    """KL(softmax(p) || softmax(q)) per example."""
    log_p = tf.nn.log_softmax(logits_p)
    log_q = tf.nn.log_softmax(logits_q)
    return tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)


def boosted_cross_entropy(logits, y):
    """MART's BCE: CE(f(x'), y) - log(1 - max_{k != y} p_k) (Wang et al. 2020, eq. 2).

    The first term is the cross-entropy of the logits, as in MART's code, not
    -log(p_y + 1e-12), whose gradient vanishes once p_y falls far below 1e-12.
    """
    probs = tf.nn.softmax(logits)
    num_classes = tf.shape(logits)[-1]
    true_mask = tf.one_hot(tf.cast(y, tf.int32), num_classes, dtype=probs.dtype)
    p_other_max = tf.reduce_max(probs - 2.0 * true_mask, axis=-1)
    # 1.0001 as in MART's code: caps the gradient when x' is confidently misclassified.
    return cross_entropy(logits, y) - tf.math.log(1.0001 - p_other_max + _LOG_EPS)


def at_outer(logits_nat, logits_adv, y, **_):
    """PGD-AT: CE on the adversarial examples."""
    del logits_nat
    return cross_entropy(logits_adv, y)


def trades_outer(logits_nat, logits_adv, y, *, beta=6.0, **_):
    """TRADES: natural CE plus beta times KL(f(x) || f(x'))."""
    return cross_entropy(logits_nat, y) + beta * kl_divergence(logits_nat, logits_adv)


def mart_outer(logits_nat, logits_adv, y, *, mart_lambda=5.0, **_):
    """MART: BCE on x' plus lambda KL(f(x)||f(x')) weighted by 1 - f(x)_y."""
    probs_nat = tf.nn.softmax(logits_nat)
    p_true = tf.gather(probs_nat, tf.cast(y, tf.int32), batch_dims=1)
    return (boosted_cross_entropy(logits_adv, y)
            + mart_lambda * kl_divergence(logits_nat, logits_adv) * (1.0000001 - p_true))


def trades_inner(logits_adv, y, logits_nat):
    """TRADES' attack loss: KL from the (fixed) natural prediction."""
    del y
    return kl_divergence(tf.stop_gradient(logits_nat), logits_adv)


def ce_inner(logits_adv, y, logits_nat):
    del logits_nat
    return cross_entropy(logits_adv, y)


@dataclasses.dataclass(frozen=True)
class Method:
    """What a training method needs: its two losses and which clean logits it uses."""
    name: str
    inner: Callable  # (logits_adv, y, logits_nat) -> per-example loss
    outer: Callable  # (logits_nat, logits_adv, y, **hyper) -> per-example loss
    inner_needs_natural: bool
    outer_needs_natural: bool
    start: str  # "uniform": uniform in the ball; "normal": x + 0.001 N(0, 1) (TRADES, MART)


METHODS = {
    "at": Method("at", ce_inner, at_outer, False, False, "uniform"),
    "trades": Method("trades", trades_inner, trades_outer, True, True, "normal"),
    "mart": Method("mart", ce_inner, mart_outer, False, True, "normal"),  # as MART's code
}


def get_method(name):
    if name not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {name!r}")
    return METHODS[name]
