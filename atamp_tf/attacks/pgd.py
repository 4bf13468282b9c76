"""Projected gradient descent (Madry et al. 2018) in the graph: the training-time attack.

A pure function of a logits callable and tensors; the K steps run in a `tf.while_loop`, so a
traced train step holds one copy of the step, not K.
"""
import tensorflow as tf

from atamp_tf.attacks import projections


def cross_entropy(logits, y):
    """Per-example cross-entropy of integer labels: the default attack loss."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(y, tf.int32),
                                                          logits=logits)


def pgd(logits_fn, x, y, *, eps, step_size, steps, norm, loss_fn=None, random_start=True,
        seed=None, x_init=None):
    """K steps of size `step_size` up `loss_fn(logits, y)`, projected to the eps-ball and [0,1].

    Args:
      logits_fn: maps a batch of images in [0,1] to logits.
      loss_fn: per-example loss `(logits, y) -> [batch]` to maximise; cross-entropy by default.
      random_start: start from a uniform point of the ball (needs `seed`, a shape-[2] int
        tensor for stateless sampling); False starts at x.
      x_init: an explicit start (projected first); overrides random_start.
    Returns the adversarial batch, with no gradient path back to x.
    """
    projections.check_threat_model(norm, eps, step_size, steps)
    loss_fn = loss_fn or cross_entropy
    x = tf.stop_gradient(x)
    if x_init is not None:
        x_adv = projections.project(tf.stop_gradient(x_init), x, eps=eps, norm=norm)
    elif random_start:
        if seed is None:
            raise ValueError("pgd: random_start=True needs a seed (shape-[2] int tensor)")
        x_adv = projections.random_in_ball(x, eps=eps, norm=norm, seed=seed)
    else:
        x_adv = x

    def body(i, x_adv):
        with tf.GradientTape() as tape:
            tape.watch(x_adv)
            loss = tf.reduce_sum(loss_fn(logits_fn(x_adv), y))
        grad = tape.gradient(loss, x_adv, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        x_next = x_adv + projections.steepest_step(grad, step_size=step_size, norm=norm)
        return i + 1, projections.project(x_next, x, eps=eps, norm=norm)

    _, x_adv = tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), x_adv),
                             parallel_iterations=1)
    return tf.stop_gradient(x_adv)
