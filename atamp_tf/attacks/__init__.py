"""Attacks as pure functions of (logits_fn, x, y, *, eps, ...); one module per attack."""
