"""tf.distribute strategies for --strategy, and which worker owns the run directory.

- default: TensorFlow's default strategy (one device).
- mirrored: MirroredStrategy over every local GPU; without GPUs, over the logical CPU devices
  if more than one was configured (tests), else the one CPU.
- multi_worker: MultiWorkerMirroredStrategy, cluster from the TF_CONFIG environment variable
  (one process per machine). Only the chief (task 0, or the task of type "chief") writes the
  run directory; the others write to a temporary directory that is deleted at the end, as
  the TensorFlow multi-worker guide does.
"""
import json
import os
import shutil
import tempfile

import tensorflow as tf


def make_strategy(name):
    """The tf.distribute.Strategy for --strategy=name."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            return tf.distribute.MirroredStrategy([d.name for d in gpus])
        cpus = tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in cpus])
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError("--strategy=multi_worker reads the cluster from the TF_CONFIG "
                             "environment variable, which is not set (see WORKSPACE.md, "
                             "'Training on several machines')")
        try:
            json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as err:
            raise ValueError(f"--strategy=multi_worker: TF_CONFIG is not valid JSON ({err})") \
                from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"--strategy: expected default, mirrored or multi_worker, got {name!r}")


def task(strategy):
    """(task_type, task_id) of this process; (None, None) outside a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return None, None
    return resolver.task_type, resolver.task_id


def is_chief(strategy):
    """True for the process that writes the run directory (the only process, or the chief)."""
    task_type, task_id = task(strategy)
    if task_type is None:
        return True
    cluster = strategy.cluster_resolver.cluster_spec().as_dict()
    if "chief" in cluster:
        return task_type == "chief"
    return task_type == "worker" and task_id == 0


def worker_dir(out_dir, strategy):
    """Where this process writes: out_dir for the chief, else a fresh temporary directory."""
    if is_chief(strategy):
        return out_dir
    task_type, task_id = task(strategy)
    return tempfile.mkdtemp(prefix=f"atamp_{task_type}{task_id}_")


def cleanup_worker_dir(path, out_dir):
    """Deletes a non-chief worker's temporary directory (never the run directory)."""
    if os.path.abspath(path) != os.path.abspath(out_dir):
        shutil.rmtree(path, ignore_errors=True)
