"""Shared plumbing of the AutoAttack components (APGD, FAB, Square): checks of the image and label
arrays and seeds, stateless seeds, and a cache of compiled per-batch graphs (one trace per
model). Norms, numbers and the threat model are checked by `atamp_tf.attacks.geometry`."""
import weakref

import numpy as np
import tensorflow as tf


def check_images(x, name="x"):
    """Returns x as a float32 numpy NHWC array in [0, 1]; raises ValueError otherwise."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"{name} must be a 4-D NHWC image batch, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} must hold float pixels in [0, 1], got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    if x.size and (np.nanmin(x) < 0.0 or np.nanmax(x) > 1.0 or np.isnan(x).any()):
        raise ValueError(f"{name} must hold pixels in [0, 1], got range "
                         f"[{np.nanmin(x)}, {np.nanmax(x)}] (NaN: {np.isnan(x).any()})")
    return x


def check_labels(y, n, num_classes=None, name="y"):
    """Returns y as an int32 numpy vector of length n (labels in [0, num_classes))."""
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must be a vector of {n} integer labels, got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must hold integer labels, got dtype {y.dtype}")
    if num_classes is not None and y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{name} must hold labels in [0, {num_classes}), got range "
                         f"[{y.min()}, {y.max()}]")
    return y.astype(np.int32, copy=False)


def seed_pair(seed, *salt):
    """A stateless-RNG seed (shape [2], int64) from a user seed and integers naming the call."""
    check_seed(seed)
    mixed = np.random.SeedSequence([int(seed), *[int(s) for s in salt]]).generate_state(2)
    return (mixed.astype(np.int64) & 0x7FFFFFFF)


def check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


_SPECS = {"y": ([None], tf.int32), "f": ([], tf.float32), "i": ([], tf.int32),
          "s": ([2], tf.int64)}


def signature(image_shape, kinds):
    """A tf.function input_signature: "x" a batch of images of image_shape, "y" labels, "f" a
    float, "i" an int, "s" a seed pair; e.g. signature((28, 28, 1), "xyfs")."""
    return [tf.TensorSpec([None, *image_shape], tf.float32) if k == "x" else
            tf.TensorSpec(*_SPECS[k]) for k in kinds]


def flat(t):
    return tf.reshape(t, [tf.shape(t)[0], -1])


def gather_label(logits, labels):
    return tf.gather(logits, labels, axis=1, batch_dims=1)


def as_logits_callable(fn):
    """A TF-traceable float32 logits function: Keras models are called with training=False,
    and low-precision outputs (mixed-precision models) are cast to float32."""
    if not callable(fn):
        raise ValueError(f"model / logits_fn must be callable (a Keras model or a function "
                         f"mapping [0,1] NHWC float32 images to logits), got {type(fn).__name__}")
    import keras
    if isinstance(fn, keras.layers.Layer):
        return lambda x: tf.cast(fn(x, training=False), tf.float32)
    return lambda x: tf.cast(fn(x), tf.float32)


def numpy_logits_callable(predict_fn, num_classes):
    """Wraps a numpy function (float32 NHWC -> logits [n, num_classes]) for use inside a graph."""
    if not callable(predict_fn):
        raise ValueError(f"predict_fn must be callable, got {type(predict_fn).__name__}")

    def call_numpy(a):
        out = np.asarray(predict_fn(np.asarray(a, np.float32)), np.float32)
        if out.shape != (a.shape[0], num_classes):
            raise ValueError(f"predict_fn must return logits of shape ({a.shape[0]}, "
                             f"{num_classes}), got {out.shape}")
        return out

    def logits(x):
        out = tf.numpy_function(call_numpy, [x], tf.float32, stateful=False)
        out.set_shape([None, num_classes])
        return out
    return logits


_CACHE = weakref.WeakKeyDictionary()


def compiled(owner, key, build):
    """Returns build() (a tf.function) cached per (owner, key), so a model is traced once per
    component and image shape rather than once per batch. owner: the user's model / function;
    owners that cannot be weakly referenced get a fresh graph on every call."""
    try:
        per_owner = _CACHE.setdefault(owner, {})
    except TypeError:
        return build()
    if key not in per_owner:
        per_owner[key] = build()
    return per_owner[key]


def predict_logits(logits_fn, x, batch_size=500):
    """Logits of numpy images through a traceable logits function, batch by batch (compiled)."""
    spec = tf.TensorSpec([None, *x.shape[1:]], tf.float32)
    fn = compiled(logits_fn, ("predict", x.shape[1:]),
                  lambda: tf.function(as_logits_callable(logits_fn), input_signature=[spec],
                                      autograph=False))
    outs = [np.asarray(fn(x[i:i + batch_size]), np.float32)
            for i in range(0, len(x), batch_size)]
    if not outs:
        return np.zeros((0, 0), np.float32)
    out = np.concatenate(outs)
    if out.ndim != 2 or out.shape[0] != len(x):
        raise ValueError(f"the model must return logits of shape [batch, classes], got "
                         f"{out.shape} for {len(x)} inputs")
    return out


def targeted_rounds(clean_logits, fooled, n_target_classes):
    """The targeted components' loop (APGD-T, FAB-T): one round per target rank, the 2nd,
    3rd, ... highest clean logit, over the examples not fooled yet. Yields (indices, targets);
    the caller marks successes in `fooled` in place, so later rounds skip them."""
    num_classes = clean_logits.shape[1]
    for rank in range(2, min(n_target_classes, num_classes - 1) + 2):
        todo = np.flatnonzero(~fooled)
        if todo.size == 0:
            return
        yield todo, np.argsort(clean_logits[todo], axis=1, kind="stable")[:, -rank].astype(np.int32)
