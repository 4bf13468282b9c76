"""Keras callbacks of a training run: per-epoch robust evaluation and the run recorder.

- `EpochEvaluation` measures natural and PGD robust accuracy of the plain network (BatchNorm
  in inference mode) on a fixed test subset and a fixed training subset after every epoch
  (and on the held-out training examples, if the run holds some out), with the same random
  starts every epoch, and adds them to the epoch's logs (so the progress bar and TensorBoard
  show them).
- `RunRecorder` turns each epoch's logs into a metrics row, saves the resume state, then
  rewrites metrics.csv, summary.json, the last / best checkpoints and the plots from it.
Order in the callback list: EpochEvaluation, TensorBoard, RunRecorder.
"""
import copy
import time

import keras
import numpy as np
import tensorflow as tf

from atamp_tf import plots, rundir
from atamp_tf.attacks.pgd import pgd


class RobustEvaluator:
    """Natural and PGD accuracy of `network` on fixed arrays, compiled, reproducible.

    Batch i's random start is keyed by (seed, i), so every call attacks from the same points.
    `on(x, y, seed=...)` gives an evaluator of other arrays that shares the compiled graph
    (a run's test, train and held-out subsets trace it once, not three times).
    """

    def __init__(self, network, x, y, *, norm, eps, step_size, steps, batch_size, seed):
        self.x, self.y = x, y
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self._counts = _compiled_counts(network, x.shape[1:], norm=norm, eps=eps,
                                        step_size=step_size, steps=steps)

    def on(self, x, y, *, seed):
        """The same network and attack on other arrays (same image shape), sharing the graph."""
        other = copy.copy(self)
        other.x, other.y, other.seed = x, y, int(seed)
        return other

    def __call__(self):
        """(natural accuracy, robust accuracy) as fractions in [0, 1]."""
        n = len(self.x)
        if n == 0:
            return float("nan"), float("nan")
        nat = adv = 0
        for i, start in enumerate(range(0, n, self.batch_size)):
            stop = start + self.batch_size
            c_nat, c_adv = self._counts(tf.constant(self.x[start:stop]),
                                         tf.constant(self.y[start:stop]),
                                         tf.constant([self.seed, i], tf.int64))
            nat += int(c_nat)
            adv += int(c_adv)
        return nat / n, adv / n


def _compiled_counts(network, image_shape, *, norm, eps, step_size, steps):
    """A compiled (natural correct, PGD-robust correct) count of a batch, seeded per call."""
    spec = (tf.TensorSpec([None, *image_shape], tf.float32), tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([2], tf.int64))

    @tf.function(input_signature=spec, reduce_retracing=True)
    def counts(xb, yb, seed):
        def logits_fn(images):
            return tf.cast(network(images, training=False), tf.float32)
        nat = tf.argmax(logits_fn(xb), axis=-1, output_type=tf.int32) == yb
        x_adv = pgd(logits_fn, xb, yb, eps=eps, step_size=step_size, steps=steps,
                    norm=norm, random_start=True, seed=seed)
        adv = tf.argmax(logits_fn(x_adv), axis=-1, output_type=tf.int32) == yb
        return (tf.reduce_sum(tf.cast(nat, tf.int32)), tf.reduce_sum(tf.cast(adv, tf.int32)))

    return counts


class EpochEvaluation(keras.callbacks.Callback):
    """Adds test/train natural and robust accuracy and the robust gap to each epoch's logs,
    and holdout_natural_acc / holdout_robust_acc if given a held-out evaluator."""

    def __init__(self, test_evaluator, train_evaluator, holdout_evaluator=None):
        super().__init__()
        self.test, self.train = test_evaluator, train_evaluator
        self.holdout = holdout_evaluator

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        logs["test_natural_acc"], logs["test_robust_acc"] = self.test()
        logs["train_natural_acc"], logs["train_robust_acc"] = self.train()
        logs["robust_gap"] = logs["train_robust_acc"] - logs["test_robust_acc"]
        if self.holdout is not None:
            logs["holdout_natural_acc"], logs["holdout_robust_acc"] = self.holdout()


class RunRecorder(keras.callbacks.Callback):
    """Records each epoch: resume state first, then the files derived from it.

    `history`: the metrics rows restored from the state (empty for a new run); the best epoch
    is recomputed from it. `eval_info` goes into summary.json.
    """

    def __init__(self, paths, *, epochs, history=(), eval_info=None, run_label=""):
        super().__init__()
        self.paths = paths
        self.epochs = epochs
        self.history = list(history)
        self.eval_info = eval_info or {}
        self.run_label = run_label
        self._start = None
        self._lr = None

    @property
    def best(self):
        return rundir.best_row(self.history)

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.time()
        self._lr = float(np.asarray(self.model.optimizer.learning_rate))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        row = {"epoch": epoch + 1, "lr": self._lr, "train_loss": logs.get("loss"),
               "train_adv_acc": logs.get("adv_acc")}
        for key in rundir.METRICS_COLUMNS[4:9]:
            row[key] = logs.get(key)
        for key in rundir.HOLDOUT_COLUMNS:  # a run with a held-out split: the selection split
            if key in logs:
                row[key] = logs[key]
        row["seconds"] = round(time.time() - self._start, 3)
        row = {k: (float(v) if v is not None and k != "epoch" else v) for k, v in row.items()}
        self.history = [r for r in self.history if r["epoch"] < row["epoch"]] + [row]
        rundir.save_state(self.paths.state, self.model, {"epoch": epoch + 1,
                                                         "history": self.history})
        self.write_outputs(self.model.network, current_epoch=epoch + 1)

    def write_outputs(self, network, *, current_epoch):
        """metrics.csv, summary.json, plots; last.keras and (if this epoch is the best, or
        best.keras is missing) best.keras from `network`, the weights after current_epoch."""
        rundir.atomic_write_text(self.paths.metrics, rundir.metrics_csv_text(self.history))
        best = self.best
        if network is not None and current_epoch is not None:
            rundir.save_keras(network, self.paths.last)
            if best is not None and best["epoch"] == current_epoch:
                rundir.save_keras(network, self.paths.best)
        summary = rundir.summarize(self.history, epochs=self.epochs, eval_info=self.eval_info)
        rundir.atomic_write_json(self.paths.summary, summary)
        if self.history:
            plots.plot_run(self.history, self.paths.accuracy_plot, title=self.run_label)
