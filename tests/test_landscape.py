"""The weight-landscape command on a tiny model."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf

from atamp_tf.attacks.pgd import pgd
from atamp_tf.losses import cross_entropy
from atamp_tf.tools import landscape

ATTACK = dict(norm="linf", eps=0.1, step_size=0.03, steps=3)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _model_and_data():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.images[:96] / 16.0).astype("float32")[..., None]
    y = d.target[:96].astype("int32")
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, use_bias=False)(inp)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Flatten()(keras.layers.ReLU()(h))
    net = keras.Model(inp, keras.layers.Dense(10)(h))
    net.compile("adam", "sparse_categorical_crossentropy")
    net.fit(x, y, epochs=3, verbose=0)
    return net, x, y


def test_loss_at_zero_is_the_models_robust_loss_and_seeded():
    net, x, y = _model_and_data()
    robust = landscape.RobustLoss(net, x, y, batch_size=48, seed=3, **ATTACK)
    weights = [v.numpy() for v in net.trainable_variables]
    loss0, acc0 = robust(weights)
    # The model's own robust loss, computed directly with the same PGD starts.
    total, hits = 0.0, 0
    for i in range(2):
        xb, yb = x[i * 48:(i + 1) * 48], y[i * 48:(i + 1) * 48]
        x_adv = pgd(lambda z: net(z, training=False), tf.constant(xb), tf.constant(yb),
                    random_start=True, seed=tf.constant([3, i], tf.int64), **ATTACK)
        logits = net(x_adv, training=False)
        total += float(tf.reduce_sum(cross_entropy(logits, yb)))
        hits += int(np.sum(np.argmax(logits, -1) == yb))
    assert abs(loss0 - total / 96) < 1e-5
    assert acc0 == hits / 96

    alphas = np.linspace(-0.5, 0.5, 5)
    run = lambda seed: landscape.model_landscape(net, x, y, directions=["random", "adversarial"],
                                                 alphas=alphas, radius=0.5, seed=seed,
                                                 attack=ATTACK, batch_size=48)
    first, again, other = run(0), run(0), run(1)
    assert first["random"]["points"] == again["random"]["points"]
    assert first["random"]["points"] != other["random"]["points"]
    at_zero = dict((round(a, 9), l) for a, l, _ in first["random"]["points"])[0.0]
    seed0_loss, _ = landscape.RobustLoss(net, x, y, batch_size=48, seed=0, **ATTACK)(weights)
    assert abs(at_zero - seed0_loss) < 1e-5
    # Moving along the adversarial direction raises the robust loss.
    adv = first["adversarial"]["points"]
    assert adv[-1][1] > adv[len(adv) // 2][1]
    assert first["adversarial"]["sharpness"] > 0


def test_direction_is_filter_normalised():
    net, _, _ = _model_and_data()
    weights = [v.numpy() for v in net.trainable_variables]
    direction = landscape.random_direction(weights, seed=0)
    for w, d in zip(weights, direction):
        if w.ndim < 2:
            assert np.all(d == 0)  # biases and BatchNorm are not moved
            continue
        axes = tuple(range(w.ndim - 1))
        np.testing.assert_allclose(np.linalg.norm(d.reshape(-1, w.shape[-1]), axis=0),
                                   np.sqrt(np.sum(w ** 2, axis=axes)), rtol=1e-5)
    again = landscape.random_direction(weights, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(direction, again))


def test_cli_writes_csv_png_and_flatness(tmp_path):
    net, _, _ = _model_and_data()
    path = tmp_path / "net.keras"
    net.save(path)
    out = tmp_path / "ls"
    cmd = [sys.executable, "-m", "atamp_tf.landscape", f"--models={path},{path}",
           "--labels=a,b", "--dataset=digits", "--norm=linf", "--eps=0.1", "--step_size=0.03",
           "--attack_steps=2", "--num_examples=40", "--points=5", "--max_a=0.5",
           "--radius=0.25", f"--output_dir={out}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 0, proc.stderr[-2000:]
    flat = json.loads((out / "flatness.json").read_text())
    assert flat["sharpness"]["a"] == flat["sharpness"]["b"]  # same model, same seed
    rows = (out / "landscape.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2 * 2 * 5
    assert (out / "landscape.png").read_bytes()[:4] == b"\x89PNG"
    bad = subprocess.run(cmd[:-1] + ["--radius=0.3", f"--output_dir={out}"], capture_output=True,
                         text=True, timeout=300, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))
    assert bad.returncode != 0 and "radius" in bad.stderr
