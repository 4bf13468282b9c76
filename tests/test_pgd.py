"""The PGD with training's update: stays in the eps-ball and [0,1], raises the loss, and is
bit for bit the training PGD it replaced."""
import keras
import numpy as np
import pgd_reference
import pytest
import tensorflow as tf

from atamp_tf import losses
from atamp_tf.attacks import geometry
from atamp_tf.attacks.pgd import pgd
from atamp_tf.losses import cross_entropy


@pytest.fixture(scope="module")
def trained():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.images[:300] / 16.0).astype("float32")[..., None]
    y = d.target[:300].astype("int32")
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Flatten()(inp)
    h = keras.layers.Dense(32, activation="relu")(h)
    net = keras.Model(inp, keras.layers.Dense(10)(h))
    net.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(True))
    net.fit(x, y, epochs=10, verbose=0)
    return net, tf.constant(x[:128]), tf.constant(y[:128])


def _norms(delta):
    flat = tf.reshape(delta, [delta.shape[0], -1])
    return tf.reduce_max(tf.abs(flat), axis=1), tf.norm(flat, axis=1)


@pytest.mark.parametrize("norm,eps,step", [("linf", 0.1, 0.025), ("l2", 1.0, 0.25)])
def test_pgd_stays_in_ball_and_box_and_raises_the_loss(trained, norm, eps, step):
    net, x, y = trained
    seed = tf.constant([0, 1], tf.int64)
    x_adv = pgd(net, x, y, eps=eps, step_size=step, steps=10, norm=norm, seed=seed)
    linf, l2 = _norms(x_adv - x)
    size = linf if norm == "linf" else l2
    assert float(tf.reduce_max(size)) <= eps + 1e-5
    assert float(tf.reduce_min(x_adv)) >= 0.0 and float(tf.reduce_max(x_adv)) <= 1.0
    loss_clean = cross_entropy(net(x), y)
    loss_adv = cross_entropy(net(x_adv), y)
    x_rand = geometry.random_in_ball(x, eps=eps, norm=norm, seed=seed)
    loss_rand = cross_entropy(net(x_rand), y)
    assert float(tf.reduce_mean(loss_adv)) > 2 * float(tf.reduce_mean(loss_clean))
    assert float(tf.reduce_mean(loss_adv)) > 2 * float(tf.reduce_mean(loss_rand))
    # per example: PGD never ends below the random point it could have stayed at, bar noise
    assert float(tf.reduce_mean(tf.cast(loss_adv >= loss_rand - 1e-4, tf.float32))) > 0.95
    # and the random start itself is a valid point of the ball
    rl, r2 = _norms(x_rand - x)
    assert float(tf.reduce_max(rl if norm == "linf" else r2)) <= eps + 1e-5


def test_random_start_is_seeded_and_zero_steps_is_the_start(trained):
    net, x, y = trained
    seed = tf.constant([3, 4], tf.int64)
    a = pgd(net, x, y, eps=0.1, step_size=0.02, steps=0, norm="linf", seed=seed)
    b = geometry.random_in_ball(x, eps=0.1, norm="linf", seed=seed)
    np.testing.assert_array_equal(a, b)
    c = pgd(net, x, y, eps=0.1, step_size=0.02, steps=0, norm="linf", random_start=False)
    np.testing.assert_array_equal(c, x)


@pytest.mark.parametrize("kwargs,name", [(dict(norm="l1"), "norm"), (dict(eps=-1.0), "eps"),
                                         (dict(steps=-2), "steps"), (dict(seed=None), "seed")])
def test_bad_arguments_raise(trained, kwargs, name):
    net, x, y = trained
    args = dict(eps=0.1, step_size=0.02, steps=2, norm="linf", seed=tf.constant([0, 0], tf.int64))
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        pgd(net, x, y, **args)


def test_l2_random_start_radius_is_uniform_in_eps_not_on_the_sphere():
    """robust_overfitting / AWP: radius eps * U(0,1). Uniform in volume at d = 3,072 would put
    every radius above 0.99 eps; here the radii spread over [0, eps] with mean eps / 2."""
    x = tf.fill([2000, 32, 32, 3], 0.5)
    eps = 0.25  # small enough that no pixel reaches the box, so clipping cannot shrink radii
    start = geometry.random_in_ball(x, eps=eps, norm="l2", seed=tf.constant([5, 6], tf.int64))
    radii = tf.norm(tf.reshape(start - x, [2000, -1]), axis=1).numpy() / eps
    assert radii.max() <= 1.0 + 1e-5
    assert abs(radii.mean() - 0.5) < 0.03
    assert abs(np.mean(radii < 0.5) - 0.5) < 0.05


@pytest.mark.parametrize("norm,eps,step", [("linf", 0.1, 0.025), ("l2", 1.0, 0.25)])
def test_pgd_equals_the_training_pgd_before_the_merge_bit_for_bit(trained, norm, eps, step):
    """Random start, no start, and TRADES' start x + 0.001 N(0, 1) with its KL loss (as
    AMPModel runs it), eagerly and compiled: the same arrays as the pre-merge training PGD."""
    net, x, y = trained
    start = x + 0.001 * tf.random.stateless_normal(tf.shape(x), [1, 2])
    kl = lambda logits, labels: losses.trades_inner(logits, labels, net(x))  # noqa: E731
    cases = [dict(seed=tf.constant([2, 9], tf.int64)), dict(random_start=False),
             dict(x_init=start, loss_fn=kl)]
    for kwargs in cases:
        args = dict(eps=eps, step_size=step, steps=10, norm=norm, **kwargs)
        ref = pgd_reference.training_pgd(net, x, y, **args).numpy()
        assert geometry.lp_norm_np(ref - x.numpy(), norm).max() > 0.5 * eps  # it moved
        np.testing.assert_array_equal(pgd(net, x, y, **args).numpy(), ref)
        # compiled, against the old PGD compiled (graph and eager runs may round apart)
        old = tf.function(lambda a, b, args=args: pgd_reference.training_pgd(net, a, b, **args))
        new = tf.function(lambda a, b, args=args: pgd(net, a, b, **args))
        np.testing.assert_array_equal(new(x, y).numpy(), old(x, y).numpy())
