"""Subprocess body for tests/test_distribute.py: trains a tiny AMPModel under a strategy and
saves the final weights. Run as: python dist_worker.py MODE OUT.npz [SCOPES]
MODE: "mirrored" (two logical CPUs vs one device, same process; for each of the comma-separated
AMP scopes, keys prefixed "<scope>_") or "multi_worker" (TF_CONFIG).
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

MODE, OUT = sys.argv[1], sys.argv[2]
SCOPES = sys.argv[3].split(",") if len(sys.argv) > 3 else ["tensor"]
if MODE == "mirrored":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

from atamp_tf import AMPModel  # noqa: E402


def network(batchnorm=False):
    keras.utils.set_random_seed(0)
    inp = keras.Input((4, 4, 1))
    h = keras.layers.Flatten()(inp)
    h = keras.layers.Dense(16, activation="tanh")(h)
    if batchnorm:
        h = keras.layers.BatchNormalization()(h)
    return keras.Model(inp, keras.layers.Dense(3)(h))


def data():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.1, 0.9, size=(48, 4, 4, 1)).astype("float32")
    y = rng.integers(0, 3, size=48).astype("int32")
    return x, y


def train(strategy, batchnorm=False, epochs=1, warmup=0, scope="tensor"):
    with strategy.scope():
        model = AMPModel(network(batchnorm), eps=0.1, step_size=0.03, attack_steps=3,
                         random_start=False, delta=0.05, amp_scope=scope, weight_decay=1e-3,
                         amp_warmup_steps=warmup)
        model.compile(keras.optimizers.SGD(0.3, momentum=0.9))
    x, y = data()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    if MODE == "multi_worker":
        options = tf.data.Options()
        policy = tf.data.experimental.AutoShardPolicy.DATA
        options.experimental_distribute.auto_shard_policy = policy
        ds = ds.with_options(options)
    hist = model.fit(ds, epochs=epochs, verbose=0)
    return model, hist.history["loss"]


def flat(model):
    return np.concatenate([w.numpy().ravel() for w in model.weights])


if MODE == "mirrored":
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2
    one_device = tf.distribute.get_strategy()
    results = {"initial": flat(network())}
    for scope in SCOPES:
        _, bn_loss = train(mirrored, batchnorm=True, scope=scope)
        results.update({
            f"{scope}_single": flat(train(one_device, scope=scope)[0].network),
            f"{scope}_mirrored": flat(train(mirrored, scope=scope)[0].network),
            f"{scope}_bn_loss": np.array(bn_loss),
            f"{scope}_single_warm": flat(train(one_device, warmup=2, scope=scope)[0].network),
            f"{scope}_mirrored_warm": flat(train(mirrored, warmup=2, scope=scope)[0].network)})
    np.savez(OUT, **results)
else:
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    model, loss = train(strategy, epochs=2)
    np.savez(OUT, weights=flat(model.network), initial=flat(network()),
             loss=np.array(loss), replicas=strategy.num_replicas_in_sync)
