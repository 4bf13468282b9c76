"""FAB's projection step: the smallest Lp move d (p = inf or 2) from points t onto the
hyperplanes {z : w . z = b}, subject to the box 0 <= t + d <= 1 (Croce & Hein 2020, FAB, sec. 3).

Both are exact and vectorised over a batch of flattened points [n, D]: the box makes the
optimal move piecewise linear in one scalar (the Linf radius r, or the L2 multiplier lambda),
whose breakpoints are sorted once and the active piece found by counting (an O(D log D) sort
per row, as the reference does with its bisection). Where the hyperplane does not meet the box,
the move goes as far as the box allows towards it. Written from the problem statement, not
transcribed from fra31/auto-attack's `fab_projections.py`.
"""
import tensorflow as tf

_BIG = 1e30


def _oriented(t, w, b):
    """Flips each hyperplane so that the required change c = b - w . t is >= 0."""
    c = b - tf.reduce_sum(w * t, axis=1)
    sign = tf.where(c >= 0, 1.0, -1.0)
    w = w * sign[:, None]
    c = c * sign
    room = tf.where(w > 0, 1.0 - t, t)  # how far each coordinate can move in w's direction
    return w, c, tf.maximum(room, 0.0)


def _first_reaching(values, c):
    """Index of the first sorted breakpoint whose cumulative value reaches c (D if none)."""
    return tf.reduce_sum(tf.cast(values < c[:, None], tf.int32), axis=1)


def _take(v, k):
    """v[row, k[row]] with v padded by one trailing zero column (k may equal D)."""
    v = tf.pad(v, [[0, 0], [0, 1]])
    return tf.gather(v, k, axis=1, batch_dims=1)


def project_linf(t, w, b):
    """argmin ||d||_inf s.t. w . (t + d) = b, 0 <= t + d <= 1. t, w: [n, D]; b: [n]."""
    w, c, room = _oriented(t, w, b)
    aw = tf.abs(w)
    room = tf.where(aw > 0, room, _BIG)  # coordinates without weight never limit the radius
    order = tf.argsort(room, axis=1)
    room_s = tf.gather(room, order, batch_dims=1)
    aw_s = tf.gather(aw, order, batch_dims=1)
    # h(r) = sum |w_i| min(r, room_i), evaluated at each sorted breakpoint room_(k).
    done = tf.cumsum(aw_s * room_s, axis=1, exclusive=True)   # coordinates already at the box
    rest = tf.cumsum(aw_s, axis=1, reverse=True)              # still moving at radius r
    h_at = done + room_s * rest
    h_at = tf.where(aw_s > 0, h_at, _BIG)
    k = _first_reaching(h_at, c)
    rest_k = _take(rest, k)
    r = tf.math.divide_no_nan(c - _take(done, k), rest_k)
    r = tf.where(tf.logical_and(k < tf.shape(w)[1], rest_k > 0), r, _BIG)  # infeasible: box corner
    d = tf.sign(w) * tf.minimum(r[:, None], tf.where(aw > 0, room, 0.0))
    return d


def project_l2(t, w, b):
    """argmin ||d||_2 s.t. w . (t + d) = b, 0 <= t + d <= 1. t, w: [n, D]; b: [n]."""
    w, c, room = _oriented(t, w, b)
    aw = tf.abs(w)
    # d(lam) = clip(lam * w, -t, 1 - t); coordinate i reaches the box at lam_i = room_i / |w_i|.
    lam = tf.where(aw > 0, tf.math.divide_no_nan(room, aw), _BIG)
    order = tf.argsort(lam, axis=1)
    lam_s = tf.gather(lam, order, batch_dims=1)
    aw_s = tf.gather(aw, order, batch_dims=1)
    room_s = tf.gather(room, order, batch_dims=1)
    done = tf.cumsum(aw_s * room_s, axis=1, exclusive=True)
    rest = tf.cumsum(tf.square(aw_s), axis=1, reverse=True)
    g_at = tf.where(aw_s > 0, done + lam_s * rest, _BIG)      # w . d(lam) at each breakpoint
    k = _first_reaching(g_at, c)
    rest_k = _take(rest, k)
    lam_opt = tf.math.divide_no_nan(c - _take(done, k), rest_k)
    lam_opt = tf.where(tf.logical_and(k < tf.shape(w)[1], rest_k > 0), lam_opt, _BIG)
    d = tf.clip_by_value(lam_opt[:, None] * w, -t, 1.0 - t)
    return tf.where(aw > 0, d, 0.0)


def project(t, w, b, norm):
    """The projection for norm "linf" or "l2"."""
    return project_linf(t, w, b) if norm == "linf" else project_l2(t, w, b)
