"""The zoo manifest: its schema (validation), reading, and atomic writing.

One JSON file, `zoo/manifest.json`, lists every zoo model; `zoo/README.md` documents the
schema that `validate_manifest` enforces. Kept apart from the client (`atamp_tf.zoo`) and the
exporter (`atamp_tf.export`), which both read and the latter writes it.
"""
import datetime
import json
import math
import os
import re
import tempfile
import urllib.parse

SCHEMA_VERSION = 1
NORMS = ("linf", "l2")
URL_SCHEMES = ("http", "https", "file")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")

_ENTRY_REQUIRED = ("name", "dataset", "threat_model", "architecture", "training", "metrics",
                   "file", "input", "output", "licence", "created", "code_version", "card")
_ENTRY_OPTIONAL = ("keras_url", "keras_sha256", "parity", "notes")


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

    def __init__(self, where):
        self.where = where

    def fail(self, field, expected, value):
        raise ManifestError(f"{self.where}: field {field!r}: expected {expected}, got {value!r}.")

    def get(self, obj, field, key):
        if not isinstance(obj, dict) or key not in obj:
            raise ManifestError(f"{self.where}: missing field {field!r}.")
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


def _check_file(c, entry):
    file = c.obj(entry, "file", "file")
    check_url(c.get(file, "file.url", "url"), c.where, "file.url")
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


def _check_provenance(c, entry):
    c.string(entry, "licence", "licence")
    created = c.string(entry, "created", "created")
    try:
        datetime.date.fromisoformat(created)
    except ValueError:
        c.fail("created", "an ISO date YYYY-MM-DD", created)
    c.string(entry, "code_version", "code_version")
    c.string(entry, "card", "card")
    has_url, has_sha = "keras_url" in entry, "keras_sha256" in entry
    if has_url != has_sha:
        raise ManifestError(f"{c.where}: fields 'keras_url' and 'keras_sha256' go together; "
                            "only one is present.")
    if has_url:
        check_url(entry["keras_url"], c.where, "keras_url")
        c.string(entry, "keras_sha256", "keras_sha256", pattern=SHA256_PATTERN)
    if "parity" in entry:
        parity = c.obj(entry, "parity", "parity")
        c.number(parity, "parity.max_abs_diff", "max_abs_diff", low=0)
        c.integer(parity, "parity.num_examples", "num_examples", low=1)
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


def validate_manifest(obj):
    """Raises ManifestError unless obj is a manifest following the schema in zoo/README.md."""
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
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"zoo manifest {str(path)!r} does not exist.") from None
    except json.JSONDecodeError as e:
        raise ManifestError(f"zoo manifest {str(path)!r} is not valid JSON: {e}.") from None
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


def upsert_entry(obj, entry):
    """A copy of manifest obj with entry added, or replacing the entry of the same name."""
    models = [m for m in obj["models"] if m["name"] != entry["name"]]
    models.append(entry)
    models.sort(key=lambda m: m["name"])
    return {"schema_version": obj["schema_version"], "models": models}
