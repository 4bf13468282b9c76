"""Datasets -> tf.data: images float32 in [0, 1] (NHWC), labels int32.

One entry point, `make_dataset`, turns a dataset name and a split into batches, with the
paper's training augmentation (pad-and-crop, horizontal flip; optional cutout) and, for RST,
pseudo-labelled extra data mixed into every batch. `load_arrays` returns the same examples as
numpy arrays. Normalisation is not done here: it is a layer of the model.

Sources, by precedence:
- `npz_dir`: local `.npz` arrays (`x` uint8 N x H x W x C, `y` int labels), either in
  `npz_dir/<name>/` or in `npz_dir` itself. Split `train` reads `train.npz` or, if absent,
  every `train_*.npz` concatenated in sorted order; `test` reads `test.npz`.
- `digits`: scikit-learn's bundled 8x8 handwritten digits (1,797 images, values 0..16 scaled
  by 1/16). Fixed split: `train_test_split(test_size=0.2, random_state=0, stratify=target)`
  on the images in sklearn's order -> 1,437 train / 360 test; each split keeps the order that
  call returns. Offline, so it is the quick start's and the tests' default.
- tensorflow-datasets (`svhn` = `svhn_cropped`, `cifar10`, `cifar100`, `mnist`) from
  `data_dir`, else `$TFDS_DATA_DIR`, else `~/tensorflow_datasets`. Never downloads: a missing
  dataset raises `DataNotPreparedError` saying how to prepare it elsewhere.

Held-out split (`holdout=K`, train's `--holdout_examples`): the LAST K examples of the
training split, in order, are split `holdout` (for checkpoint selection, never trained on),
and split `train` is the rest, the first size - K (tfds: `train[:size-K]` / `train[size-K:]`);
`num_examples` then takes the first N of either. Split `test` ignores `holdout`.

Determinism: with the same `seed`, two pipelines give identical batches in the same order,
epoch after epoch (shuffles are seeded and reshuffle each iteration from that seed; the
augmentation uses stateless random ops keyed by a seeded per-batch random stream that also
re-randomises each iteration).
"""
import dataclasses
import glob
import os

import numpy as np
import tensorflow as tf

SPLITS = ("train", "test", "holdout")  # holdout: the last `holdout` training examples
CROP_PADDING = 4  # pixels of padding before the random crop back to the image size
# How the crop pads: "reflect" as robust_overfitting (Rice et al. 2020, whose setup the paper's
# Table 1 follows); "zero" as torchvision's RandomCrop(padding=4) in TRADES, MART and AWP.
CROP_PAD_MODES = ("reflect", "zero")
DIGITS_TEST_SIZE = 0.2
DIGITS_SPLIT_SEED = 0
_TFDS_SHUFFLE_BUFFER_MAX = 100_000  # whole-split shuffle for every dataset used here


class DataNotPreparedError(ValueError):
    """A tensorflow-datasets dataset is not on disk; its message says how to prepare it."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What a dataset looks like: image shape (H, W, C), classes, per-channel mean / std."""
    name: str
    tfds_name: str | None
    image_shape: tuple
    num_classes: int
    mean: tuple
    std: tuple


# Published per-channel statistics of the training splits (pixels in [0, 1]); digits' values
# were computed from the fixed train split above (see tests/test_data.py).
_SPECS = {
    "digits": DatasetSpec("digits", None, (8, 8, 1), 10, (0.3054,), (0.3761,)),
    "mnist": DatasetSpec("mnist", "mnist", (28, 28, 1), 10, (0.1307,), (0.3081,)),
    "svhn": DatasetSpec("svhn", "svhn_cropped", (32, 32, 3), 10,
                        (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "cifar10": DatasetSpec("cifar10", "cifar10", (32, 32, 3), 10,
                           (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
    "cifar100": DatasetSpec("cifar100", "cifar100", (32, 32, 3), 100,
                            (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def get_spec(name):
    """Returns the DatasetSpec of `name`; unknown names raise ValueError listing known ones."""
    if name not in _SPECS:
        raise ValueError(f"Unknown dataset {name!r}; known datasets: {', '.join(sorted(_SPECS))}.")
    return _SPECS[name]


# ----------------------------------------------------------------------------- sources

@dataclasses.dataclass(frozen=True)
class _Source:
    """Unbatched (raw integer image, int32 label) examples, their count, and pixel scale."""
    dataset: tf.data.Dataset
    size: int
    scale: float
    from_disk: bool  # worth caching once decoded


def _is_int(value, minimum):
    return (isinstance(value, (int, np.integer)) and not isinstance(value, bool)
            and value >= minimum)


def _check_split(split, holdout):
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    if not _is_int(holdout, 0):
        raise ValueError(f"holdout must be a non-negative integer (the number of training "
                         f"examples held out), got {holdout!r}.")
    if split == "holdout" and holdout == 0:
        raise ValueError("holdout=0: split 'holdout' is the last `holdout` training examples; "
                         "pass holdout > 0.")


def _split_range(split, size, holdout, name, place=""):
    """(start, stop, description for errors) of `split` inside the `size` examples stored for
    it: train is the first size - holdout, holdout the last `holdout`, test all of them."""
    stored = _stored_split(split)
    if split == "test" or holdout == 0:
        return 0, size, f"{name} {stored}{place}"
    if holdout >= size:
        raise ValueError(f"holdout={holdout} must be below the {size} examples of {name} "
                         f"{stored}{place}, so that some are left to train on.")
    cut = size - holdout
    if split == "train":
        return 0, cut, f"{name} train[:{cut}] (holdout={holdout}){place}"
    return cut, size, f"{name} train[{cut}:] (the held-out last {holdout}){place}"


def _stored_split(split):
    """The split the examples of `split` are stored in (holdout is part of train)."""
    return "train" if split == "holdout" else split


def _check_num_examples(num_examples, size, where):
    if num_examples is None:
        return size
    if not _is_int(num_examples, 1):
        raise ValueError(f"num_examples must be a positive integer or None, got {num_examples!r}.")
    if num_examples > size:
        raise ValueError(f"num_examples={num_examples} exceeds the {size} examples of {where}.")
    return int(num_examples)


def _validate_arrays(x, y, spec, what):
    """Checks uint8 images of the spec's shape and labels in [0, num_classes); returns them."""
    if x.ndim == 3 and spec.image_shape[-1] == 1:
        x = x[..., None]
    if x.dtype != np.uint8:
        raise ValueError(f"{what}: 'x' must be uint8 images, got dtype {x.dtype}.")
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(spec.image_shape):
        raise ValueError(f"{what}: images have shape {tuple(x.shape[1:])}, expected "
                         f"{tuple(spec.image_shape)} for dataset {spec.name!r}.")
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(x) or y.dtype.kind not in "iu":
        raise ValueError(f"{what}: 'y' must be {len(x)} integer labels, got shape {y.shape} "
                         f"dtype {y.dtype}.")
    if len(y) and (y.min() < 0 or y.max() >= spec.num_classes):
        raise ValueError(f"{what}: labels span [{y.min()}, {y.max()}], expected "
                         f"[0, {spec.num_classes - 1}] for dataset {spec.name!r}.")
    return x, y.astype(np.int32)


def read_npz(path, spec):
    """Reads `x` (uint8 images) and `y` (int labels) from one .npz, validated against spec."""
    if not os.path.isfile(path):
        raise ValueError(f"npz file {path!r} does not exist.")
    with np.load(path, allow_pickle=False) as z:
        if "x" not in z.files or "y" not in z.files:
            raise ValueError(f"{path}: expected arrays 'x' and 'y', found {sorted(z.files)}.")
        return _validate_arrays(z["x"], z["y"], spec, path)


NPZ_DIR_VARIABLE = "ATAMP_TF_NPZ_DIR"


def expand_npz_dir(npz_dir):
    """npz_dir with environment variables expanded: flagfiles say `--npz_dir=$ATAMP_TF_NPZ_DIR`
    so that no path to a machine's data is written into the repository."""
    expanded = os.path.expandvars(npz_dir)
    if "$" in expanded:
        raise ValueError(f"--npz_dir={npz_dir}: set the environment variable in it (e.g. "
                         f"{NPZ_DIR_VARIABLE}=../shared/data, the directory holding "
                         "<dataset>/{train,test}.npz).")
    return expanded


def _npz_files(npz_dir, name, split):
    """The .npz files holding `split`: train.npz, else train_*.npz sorted; test.npz."""
    if not os.path.isdir(npz_dir):
        raise ValueError(f"npz_dir {npz_dir!r} is not a directory.")
    folder = os.path.join(npz_dir, name)
    folder = folder if os.path.isdir(folder) else npz_dir
    single = os.path.join(folder, f"{split}.npz")
    if os.path.isfile(single):
        return [single]
    parts = sorted(glob.glob(os.path.join(folder, f"{split}_*.npz"))) if split == "train" else []
    if not parts:
        wanted = f"{split}.npz" + (" or train_*.npz" if split == "train" else "")
        raise ValueError(f"npz_dir: no {wanted} for dataset {name!r} in {folder!r}.")
    return parts


def _npz_arrays(spec, split, npz_dir):
    arrays = [read_npz(path, spec) for path in _npz_files(npz_dir, spec.name, split)]
    return np.concatenate([a[0] for a in arrays]), np.concatenate([a[1] for a in arrays])


def _digits_arrays(split):
    """The fixed digits split (see module docstring): uint8 values 0..16, int32 labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    x = digits.images.astype(np.uint8)[..., None]
    y = digits.target.astype(np.int32)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=DIGITS_TEST_SIZE, random_state=DIGITS_SPLIT_SEED, stratify=y)
    return (x_tr, y_tr) if split == "train" else (x_te, y_te)


def _resolve_data_dir(data_dir):
    return (data_dir or os.environ.get("TFDS_DATA_DIR")
            or os.path.join(os.path.expanduser("~"), "tensorflow_datasets"))


def _not_prepared_message(spec, data_dir):
    return (f"Dataset {spec.name!r} (tensorflow-datasets name {spec.tfds_name!r}) is not "
            f"prepared in data_dir {data_dir!r}, and atamp-tf never downloads. On a machine "
            f"with network run `tfds build {spec.tfds_name} --data_dir=DIR`, copy DIR here and "
            f"pass --data_dir=DIR (or set TFDS_DATA_DIR=DIR). Alternatively pass --npz_dir=DIR "
            f"with {spec.name}/train.npz and test.npz (x uint8 N x "
            f"{' x '.join(map(str, spec.image_shape))}, y int labels).")


def _tfds_builder(spec, data_dir):
    import tensorflow_datasets as tfds
    data_dir = _resolve_data_dir(data_dir)
    builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
    if not builder.is_prepared():
        raise DataNotPreparedError(_not_prepared_message(spec, data_dir))
    return builder


def _tfds_source(spec, split, data_dir, num_examples, holdout):
    import tensorflow_datasets as tfds
    builder = _tfds_builder(spec, data_dir)
    stored = _stored_split(split)
    size = builder.info.splits[stored].num_examples
    start, stop, where = _split_range(split, size, holdout, spec.name)
    n = _check_num_examples(num_examples, stop - start, where)
    read_config = tfds.ReadConfig(try_autocache=False)
    ds = builder.as_dataset(split=f"{stored}[{start}:{start + n}]" if n < size else stored,
                            as_supervised=True, shuffle_files=False, read_config=read_config)
    ds = ds.map(lambda x, y: (x, tf.cast(y, tf.int32)))
    return _Source(ds, n, 255.0, from_disk=True)


def _memory_source(x, y, scale, split, num_examples, holdout, name, place=""):
    start, stop, where = _split_range(split, len(x), holdout, name, place)
    n = _check_num_examples(num_examples, stop - start, where)
    ds = tf.data.Dataset.from_tensor_slices((x[start:start + n], y[start:start + n]))
    return _Source(ds, n, scale, from_disk=False)


def _source(spec, split, data_dir, npz_dir, num_examples, holdout=0):
    _check_split(split, holdout)
    stored = _stored_split(split)
    if npz_dir is not None:
        npz_dir = expand_npz_dir(npz_dir)
        x, y = _npz_arrays(spec, stored, npz_dir)
        return _memory_source(x, y, 255.0, split, num_examples, holdout, spec.name,
                              f" in {npz_dir}")
    if spec.tfds_name is None:
        x, y = _digits_arrays(stored)
        return _memory_source(x, y, 16.0, split, num_examples, holdout, "digits")
    return _tfds_source(spec, split, data_dir, num_examples, holdout)


# ------------------------------------------------------------------------ augmentation

def to_unit(x, scale):
    """Raw integer pixels -> float32 in [0, 1] (the same formula in numpy and TensorFlow)."""
    return tf.cast(x, tf.float32) / tf.constant(scale, tf.float32)


def random_crop(x, seed, padding=CROP_PADDING, pad_mode="reflect"):
    """Pads each image of a batch by `padding` (`pad_mode`: reflect or zero) and crops it
    back at a random offset."""
    height, width = x.shape[1], x.shape[2]
    offsets = tf.random.stateless_uniform([tf.shape(x)[0], 2], seed, minval=0,
                                          maxval=2 * padding + 1, dtype=tf.int32)
    mode = {"reflect": "REFLECT", "zero": "CONSTANT"}[pad_mode]
    padded = tf.pad(x, [[0, 0], [padding, padding], [padding, padding], [0, 0]], mode=mode)
    rows = offsets[:, :1] + tf.range(height)[None, :]
    cols = offsets[:, 1:] + tf.range(width)[None, :]
    x = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(x, cols, axis=2, batch_dims=1)


def random_flip(x, seed):
    """Mirrors each image of a batch left-right with probability 1/2."""
    flip = tf.random.stateless_uniform([tf.shape(x)[0]], seed) < 0.5
    return tf.where(flip[:, None, None, None], tf.reverse(x, axis=[2]), x)


def cutout(x, seed, size):
    """Sets a size x size square to 0, wholly inside the image at a uniform position, as the
    Cutout of robust_overfitting (Rice et al. 2020) whose Table 4/5 baseline the paper uses."""
    height, width = x.shape[1], x.shape[2]
    corners = tf.random.stateless_uniform([tf.shape(x)[0], 2], seed)
    room = tf.constant([max(height - size, 0) + 1, max(width - size, 0) + 1], tf.float32)
    corners = tf.cast(tf.floor(corners * room), tf.int32)
    top = corners[:, :1]
    left = corners[:, 1:]
    rows = tf.range(height)[None, :]
    cols = tf.range(width)[None, :]
    in_rows = (rows >= top) & (rows < top + size)
    in_cols = (cols >= left) & (cols < left + size)
    patch = in_rows[:, :, None, None] & in_cols[:, None, :, None]
    return tf.where(patch, tf.zeros_like(x), x)


def augment(x, seed, *, crop=True, flip=True, cutout_size=0, padding=CROP_PADDING,
            pad_mode="reflect"):
    """The training augmentation of a float batch, keyed by a stateless seed (shape [2])."""
    crop_seed, flip_seed, cutout_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 3))
    if crop:
        x = random_crop(x, crop_seed, padding, pad_mode)
    if flip:
        x = random_flip(x, flip_seed)
    if cutout_size:
        x = cutout(x, cutout_seed, cutout_size)
    return x


# ---------------------------------------------------------------------------- pipeline

def _check_args(batch_size, seed, cutout_size, crop_padding, crop_pad_mode, extra_npz,
                extra_fraction, training):
    if not _is_int(batch_size, 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if not _is_int(seed, 0):
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    if not _is_int(cutout_size, 0):
        raise ValueError(f"cutout must be a non-negative integer (patch side in pixels), "
                         f"got {cutout_size!r}.")
    if not _is_int(crop_padding, 0):
        raise ValueError(f"crop_padding must be a non-negative integer, got {crop_padding!r}.")
    if crop_pad_mode not in CROP_PAD_MODES:
        raise ValueError(f"crop_pad_mode must be one of {CROP_PAD_MODES}, got {crop_pad_mode!r}.")
    if not 0.0 <= extra_fraction < 1.0:
        raise ValueError(f"extra_fraction must be in [0, 1), got {extra_fraction!r}.")
    if (extra_npz is None) != (extra_fraction == 0.0):
        raise ValueError("extra_npz and extra_fraction > 0 go together: got "
                         f"extra_npz={extra_npz!r}, extra_fraction={extra_fraction!r}.")
    if extra_npz is not None and not training:
        raise ValueError("extra_npz is only used for training (training=True).")


def _extra_batches(extra_npz, spec, batch_size, seed):
    """Endless shuffled batches of the pseudo-labelled extra data, as float32 in [0, 1]."""
    x, y = read_npz(extra_npz, spec)
    if len(x) < batch_size:
        raise ValueError(f"{extra_npz}: {len(x)} extra examples, fewer than the {batch_size} "
                         "needed per batch.")
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True).repeat()
    return ds.batch(batch_size, drop_remainder=True).map(
        lambda xb, yb: (to_unit(xb, 255.0), yb))


def make_dataset(name, split, *, batch_size, training=False, data_dir=None, npz_dir=None,
                 seed=0, crop=True, flip=True, cutout=0, num_examples=None, extra_npz=None,
                 extra_fraction=0.0, drop_remainder=None, crop_padding=CROP_PADDING,
                 crop_pad_mode="reflect", holdout=0):
    """Batches of (x float32 [0, 1] NHWC, y int32) of one split of dataset `name`.

    training=True: one pass per iteration over the split (first `num_examples`), reshuffled
    each iteration, augmented, and, with `extra_npz`, `extra_fraction` of every batch drawn
    from the pseudo-labelled extra data (RST); drop_remainder defaults to True. Otherwise:
    the first `num_examples` in the split's order, unaugmented, drop_remainder False.
    `holdout`: the last `holdout` training examples are split "holdout", not "train".
    """
    spec = get_spec(name)
    _check_args(batch_size, seed, cutout, crop_padding, crop_pad_mode, extra_npz,
                extra_fraction, training)
    if drop_remainder is None:
        drop_remainder = training
    source = _source(spec, split, data_dir, npz_dir, num_examples, holdout)
    ds = source.dataset.cache() if source.from_disk else source.dataset
    to_float = lambda x, y: (to_unit(x, source.scale), y)  # noqa: E731
    if not training:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        ds = ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return _finish(ds)

    shuffle_seed, extra_seed, augment_seed, stream_seed = (
        int(s) for s in np.random.SeedSequence(int(seed)).generate_state(4))
    n_extra = int(round(batch_size * extra_fraction))
    if extra_npz is not None and not 0 < n_extra < batch_size:
        raise ValueError(f"extra_fraction={extra_fraction} of batch_size={batch_size} leaves "
                         f"{n_extra} extra examples per batch; need between 1 and "
                         f"{batch_size - 1}.")
    if drop_remainder and source.size < batch_size - n_extra:
        raise ValueError(f"{source.size} training examples of {name} {split} make no full "
                         f"batch of {batch_size - n_extra}; lower batch_size or pass "
                         "drop_remainder=False.")
    buffer = min(source.size, _TFDS_SHUFFLE_BUFFER_MAX) if source.from_disk else source.size
    ds = ds.shuffle(buffer, seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size - n_extra, drop_remainder=drop_remainder)
    ds = ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if extra_npz is not None:
        extra = _extra_batches(extra_npz, spec, n_extra, extra_seed)
        ds = tf.data.Dataset.zip(ds, extra).map(
            lambda a, b: (tf.concat([a[0], b[0]], 0), tf.concat([a[1], b[1]], 0)))
    stream = tf.data.Dataset.random(seed=stream_seed, rerandomize_each_iteration=True)

    def augment_batch(batch, key):
        x, y = batch
        seed_pair = tf.stack([tf.constant(augment_seed, tf.int64), key])
        return augment(x, seed_pair, crop=crop, flip=flip, cutout_size=int(cutout),
                       padding=crop_padding, pad_mode=crop_pad_mode), y

    ds = tf.data.Dataset.zip(ds, stream).map(
        augment_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return _finish(ds)


def _finish(ds):
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def load_arrays(name, split, *, data_dir=None, npz_dir=None, num_examples=None, holdout=0):
    """(x float32 [0, 1] NHWC, y int32) numpy arrays: make_dataset's evaluation examples."""
    spec = get_spec(name)
    source = _source(spec, split, data_dir, npz_dir, num_examples, holdout)
    ds = source.dataset.batch(4096).map(lambda x, y: (to_unit(x, source.scale), y))
    xs, ys = [], []
    for x, y in ds.as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    if not xs:
        return np.zeros((0, *spec.image_shape), np.float32), np.zeros((0,), np.int32)
    return np.concatenate(xs), np.concatenate(ys)
