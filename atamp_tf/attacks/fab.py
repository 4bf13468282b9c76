"""FAB (Croce & Hein 2020, "Minimally distorted adversarial examples with a fast adaptive
boundary attack"): targeted FAB-T, the third component of standard AutoAttack, and the
untargeted FAB of its "plus" version, in TensorFlow.

Each iteration linearises the boundary between the true class y and the target t at the current
point x1 (f = z_t - z_y, hyperplane f(x1) + grad f . (z - x1) = 0), projects both x1 and the
clean x0 onto it under the Lp norm and the box [0,1] (`fab_projections`), and steps to the
convex combination (x1 + eta d1)(1 - alpha) + (x0 + eta d2) alpha with
alpha = min(|d1| / (|d1| + |d2|), alpha_max): biased towards x0, so that the iterates track the
boundary close to the input. When an iterate is misclassified it is kept if closer to x0 than
the best so far, and the search moves back towards x0 by beta. Defaults: alpha_max 0.1,
eta 1.05, beta 0.9, 100 iterations, no random start (standard AutoAttack runs FAB-T with one
restart), targets the 2nd, 3rd, ... highest clean logit, success if misclassified (any class)
within eps. Untargeted FAB takes, at every iteration, the class whose linearised boundary is
closest (|z_k - z_y| / ||grad (z_k - z_y)||_dual, one gradient per class); with n_restarts > 1
each later restart starts from a random point at distance eps / 2 (the reference's).
Differs from AutoAttack's FAB: after the iterations, `final_search_steps` (default 3) steps of
the original FAB code's final search (fra31/fab-attack `--las`: regula falsi on the segment
from x0 to the found point, on the logit difference) shrink each found perturbation; it only
ever replaces a point by a closer misclassified one. final_search_steps=0 is AutoAttack's FAB.
One run is one compiled while-loop over a batch (vectorised).
"""
import numpy as np
import tensorflow as tf

from atamp_tf.attacks import _aa_utils as U
from atamp_tf.attacks import fab_projections, geometry

_NO_ADV = np.float32(1e10)


def _targeted_plane(fn, x1, y, yt):
    """f = z_t - z_y at x1 and its gradient (flattened)."""
    with tf.GradientTape() as tape:
        tape.watch(x1)
        logits = fn(x1)
        f = U.gather_label(logits, yt) - U.gather_label(logits, y)
        total = tf.reduce_sum(f)
    return f, U.flat(tape.gradient(total, x1))


def _closest_plane(fn, x1, y, norm, num_classes):
    """Untargeted FAB's choice: of the boundaries z_k = z_y (k != y), the one whose
    linearisation at x1 is closest in the norm; returns its f = z_k - z_y and gradient."""
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x1)
        logits = fn(x1)
        columns = [logits[:, k] for k in range(num_classes)]
    grads = tf.stack([U.flat(tape.gradient(c, x1)) for c in columns], axis=1)  # [n, K, D]
    del tape
    df = logits - U.gather_label(logits, y)[:, None]
    dg = grads - tf.gather(grads, y, axis=1, batch_dims=1)[:, None, :]
    is_true = tf.one_hot(y, num_classes, on_value=True, off_value=False)
    df = tf.where(is_true, _NO_ADV, df)
    dual = (tf.reduce_sum(tf.abs(dg), axis=2) if norm == "linf"
            else tf.sqrt(tf.reduce_sum(tf.square(dg), axis=2)))
    closest = tf.argmin(tf.abs(df) / (1e-12 + dual), axis=1, output_type=tf.int32)
    return (tf.gather(df, closest, axis=1, batch_dims=1),
            tf.gather(dg, closest, axis=1, batch_dims=1))


def _build(logits_fn, norm, image_shape, num_classes=None):
    """The compiled FAB run; targeted when num_classes is None, else untargeted over
    num_classes classes."""
    fn = U.as_logits_callable(logits_fn)

    def predict(z):
        return tf.argmax(fn(z), axis=1, output_type=tf.int32)

    @tf.function(input_signature=U.signature(image_shape, "xyyifffifs"), autograph=False)
    def run(x0, y, yt, n_iter, alpha_max, eta, beta, search_steps, start_radius, seed):
        x0_flat = U.flat(x0)
        n = tf.shape(x0)[0]
        x_start = tf.cond(
            start_radius > 0,
            lambda: geometry.random_on_sphere(x0, radius=start_radius, norm=norm, seed=seed),
            lambda: x0)

        def body(i, x1, adv, res):
            if num_classes is None:
                f, w = _targeted_plane(fn, x1, y, yt)
            else:
                f, w = _closest_plane(fn, x1, y, norm, num_classes)
            b = tf.reduce_sum(w * U.flat(x1), axis=1) - f
            d = fab_projections.project(tf.concat([U.flat(x1), x0_flat], 0),
                                        tf.concat([w, w], 0), tf.concat([b, b], 0), norm)
            d1 = tf.reshape(d[:n], tf.shape(x0))
            d2 = tf.reshape(d[n:], tf.shape(x0))
            a = tf.maximum(geometry.lp_norm(d, norm), 1e-8)
            a1, a2 = a[:n], a[n:]
            alpha = geometry.per_example(tf.clip_by_value(a1 / (a1 + a2), 0.0, alpha_max), x0)
            x1 = tf.clip_by_value((x1 + eta * d1) * (1.0 - alpha) + (x0 + eta * d2) * alpha,
                                  0.0, 1.0)
            is_adv = tf.not_equal(predict(x1), y)
            dist = geometry.lp_norm(x1 - x0, norm)
            closer = tf.logical_and(is_adv, dist < res)
            adv = tf.where(geometry.per_example(closer, x0), x1, adv)
            res = tf.where(closer, dist, res)
            x1 = tf.where(geometry.per_example(is_adv, x0), x0 + (x1 - x0) * beta, x1)
            return i + 1, x1, adv, res

        _, _, adv, res = tf.while_loop(
            lambda i, *_: i < n_iter, body,
            (tf.constant(0), x_start, x0, tf.fill([n], _NO_ADV)))
        found = res < _NO_ADV
        adv = _final_search(fn, x0, y, adv, found, search_steps)
        return adv, found, geometry.lp_norm(adv - x0, norm)

    return run


def _final_search(fn, x0, y, adv, found, steps):
    """Regula falsi between x0 (classified y) and adv (not y) on z_y - z_other; keeps the
    misclassified end, so the perturbation only shrinks."""
    lo, hi = x0, adv
    z_lo, z_hi = fn(lo), fn(hi)
    other = tf.argmax(z_hi, axis=1, output_type=tf.int32)

    def body(i, lo, hi, z_lo, z_hi, other):
        t1 = U.gather_label(z_lo, y) - U.gather_label(z_lo, other)
        t2 = U.gather_label(z_hi, other) - U.gather_label(z_hi, y)
        t = t1 / (t1 + t2 + 1e-10)
        t = tf.where(tf.logical_and(t >= 0.0, t <= 1.0), t, 1.0)
        mid = lo + (hi - lo) * geometry.per_example(t, lo)
        z_mid = fn(mid)
        pred = tf.argmax(z_mid, axis=1, output_type=tf.int32)
        clean = tf.logical_or(tf.equal(pred, y), ~found)
        lo = tf.where(geometry.per_example(clean, lo), mid, lo)
        z_lo = tf.where(clean[:, None], z_mid, z_lo)
        hi = tf.where(geometry.per_example(clean, lo), hi, mid)
        z_hi = tf.where(clean[:, None], z_hi, z_mid)
        other = tf.where(clean, other, pred)
        return i + 1, lo, hi, z_lo, z_hi, other

    _, _, hi, _, _, _ = tf.while_loop(lambda i, *_: i < steps, body,
                                      (tf.constant(0), lo, hi, z_lo, z_hi, other))
    return tf.where(geometry.per_example(found, x0), hi, x0)


def _check(x, y, norm, n_iter, alpha_max, eta, beta, final_search_steps):
    geometry.check_norm(norm)
    geometry.check_number("n_iter", n_iter, low=1, whole=True)
    for name, value in (("alpha_max", alpha_max), ("eta", eta), ("beta", beta)):
        geometry.check_number(name, value, strict=True)
    geometry.check_number("final_search_steps", final_search_steps, whole=True)
    x = U.check_images(x)
    return x, U.check_labels(y, len(x))


def fab_min_norm(logits_fn, x, y, y_target=None, *, norm="linf", n_iter=100, alpha_max=0.1,
                 eta=1.05, beta=0.9, final_search_steps=3, start_radius=0.0, seed=0):
    """One FAB run without a budget, targeted towards y_target, or untargeted when y_target is
    None: returns (x_adv, found, dist), the closest misclassified point found per example and
    its Lp distance (x and inf where none was found). start_radius > 0: start from a random
    point at that distance (seeded) instead of x."""
    x, y = _check(x, y, norm, n_iter, alpha_max, eta, beta, final_search_steps)
    geometry.check_number("start_radius", start_radius)
    U.check_seed(seed)
    if len(x) == 0:
        return x.copy(), np.zeros(0, bool), np.zeros(0, np.float32)
    if y_target is None:
        num_classes = U.predict_logits(logits_fn, x[:1]).shape[1]
        y_target, key = y, ("fab", norm, x.shape[1:], num_classes)
    else:
        y_target = U.check_labels(y_target, len(x), name="y_target")
        num_classes, key = None, ("fab", norm, x.shape[1:])
    run = U.compiled(logits_fn, key, lambda: _build(logits_fn, norm, x.shape[1:], num_classes))
    adv, found, dist = run(x, y, y_target, np.int32(n_iter), np.float32(alpha_max),
                           np.float32(eta), np.float32(beta), np.int32(final_search_steps),
                           np.float32(start_radius), U.seed_pair(seed, 0))
    found = found.numpy()
    return adv.numpy(), found, np.where(found, dist.numpy(), np.inf).astype(np.float32)


def fab_targeted(logits_fn, x, y, *, eps, norm="linf", n_iter=100, n_target_classes=9,
                 alpha_max=0.1, eta=1.05, beta=0.9, final_search_steps=3):
    """FAB-T as run by standard AutoAttack: one run per target (2nd, 3rd, ... highest clean
    logit) on the examples not fooled yet; an example is fooled when a misclassified point
    within eps is found. Returns (x_adv, fooled); x_adv is x where not fooled."""
    geometry.check_number("eps", eps, strict=True)
    n_target_classes = geometry.check_number("n_target_classes", n_target_classes, low=1,
                                             whole=True)
    x, y = _check(x, y, norm, n_iter, alpha_max, eta, beta, final_search_steps)
    x_adv, fooled = x.copy(), np.zeros(len(x), bool)
    if len(x) == 0:
        return x_adv, fooled
    clean_logits = U.predict_logits(logits_fn, x)
    fooled = clean_logits.argmax(axis=1) != y  # already misclassified
    for todo, target in U.targeted_rounds(clean_logits, fooled, n_target_classes):
        adv, found, dist = fab_min_norm(
            logits_fn, x[todo], y[todo], target, norm=norm, n_iter=n_iter,
            alpha_max=alpha_max, eta=eta, beta=beta, final_search_steps=final_search_steps)
        ok = found & (dist <= eps)
        x_adv[todo[ok]] = adv[ok]
        fooled[todo[ok]] = True
    return x_adv, fooled


def fab_untargeted(logits_fn, x, y, *, eps, norm="linf", n_iter=100, n_restarts=1, seed=0,
                   alpha_max=0.1, eta=1.05, beta=0.9, final_search_steps=3):
    """Untargeted FAB as run by AutoAttack's plus version (5 restarts, no final search): each
    restart attacks the examples not fooled yet, the first from x, the later ones from a random
    point at distance eps / 2; an example is fooled when a misclassified point within eps is
    found. Returns (x_adv, fooled); x_adv is x where not fooled."""
    geometry.check_number("eps", eps, strict=True)
    n_restarts = geometry.check_number("n_restarts", n_restarts, low=1, whole=True)
    U.check_seed(seed)
    x, y = _check(x, y, norm, n_iter, alpha_max, eta, beta, final_search_steps)
    x_adv, fooled = x.copy(), np.zeros(len(x), bool)
    if len(x) == 0:
        return x_adv, fooled
    fooled = U.predict_logits(logits_fn, x).argmax(axis=1) != y  # already misclassified
    for restart in range(n_restarts):
        todo = np.flatnonzero(~fooled)
        if todo.size == 0:
            break
        adv, found, dist = fab_min_norm(
            logits_fn, x[todo], y[todo], None, norm=norm, n_iter=n_iter, alpha_max=alpha_max,
            eta=eta, beta=beta, final_search_steps=final_search_steps,
            start_radius=0.5 * eps if restart > 0 else 0.0,
            seed=int(U.seed_pair(seed, restart)[0]))
        ok = found & (dist <= eps)
        x_adv[todo[ok]] = adv[ok]
        fooled[todo[ok]] = True
    return x_adv, fooled
