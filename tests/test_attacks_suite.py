"""The evaluation attacks: eps-ball and [0,1], strength ordering, equality with CleverHans'
own PGD, one compiled loop, the batched SPSA against CleverHans' single-example spsa, and the
gradient-masking warning on a model whose input gradient is cut."""
import logging

import keras
import numpy as np
import pgd_reference
import pytest
import tensorflow as tf
from cleverhans.tf2.attacks import spsa as clever_spsa
from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

from atamp_tf import data, evaluate
from atamp_tf.attacks import geometry, registry, sanity, suite
from atamp_tf.attacks import spsa as spsa_lib
from atamp_tf.attacks.pgd import pgd

EPS = {"linf": 0.1, "l2": 1.0}  # digits are 8x8 with values k/16: 8/255 barely moves them
N = 60


def _train_digits_model():
    x, y = data.load_arrays("digits", "train")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=15, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module")
def model():
    return _train_digits_model()


@pytest.fixture(scope="module")
def test_data():
    x, y = data.load_arrays("digits", "test", num_examples=N)
    return x, y


def _logits(model):
    return lambda x: model(x, training=False)


def _accuracy(model, x, y):
    return float((model.predict(x, verbose=0).argmax(1) == y).mean())


def _run(name, model, x, y, norm, **settings):
    attack = suite.make_attack(name, _logits(model), norm=norm, eps=EPS[norm],
                               settings=suite.SuiteSettings(**settings))
    return suite.run_batched(attack, x, y, batch_size=25, seed=1, verbose=False)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_attacks_stay_in_ball_and_box_and_lower_accuracy(model, test_data, norm):
    x, y = test_data
    eps = EPS[norm]
    acc = {"natural": _accuracy(model, x, y)}
    for name in ("fgsm", "pgd20", "pgd100", registry.cw_name(norm), "spsa"):
        x_adv = _run(name, model, x, y, norm, spsa_steps=10)
        diff = (x_adv.astype(np.float64) - x).reshape(len(x), -1)
        dist = np.abs(diff).max(1) if norm == "linf" else np.linalg.norm(diff, axis=1)
        assert dist.max() <= eps + 1e-5, name
        assert dist.max() > 0.5 * eps, name          # the attack moved the inputs
        assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0, name
        assert sanity.check_perturbation(name, x, x_adv, norm=norm, eps=eps).passed
        acc[name] = _accuracy(model, x_adv, y)
    tol = 2.0 / N  # random starts move an example or two
    assert acc["fgsm"] < acc["natural"] - 0.1
    assert acc["pgd20"] <= acc["fgsm"] + tol
    assert acc["pgd100"] <= acc["pgd20"] + tol
    assert acc[registry.cw_name(norm)] < acc["natural"] - 0.1
    assert acc["spsa"] < acc["natural"] - 0.05


def test_check_perturbation_catches_escapes():
    x = np.full((3, 2, 2, 1), 0.5, np.float32)
    inside = x + 0.1
    assert sanity.check_perturbation("a", x, inside, norm="linf", eps=0.1).passed
    assert not sanity.check_perturbation("a", x, x + 0.11, norm="linf", eps=0.1).passed
    assert not sanity.check_perturbation("a", x, x + 0.1, norm="l2", eps=0.1).passed  # l2 0.2
    out_of_box = x.copy()
    out_of_box[0, 0, 0, 0] = 1.01
    assert not sanity.check_perturbation("a", out_of_box, out_of_box, norm="linf",
                                         eps=0.1).passed


@pytest.mark.parametrize("norm,loss", [("linf", "cross_entropy"), ("l2", "cw_margin")])
def test_pgd_loop_equals_cleverhans_pgd(model, test_data, norm, loss):
    x, y = test_data
    eps, step = EPS[norm], suite.default_step_size(norm, EPS[norm])
    loss_fn = geometry.LOSSES[loss]
    ref = projected_gradient_descent(_logits(model), tf.constant(x), eps, step, 7,
                                     geometry.NUMPY_ORD[norm],
                                     loss_fn=lambda labels, logits: loss_fn(logits, labels),
                                     clip_min=0.0, clip_max=1.0, y=tf.constant(y),
                                     rand_init=False)
    ours = tf.function(lambda a, b: pgd(_logits(model), a, b, eps=eps, norm=norm, steps=7,
                                        step_size=step, loss_fn=loss_fn, random_start=False,
                                        early_stop=False, update="cleverhans"))(x, y)
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), atol=1e-6)
    assert np.abs(ours.numpy() - x).max() > 0.5 * step


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_evaluation_pgd_equals_the_evaluation_pgd_before_the_merge_bit_for_bit(model, test_data,
                                                                              norm):
    """PGD-20 (with and without early stop), PGD-100 and CW as evaluate runs them (make_attack,
    random starts on their streams, batches): the arrays the evaluation's own PGD gave before
    it became atamp_tf.attacks.pgd, so the numbers in committed reports are reproduced."""
    x, y = test_data
    logits_fn = suite.zero_gradient_if_disconnected(_logits(model))
    for name, early_stop in (("pgd20", True), ("pgd20", False), ("pgd100", True),
                             (registry.cw_name(norm), True)):
        settings = suite.SuiteSettings(pgd_early_stop=early_stop)
        cfg = suite.attack_settings(name, norm=norm, eps=EPS[norm], settings=settings)
        reference = tf.function(lambda a, b, seed, cfg=cfg: pgd_reference.evaluation_pgd(
            logits_fn, a, b, eps=EPS[norm], norm=norm, steps=cfg["steps"],
            step_size=cfg["step_size"], loss=cfg["loss"], seed=seed,
            early_stop=cfg["early_stop"]), reduce_retracing=True)
        attack = suite.make_attack(name, _logits(model), norm=norm, eps=EPS[norm],
                                   settings=settings)
        run = dict(batch_size=25, seed=5, stream=registry.get(name).stream, verbose=False)
        ref = suite.run_batched(reference, x, y, **run)
        assert geometry.lp_norm_np(ref - x, norm).max() > 0.5 * EPS[norm], name  # it moved
        np.testing.assert_array_equal(suite.run_batched(attack, x, y, **run), ref, err_msg=name)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd100_fools_every_example_pgd20_fools(model, test_data, norm):
    """Same random start (shared stream) + early stop: more steps never lose a success."""
    x, y = test_data
    fooled = {}
    for name in ("pgd20", "pgd100"):
        attack = suite.make_attack(name, _logits(model), norm=norm, eps=EPS[norm])
        x_adv = suite.run_batched(attack, x, y, batch_size=25, seed=4,
                                  stream=registry.get(name).stream, verbose=False)
        fooled[name] = model.predict(x_adv, verbose=0).argmax(1) != y
    assert fooled["pgd20"].any()
    assert np.all(fooled["pgd100"] >= fooled["pgd20"])


def test_pgd_compiles_to_one_loop_whatever_the_steps(model):
    spec = (tf.TensorSpec([None, 8, 8, 1]), tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([2], tf.int32))
    sizes = {}
    for name in ("pgd20", "pgd100"):
        graph = suite.make_attack(name, _logits(model), norm="linf", eps=0.1
                                  ).get_concrete_function(*spec).graph.as_graph_def()
        assert any("While" in node.op for node in graph.node)
        sizes[name] = len(graph.node)
    assert sizes["pgd20"] == sizes["pgd100"]


def test_cw_margin_loss_sign():
    logits = tf.constant([[3.0, 1.0, 0.0], [0.0, 2.0, 5.0]])
    labels = tf.constant([0, 1])
    np.testing.assert_allclose(geometry.cw_margin(logits, labels).numpy(), [-2.0, 3.0])
    # the SPSA margin is its negative: negative exactly when misclassified
    np.testing.assert_allclose(geometry.margin(logits, labels).numpy(), [2.0, -3.0])


def test_spsa_gradient_estimate_formula_and_mean_on_a_linear_loss():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(2, 4, 4, 1)).astype(np.float32)
    x = rng.uniform(size=(2, 4, 4, 1)).astype(np.float32)

    def loss_fn(points, labels):  # per-example linear loss w[label] . x
        return tf.reduce_sum(tf.gather(w, labels) * points, axis=[1, 2, 3])

    directions = np.sign(rng.uniform(-1, 1, size=(2, 3, 4, 4, 1))).astype(np.float32)
    got = spsa_lib.spsa_gradient(loss_fn, tf.constant(x), tf.constant([0, 1]),
                                 tf.constant(directions), delta=0.01, max_batch=4).numpy()
    # for a linear loss, each pair gives exactly (w . v) v
    proj = (w[:, None] * directions).sum(axis=(2, 3, 4), keepdims=True)
    np.testing.assert_allclose(got, (proj * directions).mean(axis=1), rtol=1e-4, atol=1e-4)
    many = np.sign(rng.uniform(-1, 1, size=(2, 4000, 4, 4, 1))).astype(np.float32)
    mean = spsa_lib.spsa_gradient(loss_fn, tf.constant(x), tf.constant([0, 1]),
                                  tf.constant(many), delta=0.01).numpy()
    assert np.abs(mean - w).max() < 0.25 * np.abs(w).max()  # unbiased: E[(w.v) v] = w


class _SharedDraws:
    """Stands in for `tf` inside CleverHans' spsa module: its tf.random.uniform calls return
    the same stateless draws, in the same order, as atamp_tf.attacks.spsa with `seed`."""

    def __init__(self, seed):
        self._seed, self._count = tf.constant(seed), 0
        self.random = self

    def uniform(self, shape, minval=0.0, maxval=1.0, dtype=tf.float32, **_):
        key = spsa_lib.draw_key(self._seed, self._count)
        self._count += 1
        return tf.random.stateless_uniform(shape, seed=key, minval=minval, maxval=maxval,
                                           dtype=dtype)

    def __getattr__(self, name):
        return getattr(tf, name)


@pytest.fixture
def library_spsa(monkeypatch):
    """CleverHans' spsa made runnable on Keras 3 (`lr=` -> `learning_rate=`), optionally with
    the issue-1087 fix (estimate divided by delta) and shared random draws."""
    def init(self, lr=0.01, delta=0.01, num_samples=128, num_iters=1,
             compare_to_analytic_grad=False):
        keras.optimizers.Adam.__init__(self, learning_rate=lr)
        self.lr, self._delta, self._num_samples = lr, delta, num_samples // 2
        self._num_iters, self._compare_to_analytic_grad = num_iters, compare_to_analytic_grad
    monkeypatch.setattr(clever_spsa.SPSAAdam, "__init__", init)
    raw = clever_spsa.SPSAAdam._compute_gradients

    def setup(seed, fix_scaling):
        monkeypatch.setattr(clever_spsa, "tf", _SharedDraws(seed))
        if fix_scaling:
            monkeypatch.setattr(clever_spsa.SPSAAdam, "_compute_gradients",
                                lambda self, loss_fn, x: [g / self._delta
                                                          for g in raw(self, loss_fn, x)])
        return clever_spsa.spsa
    return setup


@pytest.mark.parametrize("early_stop", [False, True])
def test_batched_spsa_follows_cleverhans_spsa_on_single_examples(model, test_data,
                                                                 library_spsa, early_stop):
    x, y = test_data
    eps, steps, seed = EPS["linf"], 8, [7, 3]
    ours = tf.function(lambda a, b: spsa_lib.spsa(
        _logits(model), a, b, eps=eps, steps=steps, seed=seed, early_stop=early_stop))
    moved = 0
    for i in range(4):
        reference = library_spsa(seed, fix_scaling=True)(
            model, tf.constant(x[i:i + 1]), tf.constant(y[i:i + 1]), eps, steps,
            clip_min=0.0, clip_max=1.0, learning_rate=0.01, delta=0.001, spsa_samples=256,
            early_stop_loss_threshold=0.0 if early_stop else None)
        got = ours(x[i:i + 1], y[i:i + 1]).numpy()
        np.testing.assert_allclose(got, reference.numpy(), atol=1e-4)  # 1% of one step
        moved += np.abs(got - x[i:i + 1]).max() > 0.5 * eps
    assert moved >= 3


def test_cleverhans_spsa_estimate_is_off_by_a_factor_delta(library_spsa):
    """Documents cleverhans issue 1087: the library estimate is delta times ours."""
    library_spsa([1, 2], fix_scaling=False)
    w = tf.constant(np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 4, 4, 1))
    x = tf.fill([1, 4, 4, 1], 0.5)
    loss_fn = lambda points: tf.reduce_sum(w * points, axis=[1, 2, 3])  # noqa: E731
    delta = 0.001
    optimizer = clever_spsa.SPSAAdam(lr=0.01, delta=delta, num_samples=64)
    library = optimizer._compute_gradients(loss_fn, [x])[0].numpy()
    directions = spsa_lib.random_directions(spsa_lib.draw_key(tf.constant([1, 2]), 0),
                                            [1, 32, 4, 4, 1])
    ours = spsa_lib.spsa_gradient(lambda p, _: loss_fn(p), x, tf.constant([0]), directions,
                                  delta=delta).numpy()
    np.testing.assert_allclose(library, delta * ours, rtol=1e-3, atol=1e-6)


def test_batched_spsa_matches_cleverhans_statistically_on_a_linear_model(test_data,
                                                                         library_spsa):
    """Different random draws, whole batch at once vs one example at a time: on a linear
    model both find the same adversarial margins."""
    x, y = test_data
    x, y = x[:6], y[:6]
    keras.utils.set_random_seed(3)
    linear = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                               keras.layers.Dense(10)])
    eps, steps = 0.1, 30
    ours = spsa_lib.spsa(_logits(linear), x, y, eps=eps, steps=steps, seed=[5, 5],
                         early_stop=False).numpy()
    run = library_spsa([11, 0], fix_scaling=False)  # the library as it is, other draws
    theirs = np.concatenate([
        run(linear, tf.constant(x[i:i + 1]), tf.constant(y[i:i + 1]), eps, steps,
            clip_min=0.0, clip_max=1.0, learning_rate=0.01, delta=0.001,
            spsa_samples=256).numpy() for i in range(len(x))])
    margin = lambda a: geometry.margin(linear(a), y).numpy()  # noqa: E731
    start = margin(x)
    assert np.all(margin(ours) < start - 0.1)
    np.testing.assert_allclose(margin(ours), margin(theirs),
                               atol=0.1 * np.abs(start - margin(theirs)).max())


def _masked(model):
    """The same network behind a hard 8-bit quantiser whose gradient is cut (stop_gradient)."""
    quantise = keras.layers.Lambda(lambda t: tf.stop_gradient(tf.round(t * 255.0) / 255.0))
    inputs = keras.Input((8, 8, 1))
    return keras.Model(inputs, model(quantise(inputs)))


def test_masked_gradient_trips_the_gradient_masking_warning(model, test_data, caplog):
    x, y = test_data
    masked = _masked(model)
    with caplog.at_level(logging.WARNING):
        report = evaluate.evaluate_model(
            x, y, norm="linf", eps=EPS["linf"], attacks=("fgsm", "pgd20", "spsa"),
            keras_model=masked, batch_size=30, verbose=False,
            settings=suite.SuiteSettings(spsa_steps=20))
    acc = report["accuracy"]
    assert acc["fgsm"] >= acc["natural"] - 2.0 / N       # white-box attacks see no gradient
    assert acc["spsa"] < acc["pgd20"] - 0.1              # the black-box attack still works
    failed = {c["name"] for c in report["checks"] if not c["passed"]}
    assert "gradient_masking:spsa" in failed
    assert not report["checks_passed"]
    assert "possible gradient masking" in caplog.text
    assert evaluate.markdown_report(report).startswith("## WARNING")


def test_unmasked_model_passes_every_check(model, test_data):
    x, y = test_data
    report = evaluate.evaluate_model(
        x, y, norm="linf", eps=EPS["linf"], attacks=("fgsm", "pgd20", "spsa"),
        keras_model=model, batch_size=30, verbose=False,
        settings=suite.SuiteSettings(spsa_steps=20))
    assert report["checks_passed"], report["checks"]
    assert not evaluate.markdown_report(report).startswith("## WARNING")


def test_accuracy_checks_flag_wrong_orderings():
    n = 1000
    good = {"natural": 0.9, "fgsm": 0.6, "pgd20": 0.5, "pgd100": 0.495, "cw_inf": 0.48,
            "spsa": 0.6, "autoattack": 0.45}
    assert all(c.passed for c in sanity.check_accuracies(good, n))
    names = [c.name for c in sanity.check_accuracies(good, n)]
    assert "converged:pgd100~pgd20" in names and "order:pgd100<=pgd20" not in names
    for change, name in [({"pgd100": 0.45}, "converged:pgd100~pgd20"),
                         ({"pgd100": 0.55}, "converged:pgd100~pgd20"),  # longer did worse
                         ({"pgd20": 0.65}, "order:pgd20<=fgsm"),
                         ({"fgsm": 0.95}, "not_above_natural:fgsm"),
                         ({"autoattack": 0.5}, "order:autoattack<=cw_inf"),
                         ({"spsa": 0.3}, "gradient_masking:spsa")]:
        failed = [c.name for c in sanity.check_accuracies({**good, **change}, n)
                  if not c.passed]
        assert name in failed, (change, failed)


def test_autoattack_is_wired_in_and_no_weaker_than_the_white_box_attacks(model, test_data):
    pytest.importorskip("atamp_tf.attacks.autoattack")
    x, y = test_data
    report = evaluate.evaluate_model(
        x, y, norm="linf", eps=EPS["linf"], attacks=("fgsm", "pgd20", "autoattack"),
        keras_model=model, batch_size=30, verbose=False,
        settings=suite.SuiteSettings(autoattack_iters=10, square_queries=30))
    acc, result = report["accuracy"], report["attacks"]["autoattack"]
    assert acc["autoattack"] <= min(acc["fgsm"], acc["pgd20"]) + 2.0 / N
    assert acc["autoattack"] == pytest.approx(result["reported_accuracy"])
    assert list(result["accuracy_after"]) == ["clean", "apgd-ce", "apgd-t", "fab-t", "square"]
    checks = {c["name"]: c["passed"] for c in report["checks"]}
    assert checks["valid_examples:autoattack"] and checks["order:autoattack<=pgd20"]


@pytest.mark.parametrize("name", ["pgd20", "spsa"])
def test_random_attacks_are_reproducible_from_the_seed(model, test_data, name):
    x, y = test_data
    attack = suite.make_attack(name, _logits(model), norm="linf", eps=EPS["linf"],
                               settings=suite.SuiteSettings(spsa_steps=3, spsa_early_stop=False))
    run = lambda seed: suite.run_batched(attack, x[:20], y[:20], batch_size=10,  # noqa: E731
                                         seed=seed, verbose=False)
    first, again, other = run(0), run(0), run(1)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-3


def test_spsa_spends_no_queries_on_examples_already_fooled():
    """early_stop: an example misclassified at the start (or once fooled) costs no gradient
    queries; the others' results are unchanged (their own directions and losses)."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(0.2, 0.8, (8, 4, 4, 1)).astype(np.float32))
    kernel = tf.constant(rng.normal(size=(16, 3)).astype(np.float32))
    labels = tf.argmax(tf.reshape(x, (8, 16)) @ kernel, axis=1, output_type=tf.int32)
    y = tf.where(tf.range(8) < 4, (labels + 1) % 3, labels)  # 4 wrong: done from the start
    rows = tf.Variable(0)

    def logits_fn(a):
        rows.assign_add(tf.shape(a)[0])
        return tf.reshape(a, (-1, 16)) @ kernel

    def run(early_stop):
        rows.assign(0)
        adv = tf.function(lambda a, b: spsa_lib.spsa(
            logits_fn, a, b, eps=1e-4, norm="linf", steps=3, num_samples=8,
            early_stop=early_stop, seed=0))(x, y)
        return adv.numpy(), int(rows.numpy())

    adv_all, rows_all = run(False)
    adv_stop, rows_stop = run(True)
    # 3 steps x 8 gradient rows per example: 8 examples = 192; 4 = 96 (+ 8 per done check)
    assert rows_all == 3 * 8 * 8
    assert rows_stop == 3 * 8 * 4 + 4 * 8
    np.testing.assert_allclose(adv_stop[4:], adv_all[4:], atol=1e-6)  # eps 1e-4: none fooled
