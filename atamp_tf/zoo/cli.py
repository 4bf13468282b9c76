"""Command line of the zoo: python -m atamp_tf.zoo list | info NAME | revisions NAME |
download NAME | verify NAME | evaluate NAME.

Flags live here rather than in atamp_tf.zoo so that importing the library defines no absl flags
(two modules defining the same flag name cannot be imported into one process).
"""
import json

from absl import app, flags, logging

from atamp_tf import cli, zoo
from atamp_tf.attacks import registry
from atamp_tf.zoo import manifest as zoo_manifest

_MANIFEST = flags.DEFINE_string("manifest", None, "Zoo manifest JSON (default: "
                                "$ATAMP_TF_ZOO_MANIFEST, else the package's "
                                "atamp_tf/zoo/manifest.json).")
_CACHE_DIR = flags.DEFINE_string("cache_dir", None, "Download cache (default: $ATAMP_TF_CACHE, "
                                 "else the user cache directory .../atamp_tf).")
_BASE = flags.DEFINE_string("base", None, "Fetch each file as <base>/<its file name>: an http, "
                            "https or file URL, or a directory (default: $ATAMP_TF_ZOO_BASE, "
                            "else the bundled file or the entry's own URL).")
_REVISION = flags.DEFINE_string("revision", None, "info, download, verify, evaluate: the "
                                "version whose sha256 is or starts with this (at least "
                                f"{zoo.MIN_REVISION_DIGITS} hex digits; default the newest).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "evaluate: TFDS data directory.")
_NPZ_DIR = flags.DEFINE_string("npz_dir", None, "evaluate: directory of local .npz arrays.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "evaluate: inference batch size.",
                                   lower_bound=1)

COMMANDS = ("list", "info", "revisions", "download", "verify", "evaluate")
USAGE = ("usage: python -m atamp_tf.zoo [flags] list | "
         "{info,revisions,download,verify,evaluate} NAME")


def format_table(entries):
    """One line per model: name, dataset, threat model, architecture, accuracies, and on how
    many examples (a non-standard AutoAttack says its version)."""
    width = max([len("name"), *(len(e["name"]) for e in entries)])
    lines = [f"{'name':{width}s} {'dataset':10s} {'threat':14s} {'arch':22s} natural  robust"]
    for e in entries:
        metrics = e["metrics"]
        acc = metrics["accuracy"]
        robust_name = next((k for k in registry.HEADLINE if acc.get(k) is not None), None)
        label = robust_name
        version = zoo_manifest.autoattack_version(metrics)
        if robust_name == "autoattack" and version and version != "standard":
            label = f"autoattack {version}"
        robust = (f"{acc[robust_name]:.4f} ({label}, n={metrics['num_examples']})"
                  if robust_name else "-")
        threat = f"{e['threat_model']['norm']} {e['threat_model']['eps']:.4g}"
        lines.append(f"{e['name']:{width}s} {e['dataset']:10s} {threat:14s} "
                     f"{e['architecture']['arch']:22s} {acc['natural']:.4f}   {robust}")
    return "\n".join(lines)


def format_revisions(versions):
    """One line per version, newest first: sha256, created, size, natural accuracy, URL."""
    lines = []
    for i, v in enumerate(versions):
        natural = v["metrics"]["accuracy"]["natural"]
        lines.append(f"{v['file']['sha256']}  {v['created']}  {v['file']['size']:>10d} bytes  "
                     f"natural {natural:.4f}  {v['file']['url']}{'  (newest)' if i == 0 else ''}")
    return "\n".join(lines)


def run_command(command, name, the_zoo, revision=None):
    """Runs one command and returns (text to print, exit status)."""
    if command == "list":
        entries = the_zoo.list_models()
        return (format_table(entries) if entries else "The zoo manifest lists no models."), 0
    if command == "info":
        return json.dumps(the_zoo.info(name, revision), indent=2), 0
    if command == "revisions":
        return format_revisions(the_zoo.revisions(name)), 0
    if command == "download":
        fetched = the_zoo.fetch(name, revision)
        source = "verified cached copy" if fetched.from_cache else f"downloaded from {fetched.url}"
        return f"{fetched.path} ({source})", 0
    if command == "verify":
        result = the_zoo.verify(name, revision)
        return f"OK {name}: sha256 {result['sha256']}, {result['size']} bytes, graph I/O match.", 0
    result = the_zoo.evaluate(name, data_dir=_DATA_DIR.value, npz_dir=_NPZ_DIR.value,
                              batch_size=_BATCH_SIZE.value, revision=revision)
    verdict = "reproduced" if result.matches else "NOT reproduced"
    text = (f"{name}: natural accuracy {result.accuracy:.4f} ({result.correct}/"
            f"{result.num_examples}) vs recorded {result.recorded_accuracy:.4f} "
            f"({result.recorded_correct}/{result.num_examples}): {verdict}.")
    return text, 0 if result.matches else 1


def main(argv):
    args = argv[1:]
    if not args or args[0] not in COMMANDS or len(args) != (1 if args[0] == "list" else 2):
        raise app.UsageError(USAGE)
    if _REVISION.value is not None and args[0] in ("list", "revisions"):
        raise app.UsageError(f"--revision: applies to one model's file, not to {args[0]}.")
    logging.set_verbosity(logging.INFO)
    the_zoo = zoo.Zoo(_MANIFEST.value, _CACHE_DIR.value, _BASE.value)
    text, status = run_command(args[0], args[1] if len(args) > 1 else None, the_zoo,
                               _REVISION.value)
    print(text)
    return status


def run():
    cli.run(main, errors=(zoo.ZooError,))
