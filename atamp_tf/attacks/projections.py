"""Lp-ball geometry shared by every attack: projection, steepest-ascent step, ball sampling.

All functions act per example on NHWC (or any rank >= 2) batches and keep pixels in [0, 1].
"""
import tensorflow as tf

NORMS = ("linf", "l2")
_TINY = 1e-12


def check_threat_model(norm, eps, step_size=None, steps=None):
    """Raise ValueError for a threat model the attacks cannot run with. Tensor eps and step
    sizes (the training eps ramp's, computed per step in the graph) are not checked."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if not tf.is_tensor(eps) and not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    if step_size is not None and not tf.is_tensor(step_size) and not step_size >= 0:
        raise ValueError(f"step_size must be >= 0, got {step_size!r}")
    if steps is not None and (int(steps) != steps or steps < 0):
        raise ValueError(f"steps must be a whole number >= 0, got {steps!r}")


def _per_example_l2(v):
    axes = tf.range(1, tf.rank(v))
    return tf.sqrt(tf.reduce_sum(tf.square(v), axis=axes, keepdims=True))


def project(x_adv, x, *, eps, norm):
    """Project x_adv onto the eps-ball around x (per example), then onto the box [0, 1]."""
    delta = x_adv - x
    if norm == "linf":
        delta = tf.clip_by_value(delta, -eps, eps)
    else:
        scale = tf.minimum(1.0, eps / tf.maximum(_per_example_l2(delta), _TINY))
        delta = delta * scale
    return tf.clip_by_value(x + delta, 0.0, 1.0)


def steepest_step(grad, *, step_size, norm):
    """The step of the given size that raises a linear loss most under the norm."""
    if norm == "linf":
        return step_size * tf.sign(grad)
    return step_size * grad / tf.maximum(_per_example_l2(grad), _TINY)


def random_in_ball(x, *, eps, norm, seed):
    """A random start in the eps-ball around x (stateless, seeded), clipped to [0,1].

    L-inf: uniform in the cube. L2: a uniform direction at radius eps * U(0, 1), as
    robust_overfitting and AWP draw it (uniform in volume would put nearly every start on
    the sphere at image dimensions).
    """
    shape = tf.shape(x)
    if norm == "linf":
        noise = tf.random.stateless_uniform(shape, seed=seed, minval=-eps, maxval=eps,
                                            dtype=x.dtype)
    else:
        seeds = tf.random.experimental.stateless_split(seed, 2)
        direction = tf.random.stateless_normal(shape, seed=seeds[0], dtype=x.dtype)
        direction = direction / tf.maximum(_per_example_l2(direction), _TINY)
        u = tf.random.stateless_uniform(tf.concat([shape[:1], tf.ones_like(shape[1:])], 0),
                                        seed=seeds[1], dtype=x.dtype)
        noise = direction * eps * u
    return tf.clip_by_value(x + noise, 0.0, 1.0)
