"""AMPModel: Algorithm 1 against an independent float64 implementation, and Keras integration."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from atamp_tf import AMPModel
from atamp_tf.train import weight_perturbation

IN_SHAPE = (3, 3, 1)
CLASSES = 3


def tiny_mlp(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input(IN_SHAPE)
    h = keras.layers.Flatten()(inp)
    h = keras.layers.Dense(6, activation="tanh")(h)
    return keras.Model(inp, keras.layers.Dense(CLASSES)(h))


def tiny_batch(n=8, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.2, 0.8, size=(n,) + IN_SHAPE).astype("float32")
    y = rng.integers(0, CLASSES, size=n).astype("int32")
    return x, y


# ----- an independent float64 implementation of Algorithm 1 (plain TF ops, no Keras) -------
def _ref_logits(w, x):
    w1, b1, w2, b2 = w
    h = tf.tanh(tf.reshape(x, [x.shape[0], -1]) @ w1 + b1)
    return h @ w2 + b2


def _ref_loss(w, x, y):
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, _ref_logits(w, x)))


def _ref_pgd(w, x, y, eps, alpha, steps, norm):
    x_adv = x
    for _ in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(x_adv)
            loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
                y, _ref_logits(w, x_adv)))
        g = tape.gradient(loss, x_adv)
        if norm == "linf":
            x_adv = tf.clip_by_value(x_adv + alpha * tf.sign(g), x - eps, x + eps)
        else:
            gn = tf.sqrt(tf.reduce_sum(g ** 2, axis=[1, 2, 3], keepdims=True))
            d = x_adv + alpha * g / gn - x
            dn = tf.sqrt(tf.reduce_sum(d ** 2, axis=[1, 2, 3], keepdims=True))
            x_adv = x + d * tf.minimum(1.0, eps / dn)
        x_adv = tf.clip_by_value(x_adv, 0.0, 1.0)
    return x_adv


def _ref_amp_step(w, x, y, *, eps, alpha, steps, norm, delta, xi, n_inner, scope, lr):
    x_adv = _ref_pgd(w, x, y, eps, alpha, steps, norm)
    d = [tf.zeros_like(t) for t in w]
    for n in range(n_inner):
        wd = [t + e for t, e in zip(w, d)]
        if n > 0:
            x_adv = _ref_pgd(wd, x, y, eps, alpha, steps, norm)
        with tf.GradientTape() as tape:
            tape.watch(wd)
            loss = _ref_loss(wd, x, y)
        b = tape.gradient(_ref_loss(wd, x_adv, y) if False else loss, wd) if False else None
        with tf.GradientTape() as tape:
            tape.watch(wd)
            loss = _ref_loss(wd, x_adv, y)
        b = tape.gradient(loss, wd)
        d = [e + xi * g for e, g in zip(d, b)]
        if scope == "tensor":
            d = [e * min(1.0, delta / float(tf.norm(e))) for e in d]
        else:
            total = float(tf.sqrt(sum(tf.reduce_sum(e ** 2) for e in d)))
            d = [e * min(1.0, delta / total) for e in d]
    wd = [t + e for t, e in zip(w, d)]
    with tf.GradientTape() as tape:
        tape.watch(wd)
        loss = _ref_loss(wd, x_adv, y)
    c = tape.gradient(loss, wd)
    return [t - lr * g for t, g in zip(w, c)]


@pytest.mark.parametrize("norm,eps,alpha,n_inner,scope,delta", [
    ("linf", 0.1, 0.03, 1, "tensor", 0.05),
    ("l2", 0.5, 0.15, 2, "tensor", 0.05),
    ("linf", 0.1, 0.03, 2, "global", 0.08),
    ("l2", 0.5, 0.15, 1, "global", 5.0),
])
def test_one_amp_step_matches_float64_reference(norm, eps, alpha, n_inner, scope, delta):
    net = tiny_mlp()
    w0 = [v.numpy().astype("float64") for v in net.trainable_variables]
    x, y = tiny_batch()
    lr, steps, xi = 0.5, 3, 1.0
    model = AMPModel(net, norm=norm, eps=eps, step_size=alpha, attack_steps=steps,
                     random_start=False, delta=delta, xi=xi, amp_steps=n_inner, amp_scope=scope)
    model.compile(keras.optimizers.SGD(lr))
    model.train_on_batch(x, y)
    expected = _ref_amp_step([tf.constant(t) for t in w0], tf.constant(x, tf.float64),
                             tf.constant(y), eps=eps, alpha=alpha, steps=steps, norm=norm,
                             delta=delta, xi=xi, n_inner=n_inner, scope=scope, lr=lr)
    plain = _ref_amp_step([tf.constant(t) for t in w0], tf.constant(x, tf.float64),
                          tf.constant(y), eps=eps, alpha=alpha, steps=steps, norm=norm,
                          delta=0.0, xi=xi, n_inner=1, scope=scope, lr=lr)
    for got, want in zip(net.trainable_variables, expected):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)
    # AMP must matter here, or the comparison above proves nothing about Delta.
    assert max(np.abs(e.numpy() - p.numpy()).max() for e, p in zip(expected, plain)) > 1e-4


def _plain_at_step(net, x, y, lr, eps, alpha, steps):
    """The textbook PGD-AT step on Keras variables."""
    x_adv = _ref_pgd([tf.cast(v, tf.float64) for v in net.trainable_variables], x, y, eps,
                     alpha, steps, "linf") if False else None
    from atamp_tf.attacks.pgd import pgd
    x_adv = pgd(lambda z: net(z, training=True), tf.constant(x), tf.constant(y), eps=eps,
                step_size=alpha, steps=steps, norm="linf", random_start=False)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            y, net(x_adv, training=True)))
    grads = tape.gradient(loss, net.trainable_variables)
    for v, g in zip(net.trainable_variables, grads):
        v.assign_sub(lr * g)


def test_delta_zero_is_exactly_pgd_at():
    x, y = tiny_batch()
    a, b = tiny_mlp(), tiny_mlp()
    model = AMPModel(a, eps=0.1, step_size=0.03, attack_steps=3, random_start=False, delta=0.0)
    assert not model.uses_amp
    model.compile(keras.optimizers.SGD(0.5))
    model.train_on_batch(x, y)
    _plain_at_step(b, x, y, 0.5, 0.1, 0.03, 3)
    for va, vb in zip(a.trainable_variables, b.trainable_variables):
        np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=1e-6, atol=1e-7)


def test_warmup_steps_are_plain_at():
    x, y = tiny_batch()
    a, b = tiny_mlp(), tiny_mlp()
    warm = AMPModel(a, eps=0.1, step_size=0.03, attack_steps=2, random_start=False, delta=0.5,
                    amp_warmup_steps=2)
    plain = AMPModel(b, eps=0.1, step_size=0.03, attack_steps=2, random_start=False, delta=0.0)
    for m in (warm, plain):
        m.compile(keras.optimizers.SGD(0.5))
    for _ in range(2):
        warm.train_on_batch(x, y)
        plain.train_on_batch(x, y)
    for va, vb in zip(a.trainable_variables, b.trainable_variables):
        np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=1e-6, atol=1e-7)
    warm.train_on_batch(x, y)
    plain.train_on_batch(x, y)
    diff = max(np.abs(va.numpy() - vb.numpy()).max()
               for va, vb in zip(a.trainable_variables, b.trainable_variables))
    assert diff > 1e-4


def test_eps_ramp_scales_the_training_attack_per_step():
    """Step k of a ramp over R steps attacks at (k + 1) / R of eps and of the step size."""
    x, y = tiny_batch()
    nets = [tiny_mlp() for _ in range(3)]
    common = dict(attack_steps=3, random_start=False, delta=0.0)
    ramp = AMPModel(nets[0], eps=0.2, step_size=0.06, eps_ramp_steps=4, **common)
    quarter = AMPModel(nets[1], eps=0.05, step_size=0.015, **common)
    full = AMPModel(nets[2], eps=0.2, step_size=0.06, **common)
    for m in (ramp, quarter, full):
        m.compile(keras.optimizers.SGD(0.5))
        m.train_on_batch(x, y)
    for va, vb in zip(nets[0].trainable_variables, nets[1].trainable_variables):
        np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=1e-6, atol=1e-7)
    # the radius matters here, or the comparison above proves nothing about the ramp
    assert max(np.abs(va.numpy() - vc.numpy()).max()
               for va, vc in zip(nets[0].trainable_variables, nets[2].trainable_variables)) > 1e-4
    for step, scale in ((0, 0.25), (2, 0.75), (3, 1.0), (50, 1.0)):
        ramp.optimizer.iterations.assign(step)
        eps, step_size = ramp.attack_budget()
        assert (float(eps), float(step_size)) == pytest.approx((0.2 * scale, 0.06 * scale))
    assert full.attack_budget() == (0.2, 0.06)
    assert ramp.get_config()["eps_ramp_steps"] == 4


@pytest.mark.parametrize("xi", [1.0, 1e-3])
def test_first_ascent_norm_is_min_of_radius_and_step(xi):
    rng = np.random.default_rng(0)
    weights = [tf.constant(rng.normal(size=s), tf.float32) for s in [(3, 4), (4,), (2, 2, 3)]]
    grads = [tf.constant(rng.normal(size=w.shape), tf.float32) for w in weights]
    zeros = [tf.zeros_like(w) for w in weights]
    radius = 0.5
    per_tensor = weight_perturbation.ascend(zeros, grads, weights, radius=radius, xi=xi,
                                            scope="tensor")
    for d, g in zip(per_tensor, grads):
        assert float(tf.norm(d)) == pytest.approx(min(radius, xi * float(tf.norm(g))), rel=1e-5)
    whole = weight_perturbation.ascend(zeros, grads, weights, radius=radius, xi=xi,
                                       scope="global")
    assert float(tf.linalg.global_norm(whole)) == pytest.approx(
        min(radius, xi * float(tf.linalg.global_norm(grads))), rel=1e-5)
    awp = weight_perturbation.ascend(zeros, grads, weights, radius=radius, xi=xi, scope="awp")
    for d, w in zip(awp, weights):
        want = radius * float(tf.norm(w)) if len(w.shape) >= 2 else 0.0
        assert float(tf.norm(d)) == pytest.approx(want, rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("kwargs,flag", [
    (dict(method="sam"), "method"), (dict(norm="l1"), "norm"), (dict(eps=-0.1), "eps"),
    (dict(delta=-1.0), "delta"), (dict(amp_scope="layer"), "amp_scope"),
    (dict(amp_steps=0), "amp_steps"), (dict(eps=0.1, step_size=0.2), "step_size"),
    (dict(attack_bn="frozen"), "attack_bn"), (dict(eps_ramp_steps=-1), "eps_ramp_steps"),
])
def test_bad_settings_name_the_argument(kwargs, flag):
    with pytest.raises(ValueError, match=flag):
        AMPModel(tiny_mlp(), **kwargs)


def test_compile_refuses_a_loss():
    with pytest.raises(ValueError, match="loss"):
        AMPModel(tiny_mlp()).compile("sgd", loss="mse")


@pytest.mark.parametrize("name", ["metrics", "weighted_metrics"])
def test_compile_refuses_metrics_it_would_ignore(name):
    with pytest.raises(ValueError, match=name):
        AMPModel(tiny_mlp()).compile("sgd", **{name: ["accuracy"]})
    AMPModel(tiny_mlp()).compile("sgd", **{name: None})  # what load_model passes back


def _digits(n=512):
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.images[:n] / 16.0).astype("float32")[..., None]
    return x, d.target[:n].astype("int32")


def _digits_net(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inp)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Flatten()(h)
    return keras.Model(inp, keras.layers.Dense(10)(h))


@pytest.mark.parametrize("method,delta", [("at", 0.1), ("trades", 0.1), ("mart", 0.02)])
def test_fit_on_digits_lowers_loss(method, delta):
    x, y = _digits()
    model = AMPModel(_digits_net(), method=method, eps=0.1, step_size=0.025, attack_steps=3,
                     delta=delta, eval_attack_steps=5, weight_decay=5e-4)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9))
    losses = model.fit(x, y, batch_size=64, epochs=4, verbose=0).history["loss"]
    assert losses[-1] < 0.8 * losses[0]
    result = model.evaluate(x[:128], y[:128], verbose=0, return_dict=True)
    assert 0.0 <= result["adv_acc"] <= result["nat_acc"] <= 1.0
    assert result["nat_acc"] > 0.5


@pytest.mark.parametrize("method", ["at", "trades"])
def test_batchnorm_statistics_updated_once_per_step_from_the_adversarial_pass(method):
    """With lr 0 and delta 0 the expected moving mean is computable: m * old + (1-m) * mean
    of the pre-BN activations on x'. Updates from the K attack passes or the natural pass
    would move it elsewhere."""
    x, y = _digits(64)
    net = _digits_net()
    bn = [l for l in net.layers if isinstance(l, keras.layers.BatchNormalization)][0]
    bn.moving_mean.assign(np.full(bn.moving_mean.shape, 0.3, "float32"))
    model = AMPModel(net, method=method, eps=0.1, step_size=0.025, attack_steps=3, delta=0.0,
                     random_start=False)
    model.compile(keras.optimizers.SGD(0.0))
    theta = [v.value for v in net.trainable_variables]
    state = [v.value for v in net.non_trainable_variables]
    from atamp_tf import losses
    from atamp_tf.attacks.pgd import pgd
    logits_nat = net.stateless_call(theta, state, x, training=True)[0]
    inner = losses.get_method(method).inner
    x_adv = pgd(lambda z: net.stateless_call(theta, state, z, training=True)[0], x, y, eps=0.1,
                step_size=0.025, steps=3, norm="linf", random_start=False,
                loss_fn=lambda lg, yy: inner(lg, yy, logits_nat))
    pre_bn = keras.Model(net.input, bn.input)
    mu = pre_bn(x_adv).numpy().mean(axis=(0, 1, 2))
    old = bn.moving_mean.numpy().copy()
    model.train_on_batch(x, y)
    np.testing.assert_allclose(bn.moving_mean.numpy(), bn.momentum * old + (1 - bn.momentum) * mu,
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method,warmup", [("at", 0), ("trades", 0), ("at", 1)])
def test_batchnorm_statistics_come_from_theta_not_theta_plus_delta(method, warmup):
    """With delta > 0 the moving mean after one step is that of one training-mode pass at
    theta on x' (the weights evaluation uses), not of the descent pass at theta + Delta.
    The test first checks that the two expectations differ, so it can fail. With a warm-up
    step, the step is plain AT and the (theta) descent pass gives the statistics."""
    x, y = _digits(64)
    net = _digits_net()
    bn = [l for l in net.layers if isinstance(l, keras.layers.BatchNormalization)][0]
    bn.moving_mean.assign(np.full(bn.moving_mean.shape, 0.3, "float32"))
    model = AMPModel(net, method=method, eps=0.1, step_size=0.025, attack_steps=3, delta=1.0,
                     random_start=False, amp_warmup_steps=warmup)
    model.compile(keras.optimizers.SGD(0.0))
    theta = [v.value for v in net.trainable_variables]
    state = [v.value for v in net.non_trainable_variables]
    from atamp_tf import losses
    from atamp_tf.attacks.pgd import pgd
    meth = losses.get_method(method)
    logits_nat = net.stateless_call(theta, state, x, training=True)[0]
    x_adv = pgd(lambda z: net.stateless_call(theta, state, z, training=True)[0], x, y, eps=0.1,
                step_size=0.025, steps=3, norm="linf", random_start=False,
                loss_fn=lambda lg, yy: meth.inner(lg, yy, logits_nat))
    with tf.GradientTape() as tape:
        tape.watch(theta)
        nat = (net.stateless_call(theta, state, x, training=True)[0]
               if meth.outer_needs_natural else None)
        adv = net.stateless_call(theta, state, x_adv, training=True)[0]
        loss = tf.reduce_mean(meth.outer(nat, adv, y, beta=6.0, mart_lambda=5.0))
    grads = tape.gradient(loss, theta)
    perturbed = [t + g * min(1.0, 1.0 / float(tf.norm(g))) for t, g in zip(theta, grads)]
    kernel_index = [i for i, v in enumerate(net.trainable_variables) if len(v.shape) == 4][0]

    def pre_bn_mean(weights):
        pre_bn = keras.Model(net.input, bn.input)
        conv_weights = [weights[kernel_index]]
        out = pre_bn.stateless_call(conv_weights, [], x_adv, training=True)[0]
        return out.numpy().mean(axis=(0, 1, 2))

    old = bn.moving_mean.numpy().copy()
    at_theta = bn.momentum * old + (1 - bn.momentum) * pre_bn_mean(theta)
    at_perturbed = bn.momentum * old + (1 - bn.momentum) * pre_bn_mean(perturbed)
    assert np.abs(at_theta - at_perturbed).max() > 1e-3
    model.train_on_batch(x, y)
    np.testing.assert_allclose(bn.moving_mean.numpy(), at_theta, rtol=1e-4, atol=1e-5)


def test_save_load_and_continue_training(tmp_path):
    x, y = _digits(256)
    model = AMPModel(_digits_net(), eps=0.1, step_size=0.025, attack_steps=2, delta=0.2,
                     amp_scope="global", method="trades", beta=3.0)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9))
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, AMPModel)
    assert loaded.get_config()["amp_scope"] == "global" and loaded.beta == 3.0
    np.testing.assert_allclose(loaded.predict(x[:16], verbose=0),
                               model.predict(x[:16], verbose=0), rtol=1e-5, atol=1e-5)
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 4
    loaded.fit(x, y, batch_size=64, epochs=1, verbose=0)
    assert int(loaded.optimizer.iterations) == 8
    config = model.get_config()
    clone = AMPModel.from_config(config)
    assert clone.get_config()["method"] == "trades"


def test_mixup_l1_and_awp_scope_train():
    x, y = _digits(128)
    model = AMPModel(_digits_net(), eps=0.1, step_size=0.025, attack_steps=2, delta=0.01,
                     amp_scope="awp", mixup_alpha=1.4, l1=5e-6)
    model.compile(keras.optimizers.SGD(0.05))
    hist = model.fit(x, y, batch_size=64, epochs=2, verbose=0)
    assert np.all(np.isfinite(hist.history["loss"]))


def test_summary_and_callbacks_work():
    x, y = _digits(128)
    model = AMPModel(_digits_net(), eps=0.1, step_size=0.025, attack_steps=1, delta=0.1,
                     eval_attack_steps=2)
    model.compile(keras.optimizers.SGD(0.05))
    lines = []
    model.summary(print_fn=lambda line, **_: lines.append(line))
    assert any("Trainable params" in line for line in lines)
    seen = []
    callback = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(logs))
    model.fit(x, y, batch_size=64, epochs=2, verbose=0, validation_data=(x[:64], y[:64]),
              callbacks=[callback])
    assert len(seen) == 2 and {"loss", "adv_acc", "val_nat_acc", "val_adv_acc"} <= set(seen[-1])


def test_regularisers_follow_rice_et_al():
    """weight_decay on every weight; l2 replaces it on kernels only; l1 on kernels only."""
    theta = [tf.constant([[1.0, -2.0]]), tf.constant([3.0, -4.0])]  # a kernel, a bias

    def grads(**kw):
        model = AMPModel(tiny_mlp(), **kw)
        model.compile(keras.optimizers.SGD(0.1))
        return [g.numpy() for g in model._regulariser_gradients(theta)]

    wd = grads(weight_decay=0.1)
    np.testing.assert_allclose(wd[0], [[0.1, -0.2]]), np.testing.assert_allclose(wd[1], [0.3, -0.4])
    l2 = grads(weight_decay=0.1, l2=0.5)
    np.testing.assert_allclose(l2[0], [[0.5, -1.0]]), np.testing.assert_allclose(l2[1], [0, 0])
    l1 = grads(l1=0.01)
    np.testing.assert_allclose(l1[0], [[0.01, -0.01]]), np.testing.assert_allclose(l1[1], [0, 0])


def test_zero_attack_steps_is_natural_training():
    x, y = tiny_batch()
    a, b = tiny_mlp(), tiny_mlp()
    model = AMPModel(a, eps=0.1, step_size=0.03, attack_steps=0, delta=0.0)
    model.compile(keras.optimizers.SGD(0.5))
    model.train_on_batch(x, y)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, b(x)))
    for v, g in zip(b.trainable_variables, tape.gradient(loss, b.trainable_variables)):
        v.assign_sub(0.5 * g)
    for va, vb in zip(a.trainable_variables, b.trainable_variables):
        np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=1e-6, atol=1e-7)


def test_mart_loss_gradient_is_bounded_when_confidently_wrong():
    from atamp_tf import losses
    logits = tf.Variable([[0.0] * 9 + [20.0]])
    with tf.GradientTape() as tape:
        loss = losses.boosted_cross_entropy(logits, tf.constant([0]))
    assert float(tf.reduce_max(tf.abs(tape.gradient(loss, logits)))) < 10


def test_mart_first_term_is_cross_entropy_whose_gradient_survives_large_margins():
    """MART's code: F.cross_entropy(logits_adv, y) + the margin term. -log(p_y + 1e-12) would
    lose its gradient here (p_y ~ e^-40 << 1e-12)."""
    from atamp_tf import losses
    logits = tf.Variable([[0.0] * 9 + [40.0]])
    y = tf.constant([0])
    with tf.GradientTape() as tape:
        loss = losses.boosted_cross_entropy(logits, y)
    grad = tape.gradient(loss, logits).numpy()
    assert grad[0, 0] < -0.99  # d CE / d logit_y = p_y - 1
    p = tf.nn.softmax(logits)[0].numpy()
    margin = -np.log(1.0001 - p[9] + 1e-12)
    np.testing.assert_allclose(float(loss[0]), float(losses.cross_entropy(logits, y)[0]) + margin,
                               rtol=1e-6)


def test_mart_attack_starts_at_x_plus_small_gaussian_noise():
    """MART's code starts PGD at x + 0.001 N(0, 1), not uniformly in the ball: with zero
    attack steps the training example is that start (projected)."""
    x, y = _digits(32)
    model = AMPModel(_digits_net(), method="mart", eps=0.1, step_size=0.025, attack_steps=1,
                     delta=0.0)
    model.compile(keras.optimizers.SGD(0.0))
    theta = [v.value for v in model.network.trainable_variables]
    state = [v.value for v in model.network.non_trainable_variables]
    captured = {}
    original = model._forward

    def spy(weights, st, images, training):
        captured.setdefault("first", images)
        return original(weights, st, images, training)

    model._forward = spy
    model._attack(theta, state, tf.constant(x), tf.constant(y), lambda fn: fn(tf.constant(y)),
                  tf.constant([1, 2], tf.int64))
    start = captured["first"].numpy() - x
    inside = (x > 0.01) & (x < 0.99)
    assert 0.0005 < start[inside].std() < 0.002  # 0.001 N(0,1), not U(-0.1, 0.1) (std 0.058)
