"""Frozen copies of the project's two PGDs as they were before they became one
(atamp_tf/attacks/pgd.py + projections.py and suite.pgd at commit f5d6e6d): the references
atamp_tf.attacks.pgd must reproduce bit for bit, so that training runs and the evaluation
numbers recorded in committed reports stay reproducible. Do not edit: they are the record."""
import numpy as np
import tensorflow as tf
from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method
from cleverhans.tf2.utils import clip_eta

_TINY = 1e-12


def _per_example_l2(v):
    axes = tf.range(1, tf.rank(v))
    return tf.sqrt(tf.reduce_sum(tf.square(v), axis=axes, keepdims=True))


def project(x_adv, x, *, eps, norm):
    delta = x_adv - x
    if norm == "linf":
        delta = tf.clip_by_value(delta, -eps, eps)
    else:
        scale = tf.minimum(1.0, eps / tf.maximum(_per_example_l2(delta), _TINY))
        delta = delta * scale
    return tf.clip_by_value(x + delta, 0.0, 1.0)


def steepest_step(grad, *, step_size, norm):
    if norm == "linf":
        return step_size * tf.sign(grad)
    return step_size * grad / tf.maximum(_per_example_l2(grad), _TINY)


def random_in_ball(x, *, eps, norm, seed):
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


def cross_entropy(logits, y):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(y, tf.int32),
                                                          logits=logits)


def training_pgd(logits_fn, x, y, *, eps, step_size, steps, norm, loss_fn=None,
                 random_start=True, seed=None, x_init=None):
    """The training PGD (loss_fn(logits, y); step, then ball, then box)."""
    loss_fn = loss_fn or cross_entropy
    x = tf.stop_gradient(x)
    if x_init is not None:
        x_adv = project(tf.stop_gradient(x_init), x, eps=eps, norm=norm)
    elif random_start:
        x_adv = random_in_ball(x, eps=eps, norm=norm, seed=seed)
    else:
        x_adv = x

    def body(i, x_adv):
        with tf.GradientTape() as tape:
            tape.watch(x_adv)
            loss = tf.reduce_sum(loss_fn(logits_fn(x_adv), y))
        grad = tape.gradient(loss, x_adv, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        x_next = x_adv + steepest_step(grad, step_size=step_size, norm=norm)
        return i + 1, project(x_next, x, eps=eps, norm=norm)

    _, x_adv = tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), x_adv),
                             parallel_iterations=1)
    return tf.stop_gradient(x_adv)


def _margin(logits, y):
    mask = tf.one_hot(tf.cast(y, tf.int32), tf.shape(logits)[-1], on_value=True,
                      off_value=False)
    true_logit = tf.reduce_sum(tf.where(mask, logits, tf.zeros_like(logits)), axis=-1)
    other = tf.reduce_max(tf.where(mask, tf.fill(tf.shape(logits), logits.dtype.min), logits),
                          axis=-1)
    return true_logit - other


def _cross_entropy_loss(labels, logits):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(labels, tf.int32),
                                                          logits=logits)


def _cw_margin_loss(labels, logits):
    return -_margin(logits, labels)


_NORM_ORD = {"linf": np.inf, "l2": 2}


def evaluation_pgd(logits_fn, x, y, *, eps, norm, steps, step_size, loss="cross_entropy",
                   random_start=True, seed=(0, 0), early_stop=True):
    """The evaluation PGD (CleverHans' loss_fn(labels, logits); FGM step, clip_eta)."""
    loss_fn = {"cross_entropy": _cross_entropy_loss, "cw_margin": _cw_margin_loss}[loss]
    ord_ = _NORM_ORD[norm]
    x = tf.stop_gradient(tf.convert_to_tensor(x, tf.float32))
    y = tf.cast(y, tf.int32)
    if random_start:
        x_adv = random_in_ball(x, eps=eps, norm=norm, seed=tf.cast(seed, tf.int32))
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
