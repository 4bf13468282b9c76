"""Tests of atamp_tf.data on real data read offline: a TFDS dataset written to a temporary
data_dir, scikit-learn's digits, .npz files written here and the shared benchmark copies."""
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from atamp_tf import data

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _batches(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


def _write_npz(path, x, y, **extra):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, y=y, **extra)
    return str(path)


def _cifar_like(n, seed, low=0, high=256):
    rng = np.random.default_rng(seed)
    return rng.integers(low, high, (n, 32, 32, 3), dtype=np.uint8)


# ------------------------------------------------------------------- a real TFDS dataset

@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """A real `cifar10` TFDS dataset (40 train / 12 test) written by a tfds builder."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.image_classification import cifar

    arrays = {"train": _cifar_like(40, 1), "test": _cifar_like(12, 2)}
    labels = {split: np.arange(len(x)) % 10 for split, x in arrays.items()}

    class TinyCifar10(cifar.Cifar10, skip_registration=True):
        name = "cifar10"

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(split) for split in arrays}

        def _generate_examples(self, split):
            for i, (x, y) in enumerate(zip(arrays[split], labels[split])):
                yield i, {"id": f"{split}_{i}", "image": x, "label": int(y)}

    root = tmp_path_factory.mktemp("tfds")
    TinyCifar10(data_dir=str(root)).download_and_prepare()
    assert tfds.builder("cifar10", data_dir=str(root)).is_prepared()
    return str(root), arrays, labels


def test_tfds_reads_prepared_dataset(tfds_dir):
    root, arrays, labels = tfds_dir
    x, y = data.load_arrays("cifar10", "train", data_dir=root)
    assert x.shape == (40, 32, 32, 3) and x.dtype == np.float32 and y.dtype == np.int32
    assert 0.0 <= x.min() and x.max() <= 1.0
    written = {img.tobytes(): lab for img, lab in zip(arrays["train"], labels["train"])}
    read = {np.rint(img * 255).astype(np.uint8).tobytes(): lab for img, lab in zip(x, y)}
    assert read == written  # every example, exact pixels and labels
    batches = _batches(data.make_dataset("cifar10", "train", batch_size=16, data_dir=root))
    assert [b[0].shape[0] for b in batches] == [16, 16, 8]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)


def test_tfds_num_examples_is_a_prefix(tfds_dir):
    root, _, _ = tfds_dir
    x_all, y_all = data.load_arrays("cifar10", "test", data_dir=root)
    x, y = data.load_arrays("cifar10", "test", data_dir=root, num_examples=5)
    np.testing.assert_array_equal(x, x_all[:5])
    np.testing.assert_array_equal(y, y_all[:5])
    with pytest.raises(ValueError, match="num_examples=13 exceeds the 12"):
        data.load_arrays("cifar10", "test", data_dir=root, num_examples=13)


def test_tfds_holdout_is_the_slice_after_the_training_examples(tfds_dir):
    root, _, _ = tfds_dir
    x_all, y_all = data.load_arrays("cifar10", "train", data_dir=root)
    x_tr, y_tr = data.load_arrays("cifar10", "train", data_dir=root, holdout=15)
    x_ho, y_ho = data.load_arrays("cifar10", "holdout", data_dir=root, holdout=15)
    assert (len(x_tr), len(x_ho)) == (25, 15)
    np.testing.assert_array_equal(np.concatenate([x_tr, x_ho]), x_all)  # train[:25] + train[25:]
    np.testing.assert_array_equal(np.concatenate([y_tr, y_ho]), y_all)
    x, _ = data.load_arrays("cifar10", "holdout", data_dir=root, holdout=15, num_examples=4)
    np.testing.assert_array_equal(x, x_all[25:29])
    seen = np.concatenate([b[1] for b in _batches(data.make_dataset(
        "cifar10", "train", batch_size=5, training=True, data_dir=root, holdout=15))])
    assert sorted(seen) == sorted(y_tr)  # an epoch is the 25 training examples, reshuffled
    with pytest.raises(ValueError, match="holdout=40 must be below the 40 examples"):
        data.load_arrays("cifar10", "train", data_dir=root, holdout=40)


def test_tfds_training_and_env_data_dir(tfds_dir, monkeypatch):
    root, _, _ = tfds_dir
    monkeypatch.setenv("TFDS_DATA_DIR", root)
    ds = data.make_dataset("cifar10", "train", batch_size=8, training=True, seed=1)
    batches = _batches(ds)
    assert len(batches) == 5 and all(b[0].shape == (8, 32, 32, 3) for b in batches)
    assert ds.element_spec[0].shape.as_list() == [8, 32, 32, 3]
    again = _batches(data.make_dataset("cifar10", "train", batch_size=8, training=True, seed=1,
                                       data_dir=root))
    for (xa, ya), (xb, yb) in zip(batches, again):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_not_prepared_error_names_dataset_dir_and_fix(tmp_path):
    empty = str(tmp_path / "empty")
    with pytest.raises(data.DataNotPreparedError) as info:
        data.make_dataset("svhn", "train", batch_size=4, data_dir=empty)
    message = str(info.value)
    assert "'svhn'" in message and empty in message
    assert "tfds build svhn_cropped --data_dir=DIR" in message and "--npz_dir" in message
    assert isinstance(info.value, ValueError)
    assert not os.path.exists(empty)  # nothing written, nothing downloaded


def test_not_prepared_error_for_other_dataset_in_prepared_dir(tfds_dir):
    root, _, _ = tfds_dir
    with pytest.raises(data.DataNotPreparedError, match="tfds build mnist"):
        data.load_arrays("mnist", "test", data_dir=root)


# ----------------------------------------------------------------------- specs, digits

def test_get_spec_and_unknown_name():
    spec = data.get_spec("cifar100")
    assert (spec.tfds_name, spec.image_shape, spec.num_classes) == ("cifar100", (32, 32, 3), 100)
    assert data.get_spec("svhn").tfds_name == "svhn_cropped"
    assert len(data.get_spec("mnist").mean) == 1
    with pytest.raises(ValueError, match="Unknown dataset 'imagenet'.*cifar10.*digits"):
        data.get_spec("imagenet")
    with pytest.raises(ValueError, match="Unknown dataset 'imagenet'"):
        data.make_dataset("imagenet", "train", batch_size=4)


def test_digits_split_and_statistics():
    x_tr, y_tr = data.load_arrays("digits", "train")
    x_te, y_te = data.load_arrays("digits", "test")
    assert x_tr.shape == (1437, 8, 8, 1) and x_te.shape == (360, 8, 8, 1)
    assert x_tr.min() == 0.0 and x_tr.max() == 1.0 and y_tr.dtype == np.int32
    assert set(np.unique(y_tr)) == set(range(10)) and set(np.unique(y_te)) == set(range(10))
    spec = data.get_spec("digits")
    np.testing.assert_allclose(spec.mean, [x_tr.mean()], atol=1e-4)
    np.testing.assert_allclose(spec.std, [x_tr.std()], atol=1e-4)
    # the evaluation pipeline yields the same examples in the same order
    batches = _batches(data.make_dataset("digits", "test", batch_size=100, num_examples=250))
    assert [len(b[1]) for b in batches] == [100, 100, 50]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x_te[:250])
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y_te[:250])


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        data.make_dataset("digits", "validation", batch_size=4)
    with pytest.raises(ValueError, match="batch_size"):
        data.make_dataset("digits", "train", batch_size=0)
    with pytest.raises(ValueError, match="cutout"):
        data.make_dataset("digits", "train", batch_size=4, training=True, cutout=-1)
    with pytest.raises(ValueError, match="extra_npz"):
        data.make_dataset("digits", "train", batch_size=4, training=True, extra_fraction=0.5)
    with pytest.raises(ValueError, match="num_examples"):
        data.make_dataset("digits", "test", batch_size=4, num_examples=0)
    with pytest.raises(ValueError, match="no full batch"):
        data.make_dataset("digits", "test", batch_size=400, training=True)


# ------------------------------------------------------------------ training pipeline

@pytest.fixture(scope="module")
def labelled_npz(tmp_path_factory):
    """Ten distinct CIFAR-shaped images whose label is their index."""
    root = tmp_path_factory.mktemp("npz")
    x = _cifar_like(10, 3, low=1)  # no zero pixel, so padding shows
    _write_npz(root / "cifar10" / "train.npz", x, np.arange(10))
    return str(root), x


def _train(npz_dir, **kwargs):
    kwargs = {"batch_size": 10, "training": True, "npz_dir": npz_dir, **kwargs}
    return data.make_dataset("cifar10", "train", **kwargs)


def test_no_augmentation_only_shuffles(labelled_npz):
    root, x = labelled_npz
    (xb, yb), = _batches(_train(root, crop=False, flip=False))
    assert sorted(yb) == list(range(10)) and list(yb) != list(range(10))
    np.testing.assert_array_equal(xb, x[yb] / np.float32(255))


def test_flip_mirrors_some_images(labelled_npz):
    root, x = labelled_npz
    flipped = 0
    for xb, yb in _batches(_train(root, crop=False).repeat(3)):
        for img, k in zip(np.rint(xb * 255).astype(np.uint8), yb):
            assert (img == x[k]).all() or (img == x[k][:, ::-1]).all()
            flipped += int((img != x[k]).any())
    assert 0 < flipped < 30


@pytest.mark.parametrize("pad_mode,np_mode", [("reflect", "reflect"), ("zero", "constant")])
def test_crop_is_a_window_of_the_padded_image(labelled_npz, pad_mode, np_mode):
    """reflect: numpy's (and robust_overfitting's) reflection; zero: torchvision's fill."""
    root, x = labelled_npz
    padded = np.pad(x, [(0, 0), (4, 4), (4, 4), (0, 0)], mode=np_mode)
    moved = 0
    for xb, yb in _batches(_train(root, flip=False, crop_pad_mode=pad_mode).repeat(2)):
        assert 0.0 <= xb.min() and xb.max() <= 1.0
        for img, k in zip(np.rint(xb * 255).astype(np.uint8), yb):
            windows = [(dy, dx) for dy in range(9) for dx in range(9)
                       if (padded[k, dy:dy + 32, dx:dx + 32] == img).all()]
            assert len(windows) == 1
            moved += int(windows[0] != (4, 4))
    assert moved > 10


def test_cutout_zeroes_one_whole_square_inside_the_image(tmp_path):
    """As robust_overfitting's Cutout: the patch never leaves the image, so every image loses
    exactly size x size pixels, and every position (corners included) occurs."""
    _write_npz(tmp_path / "train.npz", np.full((256, 32, 32, 3), 255, np.uint8),
               np.zeros(256, np.int64))
    batches = _batches(data.make_dataset("cifar10", "train", batch_size=64, training=True,
                                         npz_dir=str(tmp_path), crop=False, flip=False,
                                         cutout=6))
    corners = set()
    for xb, _ in batches:
        zero = xb[..., 0] == 0
        assert ((xb == 0) | (xb == 1)).all()
        assert (zero == (xb == 0).all(-1)).all()  # all channels of a pixel together
        for mask in zero:
            rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
            assert mask.sum() == 36 and len(rows) == len(cols) == 6  # a whole 6 x 6 square
            corners.add((rows[0], cols[0]))
    assert max(r for r, _ in corners) <= 26 and max(c for _, c in corners) <= 26
    assert len(corners) > 150  # positions spread over the 27 x 27 possible


def test_same_seed_same_batches_different_seed_differs():
    make = lambda seed: data.make_dataset(  # noqa: E731
        "digits", "train", batch_size=32, training=True, seed=seed, cutout=3, num_examples=256)
    first, second, other = make(7), make(7), make(8)
    run_a = _batches(first) + _batches(first)  # two epochs of one pipeline
    run_b = _batches(second.repeat(2))
    assert len(run_a) == len(run_b) == 16
    for (xa, ya), (xb, yb) in zip(run_a, run_b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(run_a[0][1], run_a[8][1])  # reshuffled in the second epoch
    assert not np.array_equal(run_a[0][0], _batches(other)[0][0])


# ------------------------------------------------------------------------- npz source

def test_npz_train_parts_concatenated_in_sorted_order(tmp_path):
    x1, x2 = _cifar_like(6, 4), _cifar_like(5, 5)
    _write_npz(tmp_path / "train_2.npz", x2, np.full(5, 2))
    _write_npz(tmp_path / "train_1.npz", x1, np.full(6, 1))
    x, y = data.load_arrays("cifar10", "train", npz_dir=str(tmp_path))
    np.testing.assert_array_equal(x, np.concatenate([x1, x2]) / np.float32(255))
    np.testing.assert_array_equal(y, [1] * 6 + [2] * 5)
    _write_npz(tmp_path / "train.npz", x2, np.full(5, 3))  # a single file takes precedence
    assert list(data.load_arrays("cifar10", "train", npz_dir=str(tmp_path))[1]) == [3] * 5
    with pytest.raises(ValueError, match="test.npz"):
        data.load_arrays("cifar10", "test", npz_dir=str(tmp_path))


def test_npz_holdout_split_is_the_last_examples_disjoint_and_in_order(tmp_path):
    x = _cifar_like(12, 8)
    _write_npz(tmp_path / "cifar10" / "train.npz", x, np.arange(12) % 10)
    _write_npz(tmp_path / "cifar10" / "test.npz", x[:3], [0, 1, 2])
    npz = str(tmp_path)
    x_tr, y_tr = data.load_arrays("cifar10", "train", npz_dir=npz, holdout=4)
    x_ho, y_ho = data.load_arrays("cifar10", "holdout", npz_dir=npz, holdout=4)
    assert (len(x_tr), len(x_ho)) == (8, 4)
    np.testing.assert_array_equal(np.concatenate([x_tr, x_ho]), x / np.float32(255))
    assert list(y_tr) + list(y_ho) == list(np.arange(12) % 10)
    # num_examples takes the first N of what remains (train) or of the held-out examples
    assert len(data.load_arrays("cifar10", "train", npz_dir=npz, holdout=4, num_examples=8)[0]) == 8
    x_ho2, _ = data.load_arrays("cifar10", "holdout", npz_dir=npz, holdout=4, num_examples=2)
    np.testing.assert_array_equal(x_ho2, x[8:10] / np.float32(255))
    # the test split ignores it; holdout=0 is the whole training split
    assert len(data.load_arrays("cifar10", "test", npz_dir=npz, holdout=4)[0]) == 3
    assert len(data.load_arrays("cifar10", "train", npz_dir=npz, holdout=0)[0]) == 12
    # training batches draw from the first 8 only
    batches = _batches(data.make_dataset("cifar10", "train", batch_size=4, training=True,
                                         npz_dir=npz, holdout=4, crop=False, flip=False))
    seen = np.concatenate([b[0] for b in batches])
    assert len(seen) == 8
    assert {img.tobytes() for img in seen} == {img.tobytes() for img in x_tr}


@pytest.mark.parametrize("kwargs,message", [
    (dict(split="holdout"), "holdout=0: split 'holdout'"),
    (dict(split="train", holdout=12), "holdout=12 must be below the 12 examples"),
    (dict(split="holdout", holdout=-1), "holdout must be a non-negative integer"),
    (dict(split="train", holdout=4, num_examples=9), r"num_examples=9 exceeds the 8 examples of "
                                                     r"cifar10 train\[:8\] \(holdout=4\) in "),
    (dict(split="holdout", holdout=4, num_examples=5), "num_examples=5 exceeds the 4 examples"),
])
def test_npz_holdout_errors_say_what_is_wrong(tmp_path, kwargs, message):
    _write_npz(tmp_path / "cifar10" / "train.npz", _cifar_like(12, 8), np.arange(12) % 10)
    with pytest.raises(ValueError, match=message):
        data.load_arrays("cifar10", npz_dir=str(tmp_path), **kwargs)


def test_digits_holdout_is_the_tail_of_the_fixed_train_split():
    x, y = data.load_arrays("digits", "train")
    x_tr, y_tr = data.load_arrays("digits", "train", holdout=137)
    x_ho, y_ho = data.load_arrays("digits", "holdout", holdout=137)
    assert (len(x_tr), len(x_ho)) == (1300, 137)
    np.testing.assert_array_equal(np.concatenate([x_tr, x_ho]), x)
    np.testing.assert_array_equal(np.concatenate([y_tr, y_ho]), y)


def test_npz_dir_from_the_environment_variable_of_the_flagfiles(tmp_path, monkeypatch):
    _write_npz(tmp_path / "cifar10" / "test.npz", _cifar_like(4, 7), np.arange(4))
    monkeypatch.setenv(data.NPZ_DIR_VARIABLE, str(tmp_path))
    x, y = data.load_arrays("cifar10", "test", npz_dir="$ATAMP_TF_NPZ_DIR")
    assert x.shape == (4, 32, 32, 3) and list(y) == [0, 1, 2, 3]
    monkeypatch.delenv(data.NPZ_DIR_VARIABLE)
    with pytest.raises(ValueError, match=r"--npz_dir=\$ATAMP_TF_NPZ_DIR: set the environment"):
        data.load_arrays("cifar10", "test", npz_dir="$ATAMP_TF_NPZ_DIR")


def test_npz_shape_and_label_errors_name_the_file(tmp_path):
    bad_shape = _write_npz(tmp_path / "shape" / "test.npz", _cifar_like(3, 6)[:, :28], [0, 1, 2])
    with pytest.raises(ValueError, match=r"test.npz.*\(28, 32, 3\).*\(32, 32, 3\)"):
        data.load_arrays("cifar10", "test", npz_dir=os.path.dirname(bad_shape))
    bad_label = _write_npz(tmp_path / "label" / "test.npz", _cifar_like(3, 6), [0, 1, 10])
    with pytest.raises(ValueError, match=r"test.npz.*labels span \[0, 10\]"):
        data.load_arrays("cifar10", "test", npz_dir=os.path.dirname(bad_label))
    gray = _write_npz(tmp_path / "gray" / "test.npz", np.zeros((2, 28, 28), np.uint8), [0, 9])
    x, _ = data.load_arrays("mnist", "test", npz_dir=os.path.dirname(gray))
    assert x.shape == (2, 28, 28, 1)


needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(),
                                  reason=f"shared benchmark data not found at {SHARED_DATA}")


@needs_shared
def test_shared_cifar10_npz():
    root = str(SHARED_DATA)
    x_tr, y_tr = data.load_arrays("cifar10", "train", npz_dir=root)
    assert x_tr.shape == (20000, 32, 32, 3) and set(np.unique(y_tr)) == set(range(10))
    assert list(y_tr[:10]) == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]  # official data_batch_1 order
    np.testing.assert_allclose(x_tr.mean((0, 1, 2)), data.get_spec("cifar10").mean, atol=0.005)
    x_te, y_te = data.load_arrays("cifar10", "test", npz_dir=str(SHARED_DATA / "cifar10"))
    assert x_te.shape == (10000, 32, 32, 3)
    np.testing.assert_allclose(x_te.mean((0, 1, 2)), [0.4942, 0.4851, 0.4504], atol=5e-4)
    xb, yb = next(iter(data.make_dataset("cifar10", "train", batch_size=128, training=True,
                                         npz_dir=root)))
    assert xb.shape == (128, 32, 32, 3) and yb.dtype == tf.int32


@needs_shared
def test_shared_mnist_npz_full_splits_in_official_order():
    root = str(SHARED_DATA)
    x_tr, y_tr = data.load_arrays("mnist", "train", npz_dir=root)
    x_te, y_te = data.load_arrays("mnist", "test", npz_dir=root)
    assert x_tr.shape == (60000, 28, 28, 1) and x_te.shape == (10000, 28, 28, 1)
    assert np.bincount(y_te).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert list(y_tr[:8]) == [5, 0, 4, 1, 9, 2, 1, 3] and list(y_te[:8]) == [7, 2, 1, 0, 4, 1, 4, 9]
    assert x_tr.dtype == np.float32 and 0.0 <= x_tr.min() and x_tr.max() <= 1.0
    np.testing.assert_allclose(x_tr.mean(), data.get_spec("mnist").mean[0], atol=5e-4)
    xb, yb = next(iter(data.make_dataset("mnist", "train", batch_size=50, training=True,
                                         npz_dir=root, crop=False, flip=False)))
    assert xb.shape == (50, 28, 28, 1) and 0.0 <= float(tf.reduce_min(xb))
    assert float(tf.reduce_max(xb)) <= 1.0
    # flags/mnist/: the last 5,000 training images are held out, in the official order
    x_ho, y_ho = data.load_arrays("mnist", "holdout", npz_dir=root, holdout=5000)
    np.testing.assert_array_equal(x_ho, x_tr[55000:])
    np.testing.assert_array_equal(y_ho, y_tr[55000:])


@needs_shared
def test_shared_cifar100_uses_fine_labels():
    _, y = data.load_arrays("cifar100", "test", npz_dir=str(SHARED_DATA))
    assert y.min() == 0 and y.max() == 99 and np.bincount(y).tolist() == [100] * 100


# ------------------------------------------------------------------- RST extra data

def test_extra_data_fills_its_fraction_with_pseudo_labels(tmp_path):
    rng = np.random.default_rng(0)
    _write_npz(tmp_path / "train.npz", rng.integers(0, 100, (48, 32, 32, 3), dtype=np.uint8),
               np.zeros(48, np.int64))
    pseudo = np.arange(30) % 10
    extra_x = np.broadcast_to((150 + 10 * pseudo).astype(np.uint8)[:, None, None, None],
                              (30, 32, 32, 3))
    extra = _write_npz(tmp_path / "extra.npz", extra_x, pseudo)
    ds = data.make_dataset("cifar10", "train", batch_size=16, training=True,
                           npz_dir=str(tmp_path), extra_npz=extra, extra_fraction=0.25,
                           crop=False, seed=5)
    batches = _batches(ds) + _batches(ds)
    assert len(batches) == 8  # 48 labelled examples, 12 per batch, one pass per epoch
    seen = set()
    for xb, yb in batches:
        assert xb.shape == (16, 32, 32, 3)
        is_extra = xb.max((1, 2, 3)) >= 150 / 255
        assert is_extra.sum() == 4
        value = np.rint(xb[is_extra, 0, 0, 0] * 255)
        np.testing.assert_array_equal(yb[is_extra], (value - 150) / 10)
        assert (yb[~is_extra] == 0).all()
        seen.update(value.tolist())
    assert len(seen) == 10
    short = _write_npz(tmp_path / "short.npz", extra_x[:, :16], pseudo)
    with pytest.raises(ValueError, match="short.npz"):
        data.make_dataset("cifar10", "train", batch_size=16, training=True,
                          npz_dir=str(tmp_path), extra_npz=short, extra_fraction=0.5)
    with pytest.raises(ValueError, match="training"):
        data.make_dataset("cifar10", "test", batch_size=16, npz_dir=str(tmp_path),
                          extra_npz=extra, extra_fraction=0.5)
