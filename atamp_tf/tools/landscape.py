"""Weight loss landscape: robust (PGD) loss at theta + a * d, the picture behind "flat minima".

`python -m atamp_tf.landscape --models=runs/at,runs/at_amp --labels=AT,AT-AMP ...` draws, for
each model, the robust test loss along
  - a filter-normalised random direction (Li et al. 2018, the paper's ref. [17]): Gaussian,
    rescaled so each filter (last axis of a conv or dense kernel) has the norm of the
    weights' filter; biases and BatchNorm parameters are not moved;
  - the adversarial weight direction: the gradient of the robust loss w.r.t. the weights,
    filter-normalised the same way (where the loss rises fastest).
At each point the adversarial examples are found anew against the perturbed model (PGD with a
fixed seed per batch, BatchNorm in inference mode), so the curve is the robust loss of the
model theta + a d. Output: `landscape.csv` (model, direction, a, robust_loss, robust_acc), one
PNG overlaying the models, and `flatness.json`: per model and direction, the flatness number
  sharpness = mean(L(-r), L(+r)) - L(0)   (the rise of robust loss at radius r, `--radius`;
                                          for the adversarial direction only L(+r) counts)
where smaller means flatter. Seeded: the same command draws the same direction and curve.
"""
import csv
import io
import json
import os

import numpy as np
import tensorflow as tf

from atamp_tf import rundir
from atamp_tf.attacks.geometry import cross_entropy
from atamp_tf.attacks.pgd import pgd

DIRECTIONS = ("random", "adversarial")


def _filter_normalise(direction, weight):
    """Scale each filter (slice along the last axis) of `direction` to the weight's norm."""
    if weight.ndim < 2:
        return np.zeros_like(weight)
    axes = tuple(range(weight.ndim - 1))
    w_norm = np.sqrt(np.sum(weight ** 2, axis=axes, keepdims=True))
    d_norm = np.sqrt(np.sum(direction ** 2, axis=axes, keepdims=True))
    return direction * w_norm / np.maximum(d_norm, 1e-12)


def random_direction(weights, seed):
    """A filter-normalised Gaussian direction for a list of numpy weights."""
    rng = np.random.default_rng(seed)
    return [_filter_normalise(rng.standard_normal(w.shape).astype(w.dtype), w) for w in weights]


class RobustLoss:
    """Robust loss and accuracy of `network` with given trainable values, over fixed data."""

    def __init__(self, network, x, y, *, norm, eps, step_size, steps, batch_size=256, seed=0):
        self.network, self.batch_size, self.seed = network, batch_size, seed
        self.x, self.y = np.asarray(x, np.float32), np.asarray(y, np.int32)
        self.state = [v.value for v in network.non_trainable_variables]
        attack = dict(norm=norm, eps=eps, step_size=step_size, steps=steps)

        @tf.function(reduce_retracing=True)
        def batch_loss(weights, xb, yb, batch_seed):
            def logits_fn(images):
                return network.stateless_call(weights, self.state, images, training=False)[0]
            x_adv = pgd(logits_fn, xb, yb, random_start=steps > 0 and eps > 0,
                        seed=batch_seed, **attack)
            with tf.GradientTape() as tape:
                tape.watch(weights)
                logits = logits_fn(x_adv)
                losses = cross_entropy(logits, yb)
                total = tf.reduce_sum(losses)
            correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32),
                                                     yb), tf.float32))
            return total, correct, tape.gradient(total, weights)

        self._batch_loss = batch_loss

    def __call__(self, weights, with_gradient=False):
        """(mean robust loss, robust accuracy[, gradient of the mean loss]) at `weights`."""
        weights = [tf.convert_to_tensor(w) for w in weights]
        total = correct = 0.0
        grads = None
        for i, start in enumerate(range(0, len(self.x), self.batch_size)):
            xb = self.x[start:start + self.batch_size]
            yb = self.y[start:start + self.batch_size]
            loss, hits, g = self._batch_loss(weights, xb, yb, tf.constant([self.seed, i], tf.int64))
            total += float(loss)
            correct += float(hits)
            if with_gradient:
                g = [t.numpy() for t in g]
                grads = g if grads is None else [a + b for a, b in zip(grads, g)]
        n = len(self.x)
        if with_gradient:
            return total / n, correct / n, [g / n for g in grads]
        return total / n, correct / n


def adversarial_direction(robust_loss, weights):
    """The filter-normalised gradient of the robust loss at the weights."""
    _, _, grads = robust_loss(weights, with_gradient=True)
    return [_filter_normalise(g, w) for g, w in zip(grads, weights)]


def curve(robust_loss, weights, direction, alphas):
    """[(a, robust loss, robust accuracy)] along theta + a * direction."""
    out = []
    for a in alphas:
        loss, acc = robust_loss([w + a * d for w, d in zip(weights, direction)])
        out.append((float(a), loss, acc))
    return out


def sharpness(points, radius, direction):
    """Rise of robust loss at `radius` over a = 0 (both sides for random directions)."""
    by_a = {round(a, 9): loss for a, loss, _ in points}
    base = by_a[0.0]
    sides = [radius] if direction == "adversarial" else [-radius, radius]
    missing = [s for s in sides if round(s, 9) not in by_a]
    if missing:
        raise ValueError(f"radius {radius} is not on the grid of a values")
    return float(np.mean([by_a[round(s, 9)] for s in sides]) - base)


def model_landscape(network, x, y, *, directions, alphas, radius, seed, attack, batch_size=256):
    """Curves and sharpness for one network: {direction: {"points": [...], "sharpness": s}}."""
    for d in directions:
        if d not in DIRECTIONS:
            raise ValueError(f"direction must be in {DIRECTIONS}, got {d!r}")
    weights = [v.numpy() for v in network.trainable_variables]
    robust_loss = RobustLoss(network, x, y, batch_size=batch_size, seed=seed, **attack)
    out = {}
    for name in directions:
        direction = (random_direction(weights, seed) if name == "random"
                     else adversarial_direction(robust_loss, weights))
        points = curve(robust_loss, weights, direction, alphas)
        out[name] = {"points": points, "sharpness": sharpness(points, radius, name)}
    return out


def write_outputs(results, output_dir, radius):
    """landscape.csv, flatness.json and landscape.png (one panel per direction)."""
    os.makedirs(output_dir, exist_ok=True)
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(["model", "direction", "a", "robust_loss", "robust_acc"])
    for label, per_dir in results.items():
        for name, r in per_dir.items():
            for a, loss, acc in r["points"]:
                writer.writerow([label, name, f"{a:.6g}", f"{loss:.6f}", f"{acc:.6f}"])
    rundir.atomic_write_text(os.path.join(output_dir, "landscape.csv"), table.getvalue())
    flatness = {label: {name: r["sharpness"] for name, r in per_dir.items()}
                for label, per_dir in results.items()}
    rundir.atomic_write_text(os.path.join(output_dir, "flatness.json"), json.dumps(
        {"radius": radius, "sharpness": flatness,
         "definition": "mean robust loss at a = +-radius (adversarial: +radius) "
                       "minus robust loss at a = 0; smaller is flatter"}, indent=2))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = sorted({n for per_dir in results.values() for n in per_dir})
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        for label, per_dir in results.items():
            if name in per_dir:
                pts = per_dir[name]["points"]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3,
                        label=f"{label} (sharpness {per_dir[name]['sharpness']:.3f})")
        ax.set_title(f"{name} direction (filter-normalised)")
        ax.set_xlabel("a")
        ax.set_ylabel("robust test loss")
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(output_dir, "landscape.png"), dpi=120)
    plt.close(fig)
    return flatness


# ----------------------------------------------------------------------------- command line
