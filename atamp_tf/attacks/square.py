"""Square Attack (Andriushchenko, Croce et al. 2020), score-based and gradient-free, as the last
component of standard AutoAttack (fra31/auto-attack `square.py`, margin loss, p_init 0.8,
5000 queries, the schedule of p on raw iteration counts as AutoAttack sets it, resc_schedule
False), for Linf and L2.

Linf: start from vertical stripes of +-eps; each iteration proposes a square window of side
s = round(sqrt(p * H * W)) set to +-eps per channel around the current best point, and keeps it
for an example where its margin z_y - max_{j != y} z_j drops or turns negative. L2: start from
a 5x5 grid of +- "pseudo-Gaussian" tiles on the eps-sphere; each iteration moves the mass of a
second window into a first one, re-shaped by a fresh tile, keeping the norm at eps. As in the
reference, the window position and (Linf) the channel signs are drawn once per iteration and
shared by the batch, and each example stops once misclassified.
The model is only queried: `logits_fn` is any TF-traceable logits function, or, with
numpy_logits=True, any numpy function float32 NHWC [n, H, W, C] in [0,1] -> logits
[n, num_classes] (an ONNX Runtime session, for instance), called through tf.numpy_function.
Differs from the reference: random numbers come from TF's stateless generators (keyed by the
seed), and all examples of a batch are queried every iteration (fooled ones are not updated).
"""
import numpy as np
import tensorflow as tf

from atamp_tf.attacks import _aa_utils as U
from atamp_tf.attacks import geometry

_P_STEPS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_schedule(i, p_init):
    """Fraction of pixels changed at iteration i (AutoAttack's schedule, not rescaled)."""
    halvings = tf.reduce_sum(tf.cast(tf.cast(i, tf.int32) > tf.constant(_P_STEPS), tf.float32))
    return p_init / tf.pow(2.0, halvings)


def _rectangle(rows, cols):
    """The reference's pseudo-Gaussian block: nested rectangles weighted 1/(k+1)^2, unit L2."""
    delta = np.zeros((rows, cols))
    r0, c0 = rows // 2, cols // 2
    for k in range(max(rows // 2 + 1, cols // 2 + 1)):
        delta[max(r0 - k, 0):min(r0 + k + 1, rows), max(c0 - k, 0):min(c0 + k + 1, cols)] += (
            1.0 / (k + 1) ** 2)
    norm = np.sqrt((delta ** 2).sum())
    return delta / norm if norm > 0 else delta


def l2_tile(s):
    """The s x s L2 tile: a pseudo-Gaussian block on the top half, its negative below, unit
    L2 norm (the random transpose is applied by the caller)."""
    delta = np.zeros((s, s))
    delta[:s // 2] = _rectangle(s // 2, s)
    delta[s // 2:] = -_rectangle(s - s // 2, s)
    norm = np.sqrt((delta ** 2).sum())
    return delta / norm if norm > 0 else delta


def _tile_table(size):
    """[size + 1, 2, size, size]: the tile of each side s (zero-padded), and its transpose."""
    table = np.zeros((size + 1, 2, size, size), np.float32)
    for s in range(1, size + 1):
        tile = l2_tile(s)
        table[s, 0, :s, :s] = tile
        table[s, 1, :s, :s] = tile.T
    return table


def _l2_init_tiles(h, w):
    """The reference's starting grid: [T, 2, h, w] placements of the h//5 tile and its transpose."""
    s = h // 5
    start = (h - s * 5) // 2
    tiles = []
    for i in range(h // s if s else 0):
        for j in range(w // s if s else 0):
            canvas = np.zeros((2, h, w), np.float32)
            r, c = start + i * s, start + j * s
            block = l2_tile(s)
            sub = canvas[:, r:r + s, c:c + s]
            sub[0] = block[:sub.shape[1], :sub.shape[2]]
            sub[1] = block.T[:sub.shape[1], :sub.shape[2]]
            tiles.append(canvas)
    return np.stack(tiles) if tiles else np.zeros((0, 2, h, w), np.float32)


def _window(h, w, top, left, s):
    """[h, w] float mask of the s x s window at (top, left)."""
    rows = tf.range(h)
    cols = tf.range(w)
    in_rows = tf.logical_and(rows >= top, rows < top + s)
    in_cols = tf.logical_and(cols >= left, cols < left + s)
    return tf.cast(tf.logical_and(in_rows[:, None], in_cols[None, :]), tf.float32)


def _place(table_entry, h, w, top, left, s):
    """Places the top-left s x s block of a [size, size] table entry at (top, left) in [h, w]."""
    size = table_entry.shape[0]
    rows = tf.clip_by_value(tf.range(h) - top, 0, size - 1)
    cols = tf.clip_by_value(tf.range(w) - left, 0, size - 1)
    block = tf.gather(tf.gather(table_entry, rows), cols, axis=1)
    return block * _window(h, w, top, left, s)


def _random_sign(shape, seed):
    return tf.sign(tf.random.stateless_uniform(shape, seed, -1.0, 1.0))


def _build(logits_fn, norm, image_shape, numpy_logits, num_classes):
    h, w, c = image_shape
    fn = (U.numpy_logits_callable(logits_fn, num_classes) if numpy_logits
          else U.as_logits_callable(logits_fn))
    n_features = h * w * c
    table = tf.constant(_tile_table(min(h, w)))
    init_tiles = tf.constant(_l2_init_tiles(h, w))

    def margin(z, y):
        return geometry.margin(fn(z), y)

    def side(p):
        s = tf.cast(tf.round(tf.sqrt(p * n_features / c)), tf.int32)
        if norm == "linf":
            s = tf.maximum(s, 1)
        else:
            s = tf.maximum(s, 3)
            s = s + 1 - tf.math.floormod(s, 2)  # odd, as the reference
        return tf.minimum(s, min(h, w))

    def position(limit, seed):
        u = tf.random.stateless_uniform([], seed)
        return tf.cast(tf.floor(tf.cast(limit, tf.float32) * u), tf.int32)

    @tf.function(input_signature=U.signature((h, w, c), "xyfifs"), autograph=False)
    def run(x, y, eps, n_queries, p_init, seed):
        n = tf.shape(x)[0]
        keys = tf.random.experimental.stateless_split(seed, 2)

        def on_sphere(delta):
            """x + delta rescaled to L2 length eps, clipped to [0, 1]."""
            length = geometry.per_example(geometry.lp_norm(delta, "l2"), x)
            return tf.clip_by_value(x + eps * delta / (length + 1e-12), 0.0, 1.0)

        if norm == "linf":
            stripes = _random_sign([n, 1, w, c], keys[0])
            x_best = tf.clip_by_value(x + eps * stripes, 0.0, 1.0)
        else:
            n_tiles = init_tiles.shape[0]
            flips = tf.random.stateless_uniform([n_tiles], keys[0]) > 0.5
            patterns = tf.where(flips[:, None, None], init_tiles[:, 1], init_tiles[:, 0])
            signs = _random_sign([n, n_tiles, c], tf.random.experimental.stateless_fold_in(
                keys[0], 1))
            delta = tf.einsum("thw,btc->bhwc", patterns, signs)
            x_best = on_sphere(delta)
        best = margin(x_best, y)

        def l2_proposal(x_best, s, top, left, win, k):
            delta = x_best - x
            top2, left2 = position(h - s, k[3]), position(w - s, k[4])
            win2 = _window(h, w, top2, left2, s)[None, :, :, None]
            flip = tf.cast(tf.random.stateless_uniform([], k[5]) > 0.5, tf.int32)
            tile = _place(tf.gather(tf.gather(table, s), flip), h, w, top, left, s)
            signs = _random_sign([n, 1, 1, c], tf.random.experimental.stateless_fold_in(k[5], 1))

            def channel_norm(v):
                return tf.sqrt(tf.reduce_sum(tf.square(v), axis=[1, 2], keepdims=True))

            norm_win1 = channel_norm(delta * win)
            norm_image = geometry.per_example(geometry.lp_norm(delta, "l2"), x)
            norm_windows = channel_norm(delta * tf.maximum(win, win2))
            new = tile[None, :, :, None] * signs + delta * win / (1e-12 + norm_win1)
            new = new / (1e-12 + channel_norm(new)) * tf.sqrt(
                tf.maximum(eps ** 2 - norm_image ** 2, 0.0) / c + norm_windows ** 2)
            delta = tf.where(win > 0, new, tf.where(win2 > 0, 0.0, delta))
            return on_sphere(delta)

        def cond(i, x_best, best):
            return tf.logical_and(i < n_queries, tf.reduce_any(best > 0.0))

        def body(i, x_best, best):
            key = tf.random.experimental.stateless_fold_in(keys[1], i)
            k = tf.random.experimental.stateless_split(key, 6)
            s = side(p_schedule(i, p_init))
            top, left = position(h - s, k[0]), position(w - s, k[1])
            win = _window(h, w, top, left, s)[None, :, :, None]
            if norm == "linf":
                step = win * 2.0 * eps * _random_sign([1, 1, 1, c], k[2])
                x_new = geometry.project_autoattack(x_best + step, x, eps=eps, norm="linf")
            else:
                x_new = l2_proposal(x_best, s, top, left, win, k)
            m = margin(x_new, y)
            accept = tf.logical_and(best > 0.0, tf.logical_or(m < best, m <= 0.0))
            x_best = tf.where(geometry.per_example(accept, x), x_new, x_best)
            best = tf.where(accept, m, best)
            return i + 1, x_best, best

        _, x_best, best = tf.while_loop(cond, body, (tf.constant(0), x_best, best))
        fooled = best <= 0.0
        return tf.where(geometry.per_example(fooled, x), x_best, x), fooled

    return run


def square(logits_fn, x, y, *, eps, norm="linf", n_queries=5000, p_init=0.8, seed=0,
           numpy_logits=False, batch_size=500):
    """Square attack on numpy images. Returns (x_adv, fooled): x_adv is a misclassified point
    inside the eps-ball where fooled, else x. logits_fn: a TF-traceable logits function, or a
    numpy one with numpy_logits=True (see the module docstring)."""
    geometry.check_norm(norm)
    geometry.check_number("eps", eps, strict=True)
    geometry.check_number("n_queries", n_queries, low=1, whole=True)
    batch_size = geometry.check_number("batch_size", batch_size, low=1, whole=True)
    U.check_seed(seed)
    if not 0.0 < p_init <= 1.0:
        raise ValueError(f"p_init must be in (0, 1], got {p_init!r}")
    x = U.check_images(x)
    y = U.check_labels(y, len(x))
    x_adv, fooled = x.copy(), np.zeros(len(x), bool)
    if len(x) == 0:
        return x_adv, fooled
    if numpy_logits:
        clean = np.concatenate([np.asarray(logits_fn(x[i:i + batch_size]), np.float32)
                                for i in range(0, len(x), batch_size)])
    else:
        clean = U.predict_logits(logits_fn, x, batch_size)
    if clean.ndim != 2 or clean.shape[0] != len(x):
        raise ValueError(f"logits_fn must return logits of shape [batch, classes], got "
                         f"{clean.shape} for {len(x)} inputs")
    num_classes = clean.shape[1]
    fooled = clean.argmax(axis=1) != y  # already misclassified
    run = U.compiled(logits_fn, ("square", norm, x.shape[1:], numpy_logits, num_classes),
                     lambda: _build(logits_fn, norm, x.shape[1:], numpy_logits, num_classes))
    todo = np.flatnonzero(~fooled)
    for b, start in enumerate(range(0, todo.size, batch_size)):
        idx = todo[start:start + batch_size]
        adv, ok = run(x[idx], y[idx], np.float32(eps), np.int32(n_queries), np.float32(p_init),
                      U.seed_pair(seed, 2, b))
        ok = ok.numpy()
        x_adv[idx[ok]] = adv.numpy()[ok]
        fooled[idx[ok]] = True
    return x_adv, fooled
