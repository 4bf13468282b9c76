"""Shared by test_export.py and test_zoo.py: a tiny trained model, its report, a run dir."""
import json
import os

import keras
import numpy as np

from atamp_tf import data

NUM_CHECK = 120  # "first 120 of test": the examples every report here is about


def train_tiny_model(seed=0):
    """Normalization -> Conv -> BatchNorm -> ReLU -> Dense, trained briefly on real digits.

    The BatchNorm moving statistics move away from 0 / 1, so inference-mode export matters.
    """
    keras.utils.set_random_seed(seed)
    x, y = data.load_arrays("digits", "train")
    spec = data.get_spec("digits")
    inputs = keras.Input(spec.image_shape)
    h = keras.layers.Normalization(mean=spec.mean[0], variance=spec.std[0] ** 2)(inputs)
    h = keras.layers.Conv2D(8, 3, padding="same")(h)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Flatten()(h)
    model = keras.Model(inputs, keras.layers.Dense(spec.num_classes)(h))
    model.compile(keras.optimizers.Adam(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=64, epochs=2, verbose=0)
    return model


def check_examples():
    """The report's examples: the first NUM_CHECK of the digits test split."""
    return data.load_arrays("digits", "test", num_examples=NUM_CHECK)


def make_report(model, x, y, *, norm="linf", eps=0.1):
    """A report.json dict (evaluate's schema) whose natural accuracy is measured with Keras."""
    correct = np.argmax(model.predict(x, verbose=0), axis=1) == y
    natural = float(correct.mean())
    return {
        "model": "checkpoints/best.keras", "dataset": "digits", "split": "test",
        "num_examples": len(y), "examples": f"first {len(y)} of test",
        "threat_model": {"norm": norm, "eps": eps},
        "attacks": {"natural": {"label": "Natural", "settings": {}, "accuracy": natural,
                                "num_correct": int(correct.sum())}},
        "skipped": {"pgd20": "not requested"},
        "accuracy": {"natural": natural},
        "worst_case": {"accuracy": natural, "num_robust": int(correct.sum()),
                       "over": ["natural"], "broken_first_by": {"natural": int((~correct).sum())}},
        "seconds": 0.5,
    }


# The run_config.json fields export reads, as atamp_tf.train writes them.
RUN_CONFIG = {"dataset": "digits", "npz_dir": None, "data_dir": None, "arch": "tiny_cnn",
              "width": 8, "depth": None, "num_classes": 10, "input_shape": [8, 8, 1],
              "norm": "linf", "eps": 0.1, "step_size": 0.025, "attack_steps": 10,
              "method": "at", "amp_delta": 0.1, "amp_xi": 1.0, "amp_steps": 1,
              "amp_scope": "tensor", "amp_warmup_epochs": 0, "amp": True, "seed": 0}
FLAGS_CFG = "# python -m atamp_tf.train --flagfile=flags.cfg\n--dataset=digits\n--norm=linf\n"
# summary.json's fields export reads: the best epoch chosen on held-out training examples.
SUMMARY = {"epochs_done": 40, "train_seconds": 7200.04, "selected_on": "holdout",
           "best": {"epoch": 31}, "last": {"epoch": 40}}


def make_run_dir(root, model, report):
    """A run directory as atamp_tf.train leaves it (the parts export reads)."""
    os.makedirs(os.path.join(root, "checkpoints"))
    model.save(os.path.join(root, "checkpoints", "best.keras"))
    with open(os.path.join(root, "run_config.json"), "w", encoding="utf-8") as f:
        json.dump(RUN_CONFIG, f)
    with open(os.path.join(root, "flags.cfg"), "w", encoding="utf-8") as f:
        f.write(FLAGS_CFG)
    with open(os.path.join(root, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(SUMMARY, f)
    os.makedirs(os.path.join(root, "eval"))  # where python -m atamp_tf.evaluate writes it
    with open(os.path.join(root, "eval", "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f)
    return root
