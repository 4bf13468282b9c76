"""Projected gradient descent (Madry et al. 2018) in the graph: the one PGD of training
(train/amp.py, train/callbacks.py, tools/landscape.py, the sanity checks) and evaluation
(PGD-20, PGD-100 and CW in attacks/suite.py).

A pure function of a logits callable and tensors; the K steps run in a `tf.while_loop`, so a
traced train step or attack holds one copy of the step, not K. The loss is always
`loss_fn(logits, y)`. Two update rules, kept apart because recorded numbers depend on their
floating-point order of operations:
  - "project" (training's): x' + steepest_step, projected onto the eps-ball, then [0, 1];
  - "cleverhans" (evaluation's): CleverHans' fast_gradient_method step (its own L2
    normalisation, clipped to [0, 1]), then projected as CleverHans' clip_eta does. With
    random_start=False and early_stop=False it is CleverHans' projected_gradient_descent
    exactly (tests/test_attacks_suite.py), but one compiled loop whatever the steps.
"""
import functools

import tensorflow as tf
from cleverhans.tf2.utils import optimize_linear

from atamp_tf.attacks import geometry

UPDATES = ("project", "cleverhans")


@functools.cache
def cleverhans_loss(loss_fn):
    """loss_fn(logits, y) in CleverHans' loss_fn(labels=, logits=) convention; cached, so that
    CleverHans' compiled gradient is traced once per loss, not once per call."""
    return lambda labels, logits: loss_fn(logits, labels)


def pgd(logits_fn, x, y, *, eps, step_size, steps, norm, loss_fn=None, random_start=True,
        seed=None, x_init=None, early_stop=False, update="project"):
    """K steps of size `step_size` up `loss_fn(logits, y)`, projected to the eps-ball and [0,1].

    Args:
      logits_fn: maps a batch of images in [0,1] to logits.
      loss_fn: per-example loss `(logits, y) -> [batch]` to maximise; cross-entropy by default.
      random_start: start from a random point of the ball (`geometry.random_in_ball`; needs
        `seed`, a shape-[2] int tensor for stateless sampling); False starts at x.
      x_init: an explicit start (projected first); overrides random_start.
      early_stop: an example stops moving once misclassified (as Rice et al. 2020's and AWP's
        evaluation PGD; it reads the logits of the gradient pass, so it costs no extra forward
        pass), so a success is never lost and,
        from the same start, more steps never fool fewer examples.
      update: "project" or "cleverhans" (module docstring).
    Returns the adversarial batch, with no gradient path back to x.
    """
    geometry.check_threat_model(norm, eps, step_size, steps)
    if update not in UPDATES:
        raise ValueError(f"update must be one of {', '.join(UPDATES)}, got {update!r}")
    loss_fn = loss_fn or geometry.cross_entropy
    x = tf.stop_gradient(tf.convert_to_tensor(x))
    y = tf.cast(y, tf.int32)
    if x_init is not None:
        x_adv = geometry.project(tf.stop_gradient(x_init), x, eps=eps, norm=norm)
    elif random_start:
        if seed is None:
            raise ValueError("pgd: random_start=True needs a seed (shape-[2] int tensor)")
        x_adv = geometry.random_in_ball(x, eps=eps, norm=norm, seed=seed)
    else:
        x_adv = x

    def ascend(x_adv):
        """One step up the loss from x_adv, back in the ball and the box, and the logits at
        x_adv from the same forward pass (early stop reads them: no second forward)."""
        with tf.GradientTape() as tape:
            tape.watch(x_adv)
            logits = logits_fn(x_adv)
            loss = loss_fn(logits, y)
            total = tf.reduce_sum(loss)
        if update == "cleverhans":
            # CleverHans' fast_gradient_method, its ops in its order (gradient of the
            # per-example loss, optimize_linear, clip to [0, 1]), keeping the logits
            grad = tape.gradient(loss, x_adv)
            x_next = tf.clip_by_value(
                x_adv + optimize_linear(grad, step_size, geometry.NUMPY_ORD[norm]), 0.0, 1.0)
        else:
            grad = tape.gradient(total, x_adv,
                                 unconnected_gradients=tf.UnconnectedGradients.ZERO)
            x_next = x_adv + geometry.steepest_step(grad, step_size=step_size, norm=norm)
        return geometry.project(x_next, x, eps=eps, norm=norm), logits

    def body(i, x_adv):
        x_next, logits = ascend(x_adv)
        if early_stop:
            fooled = tf.argmax(logits, axis=-1, output_type=tf.int32) != y
            x_next = tf.where(geometry.per_example(fooled, x), x_adv, x_next)
        return i + 1, tf.ensure_shape(x_next, x.shape)

    _, x_adv = tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), x_adv),
                             parallel_iterations=1)
    return tf.stop_gradient(x_adv)
