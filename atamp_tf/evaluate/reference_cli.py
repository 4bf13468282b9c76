"""Our AutoAttack against the reference one (pyautoattack), example by example.

    python -m atamp_tf.evaluate.reference_cli \
        --onnx=atamp_tf/zoo/models/digits-linf-smallcnn-pgd-at.onnx \
        --dataset=digits --norm=linf --eps=0.15 --num_examples=360 --output_dir=parity
    python -m atamp_tf.evaluate.reference_cli --model=runs/x --onnx=runs/x/export/x.onnx ...

The reference attacks the ONNX file (converted by onnx2torch); ours attacks --model (a run
directory or .keras file: evaluate's path), or with no --model the same torch module with torch
gradients. Writes parity.json and parity.md (atamp_tf.evaluate.reference) and prints the
markdown. The reference runs --chunk_size examples at a time, each chunk saved as it
finishes: killed at any point, the same command resumes after the last finished chunk. Needs
the `reference` extra (torch, pyautoattack, onnx2torch; see the README).
"""
import os
import shutil

from absl import flags

from atamp_tf import cli, rundir
from atamp_tf.attacks import registry
from atamp_tf.checkpoints import (
    checkpoint_path,
    load_keras_model,
    parse_fraction,
    read_run_config,
    run_dir_of,
)

_ONNX = flags.DEFINE_string("onnx", None, "The exported .onnx file the reference attacks.")
_MODEL = flags.DEFINE_string("model", None, "Run directory or .keras file our AutoAttack "
                             "attacks (default: the ONNX file's torch module, torch gradients).")
_CHECKPOINT = flags.DEFINE_enum("checkpoint", "best", ["best", "last"],
                                "Which checkpoint of a run directory --model is.")
_DATA = {name: flags.DEFINE_string(name, None, text) for name, text in (
    ("dataset", "Dataset name (default: --model's run's)."),
    ("data_dir", "tensorflow-datasets directory (default: --model's run's)."),
    ("npz_dir", "Directory of local .npz arrays (default: --model's run's)."))}
_SPLIT = flags.DEFINE_enum("split", "test", ["test", "train"], "Split of the examples.")
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", None,
                                     "Compare on the first N examples of the split (default all).")
_NORM = flags.DEFINE_enum("norm", None, ["linf", "l2"], "Threat model (default: the run's).")
_EPS = flags.DEFINE_string("eps", None, "Radius, a number or a fraction such as 8/255 "
                           "(default: the run's).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 250, "Examples per attack batch, both sides "
                                   "(the reference's default).")
_CHUNK_SIZE = flags.DEFINE_integer(
    "chunk_size", None, "The reference runs on this many examples at a time, each chunk saved "
    "under --output_dir/partial as it finishes: a run killed at any point resumes after its "
    "last finished chunk (default --batch_size, the batches our evaluation resumes by).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of both sides (their generators differ).")
_THREADS = flags.DEFINE_integer("torch_threads", 1, "torch intra-op threads (1: fastest for "
                                "small models on a busy machine).")
_VERSION = flags.DEFINE_enum("autoattack_version", "standard", list(registry.AUTOATTACK_VERSIONS),
                             "The AutoAttack version both sides run.")
_OURS_FROM = flags.DEFINE_string(
    "ours_from", None, "Read our AutoAttack from this python -m atamp_tf.evaluate output "
    "directory (its first --num_examples examples, same model, threat model and version) "
    "instead of running it again; only the reference runs.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where to write parity.json / parity.md "
                                  "(default: <onnx file stem>_parity beside the file).")


def _settings():
    """(keras path or None, dataset, norm, eps text) from the flags and --model's run."""
    if not _ONNX.value:
        raise ValueError("--onnx is required: the exported .onnx file the reference attacks")
    if not os.path.isfile(_ONNX.value):
        raise ValueError(f"--onnx: {_ONNX.value} is not a file")
    keras_path = checkpoint_path(_MODEL.value, _CHECKPOINT.value) if _MODEL.value else None
    config = read_run_config(run_dir_of(keras_path)) if keras_path else {}
    dataset = _DATA["dataset"].value or config.get("dataset")
    norm = _NORM.value or config.get("norm")
    eps = _EPS.value or (str(config.get("eps_text") or config.get("eps"))
                         if config.get("eps") is not None and config.get("norm") == norm else None)
    for flag, value in (("dataset", dataset), ("norm", norm), ("eps", eps)):
        if not value:
            raise ValueError(f"--{flag} is required (no --model run directory names one)")
    if _NUM_EXAMPLES.value is not None and _NUM_EXAMPLES.value < 1:
        raise ValueError(f"--num_examples must be >= 1, got {_NUM_EXAMPLES.value}")
    if _OURS_FROM.value and not os.path.isfile(os.path.join(_OURS_FROM.value, "report.json")):
        raise ValueError(f"--ours_from: {_OURS_FROM.value} has no report.json; expected the "
                         "output directory of python -m atamp_tf.evaluate")
    if _BATCH_SIZE.value < 1 or _THREADS.value < 1 or (_CHUNK_SIZE.value or 1) < 1:
        raise ValueError("--batch_size, --chunk_size and --torch_threads must be >= 1")
    return keras_path, dataset, norm, eps, config


def main(argv):
    cli.no_positional(argv)
    keras_path, dataset, norm, eps_text, config = _settings()
    eps = parse_fraction(eps_text, "eps")
    from atamp_tf import data  # pylint: disable=import-outside-toplevel
    from atamp_tf.evaluate import reference  # pylint: disable=import-outside-toplevel
    missing = reference.missing_requirements()
    if missing:
        raise ValueError(f"the reference AutoAttack needs {', '.join(missing)}: "
                         f"pip install -e '.[reference]' and pip install --no-deps "
                         f"onnx2torch==1.5.15")
    x, y = data.load_arrays(dataset, _SPLIT.value,
                            data_dir=_DATA["data_dir"].value or config.get("data_dir"),
                            npz_dir=_DATA["npz_dir"].value or config.get("npz_dir"),
                            num_examples=_NUM_EXAMPLES.value)
    keras_model = load_keras_model(keras_path) if keras_path else None
    output_dir = _OUTPUT_DIR.value or os.path.splitext(_ONNX.value)[0] + "_parity"
    resume_dir = os.path.join(output_dir, rundir.PARTIAL_DIR)  # removed once it is written
    report = reference.compare_autoattack(_ONNX.value, x, y, norm=norm, eps=eps,
                                          keras_model=keras_model,
                                          batch_size=_BATCH_SIZE.value, seed=_SEED.value,
                                          threads=_THREADS.value,
                                          version=_VERSION.value,
                                          ours_from=(_OURS_FROM.value, dataset, _SPLIT.value)
                                          if _OURS_FROM.value else None,
                                          chunk_size=_CHUNK_SIZE.value or _BATCH_SIZE.value,
                                          resume_dir=resume_dir)
    how = "the first" if _NUM_EXAMPLES.value is not None else "all"
    report = {"model_name": os.path.splitext(os.path.basename(_ONNX.value))[0],
              "keras_model": keras_path, "dataset": dataset, "split": _SPLIT.value,
              "examples": f"{how} {len(x)} examples of the {_SPLIT.value} split in its own "
                          f"order", **report}
    report["threat_model"]["eps_text"] = eps_text
    reference.write_comparison(report, output_dir)
    shutil.rmtree(resume_dir, ignore_errors=True)
    print(reference.markdown_comparison(report))


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
