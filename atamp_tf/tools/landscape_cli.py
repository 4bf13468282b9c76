"""python -m atamp_tf.landscape: the robust weight-loss landscape of trained networks
(library: atamp_tf.tools.landscape)."""
import json
import os

import numpy as np
from absl import flags

from atamp_tf import checkpoints, cli


def _define_flags():
    flags.DEFINE_list("models", None, "Run directories or .keras files, comma separated.")
    flags.DEFINE_list("labels", None, "A label per model (default: the directory names).")
    flags.DEFINE_enum("checkpoint", "last", ["best", "last"], "Checkpoint of a run directory.")
    flags.DEFINE_string("dataset", None, "Dataset (default: the first run's).")
    flags.DEFINE_string("data_dir", None, "tensorflow-datasets directory.")
    flags.DEFINE_string("npz_dir", None, "Directory of local .npz arrays (default: the run's).")
    flags.DEFINE_integer("num_examples", 500, "The first N test examples.")
    flags.DEFINE_string("norm", None, "linf or l2 (default: the run's).")
    flags.DEFINE_string("eps", None, "Attack radius, number or fraction (default: the run's).")
    flags.DEFINE_string("step_size", None, "PGD step (default: the run's training step).")
    flags.DEFINE_integer("attack_steps", 10, "PGD steps at each point.")
    flags.DEFINE_list("directions", None, "random and/or adversarial (default: both).")
    flags.DEFINE_float("max_a", 1.0, "The grid runs over a in [-max_a, max_a].")
    flags.DEFINE_integer("points", 21, "Grid points (odd, so that a = 0 is on the grid).")
    flags.DEFINE_float("radius", 0.5, "Radius at which sharpness is read (must be on the grid).")
    flags.DEFINE_integer("batch_size", 250, "Examples per batch.")
    flags.DEFINE_integer("seed", 0, "Seed of the random direction and the PGD starts.")
    flags.DEFINE_string("output_dir", None, "Where landscape.csv/.png and flatness.json go.")
    flags.mark_flags_as_required(["models", "output_dir"])


def main(argv):
    cli.no_positional(argv)
    f = flags.FLAGS
    if f.points < 3 or f.points % 2 == 0:
        raise ValueError(f"--points must be odd and >= 3, got {f.points}")
    labels = f.labels or [os.path.basename(os.path.normpath(m)) for m in f.models]
    if len(labels) != len(f.models):
        raise ValueError("--labels needs one label per entry of --models")
    alphas = np.linspace(-f.max_a, f.max_a, f.points)
    on_grid = {round(float(a), 9) for a in alphas}
    if not {round(f.radius, 9), round(-f.radius, 9)} <= on_grid:
        raise ValueError(f"--radius: {f.radius} is not on the grid of a values "
                         f"(np.linspace(-{f.max_a}, {f.max_a}, {f.points}))")
    for m in f.models:  # bad paths fail before TensorFlow loads
        checkpoints.checkpoint_path(m, f.checkpoint, "models")
    from atamp_tf import data  # pylint: disable=import-outside-toplevel  (TensorFlow)
    from atamp_tf.tools import landscape  # pylint: disable=import-outside-toplevel

    results = {}
    loaded = [checkpoints.load_network(m, f.checkpoint, "models") for m in f.models]
    config = loaded[0][1]
    dataset = f.dataset or config.get("dataset")
    norm = f.norm or config.get("norm")
    if dataset is None or norm is None:
        raise ValueError("--dataset and --norm are needed when the model has no run_config")
    eps = checkpoints.parse_fraction(f.eps if f.eps is not None else config.get("eps"), "eps")
    step = checkpoints.parse_fraction(
        f.step_size if f.step_size is not None else config.get("step_size", eps / 4),
        "step_size")
    x, y = data.load_arrays(dataset, "test", data_dir=f.data_dir,
                            npz_dir=f.npz_dir or config.get("npz_dir"),
                            num_examples=f.num_examples)
    attack = dict(norm=norm, eps=eps, step_size=step, steps=f.attack_steps)
    directions = f.directions or landscape.DIRECTIONS
    for label, (network, _) in zip(labels, loaded):
        results[label] = landscape.model_landscape(network, x, y, directions=directions,
                                                   alphas=alphas, radius=f.radius, seed=f.seed,
                                                   attack=attack, batch_size=f.batch_size)
    flatness = landscape.write_outputs(results, f.output_dir, f.radius)
    print(json.dumps({"radius": f.radius, "sharpness": flatness}, indent=2))



def run():
    _define_flags()
    cli.run(main)
