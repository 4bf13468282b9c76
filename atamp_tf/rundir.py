"""The run directory's files: paths, formats, atomic writes, and the resume state.

Layout (WORKSPACE.md, "Run directory"):
  flags.cfg, run_config.json, metrics.csv, summary.json, checkpoints/{best,last}.keras,
  state/ (resume state), tensorboard/, plots/.
metrics.csv, one row per epoch: epoch (1-based); lr (at the epoch's first step); train_loss
and train_adv_acc (running means over the epoch's training batches, adversarial examples made
on the fly; under AMP measured at the perturbed weights theta + Delta of the descent pass, not
at theta, so they are not comparable with a delta = 0 run's); train_natural_acc,
train_robust_acc, test_natural_acc, test_robust_acc (fixed
subsets, measured after the epoch, accuracies as fractions); robust_gap = train_robust_acc -
test_robust_acc; seconds (the epoch's wall time, evaluation included); in a run with a
held-out split (train's --holdout_examples), then holdout_natural_acc and holdout_robust_acc
(the fixed held-out examples), on which the best epoch is then selected (summary.json's
"selected_on": "holdout"; otherwise "test", the paper's "best").
Every file is written to a temporary name and renamed into place, so a run killed at any
moment (SIGKILL included) leaves each file either old or new, never half written.

The resume state is the source of truth: `state/epoch_NNNN/` holds the model and optimizer
weights and `state.json` (epochs done, every metrics row, the best epoch), and `state/latest`
names the newest complete one. metrics.csv, summary.json and the checkpoints are derived from
it after it is saved, and rewritten from it on resume, so they can never hold an epoch the
state does not.
"""
import csv
import hashlib
import io
import json
import os
import shutil

import numpy as np

METRICS_COLUMNS = ("epoch", "lr", "train_loss", "train_adv_acc", "train_natural_acc",
                   "train_robust_acc", "test_natural_acc", "test_robust_acc", "robust_gap",
                   "seconds")
HOLDOUT_COLUMNS = ("holdout_natural_acc", "holdout_robust_acc")  # only with a held-out split
_WEIGHTS = "train.weights.h5"
_STATE_JSON = "state.json"


class RunPaths:
    """The paths of a run directory."""

    def __init__(self, out_dir):
        self.root = out_dir
        self.flags = os.path.join(out_dir, "flags.cfg")
        self.run_config = os.path.join(out_dir, "run_config.json")
        self.metrics = os.path.join(out_dir, "metrics.csv")
        self.summary = os.path.join(out_dir, "summary.json")
        self.checkpoints = os.path.join(out_dir, "checkpoints")
        self.best = os.path.join(self.checkpoints, "best.keras")
        self.last = os.path.join(self.checkpoints, "last.keras")
        self.state = os.path.join(out_dir, "state")
        self.tensorboard = os.path.join(out_dir, "tensorboard")
        self.plots = os.path.join(out_dir, "plots")
        self.accuracy_plot = os.path.join(self.plots, "accuracy.png")
        self.eval = os.path.join(out_dir, "eval")  # python -m atamp_tf.evaluate's default output
        self.eval_report = os.path.join(self.eval, "report.json")
        self.eval_last = os.path.join(out_dir, "eval_last")  # the last checkpoint's evaluation
        self.eval_last_report = os.path.join(self.eval_last, "report.json")

    def make(self):
        for path in (self.root, self.checkpoints, self.state, self.plots):
            os.makedirs(path, exist_ok=True)


def lock_run_dir(root):
    """An exclusive lock of a run directory, held by the open file it returns: a second
    training of the same directory is refused instead of interleaving with the first. The OS
    drops it when the holder closes it or dies (SIGKILL included), so no stale lock remains.
    Raises ValueError naming --out_dir when another process holds it."""
    try:
        import fcntl  # pylint: disable=import-outside-toplevel  (POSIX only)
    except ImportError:  # no advisory locks here: nothing to hold
        return None
    handle = open(os.path.join(root, ".lock"), "a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        raise ValueError(f"--out_dir: {root} is being trained by another process"
                         f"{f' (pid {holder})' if holder else ''}; wait for it to end, or "
                         "choose another --out_dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def sha256_file(path, chunk_size=1 << 20):
    """Hex sha256 of the file at path, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def read_finished_run(run_dir, flag):
    """(run_config, summary, metrics rows) of a run directory; ValueError naming `flag` if a
    file is missing. For reports that read finished runs (reproduction, sweep)."""
    paths = RunPaths(run_dir)
    for path in (paths.summary, paths.metrics, paths.run_config):
        if not os.path.isfile(path):
            raise ValueError(f"--{flag}: {run_dir} has no {os.path.basename(path)} (is it a "
                             "finished run directory of python -m atamp_tf.train?)")
    return read_json(paths.run_config), read_json(paths.summary), read_metrics(paths.metrics)


# ----- atomic files -------------------------------------------------------------------------
def _tmp_name(path):
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}.tmp{os.getpid()}")


def _fsync_dir(path):
    try:
        fd = os.open(path or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path, text):
    """Writes text to path through a temporary file and a rename."""
    tmp = _tmp_name(path)
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(path))


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def fingerprint(*parts):
    """sha256 hex of numpy arrays and JSON-able values: what a saved partial result is of."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(f"{part.dtype}{part.shape}".encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()


PARTIAL_DIR = "partial"  # under an evaluation's output directory: its resume state, removed
# once the evaluation is written (evaluate's per attack and batch, reference_cli's per chunk)


class Progress:
    """A partial result saved at `path` (.npz: arrays plus a JSON `meta`), valid only for the
    computation whose fingerprint is `key`: a long evaluation killed at any point resumes from
    its last save and recomputes nothing saved. Writes are atomic (temporary file, rename)."""

    def __init__(self, path, key):
        self.path, self.key = str(path), key

    def load(self):
        """(arrays, meta) of the last save of this computation, or None (none, or another's)."""
        if not os.path.isfile(self.path):
            return None
        with np.load(self.path, allow_pickle=False) as saved:
            arrays = {k: saved[k] for k in saved.files}
        meta = json.loads(str(arrays.pop("meta")))
        return (arrays, meta) if meta.get("key") == self.key else None

    def save(self, meta, **arrays):
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        tmp = _tmp_name(self.path) + ".npz"
        np.savez(tmp, meta=np.array(json.dumps({**meta, "key": self.key})), **arrays)
        os.replace(tmp, self.path)


def read_json(path, what=None):
    """The JSON value in the file at path. With `what` (a flag or a name such as '--report'), a
    missing or malformed file is a ValueError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        if what is None:
            raise
        raise ValueError(f"{what}: {path} does not exist.") from None
    except json.JSONDecodeError as e:
        if what is None:
            raise
        raise ValueError(f"{what}: {path} is not valid JSON: {e}.") from None


def save_keras(model, path):
    """model.save(path) through a temporary .keras file and a rename."""
    head, tail = os.path.split(path)
    tmp = os.path.join(head, f".tmp{os.getpid()}-{tail}")
    model.save(tmp)
    os.replace(tmp, path)
    _fsync_dir(head)


# ----- metrics.csv and summary.json ---------------------------------------------------------
def selected_on(rows):
    """Which split the best epoch is selected on: "holdout" if the rows measure a held-out
    split, else "test"."""
    return "holdout" if any(r.get("holdout_robust_acc") is not None for r in rows) else "test"


def metrics_columns(rows):
    """metrics.csv's columns for these rows: METRICS_COLUMNS, then HOLDOUT_COLUMNS if the run
    has a held-out split."""
    return METRICS_COLUMNS + (HOLDOUT_COLUMNS if selected_on(rows) == "holdout" else ())


def metrics_csv_text(rows):
    columns = metrics_columns(rows)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _format(row.get(k)) for k in columns})
    return out.getvalue()


def _format(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


def read_metrics(path):
    """metrics.csv as a list of dicts: epoch an int, the other columns floats (None if empty)."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        parsed = {k: (float(v) if v not in ("", None) else None) for k, v in row.items()}
        parsed["epoch"] = int(row["epoch"])
        out.append(parsed)
    return out


def best_row(rows):
    """The row with the highest robust accuracy on the selection split (`selected_on`: the
    held-out examples if measured, else the test subset); the earliest, on ties."""
    key = f"{selected_on(rows)}_robust_acc"
    best = None
    for row in rows:
        if best is None or row[key] > best[key]:
            best = row
    return best


def summarize(rows, *, epochs, eval_info):
    """summary.json: best and last test accuracies as in the paper's tables ("best" = the
    epoch with the highest robust accuracy on the selection split, "selected_on": the
    held-out examples if the run has them, else the test subset as the paper; "last" = the
    final epoch), plus how they were measured."""
    split = selected_on(rows)
    keys = ("epoch", "test_robust_acc", "test_natural_acc", "train_robust_acc",
            "train_natural_acc", "robust_gap") + (HOLDOUT_COLUMNS if split == "holdout" else ())

    def pick(row):
        return {k: row[k] for k in keys} if row else None
    return {"best": pick(best_row(rows)), "last": pick(rows[-1] if rows else None),
            "selected_on": split, "epochs_done": len(rows), "epochs": epochs,
            "complete": len(rows) == epochs,
            "train_seconds": round(sum(r["seconds"] for r in rows), 3),
            "evaluation": eval_info}


# ----- resume state -------------------------------------------------------------------------
def _state_dir_name(epoch):
    return f"epoch_{epoch:04d}"


def save_state(state_dir, model, meta):
    """Saves model + optimizer weights and `meta` (with meta["epoch"] = epochs done) as the
    newest state: written to its own directory, then `latest` is switched to it atomically;
    older states are deleted afterwards."""
    name = _state_dir_name(meta["epoch"])
    target = os.path.join(state_dir, name)
    staging = os.path.join(state_dir, f".staging{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    if model is not None:
        model.save_weights(os.path.join(staging, _WEIGHTS))
    atomic_write_json(os.path.join(staging, _STATE_JSON), meta)
    _fsync_dir(staging)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    _fsync_dir(state_dir)
    atomic_write_text(os.path.join(state_dir, "latest"), name + "\n")
    _drop_others(state_dir, keep=name)


def _drop_others(state_dir, keep):
    for entry in os.listdir(state_dir):
        path = os.path.join(state_dir, entry)
        if entry not in (keep, "latest") and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)


def load_state_meta(state_dir):
    """The newest complete state's meta dict, or None if there is none."""
    pointer = os.path.join(state_dir, "latest")
    if not os.path.isfile(pointer):
        return None
    with open(pointer, encoding="utf-8") as f:
        name = f.read().strip()
    path = os.path.join(state_dir, name, _STATE_JSON)
    if not name or not os.path.isfile(path):
        return None
    meta = read_json(path)
    meta["_dir"] = os.path.join(state_dir, name)
    return meta


def restore_weights(meta, model):
    """Loads the state's model + optimizer weights into `model` (built, optimizer compiled).
    Returns False if the state has no weights (a finished run keeps only its meta)."""
    path = os.path.join(meta["_dir"], _WEIGHTS)
    if not os.path.isfile(path):
        return False
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(path)
    return True


def has_state_weights(meta):
    """Whether the resume state `meta` (load_state_meta's) still holds the model weights."""
    return meta is not None and os.path.isfile(os.path.join(meta["_dir"], _WEIGHTS))


def drop_state_weights(state_dir):
    """After the last epoch: keep the meta (a rerun then knows the run is complete), free the
    disk space of the weights (the network is in checkpoints/last.keras)."""
    meta = load_state_meta(state_dir)
    if meta is not None:
        path = os.path.join(meta["_dir"], _WEIGHTS)
        if os.path.isfile(path):
            os.remove(path)
