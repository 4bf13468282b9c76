"""AutoAttack and its components against behaviour known in closed form.

A linear model whose only live classes are 0 and 1 (the others sit 30 logits below) makes the
untargeted problem exactly binary: the smallest Lp perturbation that flips example x is
margin / ||w_y - w_o||_dual, so with points built at a prescribed ratio r of that minimum to
eps (kept well inside [0,1]) an exact attack fools exactly the points with r < 1.
"""
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.optimize import linprog, minimize

from atamp_tf.attacks import apgd, fab, fab_projections, square
from atamp_tf.attacks.autoattack import COMPONENTS, VERSION_COMPONENTS, autoattack

D_SHAPE = (8, 8, 1)
EPS = {"linf": 0.02, "l2": 0.15}
RATIOS = np.repeat([0.3, 0.6, 0.85, 1.15, 1.5, 2.5], 4)
BALL_TOL = 1e-5


def _linear_model(classes=5, seed=0):
    rng = np.random.default_rng(seed)
    d = int(np.prod(D_SHAPE))
    w = np.zeros((d, classes), np.float32)
    b = np.zeros(classes, np.float32)
    w[:, :2] = rng.normal(size=(d, 2))
    w[:, 2:] = 0.05 * rng.normal(size=(d, classes - 2))
    w[0] = 0.0  # pixel 0 carries no signal: the gradient-masking test uses it as a marker
    b[2:] = -30.0
    model = keras.Sequential([keras.Input(D_SHAPE), keras.layers.Flatten(),
                              keras.layers.Dense(classes)])
    model.layers[-1].set_weights([w, b])
    return model, w, b


def _points(w, b, norm, eps, ratios, seed=1):
    """Points whose minimal Lp perturbation to cross to the other live class is ratio * eps."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for r in ratios:
        y = int(rng.integers(2))
        dw, db = w[:, y] - w[:, 1 - y], b[y] - b[1 - y]
        dual = np.abs(dw).sum() if norm == "linf" else np.sqrt(dw @ dw)
        x0 = rng.uniform(0.35, 0.65, dw.size)
        x0[0] = 0.5
        xs.append(x0 + (r * eps * dual - (dw @ x0 + db)) * dw / (dw @ dw))
        ys.append(y)
    x = np.asarray(xs, np.float32).reshape(-1, *D_SHAPE)
    assert 0.1 < x.min() and x.max() < 0.9  # the optimum never touches the box
    return x, np.asarray(ys, np.int32)


@pytest.fixture(scope="module")
def linear():
    return _linear_model()


def _problem(linear, norm):
    model, w, b = linear
    x, y = _points(w, b, norm, EPS[norm], RATIOS)
    return model, x, y


def _dist(a, x, norm):
    d = (a - x).reshape(len(x), -1).astype(np.float64)
    return np.abs(d).max(1) if norm == "linf" else np.sqrt((d ** 2).sum(1))


def _assert_valid(logits_fn, x_adv, x, y, fooled, norm, eps):
    """Inside the eps-ball and [0,1]; fooled points misclassified; the others untouched."""
    assert (_dist(x_adv, x, norm) <= eps + BALL_TOL).all()
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    pred = np.asarray(logits_fn(tf.constant(x_adv))).argmax(1)
    np.testing.assert_array_equal(pred != y, fooled)
    np.testing.assert_array_equal(x_adv[~fooled], x[~fooled])


# ---------------------------------------------------------------- building blocks

def test_dlr_losses_match_their_definitions():
    z = np.array([[3.0, 1.0, 0.5, -1.0, 2.0], [0.0, 4.0, 1.0, 3.0, -2.0]], np.float32)
    y = np.array([0, 2], np.int32)
    t = np.array([4, 3], np.int32)
    s = -np.sort(-z, axis=1)
    # untargeted: -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)
    want = [-(3.0 - 2.0) / (s[0, 0] - s[0, 2]), -(1.0 - 4.0) / (s[1, 0] - s[1, 2])]
    np.testing.assert_allclose(apgd.dlr_loss(z, y).numpy(), want, rtol=1e-6)
    # targeted: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)
    want_t = [-(z[i, y[i]] - z[i, t[i]]) / (s[i, 0] - 0.5 * (s[i, 2] + s[i, 3])) for i in (0, 1)]
    np.testing.assert_allclose(apgd.dlr_targeted_loss(z, y, t).numpy(), want_t, rtol=1e-6)


def test_schedules_follow_the_reference():
    assert apgd.checkpoint_schedule(100) == (22, 6, 3)
    p = [float(square.p_schedule(i, 0.8)) for i in (0, 10, 11, 50, 51, 4000, 4001, 9000)]
    np.testing.assert_allclose(p, [0.8, 0.8, 0.4, 0.4, 0.2, 0.8 / 64, 0.8 / 128, 0.8 / 512])
    for s in (3, 5, 7):  # L2 tile: unit norm, positive top half, negative bottom half
        tile = square.l2_tile(s)
        assert np.isclose(np.sqrt((tile ** 2).sum()), 1.0)
        assert (tile[: s // 2] >= 0).all() and (tile[s // 2:] <= 0).all()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_projection_solves_the_box_constrained_problem(norm):
    """min ||d||_p s.t. w.(t+d) = b, 0 <= t+d <= 1, against LP / QP solvers; where the plane
    misses the box, the move goes to the box corner that gets closest."""
    rng = np.random.default_rng(3)
    n, dim = 60, 8
    t = rng.uniform(0, 1, (n, dim))
    w = rng.normal(size=(n, dim))
    w[:10, :3] = 0.0
    b = (w * t).sum(1) + rng.normal(size=n) * rng.uniform(0, 3, n)
    d = fab_projections.project(*(tf.constant(a, tf.float32) for a in (t, w, b)), norm).numpy()
    box_active = infeasible = 0
    for i in range(n):
        bounds = [(-t[i, j], 1 - t[i, j]) for j in range(dim)]
        need = b[i] - w[i] @ t[i]
        eye, ones = np.eye(dim), np.ones((dim, 1))
        lp = linprog(np.r_[np.zeros(dim), 1.0],  # min r s.t. -r <= d <= r, w.d = need, box
                     A_ub=np.r_[np.c_[eye, -ones], np.c_[-eye, -ones]], b_ub=np.zeros(2 * dim),
                     A_eq=np.r_[w[i], 0.0][None], b_eq=[need], bounds=bounds + [(0, None)])
        if lp.status == 2:  # the hyperplane misses the box
            infeasible += 1
            direction = np.sign(need) * np.sign(w[i])
            corner = direction * np.where(direction > 0, 1 - t[i], t[i])
            np.testing.assert_allclose(d[i], corner, atol=1e-5)
            continue
        assert lp.status == 0
        assert abs(w[i] @ (t[i] + d[i]) - b[i]) < 1e-4
        assert (t[i] + d[i] >= -1e-6).all() and (t[i] + d[i] <= 1 + 1e-6).all()
        if norm == "linf":
            assert abs(np.abs(d[i]).max() - lp.x[-1]) < 1e-5
            box_active += np.abs(d[i]).max() > np.abs(d[i][w[i] != 0]).min() + 1e-6
        else:
            qp = minimize(lambda v: v @ v, np.zeros(dim), jac=lambda v: 2 * v, method="SLSQP",
                          constraints=[{"type": "eq", "fun": lambda v: w[i] @ v - need,
                                        "jac": lambda v: w[i]}],
                          bounds=bounds, options={"ftol": 1e-14, "maxiter": 500})
            np.testing.assert_allclose(d[i], qp.x, atol=1e-5)
            box_active += np.isclose(t[i] + d[i], 0, atol=1e-7).any() or np.isclose(
                t[i] + d[i], 1, atol=1e-7).any()
    assert box_active >= 5 and infeasible >= 1  # the box was exercised, not just the plane


# ---------------------------------------------------------------- closed form, linear model

@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("variant", ["ce", "dlr", "targeted"])
def test_apgd_fools_exactly_the_points_within_reach(linear, norm, variant):
    model, x, y = _problem(linear, norm)
    eps = EPS[norm]
    if variant == "targeted":
        x_adv, fooled = apgd.apgd_targeted(model, x, y, eps=eps, norm=norm, n_iter=20)
    else:
        x_adv, fooled = apgd.apgd(model, x, y, eps=eps, norm=norm, n_iter=20, loss=variant)
    np.testing.assert_array_equal(fooled, RATIOS < 1)
    _assert_valid(model, x_adv, x, y, fooled, norm, eps)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_finds_the_minimal_perturbation(linear, norm):
    model, x, y = _problem(linear, norm)
    eps = EPS[norm]
    x_min, found, dist = fab.fab_min_norm(model, x, y, 1 - y, norm=norm, n_iter=30)
    assert found.all()
    minimal = RATIOS * eps
    assert (dist >= minimal * (1 - 1e-4)).all(), "shorter than the closed-form minimum"
    assert (dist <= minimal * 1.03).all(), np.max(dist / minimal)
    np.testing.assert_allclose(_dist(x_min, x, norm), dist, rtol=1e-5)
    assert (model.predict(x_min, verbose=0).argmax(1) != y).all()

    x_adv, fooled = fab.fab_targeted(model, x, y, eps=eps, norm=norm, n_iter=30)
    np.testing.assert_array_equal(fooled, RATIOS < 1)
    _assert_valid(model, x_adv, x, y, fooled, norm, eps)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_untargeted_fab_finds_the_closest_boundary(linear, norm):
    """Only classes 0 and 1 are live, so the closest linearised boundary is the other live
    class: untargeted FAB finds the closed-form minimum as targeted FAB towards it does, and
    its restarts (from a random point at eps / 2) fool exactly the points within reach."""
    model, x, y = _problem(linear, norm)
    eps = EPS[norm]
    _, found, dist = fab.fab_min_norm(model, x, y, None, norm=norm, n_iter=30)
    _, found_t, dist_t = fab.fab_min_norm(model, x, y, 1 - y, norm=norm, n_iter=30)
    assert found.all() and found_t.all()
    np.testing.assert_allclose(dist, dist_t, rtol=1e-4)
    x_start, *_ = fab.fab_min_norm(model, x, y, None, norm=norm, n_iter=1, start_radius=eps / 2,
                                   final_search_steps=0, seed=3)
    assert not np.allclose(x_start, x)  # a random start moves every example off x
    for restarts in (1, 3):
        x_adv, fooled = fab.fab_untargeted(model, x, y, eps=eps, norm=norm, n_iter=30,
                                           n_restarts=restarts, seed=2)
        np.testing.assert_array_equal(fooled, RATIOS < 1)
        _assert_valid(model, x_adv, x, y, fooled, norm, eps)


def _counting(model):
    """The model as a logits function, with a counter of its calls (inside graphs too)."""
    calls = tf.Variable(0, dtype=tf.int64, trainable=False)

    def logits(x):
        calls.assign_add(1)
        return model(x, training=False)
    return logits, calls


@pytest.mark.parametrize("eot_iter", [1, 4])
def test_apgd_eot_averages_that_many_model_calls(linear, eot_iter):
    model, x, y = _problem(linear, "linf")
    fn, calls = _counting(model)
    n_iter = 5
    x_adv, fooled = apgd.apgd(fn, x, y, eps=1e-4, norm="linf", n_iter=n_iter, loss="dlr",
                              eot_iter=eot_iter)
    assert not fooled.any()  # out of reach: every iteration runs
    tracing = calls.numpy() - 1 - eot_iter * (n_iter + 1)  # 1: the clean prediction
    assert 0 <= tracing <= 2 * eot_iter + 2, calls.numpy()  # trace-time calls add a few
    calls.assign(0)
    apgd.apgd(fn, x, y, eps=1e-4, norm="linf", n_iter=n_iter, loss="dlr", eot_iter=eot_iter)
    assert calls.numpy() == 1 + eot_iter * (n_iter + 1)  # traced once: exact count


def test_apgd_restarts_only_add_fooled_examples(digits_mlp):
    model, x, y = digits_mlp
    kwargs = dict(eps=0.08, norm="linf", n_iter=2, loss="dlr", seed=4)  # 8 fooled, then 11
    _, once = apgd.apgd_restarts(model, x, y, n_restarts=1, **kwargs)
    x_adv, more = apgd.apgd_restarts(model, x, y, n_restarts=4, **kwargs)
    np.testing.assert_array_equal(once, apgd.apgd(model, x, y, **kwargs)[1])  # run 1 = apgd
    assert (more >= once).all() and more.sum() > once.sum()
    _assert_valid(model, x_adv, x, y, more, "linf", 0.08)


def _fab_on_a_ray(n_iter, alpha_max=0.1, eta=1.05, beta=0.9):
    """FAB on a linear model, as a scalar: the iterates stay on x0 + r d* (d*: the minimal
    perturbation), the projections of x1 and x0 are (1 - r) d* and d*. Returns the best r."""
    r, best = 0.0, np.inf
    for _ in range(n_iter):
        alpha = min(abs(1 - r) / (abs(1 - r) + 1), alpha_max)
        r = (r + eta * (1 - r)) * (1 - alpha) + eta * alpha
        if r > 1:
            best = min(best, r)
            r *= beta
    return best


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_iterates_follow_the_published_update(linear, norm):
    """alpha = min(|d1| / (|d1| + |d2|), alpha_max), overshoot eta, backward step beta."""
    model, x, y = _problem(linear, norm)
    minimal = RATIOS * EPS[norm]
    for n_iter, params in [(1, {}), (2, {}), (4, {}), (3, dict(alpha_max=0.5, eta=1.2, beta=0.7))]:
        _, found, dist = fab.fab_min_norm(model, x, y, 1 - y, norm=norm, n_iter=n_iter,
                                          final_search_steps=0, **params)
        assert found.all()
        np.testing.assert_allclose(dist / minimal, _fab_on_a_ray(n_iter, **params), rtol=1e-4)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_square_fools_large_gaps_and_never_beyond_the_ball(linear, norm):
    model, x, y = _problem(linear, norm)
    eps = EPS[norm]
    x_adv, fooled = square.square(model, x, y, eps=eps, norm=norm, n_queries=1000, seed=0)
    assert fooled[RATIOS <= 0.3].all()
    assert not fooled[RATIOS > 1].any()
    _assert_valid(model, x_adv, x, y, fooled, norm, eps)


def test_square_takes_a_numpy_logits_function(linear):
    model, w, b = linear
    x, y = _points(w, b, "linf", EPS["linf"], RATIOS[:8])

    def numpy_logits(a):
        assert isinstance(a, np.ndarray) and a.dtype == np.float32
        return a.reshape(len(a), -1) @ w + b

    got = square.square(numpy_logits, x, y, eps=EPS["linf"], n_queries=200, numpy_logits=True)
    want = square.square(model, x, y, eps=EPS["linf"], n_queries=200)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[0], want[0], atol=1e-6)
    assert got[1].any()


# ---------------------------------------------------------------- the ensemble

def _masking_model(model):
    """The linear model, with its input gradient cut for examples whose marker pixel is > 0.9:
    gradient attacks cannot fool those, a score-based attack can."""
    def logits(x):
        z = model(x, training=False)
        return tf.where(x[:, 0, 0, 0][:, None] > 0.9, tf.stop_gradient(z), z)
    return logits


def test_ensemble_takes_the_worst_case_per_example(linear):
    model, w, b = linear
    eps = EPS["linf"]
    ratios = np.repeat([0.25, 0.85, 1.5], 6)
    masked = np.tile([True, False], 9)
    x, y = _points(w, b, "linf", eps, ratios, seed=5)
    x[masked, 0, 0, 0] = 0.99
    fn = _masking_model(model)
    kwargs = dict(norm="linf", eps=eps, num_classes=5, n_iter=10, n_queries=500, seed=0)
    res = autoattack(fn, x, y, **kwargs)

    gradient_only = (ratios == 0.85) & ~masked  # too tight for 500 Square queries
    query_only = (ratios == 0.25) & masked      # no gradient
    np.testing.assert_array_equal(res.component_success["apgd-ce"], (ratios < 1) & ~masked)
    assert res.component_success["apgd-ce"][gradient_only].all()
    assert res.component_success["square"][query_only].all()
    for name in ("apgd-t", "fab-t"):
        assert not res.component_success[name].any()  # nothing left they could fool
    fooled_by_any = np.any([res.component_success[c] for c in COMPONENTS], axis=0)
    np.testing.assert_array_equal(res.robust_mask, res.robust_after["clean"] & ~fooled_by_any)
    # robust: out of reach, or tight and without a gradient (beyond both attacks)
    np.testing.assert_array_equal(res.robust_mask, (ratios > 1) | ((ratios == 0.85) & masked))
    assert res.accuracy == pytest.approx(res.robust_mask.mean())
    prev = res.robust_after["clean"]
    for name in COMPONENTS:  # cumulative masks only ever lose examples
        assert not (res.robust_after[name] & ~prev).any()
        prev = res.robust_after[name]
    _assert_valid(fn, res.x_adv, x, y, ~res.robust_mask, "linf", eps)

    alone = {c: autoattack(fn, x, y, components=(c,), **kwargs) for c in ("apgd-ce", "square")}
    for r in alone.values():
        assert res.accuracy <= r.accuracy
        assert r.accuracy > res.accuracy  # each alone misses what the other finds
    np.testing.assert_array_equal(
        res.robust_mask, alone["apgd-ce"].robust_mask & alone["square"].robust_mask)


@pytest.fixture(scope="module")
def digits_mlp():
    from sklearn.datasets import load_digits
    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[..., None]
    y = data.target.astype(np.int32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)])
    model.compile(keras.optimizers.Adam(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:1500], y[:1500], epochs=10, batch_size=64, verbose=0)
    return model, x[1500:1540], y[1500:1540]


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.5)])
def test_standard_run_on_a_trained_mlp(digits_mlp, norm, eps):
    model, x, y = digits_mlp
    kwargs = dict(norm=norm, eps=eps, num_classes=10, n_iter=10, n_queries=50, batch_size=16)
    res = autoattack(model, x, y, seed=1, **kwargs)
    clean = model.predict(x, verbose=0).argmax(1) == y
    assert res.clean_accuracy == pytest.approx(clean.mean()) and clean.mean() > 0.8
    assert res.accuracy <= res.clean_accuracy
    assert res.accuracy < res.clean_accuracy  # this model is not robust at these radii
    assert list(res.robust_after) == ["clean", *COMPONENTS]
    assert res.settings["n_target_classes"] == 9 and res.settings["fab"]["eta"] == 1.05
    _assert_valid(model, res.x_adv, x, y, ~res.robust_mask, norm, eps)
    again = autoattack(model, x, y, seed=1, **kwargs)
    np.testing.assert_array_equal(again.x_adv, res.x_adv)
    for name in res.robust_after:
        np.testing.assert_array_equal(again.robust_after[name], res.robust_after[name])


def test_zero_budget_leaves_the_clean_accuracy(linear):
    model, x, y = _problem(linear, "linf")
    res = autoattack(model, x, y, norm="linf", eps=0.0, num_classes=5)
    assert res.accuracy == res.clean_accuracy == 1.0
    np.testing.assert_array_equal(res.x_adv, x)


def test_gradient_free_run_through_predict_fn(linear, capsys):
    model, w, b = linear
    x, y = _points(w, b, "l2", EPS["l2"], RATIOS[:8])
    res = autoattack(None, x, y, norm="l2", eps=EPS["l2"], num_classes=5,
                     components=("square",), n_queries=300, batch_size=3, verbose=True,
                     predict_fn=lambda a: a.reshape(len(a), -1) @ w + b)
    # progress per batch: which of how many, what it fooled, how long it took
    out = capsys.readouterr().out
    assert re.search(r"^square - batch 1 of 3: \d of 3 fooled \(\d+ s\)$", out, re.M), out
    assert re.search(r"^square - batch 3 of 3: \d of 2 fooled \(\d+ s\)$", out, re.M), out
    assert res.component_success["square"][RATIOS[:8] <= 0.3].all()
    assert res.settings["judge"] == "predict_fn"
    _assert_valid(model, res.x_adv, x, y, ~res.robust_mask, "l2", EPS["l2"])


@pytest.mark.parametrize("kwargs,match", [
    (dict(norm="l1"), "norm"),
    (dict(eps=-0.1), "eps"),
    (dict(components=("apgd-ce", "fab-x")), "components"),
    (dict(version="plus2"), "version"),
    (dict(num_classes=3, components=("apgd-t",)), "num_classes"),
    (dict(num_classes=2, components=("apgd-dlr",)), "num_classes"),
    (dict(batch_size=0), "batch_size"),
])
def test_bad_arguments_raise(linear, kwargs, match):
    model, w, b = linear
    x, y = _points(w, b, "linf", EPS["linf"], RATIOS[:2])
    args = {**dict(norm="linf", eps=0.02, num_classes=5), **kwargs}
    with pytest.raises(ValueError, match=match):
        autoattack(model, x, y, **args)


def test_bad_inputs_raise(linear):
    model, w, b = linear
    x, y = _points(w, b, "linf", EPS["linf"], RATIOS[:2])
    with pytest.raises(ValueError, match="x must hold pixels in"):
        autoattack(model, x * 300, y, norm="linf", eps=0.02, num_classes=5)
    with pytest.raises(ValueError, match="y must"):
        autoattack(model, x, y[:1], norm="linf", eps=0.02, num_classes=5)
    with pytest.raises(ValueError, match="labels in"):
        autoattack(model, x, y + 7, norm="linf", eps=0.02, num_classes=5)
    with pytest.raises(ValueError, match="only"):
        autoattack(None, x, y, norm="linf", eps=0.02, num_classes=5, predict_fn=np.copy)
    with pytest.raises(ValueError, match="num_classes"):
        autoattack(model, x, y, norm="linf", eps=0.02, num_classes=7, components=("square",))



@pytest.mark.parametrize("version,components,n_iter,n_queries,label", [
    ("standard", None, 100, 5000, "standard"),
    ("standard", ("apgd-ce", "apgd-t", "fab-t", "square"), 100, 5000, "standard"),
    ("standard", ("apgd-ce", "apgd-t"), 100, 5000, "custom"),
    ("standard", ("apgd-t", "apgd-ce", "fab-t", "square"), 100, 5000, "custom"),  # order
    ("standard", None, 20, 5000, "custom"),
    ("standard", None, 100, 1000, "custom"),
    ("plus", None, 100, 5000, "plus"),
    ("plus", COMPONENTS, 100, 5000, "custom"),  # plus' restarts on standard's components
    ("plus", None, 100, 1000, "custom"),
    ("rand", ("apgd-ce", "apgd-dlr"), 100, 5000, "rand"),
    ("rand", ("apgd-ce",), 100, 5000, "custom"),
    ("rand", None, 50, 5000, "custom"),
])
def test_only_a_versions_own_components_and_budget_carry_its_name(
        version, components, n_iter, n_queries, label):
    from atamp_tf.attacks import autoattack as aa
    assert aa.version_label(version, components, n_iter, n_queries) == label


@pytest.mark.parametrize("version", ["plus", "rand"])
def test_plus_and_rand_versions_run_the_references_components(digits_mlp, version):
    """plus: APGD-CE, APGD-DLR, FAB (5 restarts), Square, APGD-T, FAB-T; rand: APGD-CE and
    APGD-DLR with EOT 20. Their first component's first restart is the standard version's
    APGD-CE (same seed and batch), so it fools at least what that fools."""
    model, x, y = digits_mlp
    kwargs = dict(norm="linf", eps=0.1, num_classes=10, n_iter=5, n_queries=30, batch_size=16,
                  seed=1)
    res = autoattack(model, x, y, version=version, **kwargs)
    standard = autoattack(model, x, y, components=("apgd-ce",), **kwargs)
    assert list(res.robust_after) == ["clean", *VERSION_COMPONENTS[version]]
    assert res.settings["components"] == list(VERSION_COMPONENTS[version])
    assert res.settings["version"] == "custom"  # n_iter / n_queries shrunk for the test
    want = {"plus": (5, 1), "rand": (1, 20)}[version]
    assert (res.settings["apgd"]["restarts"], res.settings["apgd"]["eot_iter"]) == want
    assert res.settings["fab"]["restarts"] == want[0]
    assert not (res.robust_after["apgd-ce"] & ~standard.robust_after["apgd-ce"]).any()
    assert res.accuracy <= res.clean_accuracy and res.accuracy < res.clean_accuracy
    _assert_valid(model, res.x_adv, x, y, ~res.robust_mask, "linf", 0.1)
