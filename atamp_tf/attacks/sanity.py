"""Sanity checks of an attack evaluation (Carlini et al. 2019, "On evaluating adversarial
robustness"; AutoAttack's own checks), run on every report.

- every adversarial example lies in the eps-ball around its input and in [0, 1], measured on
  the arrays the attacks returned;
- no attack leaves accuracy above natural accuracy;
- a stronger attack is never weaker than the attack it extends (PGD-20 <= FGSM; the
  AutoAttack ensemble <= every white-box attack);
- the iterative attack has converged: PGD-100, which continues PGD-20 from the same start,
  fools at most `tolerance(n)` more examples (if it fools many more, more steps or restarts
  would likely lower robust accuracy further, and the reported number is not a bound);
- black-box attacks (SPSA, Square) are not clearly stronger than the best white-box attack:
  if they are, the gradients the white-box attacks follow are likely masked.
- the model itself, as the reference AutoAttack's checks.py does (`check_model`): two
  identical calls give identical logits (a randomised defence needs the `rand` version), the
  outputs are not probabilities (rows in [0, 1] summing to 1: the attacks' losses expect
  logits), no example has an all-zero input gradient, and PGD at a radius that covers the
  whole pixel box (L-inf 1, L2 sqrt(d)) brings accuracy to 0; and, from AutoAttack's own
  run, Square (black-box, run last) fooling examples the white-box components missed.
Comparisons allow `tolerance(n)`: half a percent plus two examples of n, since random starts
and random directions move a few examples either way.
"""
import dataclasses

import numpy as np
import tensorflow as tf
from absl import logging

from atamp_tf.attacks import geometry, registry
from atamp_tf.attacks.pgd import pgd

WHITE_BOX = registry.names(kind="white_box")
BLACK_BOX = registry.names(kind="black_box")
# (stronger, weaker): the stronger attack's accuracy must not exceed the weaker one's.
ORDER = registry.strength_order()
CONVERGENCE = registry.convergence_pairs()  # (longer, shorter): must agree within tolerance
BANNER = "!" * 72


@dataclasses.dataclass(frozen=True)
class Check:
    """One check's outcome, as stored in report.json's `checks` list."""
    name: str
    passed: bool
    detail: str

    def as_dict(self):
        return {"name": self.name, "passed": bool(self.passed), "detail": self.detail}


def tolerance(n):
    """Accuracy slack for comparisons between attacks on n examples: 0.5% + 2 / n."""
    return 0.005 + 2.0 / max(int(n), 1)


def perturbation_size(x, x_adv, norm):
    """Per-example distance ||x_adv - x|| in the threat model's norm (numpy, float64)."""
    return geometry.lp_norm_np(np.asarray(x_adv, np.float64) - np.asarray(x, np.float64), norm)


def check_perturbation(name, x, x_adv, *, norm, eps, atol=1e-5):
    """Every x_adv is within eps (+ float slack atol) of x in the norm, and inside [0, 1]."""
    if np.shape(x) != np.shape(x_adv):
        return Check(f"valid_examples:{name}", False,
                     f"shape {np.shape(x_adv)} of the adversarial examples differs from the "
                     f"inputs' {np.shape(x)}")
    dist = perturbation_size(x, x_adv, norm)
    largest = float(dist.max(initial=0.0))
    low = float(np.min(x_adv, initial=0.0))
    high = float(np.max(x_adv, initial=0.0))
    finite = bool(np.all(np.isfinite(x_adv)))
    outside = int((dist > eps + atol).sum())
    passed = finite and outside == 0 and low >= -atol and high <= 1.0 + atol
    detail = (f"largest {norm} distance {largest:.6g} (eps {eps:.6g}, {outside} of {len(dist)} "
              f"outside); pixels in [{low:.6g}, {high:.6g}]" + ("" if finite else "; NON-FINITE"))
    return Check(f"valid_examples:{name}", passed, detail)


def check_accuracies(accuracy, n):
    """Ordering checks between the attacks present in `accuracy` (name -> fraction)."""
    tol = tolerance(n)
    checks = []
    natural = accuracy.get("natural")
    if natural is not None:
        for name, acc in accuracy.items():
            if name != "natural":
                checks.append(Check(
                    f"not_above_natural:{name}", acc <= natural + tol,
                    f"{name} {acc:.4f} vs natural {natural:.4f} (tolerance {tol:.4f})"))
    for stronger, weaker in ORDER:
        if stronger in accuracy and weaker in accuracy:
            checks.append(Check(
                f"order:{stronger}<={weaker}", accuracy[stronger] <= accuracy[weaker] + tol,
                f"{stronger} {accuracy[stronger]:.4f} vs {weaker} {accuracy[weaker]:.4f} "
                f"(tolerance {tol:.4f})"))
    for longer, shorter in CONVERGENCE:
        if longer in accuracy and shorter in accuracy:
            gain = accuracy[shorter] - accuracy[longer]
            why = ("" if abs(gain) <= tol else
                   "; not converged: more steps or restarts would likely lower robust accuracy "
                   "further" if gain > 0 else
                   "; the longer attack did worse (without early stop it keeps its last "
                   "iterate, not its best): a stronger attack must not do better")
            checks.append(Check(
                f"converged:{longer}~{shorter}", abs(gain) <= tol,
                f"{longer} {accuracy[longer]:.4f} vs {shorter} {accuracy[shorter]:.4f}: the "
                f"extra steps fooled {gain:.4f} more (tolerance {tol:.4f}){why}"))
    white = {name: accuracy[name] for name in WHITE_BOX if name in accuracy}
    if white:
        best_name = min(white, key=white.get)
        for name in BLACK_BOX:
            if name in accuracy:
                passed = accuracy[name] >= white[best_name] - tol
                detail = (f"black-box {name} {accuracy[name]:.4f} vs best white-box {best_name} "
                          f"{white[best_name]:.4f} (tolerance {tol:.4f})")
                if not passed:
                    detail = "possible gradient masking: " + detail
                checks.append(Check(f"gradient_masking:{name}", passed, detail))
    return checks


def check_model(logits_fn, x, y, *, norm, randomised_ok=False):
    """The reference AutoAttack's model checks on (x, y) (numpy, a few hundred examples):
    `logits_fn` maps a float32 batch to logits (a TF-traceable callable, e.g. a Keras model
    in inference mode). randomised_ok: AutoAttack runs its rand version (EOT), made for
    randomised models, so differing calls pass (the reference skips the check then).
    Returns a list of Checks."""
    x = tf.constant(np.asarray(x, np.float32))
    y = tf.constant(np.asarray(y, np.int32))
    first, second = np.asarray(logits_fn(x)), np.asarray(logits_fn(x))
    deterministic = bool(np.array_equal(first, second))
    checks = [Check("model:deterministic", deterministic or randomised_ok,
                    f"two identical calls differ by at most {np.abs(first - second).max():.3g} "
                    + ("(AutoAttack runs its rand version, with EOT, for randomised models)"
                       if randomised_ok else
                       "(a randomised model needs AutoAttack's rand version)"))]
    probabilities = bool(first.min() >= 0 and first.max() <= 1
                         and np.allclose(first.sum(axis=1), 1.0, atol=1e-4))
    checks.append(Check("model:outputs_logits", not probabilities,
                        "the outputs are rows in [0, 1] summing to 1: probabilities, not logits"
                        if probabilities else "outputs are not probability rows"))
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(geometry.cross_entropy(logits_fn(x), y))
    grad = tape.gradient(loss, x)
    grad = np.zeros(x.shape, np.float32) if grad is None else grad.numpy()
    zero = int((np.abs(grad).reshape(len(grad), -1).sum(axis=1) == 0).sum())
    checks.append(Check("model:nonzero_gradients", zero == 0,
                        f"{zero} of {len(grad)} examples have an all-zero input gradient"))
    dims = float(np.prod(x.shape[1:]))
    eps = 1.0 if norm == "linf" else float(np.sqrt(dims))
    x_adv = pgd(logits_fn, x, y, eps=eps, step_size=eps / 8, steps=20, norm=norm,
                random_start=False)
    acc = float((np.asarray(logits_fn(x_adv)).argmax(1) == y.numpy()).mean())
    checks.append(Check("model:unbounded_attack_succeeds", acc <= tolerance(len(grad)),
                        f"PGD-20 at {norm} eps {eps:.4g} (the whole pixel box) leaves accuracy "
                        f"{acc:.4f}; it should be 0 (tolerance {tolerance(len(grad)):.4f})"))
    return checks


SQUARE_ALPHA = 0.002  # the reference's allowance for Square after the white-box components


def check_square_after_white_box(square_fooled, n):
    """AutoAttack runs Square last, on what the white-box components left robust: more than
    a fraction SQUARE_ALPHA of the examples fooled there means they missed points, a sign of
    masked gradients (the reference's check_square_sr)."""
    return Check("autoattack:square_after_white_box", square_fooled <= SQUARE_ALPHA * n,
                 f"Square fooled {square_fooled} of {n} examples the white-box components "
                 f"missed (allowed {SQUARE_ALPHA:.1%})")


def check_reported_accuracy(name, reported, recomputed, n):
    """An ensemble's own count of robust examples against the evaluation's recount from its
    outputs: they differ only by float noise at the boundary (at most 1 example or 0.1%);
    more means its robustness flags and its adversarial examples disagree."""
    allowed = max(1, int(0.001 * n))
    off = round(abs(reported - recomputed) * n)
    return Check(f"reported:{name}", off <= allowed,
                 f"{name} reported {reported:.4f}, its outputs recounted {recomputed:.4f}: "
                 f"{off} example(s) apart (allowed {allowed})")


def warn_failures(checks):
    """Logs every failed check as a loud warning; returns the failed ones."""
    failed = [check for check in checks if not check.passed]
    if failed:
        lines = [BANNER, f"WARNING: {len(failed)} sanity check(s) FAILED: the robustness "
                         "numbers below may be wrong"]
        lines += [f"  {check.name}: {check.detail}" for check in failed]
        lines.append(BANNER)
        logging.warning("\n".join(lines))
    return failed
