"""The shared geometry: the forms that reproduce a reference bit for bit do so, the two
projections agree, the samplers draw the documented radii, and the checks name the argument."""
import numpy as np
import pytest
import tensorflow as tf
from cleverhans.tf2.utils import clip_eta

from atamp_tf.attacks import geometry


def _batch(seed=0, shape=(64, 8, 8, 3), scale=0.3):
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.uniform(0, 1, size=shape).astype(np.float32))
    delta = tf.constant((rng.normal(size=shape) * scale
                         * rng.uniform(0, 2, size=(shape[0], 1, 1, 1))).astype(np.float32))
    return x, delta


@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5), ("l2", 1e-5)])
def test_clip_to_ball_is_cleverhans_clip_eta_bit_for_bit(norm, eps):
    _, delta = _batch()
    ours = geometry.clip_to_ball(delta, eps=eps, norm=norm).numpy()
    np.testing.assert_array_equal(ours, clip_eta(delta, geometry.NUMPY_ORD[norm], eps).numpy())
    assert geometry.lp_norm_np(ours, norm).max() <= eps * (1 + 1e-6)


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.5)])
def test_both_projections_land_in_the_ball_and_the_box_and_agree(norm, eps):
    x, delta = _batch(1)
    plain = geometry.project(x + delta, x, eps=eps, norm=norm).numpy()
    reference = geometry.project_autoattack(x + delta, x, eps=eps, norm=norm).numpy()
    for z in (plain, reference):
        assert z.min() >= 0.0 and z.max() <= 1.0
        assert geometry.lp_norm_np(z - x.numpy(), norm).max() <= eps + 1e-6
    if norm == "linf":  # coordinatewise clipping: the same point
        np.testing.assert_array_equal(plain, reference)
    else:  # ball then box, in two float orders: the same point up to rounding
        np.testing.assert_allclose(plain, reference, atol=1e-6)
    inside = x + geometry.clip_to_ball(delta, eps=eps / 2, norm=norm)
    inside = tf.clip_by_value(inside, 0.0, 1.0)
    np.testing.assert_allclose(geometry.project(inside, x, eps=eps, norm=norm), inside,
                               atol=1e-7)  # a point already inside does not move
    moved = geometry.project_perturbation(delta, x, eps=eps, norm=norm)
    np.testing.assert_allclose(x + moved, plain, atol=1e-7)


def test_norms_and_steps():
    x, delta = _batch(2, shape=(5, 4, 4, 2))
    flat = delta.numpy().reshape(5, -1)
    np.testing.assert_allclose(geometry.lp_norm(delta, "l2"), np.linalg.norm(flat, axis=1),
                               rtol=1e-6)
    np.testing.assert_allclose(geometry.lp_norm(delta, "linf"), np.abs(flat).max(axis=1))
    np.testing.assert_allclose(geometry.lp_norm_np(delta.numpy(), "l2"),
                               np.linalg.norm(flat.astype(np.float64), axis=1), rtol=1e-12)
    step = geometry.steepest_step(delta, step_size=0.1, norm="l2")
    np.testing.assert_allclose(geometry.lp_norm(step, "l2"), 0.1, rtol=1e-6)
    step = geometry.steepest_step(delta, step_size=0.1, norm="linf").numpy()
    np.testing.assert_array_equal(step, 0.1 * np.sign(delta.numpy()))
    np.testing.assert_allclose(geometry.lp_norm(geometry.normalize(delta, "linf"), "linf"), 1.0,
                               rtol=1e-6)
    assert geometry.per_example(tf.zeros([5]), x).shape == (5, 1, 1, 1)


def test_losses_on_logits():
    logits = tf.constant([[3.0, 1.0, 0.0], [0.0, 2.0, 5.0]])
    labels = tf.constant([0, 1])
    np.testing.assert_allclose(geometry.margin(logits, labels), [2.0, -3.0])
    np.testing.assert_allclose(geometry.cw_margin(logits, labels), [-2.0, 3.0])
    log_p = logits.numpy() - np.log(np.exp(logits.numpy()).sum(1, keepdims=True))
    np.testing.assert_allclose(geometry.cross_entropy(logits, labels), -log_p[[0, 1], [0, 1]],
                               rtol=1e-6)


@pytest.mark.parametrize("l2_radius,mean,spread", [("uniform", 0.5, 0.2), ("volume", 0.99, 0.01)])
def test_l2_samplers_draw_their_radius_law(l2_radius, mean, spread):
    """uniform: radius eps * U(0,1) (mean eps/2); volume: eps * U^(1/d), near eps at d = 192."""
    x = tf.fill([3000, 8, 8, 3], 0.5)
    noise = geometry.random_perturbation(x, eps=0.25, norm="l2", seed=tf.constant([3, 4]),
                                         l2_radius=l2_radius)
    radii = geometry.lp_norm_np(noise.numpy(), "l2") / 0.25
    assert radii.max() <= 1.0 + 1e-5
    assert abs(radii.mean() - mean) < 0.03 and radii.std() < spread + 0.1
    cube = geometry.random_perturbation(x, eps=0.25, norm="linf", seed=tf.constant([3, 4]))
    assert np.abs(cube.numpy()).max() <= 0.25 and np.abs(cube.numpy()).mean() > 0.1


@pytest.mark.parametrize("call,name", [
    (lambda: geometry.check_norm("l1"), "norm must be one of linf, l2, got 'l1'"),
    (lambda: geometry.check_norm("l1", "--norm"), "--norm must be one of"),
    (lambda: geometry.check_threat_model("linf", -0.1), "eps must be a finite number >= 0"),
    (lambda: geometry.check_threat_model("linf", float("nan")), "eps"),
    (lambda: geometry.check_threat_model("linf", 0.1, step_size=-1.0), "step_size"),
    (lambda: geometry.check_threat_model("linf", 0.1, steps=2.5), "steps must be a whole"),
    (lambda: geometry.check_number("n_iter", True, low=1, whole=True), "n_iter"),
    (lambda: geometry.check_number("eps", 0.0, strict=True), "eps must be a finite number > 0"),
    (lambda: geometry.check_number("eps", "0.1"), "eps"),
])
def test_checks_name_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_checks_return_the_value():
    assert geometry.check_number("steps", 20.0, whole=True) == 20
    assert isinstance(geometry.check_number("steps", np.int64(3), whole=True), int)
    assert geometry.check_number("eps", np.float32(0.5)) == np.float32(0.5)
    assert geometry.check_norm("l2") == "l2"


def test_changed_rows_round_trip():
    x = np.zeros((5, 2, 2, 1), np.float32)
    x_adv = x.copy()
    x_adv[[1, 3], 0, 1, 0] = [0.25, 0.5]
    indices, rows = geometry.changed_rows(x, x_adv)
    assert indices.tolist() == [1, 3] and rows.shape == (2, 2, 2, 1)
    np.testing.assert_array_equal(geometry.with_rows(x, indices, rows), x_adv)
    assert not x.any()  # the clean batch is left as it was
