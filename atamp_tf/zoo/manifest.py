"""The zoo manifest: its schema (validation), reading, atomic writing, and file versions.

One JSON file, `atamp_tf/zoo/manifest.json` (package data, beside the cards and the bundled
ONNX files), lists every zoo model; `atamp_tf/zoo/README.md` documents the schema that
`validate_manifest` enforces. Kept apart from the client (`atamp_tf.zoo`) and the exporter
(`atamp_tf.export`), which both read and the latter writes it.
"""
import datetime
import json
import math
import os
import pathlib
import posixpath
import re
import tempfile
import urllib.parse

from atamp_tf import rundir

SCHEMA_VERSION = 1
NORMS = ("linf", "l2")
URL_SCHEMES = ("http", "https", "file")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")

_ENTRY_REQUIRED = ("name", "dataset", "threat_model", "architecture", "training", "metrics",
                   "file", "input", "output", "licence", "created", "code_version", "card")
_ENTRY_OPTIONAL = ("keras_url", "keras_sha256", "parity", "notes", "previous_versions",
                   "compared_with", "reference_parity")
# Our AutoAttack against the reference one on this entry's ONNX file (reference_cli's table).
_REFERENCE_PARITY_FIELDS = ("report", "onnx_sha256", "version", "examples", "num_examples",
                            "robust_ours", "robust_reference", "agreement", "num_disagree",
                            "disagree_indices", "reference", "ours")
# What a published checkpoint cost and how it was chosen (training.budget, from the run).
_BUDGET_FIELDS = ("epochs", "attack_steps", "train_seconds", "checkpoint", "epoch",
                  "selected_on")
SELECTION_RULES = ("holdout", "last")  # never the test set: the exporter refuses it too
# A previous version keeps what differs from one export of a name to the next.
_VERSION_REQUIRED = ("file", "metrics", "created", "code_version")
_VERSION_OPTIONAL = ("parity",)

# The package's own zoo: the manifest, cards/ and models/ are package data of atamp_tf.zoo.
PACKAGE_DIR = pathlib.Path(__file__).resolve().parent
PACKAGE_MANIFEST = PACKAGE_DIR / "manifest.json"
# The size rule: a model file ships inside the wheel only if it has at most this many bytes
# (setup.py leaves larger files in models/ out of the wheel); a larger one is hosted elsewhere
# and its entry's URL is absolute (https://...). A literal: setup.py reads it without importing.
BUNDLE_MAX_BYTES = 5_000_000


class ManifestError(ValueError):
    """The manifest does not follow the schema; the message names the entry and the field."""


def empty_manifest():
    """A manifest with no models, at the current schema version."""
    return {"schema_version": SCHEMA_VERSION, "models": []}


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


class _Checker:
    """Field checks for one entry; every failure names the entry and the dotted field path."""

    def __init__(self, where, prefix=""):
        self.where = where
        self.prefix = prefix  # e.g. "previous_versions[0]." for the fields of a version record

    def fail(self, field, expected, value):
        raise ManifestError(f"{self.where}: field {self.prefix + field!r}: expected {expected}, "
                            f"got {value!r}.")

    def get(self, obj, field, key):
        if not isinstance(obj, dict) or key not in obj:
            raise ManifestError(f"{self.where}: missing field {self.prefix + field!r}.")
        return obj[key]

    def obj(self, parent, field, key):
        value = self.get(parent, field, key)
        if not isinstance(value, dict):
            self.fail(field, "an object", value)
        return value

    def string(self, parent, field, key, *, choices=None, pattern=None):
        value = self.get(parent, field, key)
        if not isinstance(value, str) or not value:
            self.fail(field, "a non-empty string", value)
        if choices is not None and value not in choices:
            self.fail(field, f"one of {list(choices)}", value)
        if pattern is not None and not pattern.match(value):
            self.fail(field, f"a string matching {pattern.pattern}", value)
        return value

    def number(self, parent, field, key, *, low=None, high=None, low_open=False):
        value = self.get(parent, field, key)
        bad = not _is_number(value)
        bad = bad or (low is not None and (value <= low if low_open else value < low))
        bad = bad or (high is not None and value > high)
        if bad:
            lower = "" if low is None else f" {'>' if low_open else '>='} {low}"
            upper = "" if high is None else f" <= {high}"
            self.fail(field, f"a finite number{lower}{upper}", value)
        return value

    def integer(self, parent, field, key, *, low, allow_none=False):
        value = self.get(parent, field, key)
        if value is None and allow_none:
            return value
        if not _is_int(value) or value < low:
            self.fail(field, f"an integer >= {low}" + (" or null" if allow_none else ""), value)
        return value


def is_local_path(url):
    """True for a relative or absolute local path (no URL scheme; "C:/..." is a path too)."""
    scheme = urllib.parse.urlparse(url).scheme
    return not scheme or len(scheme) == 1


def check_url(url, where, field):
    """Raises ManifestError unless url is http(s), file, or a relative/absolute local path."""
    if not isinstance(url, str) or not url:
        raise ManifestError(f"{where}: field {field!r}: expected a non-empty URL, got {url!r}.")
    scheme = urllib.parse.urlparse(url).scheme
    # One-letter schemes are Windows drive letters ("C:/..."), i.e. local paths.
    if scheme and len(scheme) > 1 and scheme not in URL_SCHEMES:
        raise ManifestError(f"{where}: field {field!r}: URL scheme {scheme!r} is not one of "
                            f"{list(URL_SCHEMES)} (or a path relative to the manifest).")


def _check_threat(c, entry):
    threat = c.obj(entry, "threat_model", "threat_model")
    c.string(threat, "threat_model.norm", "norm", choices=NORMS)
    c.number(threat, "threat_model.eps", "eps", low=0, low_open=True)


def _check_architecture(c, entry):
    arch = c.obj(entry, "architecture", "architecture")
    c.string(arch, "architecture.arch", "arch")
    c.integer(arch, "architecture.width", "width", low=1, allow_none=True)
    c.integer(arch, "architecture.depth", "depth", low=1, allow_none=True)


def _check_training(c, entry):
    training = c.obj(entry, "training", "training")
    c.string(training, "training.method", "method")
    amp = c.obj(training, "training.amp", "amp")
    c.number(amp, "training.amp.delta", "delta", low=0)
    c.number(amp, "training.amp.xi", "xi", low=0)
    c.integer(amp, "training.amp.steps", "steps", low=0)
    c.string(amp, "training.amp.scope", "scope")
    flagfile = c.get(training, "training.flagfile", "flagfile")
    if not isinstance(flagfile, str):
        c.fail("training.flagfile", "a string (repository path of the flagfile, or '')", flagfile)
    flag_lines = c.get(training, "training.flags", "flags")
    if not isinstance(flag_lines, list) or not all(isinstance(f, str) for f in flag_lines):
        c.fail("training.flags", "a list of strings (the run's flags.cfg lines)", flag_lines)
    if "budget" in training:
        _check_budget(c, c.obj(training, "training.budget", "budget"))


def _check_budget(c, budget):
    unknown = sorted(set(budget) - set(_BUDGET_FIELDS))
    if unknown:
        c.fail("training.budget", f"only the fields {list(_BUDGET_FIELDS)}", unknown)
    c.integer(budget, "training.budget.epochs", "epochs", low=1)
    c.integer(budget, "training.budget.attack_steps", "attack_steps", low=0)
    c.number(budget, "training.budget.train_seconds", "train_seconds", low=0)
    c.string(budget, "training.budget.checkpoint", "checkpoint", choices=("best", "last"))
    c.integer(budget, "training.budget.epoch", "epoch", low=1)
    c.string(budget, "training.budget.selected_on", "selected_on", choices=SELECTION_RULES)


def autoattack_version(metrics):
    """The version of the AutoAttack behind a metrics block (report.json's attacks), or None."""
    return metrics.get("attacks", {}).get("autoattack", {}).get(
        "autoattack_settings", {}).get("version")


def same_threat_model(threat, dataset, norm, eps):
    """Whether published results' threat_model {dataset, norm, eps} is (dataset, norm, eps)."""
    return (threat["dataset"] == dataset and threat["norm"] == norm and _is_number(eps)
            and math.isclose(threat["eps"], eps, rel_tol=1e-6, abs_tol=1e-9))


def _check_compared_with(c, entry):
    """Published results the card puts beside the entry's own: a source, their threat model
    (the entry's own dataset, norm and eps) and rows of {model, natural, reported, autoattack}
    (accuracies as fractions; reported may be null)."""
    compared = c.obj(entry, "compared_with", "compared_with")
    c.string(compared, "compared_with.source", "source")
    threat = c.obj(compared, "compared_with.threat_model", "threat_model")
    own = (entry.get("dataset"), entry.get("threat_model", {}).get("norm"),
           entry.get("threat_model", {}).get("eps"))
    c.string(threat, "compared_with.threat_model.dataset", "dataset")
    c.string(threat, "compared_with.threat_model.norm", "norm")
    c.number(threat, "compared_with.threat_model.eps", "eps", low=0)
    if not same_threat_model(threat, *own):
        c.fail("compared_with.threat_model", f"the entry's own dataset, norm and eps {own}",
               threat)
    rows = c.get(compared, "compared_with.rows", "rows")
    if not isinstance(rows, list) or not rows:
        c.fail("compared_with.rows", "a non-empty list", rows)
    for i, row in enumerate(rows):
        field = f"compared_with.rows[{i}]"
        if not isinstance(row, dict) or set(row) != {"model", "natural", "reported", "autoattack"}:
            c.fail(field, "an object with model, natural, reported, autoattack", row)
        c.string(row, f"{field}.model", "model")
        for key in ("natural", "reported", "autoattack"):
            if not (key == "reported" and row[key] is None):
                c.number(row, f"{field}.{key}", key, low=0, high=1)


def _check_reference_parity(c, entry):
    """reference_parity: our AutoAttack and the reference's on this very file (its sha256),
    per example: how many examples, both robust accuracies, how many and which disagree."""
    parity = c.obj(entry, "reference_parity", "reference_parity")
    if not set(_REFERENCE_PARITY_FIELDS) <= set(parity) <= {*_REFERENCE_PARITY_FIELDS,
                                                            "ours_evaluation"}:
        c.fail("reference_parity", f"the fields {list(_REFERENCE_PARITY_FIELDS)} and "
               "optionally ours_evaluation", sorted(parity))
    for key in ("report", "version", "examples", "reference", "ours"):
        c.string(parity, f"reference_parity.{key}", key)
    if "ours_evaluation" in parity:
        c.string(parity, "reference_parity.ours_evaluation", "ours_evaluation",
                 pattern=SHA256_PATTERN)
    sha = c.string(parity, "reference_parity.onnx_sha256", "onnx_sha256")
    if sha != entry.get("file", {}).get("sha256"):
        c.fail("reference_parity.onnx_sha256", "the sha256 of the entry's own file", sha)
    n = c.integer(parity, "reference_parity.num_examples", "num_examples", low=1)
    for key in ("robust_ours", "robust_reference", "agreement"):
        c.number(parity, f"reference_parity.{key}", key, low=0, high=1)
    disagree = c.integer(parity, "reference_parity.num_disagree", "num_disagree", low=0)
    indices = parity["disagree_indices"]
    if (not isinstance(indices, list) or len(indices) != disagree
            or not all(_is_int(i) and 0 <= i < n for i in indices)):
        c.fail("reference_parity.disagree_indices",
               f"a list of num_disagree ({disagree}) example positions below {n}", indices)


def _check_metrics(c, entry):
    metrics = c.obj(entry, "metrics", "metrics")
    c.string(metrics, "metrics.split", "split")
    n = c.integer(metrics, "metrics.num_examples", "num_examples", low=1)
    c.string(metrics, "metrics.examples", "examples")
    accuracy = c.obj(metrics, "metrics.accuracy", "accuracy")
    natural = c.number(accuracy, "metrics.accuracy.natural", "natural", low=0, high=1)
    if abs(natural * n - round(natural * n)) > 1e-6:
        c.fail("metrics.accuracy.natural", f"a whole number of the {n} examples divided by {n}",
               natural)
    for attack, value in accuracy.items():
        if value is not None and not (_is_number(value) and 0 <= value <= 1):
            c.fail(f"metrics.accuracy.{attack}", "a fraction in [0, 1] or null", value)
    c.obj(metrics, "metrics.attacks", "attacks")
    if "report_fingerprint" in metrics:
        c.string(metrics, "metrics.report_fingerprint", "report_fingerprint",
                 pattern=SHA256_PATTERN)
    for i, check in enumerate(metrics.get("failed_checks") or ()):
        c.string(check, f"metrics.failed_checks[{i}].name", "name")


def _check_file(c, entry):
    file = c.obj(entry, "file", "file")
    check_url(c.get(file, "file.url", "url"), c.where, c.prefix + "file.url")
    c.integer(file, "file.size", "size", low=1)
    c.string(file, "file.sha256", "sha256", pattern=SHA256_PATTERN)
    c.string(file, "file.format", "format", choices=("onnx",))


def _check_io(c, entry):
    spec = c.obj(entry, "input", "input")
    shape = c.get(spec, "input.shape", "shape")
    if (not isinstance(shape, list) or len(shape) != 4 or shape[0] is not None
            or not all(_is_int(d) and d > 0 for d in shape[1:])):
        c.fail("input.shape", "[null, height, width, channels] (NHWC, dynamic batch)", shape)
    c.string(spec, "input.layout", "layout", choices=("NHWC",))
    c.string(spec, "input.dtype", "dtype", choices=("float32",))
    if c.get(spec, "input.range", "range") != [0.0, 1.0]:
        c.fail("input.range", "[0.0, 1.0]", spec["range"])
    c.string(spec, "input.name", "name")
    out = c.obj(entry, "output", "output")
    c.string(out, "output.kind", "kind", choices=("logits",))
    c.integer(out, "output.num_classes", "num_classes", low=2)
    c.string(out, "output.name", "name")


def _check_created_and_code(c, obj):
    created = c.string(obj, "created", "created")
    try:
        datetime.date.fromisoformat(created)
    except ValueError:
        c.fail("created", "an ISO date YYYY-MM-DD", created)
    c.string(obj, "code_version", "code_version")


def _check_parity(c, obj):
    if "parity" in obj:
        parity = c.obj(obj, "parity", "parity")
        c.number(parity, "parity.max_abs_diff", "max_abs_diff", low=0)
        c.integer(parity, "parity.num_examples", "num_examples", low=1)


def _check_previous_versions(c, entry):
    """previous_versions: version records (file, metrics, created, code_version[, parity]),
    newest first, each sha256 different from the current file's and from each other."""
    if "previous_versions" not in entry:
        return
    versions = entry["previous_versions"]
    if not isinstance(versions, list):
        c.fail("previous_versions", "a list of version records (newest first)", versions)
    seen = {entry["file"]["sha256"]}
    for i, record in enumerate(versions):
        field = f"previous_versions[{i}]"
        if not isinstance(record, dict):
            c.fail(field, "an object (file, metrics, created, code_version)", record)
        unknown = sorted(set(record) - set(_VERSION_REQUIRED) - set(_VERSION_OPTIONAL))
        if unknown:
            raise ManifestError(f"{c.where}: field {field!r}: unknown field(s) {unknown}; known: "
                                f"{list(_VERSION_REQUIRED + _VERSION_OPTIONAL)}.")
        sub = _Checker(c.where, prefix=f"{field}.")
        _check_file(sub, record)
        _check_metrics(sub, record)
        _check_created_and_code(sub, record)
        _check_parity(sub, record)
        sha256 = record["file"]["sha256"]
        if sha256 in seen:
            raise ManifestError(f"{c.where}: field '{field}.file.sha256': {sha256} is already "
                                "the current file or an earlier record; each version is listed "
                                "once.")
        seen.add(sha256)


def _check_provenance(c, entry):
    c.string(entry, "licence", "licence")
    _check_created_and_code(c, entry)
    c.string(entry, "card", "card")
    has_url, has_sha = "keras_url" in entry, "keras_sha256" in entry
    if has_url != has_sha:
        raise ManifestError(f"{c.where}: fields 'keras_url' and 'keras_sha256' go together; "
                            "only one is present.")
    if has_url:
        check_url(entry["keras_url"], c.where, "keras_url")
        c.string(entry, "keras_sha256", "keras_sha256", pattern=SHA256_PATTERN)
    _check_parity(c, entry)
    if "notes" in entry:
        notes = entry["notes"]
        if not isinstance(notes, str) or not notes.strip():
            c.fail("notes", "a non-empty string (free text shown as the card's Scope section; "
                   "omit the field when there is nothing to say)", notes)


def validate_entry(entry, where="manifest entry"):
    """Raises ManifestError (naming `where` and the field) unless entry follows the schema."""
    if not isinstance(entry, dict):
        raise ManifestError(f"{where}: expected an object, got {type(entry).__name__}.")
    c = _Checker(where)
    name = c.string(entry, "name", "name", pattern=NAME_PATTERN)
    c.where = f"{where} ({name!r})"
    unknown = sorted(set(entry) - set(_ENTRY_REQUIRED) - set(_ENTRY_OPTIONAL))
    if unknown:
        raise ManifestError(f"{c.where}: unknown field(s) {unknown}; known: "
                            f"{list(_ENTRY_REQUIRED + _ENTRY_OPTIONAL)}.")
    c.string(entry, "dataset", "dataset")
    _check_threat(c, entry)
    _check_architecture(c, entry)
    _check_training(c, entry)
    _check_metrics(c, entry)
    _check_file(c, entry)
    _check_io(c, entry)
    _check_provenance(c, entry)
    _check_previous_versions(c, entry)
    if "compared_with" in entry:
        _check_compared_with(c, entry)
    if "reference_parity" in entry:
        _check_reference_parity(c, entry)


def validate_manifest(obj):
    """Raises ManifestError unless obj is a manifest following the schema (zoo README.md)."""
    if not isinstance(obj, dict):
        raise ManifestError(f"manifest: expected a JSON object, got {type(obj).__name__}.")
    unknown = sorted(set(obj) - {"schema_version", "models"})
    if unknown:
        raise ManifestError(f"manifest: unknown top-level field(s) {unknown}; "
                            "expected 'schema_version' and 'models'.")
    if obj.get("schema_version") != SCHEMA_VERSION:
        raise ManifestError(f"manifest: field 'schema_version': expected {SCHEMA_VERSION}, "
                            f"got {obj.get('schema_version')!r}.")
    models = obj.get("models")
    if not isinstance(models, list):
        raise ManifestError(f"manifest: field 'models': expected a list, got {models!r}.")
    seen = set()
    for i, entry in enumerate(models):
        validate_entry(entry, where=f"manifest entry {i}")
        if entry["name"] in seen:
            raise ManifestError(f"manifest entry {i} ({entry['name']!r}): field 'name': "
                                "the name is used by an earlier entry; names must be unique.")
        seen.add(entry["name"])


def read_manifest(path):
    """Reads and validates the manifest at path; ValueError names the file on any problem."""
    obj = rundir.read_json(path, "zoo manifest")
    try:
        validate_manifest(obj)
    except ManifestError as e:
        raise ManifestError(f"zoo manifest {str(path)!r}: {e}") from None
    return obj


def write_manifest(path, obj):
    """Validates obj and writes it to path atomically (temporary file, then rename)."""
    validate_manifest(obj)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".manifest-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a manifest is for everyone to read
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def find_entry(obj, name):
    """The entry called name in manifest obj, or None."""
    return next((m for m in obj["models"] if m["name"] == name), None)


def versioned_url(url, sha256):
    """url with its file name made unique to one version: <stem>-<first 16 hex><suffix>.

    Where an earlier version's file goes when a re-export puts the new one at its old URL
    (the cache names files the same way).
    """
    parts = urllib.parse.urlsplit(url)
    directory, name = posixpath.split(parts.path)
    stem, dot, suffix = name.rpartition(".")
    versioned = f"{stem}-{sha256[:16]}.{suffix}" if dot else f"{name}-{sha256[:16]}"
    return urllib.parse.urlunsplit(parts._replace(path=posixpath.join(directory, versioned)))


def version_record(entry):
    """The entry's current file as a previous_versions record."""
    record = {"file": dict(entry["file"]), "metrics": entry["metrics"],
              "created": entry["created"], "code_version": entry["code_version"]}
    if "parity" in entry:
        record["parity"] = entry["parity"]
    return record


def with_history(new, old):
    """A copy of entry new whose previous_versions are old's file (when its sha256 differs)
    followed by old's own previous versions, newest first, each version once and never new's
    file. A version recorded at new's URL, where new's file now goes, is re-addressed to
    versioned_url of it (the exporter renames the file there to match)."""
    new = dict(new)
    history = list(new.pop("previous_versions", []))
    if old is not None:
        history += [version_record(old), *old.get("previous_versions", [])]
    url, seen, kept = new["file"]["url"], {new["file"]["sha256"]}, []
    for record in history:
        sha256 = record["file"]["sha256"]
        if sha256 in seen:
            continue
        seen.add(sha256)
        moved = record["file"]["url"] == url
        kept.append(dict(record, file=dict(record["file"], url=versioned_url(url, sha256)))
                    if moved else record)
    if kept:
        new["previous_versions"] = kept
    return new


def upsert_entry(obj, entry):
    """A copy of manifest obj with entry added, or replacing the entry of the same name; the
    replaced entry's file stays addressable as the newest of entry's previous_versions."""
    new = with_history(entry, find_entry(obj, entry["name"]))
    models = [m for m in obj["models"] if m["name"] != entry["name"]]
    models.append(new)
    models.sort(key=lambda m: m["name"])
    return {"schema_version": obj["schema_version"], "models": models}
