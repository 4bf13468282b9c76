"""The reference AutoAttack's model checks (sanity.check_model, check_square_after_white_box):
a model built to trip each one trips it, and a plain trained network passes them all."""
import keras
import pytest
import tensorflow as tf

from atamp_tf.attacks import sanity


def _digits(n=64):
    from sklearn.datasets import load_digits
    d = load_digits()
    return (d.images[:n] / 16.0).astype("float32")[..., None], d.target[:n].astype("int32")


@pytest.fixture(scope="module")
def trained():
    x, y = _digits(512)
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                            keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)])
    net.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    net.fit(x, y, epochs=20, verbose=0)
    return net


def _by_name(checks):
    return {c.name: c.passed for c in checks}


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_a_plain_network_passes_every_model_check(trained, norm):
    x, y = _digits()
    result = _by_name(sanity.check_model(lambda a: trained(a, training=False), x, y, norm=norm))
    assert result == {"model:deterministic": True, "model:outputs_logits": True,
                      "model:nonzero_gradients": True, "model:unbounded_attack_succeeds": True}


def test_randomised_outputs_trip_the_determinism_check(trained):
    x, y = _digits()
    noisy = lambda a: trained(a, training=False) + tf.random.normal([tf.shape(a)[0], 10])  # noqa: E731
    assert _by_name(sanity.check_model(noisy, x, y, norm="linf"))["model:deterministic"] is False
    # AutoAttack's rand version is made for such models (EOT): the check passes, and says why
    checks = {c.name: c for c in sanity.check_model(noisy, x, y, norm="linf", randomised_ok=True)}
    determinism = checks["model:deterministic"]
    assert determinism.passed and "rand version" in determinism.detail


def test_probabilities_trip_the_logits_check(trained):
    x, y = _digits()
    probs = lambda a: tf.nn.softmax(trained(a, training=False))  # noqa: E731
    assert _by_name(sanity.check_model(probs, x, y, norm="linf"))["model:outputs_logits"] is False


def test_masked_gradients_trip_the_gradient_and_unbounded_attack_checks(trained):
    """Quantised input with a stopped gradient: zero input gradients, so PGD cannot move even
    when the ball covers the whole box."""
    x, y = _digits()
    masked = lambda a: trained(tf.stop_gradient(tf.round(a * 4) / 4), training=False)  # noqa: E731
    result = _by_name(sanity.check_model(masked, x, y, norm="linf"))
    assert result["model:nonzero_gradients"] is False
    assert result["model:unbounded_attack_succeeds"] is False


def test_square_after_white_box_trips_above_the_references_allowance():
    assert sanity.check_square_after_white_box(0, 1000).passed
    assert sanity.check_square_after_white_box(2, 1000).passed  # 0.2%: the reference's alpha
    assert not sanity.check_square_after_white_box(3, 1000).passed


def test_an_ensembles_reported_count_must_match_the_recount_of_its_outputs():
    assert sanity.check_reported_accuracy("autoattack", 0.5, 0.5, 1000).passed
    assert sanity.check_reported_accuracy("autoattack", 0.5, 0.501, 1000).passed  # 1 example
    failed = sanity.check_reported_accuracy("autoattack", 0.45, 0.5, 1000)
    assert not failed.passed and "50 example(s) apart (allowed 1)" in failed.detail
    assert sanity.check_reported_accuracy("autoattack", 0.4, 0.401, 2000).passed  # 0.1%: 2
