"""The model zoo client: list, describe, download (sha256-verified, cached), load, evaluate.

    from atamp_tf import zoo
    zoo.list_models()                      # manifest entries
    session = zoo.load("cifar10-linf-...")  # onnxruntime.InferenceSession, input [0,1] NHWC

The manifest is package data, `atamp_tf/zoo/manifest.json` (or `$ATAMP_TF_ZOO_MANIFEST`).
An entry's file comes from `<base>/<its file name>` when a base is set (`base=`, else
`$ATAMP_TF_ZOO_BASE`: an http, https or file URL, or a directory), else from its own URL: a
relative path is the file beside the manifest (for the package's manifest, the copy bundled in
the wheel), an absolute one is downloaded. Files go into a cache directory (`$ATAMP_TF_CACHE`,
else the user cache `.../atamp_tf`) through pooch: a temporary file in the cache directory, its
sha256 checked against the manifest, then an atomic rename; a mismatch is refused and the
temporary file removed, whatever the source. A cached file is re-hashed on every use; a copy
that fails the check is removed and fetched again. `revision=` picks an earlier version of a
model by its sha256 (or a prefix); `$ATAMP_TF_OFFLINE=1` refuses any http(s) download before a
request is made. Command line: `python -m atamp_tf.zoo list | info | revisions | download |
verify | evaluate NAME`.
"""
import copy
import dataclasses
import logging
import os
import pathlib
import posixpath
import re
import shutil
import urllib.parse
import urllib.request

import numpy as np

from atamp_tf.checkpoints import load_keras_model, onnx_session
from atamp_tf.rundir import sha256_file  # noqa: F401  (public here too)
from atamp_tf.zoo import manifest as zoo_manifest
from atamp_tf.zoo.manifest import ManifestError, validate_manifest  # noqa: F401  (public API)

CACHE_ENV = "ATAMP_TF_CACHE"
MANIFEST_ENV = "ATAMP_TF_ZOO_MANIFEST"
BASE_ENV = "ATAMP_TF_ZOO_BASE"
OFFLINE_ENV = "ATAMP_TF_OFFLINE"
PACKAGE_MANIFEST = zoo_manifest.PACKAGE_MANIFEST
REPO_MANIFEST = PACKAGE_MANIFEST  # its name from before the manifest became package data
DOWNLOAD_TIMEOUT_SECONDS = 60
MIN_REVISION_DIGITS = 4  # a revision is a sha256 or at least this many of its first hex digits
# Entry fields about the newest file only; an earlier revision's info leaves them out.
_NEWEST_FILE_ONLY = ("keras_url", "keras_sha256", "reference_parity")
_NETWORK_SCHEMES = ("http", "https")

log = logging.getLogger(__name__)


class ZooError(Exception):
    """Base class of the zoo client's errors."""


class UnknownModelError(ZooError, ValueError):
    """The requested name is not in the manifest (the message lists the known names)."""


class ZooDownloadError(ZooError):
    """The file could not be fetched and no verified copy is in the cache."""


class ZooOfflineError(ZooDownloadError):
    """$ATAMP_TF_OFFLINE forbids the download that was needed; no request was made."""


class ZooIntegrityError(ZooError):
    """A fetched file or model does not match what the manifest records."""


class UnknownRevisionError(ZooError, ValueError):
    """No version of the model has that sha256 (the message lists the revisions there are)."""


def default_cache_dir():
    """$ATAMP_TF_CACHE if set, else the user's cache directory for atamp_tf."""
    if os.environ.get(CACHE_ENV):
        return pathlib.Path(os.environ[CACHE_ENV]).expanduser()
    import pooch  # pylint: disable=import-outside-toplevel

    return pathlib.Path(pooch.os_cache("atamp_tf"))


def default_manifest_path():
    """$ATAMP_TF_ZOO_MANIFEST if set, else the package's atamp_tf/zoo/manifest.json."""
    return pathlib.Path(os.environ.get(MANIFEST_ENV) or PACKAGE_MANIFEST)


def offline():
    """True when $ATAMP_TF_OFFLINE is 1, true, yes or on (any case): no http(s) downloads."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def resolve_url(url, base_dir):
    """http(s) and file URLs as they are; a local path (relative to base_dir) as a file URL."""
    if not zoo_manifest.is_local_path(url):
        return url
    path = pathlib.Path(url)
    if not path.is_absolute():
        path = pathlib.Path(base_dir) / path
    return path.resolve().as_uri()


def normalize_base(base, where):
    """A base as a URL prefix without the trailing slash: an http(s) or file URL as given, a
    directory as its file URL. ValueError (naming `where`) for other schemes or no directory."""
    scheme = urllib.parse.urlparse(base).scheme
    if scheme in zoo_manifest.URL_SCHEMES:
        return base.rstrip("/")
    if not zoo_manifest.is_local_path(base):
        raise ValueError(f"{where}: {base!r} is neither an http, https or file URL nor a "
                         "directory.")
    path = pathlib.Path(base).expanduser().resolve()
    if not path.is_dir():
        raise ValueError(f"{where}: {base!r} is not a URL and the directory {path} does not "
                         "exist.")
    return path.as_uri()


def file_name(url):
    """The file name a URL or manifest path ends with: what is looked for under a base."""
    if zoo_manifest.is_local_path(url):
        return posixpath.basename(url.replace(os.sep, "/"))
    return urllib.parse.unquote(posixpath.basename(urllib.parse.urlsplit(url).path))


def _copy_downloader(url, output_file, pooch_instance):  # pylint: disable=unused-argument
    """pooch downloader for file:// URLs: copies the local file into pooch's temporary file."""
    source = urllib.request.url2pathname(urllib.parse.urlparse(url).path)
    shutil.copyfile(source, output_file)


def _downloader(url):
    import pooch  # pylint: disable=import-outside-toplevel

    if urllib.parse.urlparse(url).scheme == "file":
        return _copy_downloader
    return pooch.HTTPDownloader(timeout=DOWNLOAD_TIMEOUT_SECONDS, chunk_size=1 << 20)


@dataclasses.dataclass(frozen=True)
class Fetched:
    """A verified local copy of a zoo file, and whether it came from the cache."""

    path: str
    from_cache: bool
    url: str


def fetch_file(url, sha256, cache_path, *, what):
    """Returns a verified local copy of url at cache_path, downloading only when needed.

    `what` names the file in messages (e.g. "model 'x' (onnx)"). Raises ZooIntegrityError if the
    downloaded bytes do not hash to sha256 (nothing is left in the cache), ZooDownloadError if
    the file cannot be fetched and no verified copy is cached.
    """
    import pooch  # pylint: disable=import-outside-toplevel
    import requests  # pylint: disable=import-outside-toplevel

    cache_path = pathlib.Path(cache_path)
    removed_note = ""
    if cache_path.exists():
        if sha256_file(cache_path) == sha256:
            log.info("%s: using the verified cached copy %s (no download).", what, cache_path)
            return Fetched(str(cache_path), True, url)
        log.warning("%s: cached copy %s fails its sha256 check (tampered or corrupt); removed, "
                    "fetching it again from %s.", what, cache_path, url)
        cache_path.unlink()
        removed_note = " (a cached copy failed its sha256 check and was removed)"
    if offline() and urllib.parse.urlparse(url).scheme in _NETWORK_SCHEMES:
        raise ZooOfflineError(
            f"{what}: no verified copy in the cache at {cache_path}{removed_note}, and "
            f"{OFFLINE_ENV}={os.environ[OFFLINE_ENV]} forbids downloading {url} (no request was "
            f"made). Unset {OFFLINE_ENV}, copy the file (sha256 {sha256}) to that path, or set "
            f"{BASE_ENV} to a directory that holds it.")
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        pooch.retrieve(url, known_hash=f"sha256:{sha256}", fname=cache_path.name,
                       path=cache_path.parent, downloader=_downloader(url))
    except ValueError as e:  # pooch: hash mismatch; its temporary file is already removed
        raise ZooIntegrityError(
            f"{what}: the file downloaded from {url} does not match the manifest's sha256 "
            f"{sha256} (truncated, changed on the server, or tampered with); refused, nothing "
            f"was written to {cache_path}. pooch said: {e}") from None
    except (requests.RequestException, OSError) as e:
        raise ZooDownloadError(
            f"{what}: no verified copy in the cache at {cache_path}{removed_note}, and the "
            f"download from {url} failed ({type(e).__name__}: {e}). If this machine is offline, "
            f"fetch the file elsewhere and copy it to that path (sha256 {sha256}).") from None
    log.info("%s: downloaded %s to %s (sha256 verified).", what, url, cache_path)
    return Fetched(str(cache_path), False, url)


def natural_accuracy_counts(session, x, y, *, batch_size=256):
    """(number correct, number of examples) of an onnxruntime session's argmax on (x, y)."""
    name = session.get_inputs()[0].name
    correct = 0
    for start in range(0, len(x), batch_size):
        logits = session.run(None, {name: np.asarray(x[start:start + batch_size], np.float32)})[0]
        correct += int(np.sum(np.argmax(logits, axis=1) == y[start:start + batch_size]))
    return correct, len(x)


@dataclasses.dataclass(frozen=True)
class Reproduction:
    """Natural accuracy measured now against the one the manifest records, on the same examples."""

    name: str
    num_examples: int
    correct: int
    recorded_correct: int
    recorded_accuracy: float

    @property
    def accuracy(self):
        return self.correct / self.num_examples

    @property
    def matches(self):
        return self.correct == self.recorded_correct


def reproduce_natural_accuracy(entry, session, x, y, *, batch_size=256):
    """Counts correct predictions of session on the entry's recorded examples (x, y).

    x, y must be exactly the examples named in entry["metrics"] (the first num_examples of the
    split); the recorded accuracy is a whole number of them, so "reproduced" means the same count.
    """
    metrics = entry["metrics"]
    n = metrics["num_examples"]
    if len(x) != n or len(y) != n:
        raise ValueError(f"model {entry['name']!r}: the manifest records {n} examples "
                         f"({metrics['examples']}), got {len(x)} images and {len(y)} labels.")
    correct, _ = natural_accuracy_counts(session, x, y, batch_size=batch_size)
    recorded = metrics["accuracy"]["natural"]
    return Reproduction(entry["name"], n, correct, round(recorded * n), recorded)


def _check_session_matches(entry, session):
    """Raises ZooIntegrityError unless the ONNX graph's input/output agree with the entry."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    problems = []
    if len(inputs) != 1:
        problems.append(f"{len(inputs)} inputs, expected 1")
    elif list(inputs[0].shape[1:]) != entry["input"]["shape"][1:]:
        problems.append(f"input shape {inputs[0].shape}, expected {entry['input']['shape']}")
    elif inputs[0].type != "tensor(float)":
        problems.append(f"input type {inputs[0].type}, expected tensor(float)")
    if not outputs or outputs[0].shape[-1] != entry["output"]["num_classes"]:
        shape = outputs[0].shape if outputs else None
        problems.append(f"output shape {shape}, expected [batch, {entry['output']['num_classes']}]")
    if problems:
        raise ZooIntegrityError(f"model {entry['name']!r}: the ONNX graph does not match its "
                                f"manifest entry: {'; '.join(problems)}.")


class Zoo:
    """A manifest, a cache directory and an optional base; the module-level functions use the
    default ones (the package's manifest, $ATAMP_TF_CACHE, $ATAMP_TF_ZOO_BASE)."""

    def __init__(self, manifest=None, cache_dir=None, base=None):
        self.manifest_path = pathlib.Path(manifest or default_manifest_path()).resolve()
        self.cache_dir = pathlib.Path(cache_dir or default_cache_dir())
        self.manifest = zoo_manifest.read_manifest(self.manifest_path)
        if base:
            self.base = normalize_base(str(base), "base")
        elif os.environ.get(BASE_ENV):
            self.base = normalize_base(os.environ[BASE_ENV], f"${BASE_ENV}")
        else:
            self.base = None  # each file from its own URL

    @property
    def base_dir(self):
        """The directory that relative URLs and card paths are resolved against."""
        return self.manifest_path.parent

    def source_url(self, url):
        """Where the file recorded at url is fetched from: <base>/<its file name> when a base
        is set, else url itself (a relative path: the file beside the manifest)."""
        if self.base is None:
            return resolve_url(url, self.base_dir)
        return f"{self.base}/{urllib.parse.quote(file_name(url))}"

    def names(self):
        return [entry["name"] for entry in self.manifest["models"]]

    def list_models(self):
        """Copies of every manifest entry, in manifest order."""
        return copy.deepcopy(self.manifest["models"])

    def _entry(self, name):
        entry = zoo_manifest.find_entry(self.manifest, name)
        if entry is None:
            raise UnknownModelError(
                f"no model {name!r} in the zoo manifest {self.manifest_path}; known: "
                f"{self.names() or 'none (the manifest is empty)'}.")
        return entry

    def revisions(self, name):
        """Every version of model name, newest (the entry's file) first, as version records:
        {"file", "metrics", "created", "code_version"[, "parity"]}."""
        entry = self._entry(name)
        return copy.deepcopy([zoo_manifest.version_record(entry),
                              *entry.get("previous_versions", [])])

    def revision(self, name, revision=None):
        """The version record of model name whose sha256 is or starts with revision (None: the
        newest); UnknownRevisionError lists the revisions there are."""
        versions = self.revisions(name)
        if revision is None:
            return versions[0]
        wanted = str(revision).strip().lower()
        matches = []
        if re.fullmatch(f"[0-9a-f]{{{MIN_REVISION_DIGITS},64}}", wanted):
            matches = [v for v in versions if v["file"]["sha256"].startswith(wanted)]
        if len(matches) == 1:
            return matches[0]
        known = "; ".join(f"{v['file']['sha256'][:16]} (created {v['created']}"
                          f"{', newest' if i == 0 else ''})" for i, v in enumerate(versions))
        if matches:
            raise UnknownRevisionError(
                f"model {name!r}: revision {revision!r} starts the sha256 of {len(matches)} "
                f"revisions; give more hex digits. Revisions, newest first: {known}.")
        raise UnknownRevisionError(
            f"model {name!r} has no revision {revision!r} (a sha256, or at least its first "
            f"{MIN_REVISION_DIGITS} hex digits); its revisions, newest first: {known}.")

    def info(self, name, revision=None):
        """A copy of the manifest entry called name; UnknownModelError lists the known names.

        With revision: the entry with that version's file, metrics, created, code_version and
        parity (what the entry said when that file was the newest), and without the fields
        that describe only the newest file (its Keras file, its reference AutoAttack parity).
        """
        entry = copy.deepcopy(self._entry(name))
        if revision is None:
            return entry
        version = self.revision(name, revision)
        if version["file"]["sha256"] != entry["file"]["sha256"]:
            for field in _NEWEST_FILE_ONLY:
                entry.pop(field, None)
        entry.pop("parity", None)
        entry.update(version)
        return entry

    def _cache_path(self, name, sha256, suffix):
        return self.cache_dir / f"{name}-{sha256[:16]}{suffix}"

    def fetch(self, name, revision=None):
        """The verified ONNX file of model name (see fetch_file), with where it came from."""
        file = self.revision(name, revision)["file"]
        what = f"model {name!r} (onnx" + (f", revision {file['sha256'][:16]})" if revision
                                          else ")")
        return fetch_file(self.source_url(file["url"]), file["sha256"],
                          self._cache_path(name, file["sha256"], ".onnx"), what=what)

    def download(self, name, revision=None):
        """Local path of the verified ONNX file of model name, downloading it if needed."""
        return self.fetch(name, revision).path

    def load(self, name, providers=None, revision=None):
        """An onnxruntime.InferenceSession of model name (CPU unless providers are given)."""
        return onnx_session(self.download(name, revision), providers)

    def load_keras(self, name):
        """The Keras model of name, for entries that publish one (keras_url, keras_sha256)."""
        entry = self.info(name)
        if "keras_url" not in entry:
            raise ValueError(f"model {name!r} has no Keras file in the zoo (no keras_url); "
                             "use zoo.load for its ONNX model.")
        sha256 = entry["keras_sha256"]
        fetched = fetch_file(self.source_url(entry["keras_url"]), sha256,
                             self._cache_path(name, sha256, ".keras"),
                             what=f"model {name!r} (keras)")
        return load_keras_model(fetched.path)

    def verify(self, name, revision=None):
        """Fetches model name, re-hashes it and checks size and graph I/O against the entry."""
        entry = self.info(name, revision)
        fetched = self.fetch(name, revision)
        digest, size = sha256_file(fetched.path), os.path.getsize(fetched.path)
        if digest != entry["file"]["sha256"] or size != entry["file"]["size"]:
            raise ZooIntegrityError(
                f"model {name!r}: {fetched.path} has sha256 {digest} and {size} bytes; the "
                f"manifest records {entry['file']['sha256']} and {entry['file']['size']} bytes.")
        session = onnx_session(fetched.path)
        _check_session_matches(entry, session)
        return {"name": name, "path": fetched.path, "sha256": digest, "size": size,
                "from_cache": fetched.from_cache, "url": fetched.url}

    def evaluate(self, name, *, data_dir=None, npz_dir=None, batch_size=256, load_arrays=None,
                 revision=None):
        """Reproduces the recorded natural accuracy of name (of that revision) on its recorded
        examples (ONNX). load_arrays defaults to atamp_tf.data.load_arrays (same signature).
        """
        if load_arrays is None:
            from atamp_tf.data import load_arrays  # pylint: disable=import-outside-toplevel
        entry = self.info(name, revision)
        metrics = entry["metrics"]
        x, y = load_arrays(entry["dataset"], metrics["split"], data_dir=data_dir,
                           npz_dir=npz_dir, num_examples=metrics["num_examples"])
        return reproduce_natural_accuracy(entry, self.load(name, revision=revision), x, y,
                                          batch_size=batch_size)


def list_models(manifest=None, cache_dir=None, *, base=None):
    """Every model in the zoo manifest (copies of the entries)."""
    return Zoo(manifest, cache_dir, base).list_models()


def info(name, manifest=None, cache_dir=None, *, base=None, revision=None):
    """The manifest entry of model name (as it was at revision, if given)."""
    return Zoo(manifest, cache_dir, base).info(name, revision)


def revisions(name, manifest=None, cache_dir=None, *, base=None):
    """The versions of model name, newest first (see Zoo.revisions)."""
    return Zoo(manifest, cache_dir, base).revisions(name)


def download(name, manifest=None, cache_dir=None, *, base=None, revision=None):
    """Local path of model name's verified ONNX file (downloaded into the cache if needed)."""
    return Zoo(manifest, cache_dir, base).download(name, revision)


def load(name, manifest=None, cache_dir=None, providers=None, *, base=None, revision=None):
    """An onnxruntime.InferenceSession of model name: input [0,1] NHWC float32, output logits."""
    return Zoo(manifest, cache_dir, base).load(name, providers=providers, revision=revision)


def load_keras(name, manifest=None, cache_dir=None, *, base=None):
    """The Keras model of name, where the zoo publishes one."""
    return Zoo(manifest, cache_dir, base).load_keras(name)


def verify(name, manifest=None, cache_dir=None, *, base=None, revision=None):
    """Fetches and checks model name against its manifest entry (see Zoo.verify)."""
    return Zoo(manifest, cache_dir, base).verify(name, revision)


def evaluate(name, manifest=None, cache_dir=None, *, base=None, **kwargs):
    """Natural accuracy of name on its recorded examples against the recorded one."""
    return Zoo(manifest, cache_dir, base).evaluate(name, **kwargs)


def __getattr__(attr):
    """`zoo.list` as an alias of list_models, without shadowing the builtin inside this module."""
    if attr == "list":
        return list_models
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
