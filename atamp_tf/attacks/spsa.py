"""Batched SPSA (Uesato et al. 2018): a gradient-free attack that only needs logits.

CleverHans 4.0.0's tf2 `spsa` is the reference: Adam on a finite-difference gradient estimate
from random +-1 directions, minimising the margin z_y - max_{j != y} z_j inside an L-inf ball.
It attacks one example at a time, builds its Adam with `lr=` (which Keras 3 rejects), and
multiplies its estimate by `delta` (cleverhans issue 1087, open). This module runs the same
algorithm on a whole batch inside one `tf.while_loop`, with the estimate fixed, and also under
L2. With one example and the same random draws it follows the library's trajectory once the
estimate is fixed (tests/test_attacks_suite.py checks this against the library itself).

The model is touched only through `logits_fn`, so an ONNX Runtime session wrapped in
`tf.numpy_function` works as well as a Keras model.
"""
import tensorflow as tf

from atamp_tf.attacks import geometry, registry

# The paper's settings (section 4.2), as the registry records them.
_DEFAULTS = registry.get("spsa").defaults
DEFAULT_DELTA = _DEFAULTS["delta"]
DEFAULT_LEARNING_RATE = _DEFAULTS["learning_rate"]
DEFAULT_NUM_SAMPLES = _DEFAULTS["num_samples"]
DEFAULT_STEPS = _DEFAULTS["steps"]
# Keras' Adam defaults, which CleverHans' SPSAAdam inherits.
ADAM_BETA_1 = 0.9
ADAM_BETA_2 = 0.999
ADAM_EPSILON = 1e-7


def draw_key(seed, index):
    """The stateless-random key of draw `index` (0: start point, i + 1: directions of step i)."""
    return tf.random.experimental.stateless_fold_in(seed, index)


def random_directions(key, shape):
    """Rademacher (+-1) directions of `shape`, drawn like CleverHans' SPSAAdam._get_delta."""
    return tf.sign(tf.random.stateless_uniform(shape, seed=key, minval=-1.0, maxval=1.0))


def spsa_gradient(loss_fn, x, y, directions, *, delta, max_batch=None):
    """SPSA estimate of the gradient of `loss_fn` at x, per example.

    x: [B, ...]; directions: [B, P, ...] of +-1 (P pairs, so 2P model inputs per example).
    Returns mean_k (L(x + delta v_k) - L(x - delta v_k)) / (2 delta) * v_k, shape [B, ...].
    `max_batch` caps the number of inputs per `loss_fn` call (pairs are evaluated in chunks).
    """
    batch = tf.shape(x)[0]
    pairs = tf.shape(directions)[1]
    chunk = pairs if max_batch is None else tf.maximum(1, max_batch // (2 * batch))
    labels = tf.cast(y, tf.int32)
    inner_shape = tf.shape(x)[1:]
    extra_dims = [1] * (len(x.shape) - 1)

    def body(start, total):
        v = directions[:, start:start + chunk]
        size = tf.shape(v)[1]
        points = x[:, None] + delta * tf.concat([v, -v], axis=1)        # [B, 2s, ...]
        flat = tf.reshape(points, tf.concat([[-1], inner_shape], 0))
        flat_y = tf.repeat(labels, 2 * size)
        losses = tf.reshape(loss_fn(flat, flat_y), [batch, 2 * size])
        diff = losses[:, :size] - losses[:, size:]                      # [B, s]
        diff = tf.reshape(diff, tf.concat([[batch, size], extra_dims], 0))
        return start + chunk, total + tf.ensure_shape(tf.reduce_sum(diff * v, axis=1), x.shape)

    _, total = tf.while_loop(lambda start, _: start < pairs, body,
                             (tf.constant(0), tf.zeros_like(x)))
    return total / (2.0 * delta * tf.cast(pairs, x.dtype))


def check_num_samples(name, value):
    """num_samples counts both points of each +-delta pair: an even whole number >= 2."""
    value = geometry.check_number(name, value, low=2, whole=True)
    if value % 2:
        raise ValueError(f"{name} must be an even whole number >= 2 (it counts both points of "
                         f"each +-delta pair), got {value!r}")
    return value


def check_spsa_args(*, eps, norm, steps, learning_rate, delta, num_samples):
    """Raises ValueError naming the argument that SPSA cannot run with."""
    geometry.check_threat_model(norm, eps, steps=steps)
    geometry.check_number("learning_rate", learning_rate, strict=True)
    geometry.check_number("delta", delta, strict=True)
    check_num_samples("num_samples", num_samples)


def spsa(logits_fn, x, y, *, eps, norm="linf", steps=DEFAULT_STEPS,
         learning_rate=DEFAULT_LEARNING_RATE, delta=DEFAULT_DELTA,
         num_samples=DEFAULT_NUM_SAMPLES, early_stop=True, seed=0, max_batch=None):
    """Untargeted SPSA on a batch: returns x_adv (same shape as x) in the eps-ball and [0, 1].

    Each step estimates the gradient of the margin z_y - max_{j != y} z_j from `num_samples`
    model evaluations (num_samples / 2 random +-delta pairs) and takes an Adam step of size
    `learning_rate` downhill, then projects. With `early_stop`, an example stops moving at
    the first step where it is misclassified (CleverHans' early_stop_loss_threshold=0, per
    example), so a success found is never lost, and from then on costs no more queries.
    `seed` (int or int32 [2]) keys every random draw: draw 0 is the start point, draw i + 1
    the directions of step i.
    """
    check_spsa_args(eps=eps, norm=norm, steps=steps, learning_rate=learning_rate, delta=delta,
                    num_samples=num_samples)
    x = tf.convert_to_tensor(x, tf.float32)
    y = tf.cast(y, tf.int32)
    seed = tf.cast(seed, tf.int32)
    if seed.shape.rank == 0:
        seed = tf.stack([seed, 0])
    pairs = int(num_samples) // 2

    def loss_fn(points, labels):
        return geometry.margin(logits_fn(points), labels)

    # The start: uniform in the L-inf box as CleverHans draws it; for L2 uniform in the ball.
    start = geometry.random_perturbation(x, eps=eps, norm=norm, seed=draw_key(seed, 0),
                                         l2_radius="volume")
    perturbation = geometry.project_perturbation(start, x, eps=eps, norm=norm)
    done = tf.zeros(tf.shape(x)[:1], tf.bool)
    if early_stop:
        done = loss_fn(x + perturbation, y) < 0.0
    zeros = tf.zeros_like(x)

    def keep_going(i, perturbation, m, u, done):
        return tf.logical_and(i < steps, tf.logical_not(tf.reduce_all(done)))

    def body(i, perturbation, m, u, done):
        directions = random_directions(draw_key(seed, i + 1),
                                       tf.concat([tf.shape(x)[:1], [pairs], tf.shape(x)[1:]], 0))
        # queries only for the examples still moving (a done one's gradient is never used);
        # every example's directions are drawn, so each one's stream stays its own
        active = tf.cast(tf.where(tf.logical_not(done))[:, 0], tf.int32)
        grad = tf.scatter_nd(active[:, None], spsa_gradient(
            loss_fn, tf.gather(x + perturbation, active), tf.gather(y, active),
            tf.gather(directions, active), delta=delta, max_batch=max_batch), tf.shape(x))
        t = tf.cast(i + 1, x.dtype)
        m = ADAM_BETA_1 * m + (1.0 - ADAM_BETA_1) * grad
        u = ADAM_BETA_2 * u + (1.0 - ADAM_BETA_2) * grad * grad
        m_hat = m / (1.0 - tf.pow(ADAM_BETA_1, t))
        u_hat = u / (1.0 - tf.pow(ADAM_BETA_2, t))
        step = perturbation - learning_rate * m_hat / (tf.sqrt(u_hat) + ADAM_EPSILON)
        step = geometry.project_perturbation(step, x, eps=eps, norm=norm)
        perturbation = tf.where(geometry.per_example(done, x), perturbation, step)
        if early_stop:
            done = tf.logical_or(done, loss_fn(x + perturbation, y) < 0.0)
        return i + 1, perturbation, m, u, done

    _, perturbation, _, _, _ = tf.while_loop(
        keep_going, body, (tf.constant(0), perturbation, zeros, zeros, done))
    return tf.stop_gradient(tf.clip_by_value(x + perturbation, 0.0, 1.0))
