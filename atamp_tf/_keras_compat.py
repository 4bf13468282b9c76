"""The few places where atamp-tf relies on Keras internals, kept together and pinned.

setup.py pins keras>=3.15,<3.16 because of this module; tests/test_distribute.py proves it.
- scale_loss_for_distribution: the same replica scaling Keras applies to its own losses, so
  gradients all-reduced by the optimiser (or by AMP's ascent) are global-batch means.
- MultiWorkerFitMixin: Keras 3.15 `fit` fails under MultiWorkerMirroredStrategy
  (keras-team/keras issue 20585): `_maybe_symbolic_build` reduces the first per-replica batch
  with `strategy.reduce`, which collective ops refuse eagerly, and `reduce_per_replica`
  reduces scalar logs along axis 0. The mixin builds from the first local replica's batch
  and gives logs shape [1] under multi-worker collectives.
"""
import tensorflow as tf
from keras.src import tree
from keras.src.backend.tensorflow import trainer as tf_trainer
from keras.src.losses.loss import scale_loss_for_distribution  # noqa: F401


def replica_count():
    """Replicas in sync in the current strategy (1 outside tf.distribute)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def is_multi_worker(strategy):
    return tf_trainer._collective_all_reduce_multi_worker(strategy)


class MultiWorkerFitMixin:
    """Overrides for keras.Model that make `fit` work under MultiWorkerMirroredStrategy."""

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if strategy is None or not is_multi_worker(strategy) or iterator is None:
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        for _, _, it in iterator:
            batch = next(it)
            data_batch = tree.map_structure(
                lambda v: strategy.experimental_local_results(v)[0]
                if isinstance(v, tf.distribute.DistributedValues) else v, batch)
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def _format_logs(self, logs):
        """Logs as train_step returns them: shape [1] under multi-worker collectives."""
        strategy = tf.distribute.get_strategy()
        if is_multi_worker(strategy):
            return {k: tf.reshape(v, [1]) for k, v in logs.items()}
        return logs
