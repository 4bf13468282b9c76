"""Auto-PGD (Croce & Hein 2020): APGD-CE, APGD-DLR and targeted APGD-T, as in AutoAttack.

Follows the reference (fra31/auto-attack, `autopgd_base.py`): step size 2*eps, momentum 0.75,
checkpoints every 22%, 19%, ... of the iterations (shrinking by 3%, floor 6%), step halved where
the loss rose in at most rho = 75% of the steps since the last checkpoint or the best loss did
not improve after an unreduced step, then restart from the best point; random start on the
eps-sphere (L2) or the Linf surface; an example counts as fooled if any iterate was
misclassified. APGD-T maximises the targeted DLR loss once per target: the 2nd, 3rd, ... highest
logit of the clean input. `n_restarts` reruns APGD from a fresh random start on the examples
no earlier restart fooled (AutoAttack's "plus" version: 5); `eot_iter` averages the gradient
over that many calls of the model (Expectation over Transformation, the "rand" version's 20,
for randomised defences; the logits and loss are the last call's, as the reference's).
One run is one compiled while-loop over a batch (vectorised).
Differs from the reference: the loop stops once every example of the batch is misclassified
(the set of fooled examples is unchanged; the reference keeps iterating).
"""
import numpy as np
import tensorflow as tf

from atamp_tf.attacks import _aa_utils as U
from atamp_tf.attacks import geometry

LOSSES = ("ce", "dlr", "dlr-targeted")


def ce_loss(logits, y, y_target=None):
    """Per-example cross-entropy of the true label (ascended by APGD-CE)."""
    return geometry.cross_entropy(logits, y)


def dlr_loss(logits, y, y_target=None):
    """Untargeted DLR: -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12); needs >= 3 classes."""
    top = tf.math.top_k(logits, k=3).values
    z_y = U.gather_label(logits, y)
    y_is_top = tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), y)
    z_other = tf.where(y_is_top, top[:, 1], top[:, 0])
    return -(z_y - z_other) / (top[:, 0] - top[:, 2] + 1e-12)


def dlr_targeted_loss(logits, y, y_target):
    """Targeted DLR: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12); needs >= 4 classes."""
    top = tf.math.top_k(logits, k=4).values
    z_y = U.gather_label(logits, y)
    z_t = U.gather_label(logits, y_target)
    return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


_LOSS_FNS = {"ce": ce_loss, "dlr": dlr_loss, "dlr-targeted": dlr_targeted_loss}
_MIN_CLASSES = {"ce": 2, "dlr": 3, "dlr-targeted": 4}


def checkpoint_schedule(n_iter):
    """(first checkpoint length, minimum length, decrement) of the reference, in iterations."""
    return max(int(0.22 * n_iter), 1), max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1)


def _build(logits_fn, norm, loss_name, image_shape, eot_iter=1):
    fn = U.as_logits_callable(logits_fn)
    loss_fn = _LOSS_FNS[loss_name]

    def one_call(xa, y, yt):
        with tf.GradientTape() as tape:
            tape.watch(xa)
            logits = fn(xa)
            loss = loss_fn(logits, y, yt)
            total = tf.reduce_sum(loss)
        return logits, loss, tape.gradient(total, xa)

    def loss_and_grad(xa, y, yt):
        logits, loss, grad = one_call(xa, y, yt)
        if eot_iter == 1:
            return logits, loss, grad

        def eot_body(i, logits, loss, grad_sum):
            logits, loss, grad = one_call(xa, y, yt)
            return i + 1, logits, loss, grad_sum + grad

        _, logits, loss, grad_sum = tf.while_loop(
            lambda i, *_: i < eot_iter, eot_body, (tf.constant(1), logits, loss, grad))
        return logits, loss, grad_sum / float(eot_iter)

    def project(z, x, eps):
        return geometry.project_autoattack(z, x, eps=eps, norm=norm)

    @tf.function(input_signature=U.signature(image_shape, "xyyfiiiifs"), autograph=False)
    def run(x, y, yt, eps, n_iter, k0, k_min, k_decr, rho, seed):
        x_adv = geometry.random_on_sphere(x, radius=eps, norm=norm, seed=seed)
        logits, loss, grad = loss_and_grad(x_adv, y, yt)
        acc = tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), y)
        batch = tf.shape(x)[0]
        state = dict(
            i=tf.constant(0), x_adv=x_adv, x_old=x_adv, grad=grad, x_best=x_adv,
            grad_best=grad, loss_best=loss, x_best_adv=x_adv, acc=acc,
            step=2.0 * eps * tf.ones([batch]), loss_prev=tf.zeros([batch]),
            n_incr=tf.zeros([batch]), since_check=tf.constant(0), k=k0,
            loss_best_check=loss, reduced_check=tf.ones([batch], tf.bool))

        def cond(s):
            return tf.logical_and(s["i"] < n_iter, tf.reduce_any(s["acc"]))

        def body(s):
            s = dict(s)
            x_adv, step = s["x_adv"], geometry.per_example(s["step"], x)
            momentum = x_adv - s["x_old"]
            a = tf.where(s["i"] > 0, 0.75, 1.0)
            if norm == "linf":
                z = project(x_adv + step * tf.sign(s["grad"]), x, eps)
            else:
                z = project(x_adv + step * geometry.normalize(s["grad"], "l2"), x, eps)
            x_new = project(x_adv + (z - x_adv) * a + momentum * (1.0 - a), x, eps)
            logits, loss, grad = loss_and_grad(x_new, y, yt)
            pred_ok = tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), y)
            s["acc"] = tf.logical_and(s["acc"], pred_ok)
            s["x_best_adv"] = tf.where(geometry.per_example(~pred_ok, x), x_new, s["x_best_adv"])
            s["n_incr"] += tf.cast(loss > s["loss_prev"], tf.float32)
            s["loss_prev"] = loss
            better = loss > s["loss_best"]
            s["x_best"] = tf.where(geometry.per_example(better, x), x_new, s["x_best"])
            s["grad_best"] = tf.where(geometry.per_example(better, x), grad, s["grad_best"])
            s["loss_best"] = tf.where(better, loss, s["loss_best"])
            since = s["since_check"] + 1
            check = tf.equal(since, s["k"])
            oscillating = s["n_incr"] <= tf.cast(s["k"], tf.float32) * rho
            stalled = tf.logical_and(~s["reduced_check"], s["loss_best_check"] >= s["loss_best"])
            halve = tf.logical_and(check, tf.logical_or(oscillating, stalled))
            s["reduced_check"] = tf.where(check, halve, s["reduced_check"])
            s["loss_best_check"] = tf.where(check, s["loss_best"], s["loss_best_check"])
            s["step"] = tf.where(halve, s["step"] / 2.0, s["step"])
            s["x_adv"] = tf.where(geometry.per_example(halve, x), s["x_best"], x_new)
            s["grad"] = tf.where(geometry.per_example(halve, x), s["grad_best"], grad)
            s["x_old"] = x_adv
            s["n_incr"] = tf.where(check, tf.zeros_like(s["n_incr"]), s["n_incr"])
            s["k"] = tf.where(check, tf.maximum(s["k"] - k_decr, k_min), s["k"])
            s["since_check"] = tf.where(check, 0, since)
            s["i"] += 1
            return (s,)

        (state,) = tf.while_loop(cond, body, (state,))
        fooled = ~state["acc"]
        return tf.where(geometry.per_example(fooled, x), state["x_best_adv"], x), fooled

    return run


def _check_common(x, y, eps, norm, n_iter, seed, eot_iter=1):
    geometry.check_norm(norm)
    geometry.check_number("eps", eps, strict=True)
    geometry.check_number("n_iter", n_iter, low=1, whole=True)
    geometry.check_number("eot_iter", eot_iter, low=1, whole=True)
    U.check_seed(seed)
    x = U.check_images(x)
    return x, U.check_labels(y, len(x))


def apgd(logits_fn, x, y, *, eps, norm="linf", n_iter=100, loss="ce", y_target=None, seed=0,
         rho=0.75, eot_iter=1):
    """One APGD run (no restarts) on a batch. Returns (x_adv, fooled): x_adv is a misclassified
    iterate inside the eps-ball where fooled, else x. loss: "ce", "dlr" or "dlr-targeted" (then
    y_target gives one target label per example); eot_iter: model calls per gradient."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    x, y = _check_common(x, y, eps, norm, n_iter, seed, eot_iter)
    if loss == "dlr-targeted":
        if y_target is None:
            raise ValueError('y_target is required with loss="dlr-targeted"')
        y_target = U.check_labels(y_target, len(x), name="y_target")
    else:
        y_target = y
    x_adv, fooled = x.copy(), np.zeros(len(x), bool)
    if len(x) == 0:
        return x_adv, fooled
    clean_logits = U.predict_logits(logits_fn, x)
    _check_classes(clean_logits, loss)
    fooled = clean_logits.argmax(axis=1) != y  # already misclassified
    todo = np.flatnonzero(~fooled)
    if todo.size == 0:
        return x_adv, fooled
    run = U.compiled(logits_fn, ("apgd", norm, loss, x.shape[1:], int(eot_iter)),
                     lambda: _build(logits_fn, norm, loss, x.shape[1:], int(eot_iter)))
    k0, k_min, k_decr = checkpoint_schedule(n_iter)
    adv, ok = run(x[todo], y[todo], y_target[todo], np.float32(eps), np.int32(n_iter),
                  np.int32(k0), np.int32(k_min), np.int32(k_decr), np.float32(rho),
                  U.seed_pair(seed, 0))
    ok = ok.numpy()
    x_adv[todo[ok]] = adv.numpy()[ok]
    fooled[todo[ok]] = True
    return x_adv, fooled


def _check_classes(logits, loss):
    if logits.shape[1] < _MIN_CLASSES[loss]:
        raise ValueError(f"APGD with loss {loss!r} needs at least {_MIN_CLASSES[loss]} "
                         f"classes, the model has {logits.shape[1]}")
    return logits.shape[1]


def apgd_targeted(logits_fn, x, y, *, eps, norm="linf", n_iter=100, n_target_classes=9,
                  seed=0, rho=0.75):
    """APGD-T: targeted DLR, one run per target (the 2nd, 3rd, ... highest clean logit) on the
    examples not fooled yet, each from its own random start. Returns (x_adv, fooled)."""
    x, y = _check_common(x, y, eps, norm, n_iter, seed)
    n_target_classes = geometry.check_number("n_target_classes", n_target_classes, low=1,
                                             whole=True)
    x_adv, fooled = x.copy(), np.zeros(len(x), bool)
    if len(x) == 0:
        return x_adv, fooled
    clean_logits = U.predict_logits(logits_fn, x)
    _check_classes(clean_logits, "dlr-targeted")
    fooled = clean_logits.argmax(axis=1) != y  # already misclassified
    for round_index, (todo, target) in enumerate(
            U.targeted_rounds(clean_logits, fooled, n_target_classes)):
        # a fresh random start per target, as the reference (its generator moves on)
        round_seed = int(U.seed_pair(seed, round_index)[0])
        adv, ok = apgd(logits_fn, x[todo], y[todo], eps=eps, norm=norm, n_iter=n_iter,
                       loss="dlr-targeted", y_target=target, seed=round_seed, rho=rho)
        x_adv[todo[ok]] = adv[ok]
        fooled[todo[ok]] = True
    return x_adv, fooled


def apgd_restarts(logits_fn, x, y, *, eps, norm="linf", n_iter=100, loss="ce", n_restarts=1,
                  seed=0, rho=0.75, eot_iter=1):
    """Untargeted APGD ("ce" or "dlr") with n_restarts runs, each from its own random start on
    the examples no earlier run fooled, as the reference's APGDAttack.perturb. The first run
    is apgd(seed=seed). Returns (x_adv, fooled)."""
    if loss not in ("ce", "dlr"):
        raise ValueError(f"loss must be 'ce' or 'dlr' for untargeted restarts, got {loss!r}")
    n_restarts = geometry.check_number("n_restarts", n_restarts, low=1, whole=True)
    x, y = _check_common(x, y, eps, norm, n_iter, seed, eot_iter)
    x_adv, fooled = x.copy(), np.zeros(len(x), bool)
    for restart in range(n_restarts):
        todo = np.flatnonzero(~fooled)
        if todo.size == 0:
            break
        restart_seed = seed if restart == 0 else int(U.seed_pair(seed, 1000 + restart)[0])
        adv, ok = apgd(logits_fn, x[todo], y[todo], eps=eps, norm=norm, n_iter=n_iter,
                       loss=loss, seed=restart_seed, rho=rho, eot_iter=eot_iter)
        x_adv[todo[ok]] = adv[ok]
        fooled[todo[ok]] = True
    return x_adv, fooled

