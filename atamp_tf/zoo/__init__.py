"""The model zoo client: list, describe, download (sha256-verified, cached), load, evaluate.

    from atamp_tf import zoo
    zoo.list_models()                      # manifest entries
    session = zoo.load("cifar10-linf-...")  # onnxruntime.InferenceSession, input [0,1] NHWC

Files come from the URLs in `zoo/manifest.json` (http, https, file, or a path relative to the
manifest) into a cache directory (`$ATAMP_TF_CACHE`, else the user cache `.../atamp_tf`).
Downloads go through pooch: a temporary file in the cache directory, its sha256 checked against
the manifest, then an atomic rename; a mismatch is refused and the temporary file removed.
A cached file is re-hashed on every use; a copy that fails the check is removed and fetched
again. Command line: `python -m atamp_tf.zoo list | info | download | verify | evaluate NAME`.
"""
import copy
import dataclasses
import logging
import os
import pathlib
import shutil
import urllib.parse
import urllib.request

import numpy as np

from atamp_tf.checkpoints import load_keras_model
from atamp_tf.rundir import sha256_file  # noqa: F401  (public here too)
from atamp_tf.zoo import manifest as zoo_manifest
from atamp_tf.zoo.manifest import ManifestError, validate_manifest  # noqa: F401  (public API)

CACHE_ENV = "ATAMP_TF_CACHE"
MANIFEST_ENV = "ATAMP_TF_ZOO_MANIFEST"
REPO_MANIFEST = pathlib.Path(__file__).resolve().parent / "manifest.json"
DOWNLOAD_TIMEOUT_SECONDS = 60

log = logging.getLogger(__name__)


class ZooError(Exception):
    """Base class of the zoo client's errors."""


class UnknownModelError(ZooError, ValueError):
    """The requested name is not in the manifest (the message lists the known names)."""


class ZooDownloadError(ZooError):
    """The file could not be fetched and no verified copy is in the cache."""


class ZooIntegrityError(ZooError):
    """A fetched file or model does not match what the manifest records."""


def default_cache_dir():
    """$ATAMP_TF_CACHE if set, else the user's cache directory for atamp_tf."""
    if os.environ.get(CACHE_ENV):
        return pathlib.Path(os.environ[CACHE_ENV]).expanduser()
    import pooch  # pylint: disable=import-outside-toplevel

    return pathlib.Path(pooch.os_cache("atamp_tf"))


def default_manifest_path():
    """$ATAMP_TF_ZOO_MANIFEST if set, else the repository's zoo/manifest.json."""
    return pathlib.Path(os.environ.get(MANIFEST_ENV) or REPO_MANIFEST)


def resolve_url(url, base_dir):
    """http(s) and file URLs as they are; a local path (relative to base_dir) as a file URL."""
    scheme = urllib.parse.urlparse(url).scheme
    if scheme in ("http", "https", "file"):
        return url
    path = pathlib.Path(url)
    if not path.is_absolute():
        path = pathlib.Path(base_dir) / path
    return path.resolve().as_uri()


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
    """A manifest plus a cache directory; the module-level functions use the default one."""

    def __init__(self, manifest=None, cache_dir=None):
        self.manifest_path = pathlib.Path(manifest or default_manifest_path()).resolve()
        self.cache_dir = pathlib.Path(cache_dir or default_cache_dir())
        self.manifest = zoo_manifest.read_manifest(self.manifest_path)

    @property
    def base_dir(self):
        """The directory that relative URLs and card paths are resolved against."""
        return self.manifest_path.parent

    def names(self):
        return [entry["name"] for entry in self.manifest["models"]]

    def list_models(self):
        """Copies of every manifest entry, in manifest order."""
        return copy.deepcopy(self.manifest["models"])

    def info(self, name):
        """A copy of the manifest entry called name; UnknownModelError lists the known names."""
        for entry in self.manifest["models"]:
            if entry["name"] == name:
                return copy.deepcopy(entry)
        raise UnknownModelError(f"no model {name!r} in the zoo manifest {self.manifest_path}; "
                                f"known: {self.names() or 'none (the manifest is empty)'}.")

    def _cache_path(self, name, sha256, suffix):
        return self.cache_dir / f"{name}-{sha256[:16]}{suffix}"

    def fetch(self, name):
        """The verified ONNX file of model name (see fetch_file), with where it came from."""
        entry = self.info(name)
        sha256 = entry["file"]["sha256"]
        url = resolve_url(entry["file"]["url"], self.base_dir)
        return fetch_file(url, sha256, self._cache_path(name, sha256, ".onnx"),
                          what=f"model {name!r} (onnx)")

    def download(self, name):
        """Local path of the verified ONNX file of model name, downloading it if needed."""
        return self.fetch(name).path

    def load(self, name, providers=None):
        """An onnxruntime.InferenceSession of model name (CPU unless providers are given)."""
        import onnxruntime  # pylint: disable=import-outside-toplevel

        return onnxruntime.InferenceSession(self.download(name),
                                            providers=providers or ["CPUExecutionProvider"])

    def load_keras(self, name):
        """The Keras model of name, for entries that publish one (keras_url, keras_sha256)."""
        entry = self.info(name)
        if "keras_url" not in entry:
            raise ValueError(f"model {name!r} has no Keras file in the zoo (no keras_url); "
                             "use zoo.load for its ONNX model.")
        sha256 = entry["keras_sha256"]
        fetched = fetch_file(resolve_url(entry["keras_url"], self.base_dir), sha256,
                             self._cache_path(name, sha256, ".keras"),
                             what=f"model {name!r} (keras)")
        return load_keras_model(fetched.path)

    def verify(self, name):
        """Fetches model name, re-hashes it and checks size and graph I/O against the entry."""
        import onnxruntime  # pylint: disable=import-outside-toplevel

        entry = self.info(name)
        fetched = self.fetch(name)
        digest, size = sha256_file(fetched.path), os.path.getsize(fetched.path)
        if digest != entry["file"]["sha256"] or size != entry["file"]["size"]:
            raise ZooIntegrityError(
                f"model {name!r}: {fetched.path} has sha256 {digest} and {size} bytes; the "
                f"manifest records {entry['file']['sha256']} and {entry['file']['size']} bytes.")
        session = onnxruntime.InferenceSession(fetched.path, providers=["CPUExecutionProvider"])
        _check_session_matches(entry, session)
        return {"name": name, "path": fetched.path, "sha256": digest, "size": size,
                "from_cache": fetched.from_cache}

    def evaluate(self, name, *, data_dir=None, npz_dir=None, batch_size=256, load_arrays=None):
        """Reproduces the recorded natural accuracy of name on its recorded examples (ONNX).

        load_arrays defaults to atamp_tf.data.load_arrays (same signature).
        """
        if load_arrays is None:
            from atamp_tf.data import load_arrays  # pylint: disable=import-outside-toplevel
        entry = self.info(name)
        metrics = entry["metrics"]
        x, y = load_arrays(entry["dataset"], metrics["split"], data_dir=data_dir,
                           npz_dir=npz_dir, num_examples=metrics["num_examples"])
        return reproduce_natural_accuracy(entry, self.load(name), x, y, batch_size=batch_size)


def list_models(manifest=None, cache_dir=None):
    """Every model in the zoo manifest (copies of the entries)."""
    return Zoo(manifest, cache_dir).list_models()


def info(name, manifest=None, cache_dir=None):
    """The manifest entry of model name."""
    return Zoo(manifest, cache_dir).info(name)


def download(name, manifest=None, cache_dir=None):
    """Local path of model name's verified ONNX file (downloaded into the cache if needed)."""
    return Zoo(manifest, cache_dir).download(name)


def load(name, manifest=None, cache_dir=None, providers=None):
    """An onnxruntime.InferenceSession of model name: input [0,1] NHWC float32, output logits."""
    return Zoo(manifest, cache_dir).load(name, providers=providers)


def load_keras(name, manifest=None, cache_dir=None):
    """The Keras model of name, where the zoo publishes one."""
    return Zoo(manifest, cache_dir).load_keras(name)


def verify(name, manifest=None, cache_dir=None):
    """Fetches and checks model name against its manifest entry (see Zoo.verify)."""
    return Zoo(manifest, cache_dir).verify(name)


def evaluate(name, manifest=None, cache_dir=None, **kwargs):
    """Natural accuracy of name on its recorded examples against the recorded one."""
    return Zoo(manifest, cache_dir).evaluate(name, **kwargs)


def __getattr__(attr):
    """`zoo.list` as an alias of list_models, without shadowing the builtin inside this module."""
    if attr == "list":
        return list_models
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")

