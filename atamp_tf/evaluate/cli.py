"""Command line of the evaluator: python -m atamp_tf.evaluate --model=PATH [flags].

    python -m atamp_tf.evaluate --model=runs/cifar10_linf --num_examples=1000
    python -m atamp_tf.evaluate --model=atamp_tf/zoo/models/x.onnx \
        --keras_model=runs/x/checkpoints/best.keras --dataset=cifar10 --eps=8/255

Flags live here rather than in atamp_tf.evaluate so that importing the library defines no
absl flags (the train and export CLIs define flags of the same names). Every check of a value
is done by atamp_tf.evaluate / SuiteSettings and raises ValueError naming the flag.
"""

from absl import flags

from atamp_tf import checkpoints, cli, evaluate
from atamp_tf.attacks import registry

_PGD = registry.get("pgd20").defaults  # the defaults of suite.SuiteSettings
_SPSA = registry.get("spsa").defaults
_AUTOATTACK = registry.get("autoattack").defaults

_MODEL = flags.DEFINE_string("model", None, "Run directory, .keras file or .onnx file.")
_CHECKPOINT = flags.DEFINE_enum("checkpoint", "best", ["best", "last"],
                                "Which checkpoint of a run directory to evaluate.")
_KERAS_MODEL = flags.DEFINE_string(
    "keras_model", None, "With an .onnx --model: the .keras checkpoint it was exported from, "
    "attacked by the white-box attacks and AutoAttack (skipped without it).")
_DATASET = flags.DEFINE_string("dataset", None, "Dataset name (default: the run's).")
_SPLIT = flags.DEFINE_enum("split", "test", ["test", "train"], "Split to evaluate on.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tensorflow-datasets directory.")
_NPZ_DIR = flags.DEFINE_string("npz_dir", None, "Directory of local .npz arrays.")
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", None,
                                     "Evaluate the first N examples of the split (default all).")
_INDICES = flags.DEFINE_string(
    "indices", None, "Evaluate only these positions of the split (canonical order): a comma "
    "list such as 3,17,42, or a file of them (e.g. the examples another evaluation found only "
    "with Square, to attack them harder). Not with --num_examples.")
_ATTACKS = flags.DEFINE_string(
    "attacks", None, "Comma list of attacks (default: Table 3's; `square` as well for ONNX). "
    "Known: " + ", ".join(a.name + ("" if a.norms == registry.NORMS else f" ({'/'.join(a.norms)})")
                          for a in registry.ATTACKS) + ".")
_NORM = flags.DEFINE_enum("norm", None, list(registry.NORMS),
                          "Threat model norm (default: the run's, else linf).")
_EPS = flags.DEFINE_string("eps", None, "Radius, a number or a fraction such as 8/255 (default: "
                           "the run's, else 8/255 for linf and 128/255 for l2).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Examples per attack batch.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of every random start and direction.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where to write the report (default: "
                                  "<run>/eval for --checkpoint=best, <run>/eval_last for last, "
                                  "or <model file stem>_eval beside the file).")
_PGD_STEP_SIZE = flags.DEFINE_string("pgd_step_size", None, "PGD / CW step (number or fraction; "
                                     "default eps/4 for linf, eps*15/128 for l2).")
_PGD_EARLY_STOP = flags.DEFINE_bool(
    "pgd_early_stop", _PGD["early_stop"], "PGD / CW: an example stops moving "
    "once misclassified (--nopgd_early_stop: CleverHans' last iterate).")
_SPSA_STEPS = flags.DEFINE_integer("spsa_steps", _SPSA["steps"],
                                   "SPSA iterations.")
_SPSA_SAMPLES = flags.DEFINE_integer("spsa_samples", _SPSA["num_samples"],
                                     "SPSA model evaluations per gradient estimate (even).")
_SPSA_DELTA = flags.DEFINE_float("spsa_delta", _SPSA["delta"],
                                 "SPSA finite-difference perturbation.")
_SPSA_LR = flags.DEFINE_float("spsa_learning_rate", _SPSA["learning_rate"],
                              "SPSA Adam step size.")
_SPSA_MAX_BATCH = flags.DEFINE_integer("spsa_max_batch", _SPSA["max_batch"],
                                       "Most images per model call inside SPSA.")
_AA_VERSION = flags.DEFINE_enum(
    "autoattack_version", _AUTOATTACK["version"], list(registry.AUTOATTACK_VERSIONS),
    "AutoAttack version, as the reference's: standard (APGD-CE, APGD-T, FAB-T, Square), plus "
    "(APGD-CE, APGD-DLR, FAB with 5 restarts, Square, APGD-T, FAB-T) or rand (APGD-CE and "
    "APGD-DLR with EOT over 20 model calls, for randomised defences).")
_AA_COMPONENTS = flags.DEFINE_list(
    "autoattack_components", [], "AutoAttack components to run, in order, from apgd-ce, "
    "apgd-dlr, apgd-t, fab, fab-t, square, with the version's restarts and EOT (default: "
    "the version's own). Any other list is labelled custom, never the version's name; "
    "the report records which components ran.")
_AA_ITERS = flags.DEFINE_integer("autoattack_iters", _AUTOATTACK["n_iter"],
                                 "APGD / FAB iterations.")
_SQUARE_QUERIES = flags.DEFINE_integer("square_queries", _AUTOATTACK["n_queries"],
                                       "Square attack queries.")
_AA_BATCH_SIZE = flags.DEFINE_integer(
    "autoattack_batch_size", None, "Examples per AutoAttack / Square batch (default: "
    "--batch_size). Larger is faster on a GPU; the random draws are keyed by batch, so a few "
    "borderline examples may fall the other way.")


def settings_from_flags():
    """SuiteSettings from the attack flags."""
    from atamp_tf.attacks import suite  # pylint: disable=import-outside-toplevel  (TensorFlow)

    step = _PGD_STEP_SIZE.value
    return suite.SuiteSettings(
        pgd_step_size=None if step is None else evaluate.parse_fraction(step, "pgd_step_size"),
        pgd_early_stop=_PGD_EARLY_STOP.value,
        spsa_steps=_SPSA_STEPS.value, spsa_samples=_SPSA_SAMPLES.value,
        spsa_delta=_SPSA_DELTA.value, spsa_learning_rate=_SPSA_LR.value,
        spsa_max_batch=_SPSA_MAX_BATCH.value, autoattack_version=_AA_VERSION.value,
        autoattack_components=tuple(_AA_COMPONENTS.value),
        autoattack_iters=_AA_ITERS.value, square_queries=_SQUARE_QUERIES.value,
        autoattack_batch_size=_AA_BATCH_SIZE.value)


def main(argv):
    cli.no_positional(argv)
    checkpoints.resolve_model(_MODEL.value, checkpoint=_CHECKPOINT.value,  # before TensorFlow
                              keras_model=_KERAS_MODEL.value)
    indices = checkpoints.parse_indices(_INDICES.value) if _INDICES.value is not None else None
    if indices is not None and _NUM_EXAMPLES.value is not None:
        raise ValueError("--indices and --num_examples: give one of them, not both")
    report = evaluate.evaluate_path(
        _MODEL.value, checkpoint=_CHECKPOINT.value, keras_model=_KERAS_MODEL.value,
        dataset=_DATASET.value, split=_SPLIT.value, data_dir=_DATA_DIR.value,
        npz_dir=_NPZ_DIR.value, num_examples=_NUM_EXAMPLES.value, attacks=_ATTACKS.value,
        norm=_NORM.value, eps=_EPS.value, batch_size=_BATCH_SIZE.value, seed=_SEED.value,
        output_dir=_OUTPUT_DIR.value, settings=settings_from_flags(), indices=indices)
    print(evaluate.markdown_report(report))




def run():
    cli.run(main)
