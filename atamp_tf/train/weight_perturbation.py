"""AMP's weight perturbation Delta: one ascent step and the projection onto its ball.

Scopes (the paper leaves this open; see WORKSPACE.md, "Decisions"):
  "tensor": each parameter tensor has its own L2 ball of radius delta, as in the official AMP
            code (hiyouga/AMP-Regularizer) whose delta values the paper reports. Default.
  "global": one L2 ball of radius delta over the whole weight vector (paper, eq. 7).
  "awp":    AWP's layer-wise perturbation (Wu et al. 2020): kernels only (rank >= 2), each
            placed on the sphere of radius delta * ||w|| in the ascent direction; vectors
            (BatchNorm, biases) are not perturbed.
All functions are pure: lists of tensors in, lists of tensors out.
"""
import tensorflow as tf

SCOPES = ("tensor", "global", "awp")
_TINY = 1e-12


def check_scope(scope):
    if scope not in SCOPES:
        raise ValueError(f"amp_scope must be one of {SCOPES}, got {scope!r}")


def ascend(deltas, grads, weights, *, radius, xi, scope):
    """Delta <- Proj(Delta + xi * grad) for the given scope; returns the new list of Delta."""
    stepped = [d + xi * g for d, g in zip(deltas, grads)]
    if scope == "tensor":
        return [s * tf.minimum(1.0, radius / tf.maximum(tf.norm(s), _TINY)) for s in stepped]
    if scope == "global":
        norm = tf.linalg.global_norm(stepped)
        scale = tf.minimum(1.0, radius / tf.maximum(norm, _TINY))
        return [s * scale for s in stepped]
    if scope == "awp":
        out = []
        for s, w in zip(stepped, weights):
            if len(w.shape) < 2:
                out.append(tf.zeros_like(s))
            else:
                out.append(s * (radius * tf.norm(w) / tf.maximum(tf.norm(s), _TINY)))
        return out
    raise ValueError(f"amp_scope must be one of {SCOPES}, got {scope!r}")
