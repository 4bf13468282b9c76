"""The threat model's geometry, written once for every attack: validation, per-example norms,
the losses on logits, steepest-ascent steps, projections onto the eps-ball and [0, 1], and
sampling in the ball.

All tensor functions act per example on batches of rank >= 2 (NHWC images) and keep pixels in
[0, 1]. Where the project's attacks reproduce a reference implementation with its own
floating-point order of operations, that form is here too, named after it (CleverHans' clip_eta
is `clip_to_ball`; the reference AutoAttack's projection is `project_autoattack`), so that
every attack's recorded numbers are reproduced bit for bit.
"""
import math
import numbers

import numpy as np
import tensorflow as tf

from atamp_tf.attacks.registry import NORMS

TINY = 1e-12  # guards every division by a norm
NUMPY_ORD = {"linf": np.inf, "l2": 2}  # the norms as numpy's / CleverHans' `ord`


# ---------------------------------------------------------------------------- validation

def check_norm(norm, name="norm"):
    """Returns norm if it is a known threat model; ValueError naming `name` otherwise."""
    if norm not in NORMS:
        raise ValueError(f"{name} must be one of {', '.join(NORMS)}, got {norm!r}")
    return norm


def check_number(name, value, *, low=0, strict=False, whole=False):
    """Returns value if it is a finite real number (not a bool) >= low (> low when strict),
    as an int when `whole` (then it must be a whole number); ValueError naming `name`."""
    ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
          and math.isfinite(value) and (value > low if strict else value >= low)
          and (not whole or float(value).is_integer()))
    if not ok:
        kind = "a whole number" if whole else "a finite number"
        raise ValueError(f"{name} must be {kind} {'>' if strict else '>='} {low}, "
                         f"got {value!r}")
    return int(value) if whole else value


def check_threat_model(norm, eps, step_size=None, steps=None):
    """Raises ValueError for a threat model (and step size, number of steps) no attack can
    run with: an unknown norm, eps < 0, step_size < 0, steps not a whole number >= 0. Tensor
    eps and step sizes (the training eps ramp's, computed per step in the graph) are not
    checked here."""
    check_norm(norm)
    if not tf.is_tensor(eps):
        check_number("eps", eps)
    if step_size is not None and not tf.is_tensor(step_size):
        check_number("step_size", step_size)
    if steps is not None:
        check_number("steps", steps, whole=True)


# ---------------------------------------------------------------------------- norms

def per_example(values, like):
    """Per-example values [batch] reshaped to broadcast against `like` [batch, ...]."""
    return tf.reshape(values, [-1] + [1] * (len(like.shape) - 1))


def lp_norm(v, norm):
    """Per-example Lp norm (p = inf or 2) of a batch of any rank, shape [batch]."""
    flat = tf.reshape(v, [tf.shape(v)[0], -1])
    if norm == "linf":
        return tf.reduce_max(tf.abs(flat), axis=1)
    return tf.sqrt(tf.reduce_sum(tf.square(flat), axis=1))


def lp_norm_np(v, norm):
    """lp_norm of a numpy batch, in float64."""
    flat = np.asarray(v, np.float64).reshape(len(v), -1)
    if norm == "linf":
        return np.abs(flat).max(axis=1, initial=0.0)
    return np.sqrt((flat ** 2).sum(axis=1))


def changed_rows(x, x_adv):
    """(indices, rows) of the examples whose x_adv differs from x: a batch of adversarial
    examples stored small (most of AutoAttack's outputs are their clean images)."""
    indices = np.flatnonzero((x_adv != x).reshape(len(x), -1).any(axis=1))
    return indices, x_adv[indices]


def with_rows(x, indices, rows):
    """x with the rows at indices replaced: the inverse of changed_rows."""
    out = np.array(x, copy=True)
    out[indices] = rows
    return out


# ---------------------------------------------------------------------------- losses

def cross_entropy(logits, y):
    """Per-example cross-entropy of integer labels: the default attack (and training) loss."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(y, tf.int32),
                                                          logits=logits)


def margin(logits, y):
    """z_y - max_{j != y} z_j per example: negative exactly when the example is misclassified
    (what SPSA and Square minimise)."""
    mask = tf.one_hot(tf.cast(y, tf.int32), tf.shape(logits)[-1], on_value=True,
                      off_value=False)
    true_logit = tf.reduce_sum(tf.where(mask, logits, tf.zeros_like(logits)), axis=-1)
    other = tf.reduce_max(tf.where(mask, tf.fill(tf.shape(logits), logits.dtype.min), logits),
                          axis=-1)
    return true_logit - other


def cw_margin(logits, y):
    """max_{j != y} z_j - z_y: the Carlini-Wagner loss PGD maximises (positive = fooled)."""
    return -margin(logits, y)


LOSSES = {"cross_entropy": cross_entropy, "cw_margin": cw_margin, "margin": margin}


# ---------------------------------------------------------------------------- steps, balls

def steepest_step(grad, *, step_size, norm):
    """The step of the given size that raises a linear loss most under the norm."""
    if norm == "linf":
        return step_size * tf.sign(grad)
    return step_size * grad / tf.maximum(per_example(lp_norm(grad, "l2"), grad), TINY)


def normalize(v, norm):
    """v / (||v|| + 1e-12) per example: the reference AutoAttack's unit vector."""
    return v / (per_example(lp_norm(v, norm), v) + TINY)


def clip_to_ball(delta, *, eps, norm):
    """The perturbation clipped to the eps-ball (CleverHans' clip_eta): L-inf clips each pixel,
    L2 rescales by min(1, eps / ||delta||)."""
    if norm == "linf":
        return tf.clip_by_value(delta, -eps, eps)
    return delta * tf.minimum(1.0, eps / tf.maximum(per_example(lp_norm(delta, "l2"), delta),
                                                    TINY))


def project(x_adv, x, *, eps, norm):
    """x_adv projected onto the eps-ball around x (per example), then onto the box [0, 1]."""
    return tf.clip_by_value(x + clip_to_ball(x_adv - x, eps=eps, norm=norm), 0.0, 1.0)


def project_perturbation(delta, x, *, eps, norm):
    """`project` on a perturbation: the delta that takes x to the projected point."""
    return tf.clip_by_value(x + clip_to_ball(delta, eps=eps, norm=norm), 0.0, 1.0) - x


def project_autoattack(z, x, *, eps, norm):
    """`project` in the reference AutoAttack's arithmetic (APGD, Square): L-inf clips z to
    [x - eps, x + eps], L2 puts z - x at length min(eps, ||z - x||) along its unit vector."""
    if norm == "linf":
        return tf.clip_by_value(tf.clip_by_value(z, x - eps, x + eps), 0.0, 1.0)
    d = z - x
    length = tf.minimum(eps, per_example(lp_norm(d, "l2"), d))
    return tf.clip_by_value(x + normalize(d, "l2") * length, 0.0, 1.0)


# ---------------------------------------------------------------------------- sampling

def random_perturbation(x, *, eps, norm, seed, l2_radius="uniform"):
    """A random perturbation in the eps-ball, one per example of x (stateless, seeded).

    L-inf: uniform in the cube. L2: a uniform direction at radius eps * U(0, 1)
    (l2_radius="uniform", as robust_overfitting and AWP draw it: uniform in volume would put
    nearly every start on the sphere at image dimensions), or eps * U(0, 1)^(1/d), uniform in
    volume (l2_radius="volume", SPSA's start).
    """
    shape = tf.shape(x)
    if norm == "linf":
        return tf.random.stateless_uniform(shape, seed=seed, minval=-eps, maxval=eps,
                                           dtype=x.dtype)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    direction = tf.random.stateless_normal(shape, seed=seeds[0], dtype=x.dtype)
    if l2_radius == "uniform":
        direction = direction / tf.maximum(per_example(lp_norm(direction, "l2"), x), TINY)
        u = tf.random.stateless_uniform(tf.concat([shape[:1], tf.ones_like(shape[1:])], 0),
                                        seed=seeds[1], dtype=x.dtype)
        return direction * eps * u
    dim = tf.cast(tf.reduce_prod(shape[1:]), x.dtype)
    radius = eps * tf.pow(tf.random.stateless_uniform(shape[:1], seed=seeds[1], dtype=x.dtype),
                          1.0 / dim)
    return direction * per_example(radius / tf.maximum(lp_norm(direction, "l2"), TINY), x)


def random_in_ball(x, *, eps, norm, seed):
    """A random start x + random_perturbation (radius eps * U(0, 1) under L2), in [0, 1]."""
    return tf.clip_by_value(x + random_perturbation(x, eps=eps, norm=norm, seed=seed), 0.0, 1.0)


def random_on_sphere(x, *, radius, norm, seed):
    """x moved by `radius` along a random direction (uniform entries for L-inf, Gaussian for
    L2, scaled to unit norm), clipped to [0, 1]: the reference AutoAttack's random start of
    APGD and of FAB's later restarts."""
    if norm == "linf":
        t = tf.random.stateless_uniform(tf.shape(x), seed, -1.0, 1.0)
    else:
        t = tf.random.stateless_normal(tf.shape(x), seed)
    return tf.clip_by_value(x + radius * normalize(t, norm), 0.0, 1.0)
