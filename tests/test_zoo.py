"""Zoo: manifest schema, real entries, download / cache / verify over a 127.0.0.1 server."""
import collections
import copy
import http.server
import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import threading

import numpy as np
import onnxruntime
import pytest
import zoo_helpers

from atamp_tf import export, zoo
from atamp_tf.zoo import cards as model_card
from atamp_tf.zoo import manifest as zoo_manifest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.environ.get("ATAMP_TF_NPZ_ROOT",
                             os.path.join(os.path.dirname(REPO), "shared", "data"))
NAME = "digits-linf-tiny"


@pytest.fixture(autouse=True)
def _no_zoo_environment(monkeypatch):
    """Tests set the base and the offline switch themselves, never inherit them."""
    monkeypatch.delenv(zoo.BASE_ENV, raising=False)
    monkeypatch.delenv(zoo.OFFLINE_ENV, raising=False)


# ---------------------------------------------------------------- the real zoo

def _real_data_dirs(entry):
    """(npz_dir, None) when the entry's examples are available offline, else a reason string."""
    dataset, split = entry["dataset"], entry["metrics"]["split"]
    if dataset == "digits":  # ships with scikit-learn
        return None, None
    if os.path.isfile(os.path.join(SHARED_DATA, dataset, f"{split}.npz")):
        return SHARED_DATA, None
    return None, f"{dataset} {split} data not found under {SHARED_DATA}"


def test_real_zoo_entries_verify_and_reproduce_natural_accuracy(tmp_path):
    """Every real entry: sha256 and graph I/O checked, natural accuracy reproduced exactly."""
    the_zoo = zoo.Zoo(zoo.PACKAGE_MANIFEST, os.environ.get(zoo.CACHE_ENV) or tmp_path)
    zoo_manifest.validate_manifest(the_zoo.manifest)
    assert the_zoo.names() == sorted(set(the_zoo.names()))
    unchecked = []
    for name in the_zoo.names():
        entry = the_zoo.info(name)
        assert (the_zoo.base_dir / entry["card"]).is_file(), entry["card"]
        try:
            result = the_zoo.verify(name)
        except zoo.ZooDownloadError as e:  # a remote file on an offline machine
            unchecked.append(f"{name}: {e}")
            continue
        assert result["sha256"] == entry["file"]["sha256"]
        npz_dir, missing = _real_data_dirs(entry)
        if missing:
            unchecked.append(f"{name}: {missing}")
            continue
        reproduction = the_zoo.evaluate(name, npz_dir=npz_dir)
        assert reproduction.matches, reproduction
    if unchecked:
        pytest.skip("checked every other entry; could not check: " + "; ".join(unchecked))


def test_real_zoo_cards_are_the_rendered_entries():
    """Committed cards are exactly render_card(entry): generated, never edited by hand."""
    manifest = zoo_manifest.read_manifest(zoo.PACKAGE_MANIFEST)
    for entry in manifest["models"]:
        card = (zoo.PACKAGE_MANIFEST.parent / entry["card"]).read_text(encoding="utf-8")
        assert card == model_card.render_card(entry), entry["name"]


def test_readme_zoo_example_quotes_its_entry():
    """The README's zoo example names a real entry and quotes that entry's recorded numbers."""
    readme = " ".join((pathlib.Path(REPO) / "README.md").read_text(encoding="utf-8").split())
    name = "mnist-linf-trades-small-cnn-pgd-at-amp"
    entry = zoo.Zoo(zoo.PACKAGE_MANIFEST).info(name)
    metrics = entry["metrics"]
    accuracy, n = metrics["accuracy"], metrics["num_examples"]
    assert zoo_manifest.autoattack_version(metrics) == "standard" and n == 10000
    assert f'zoo.load("{name}")' in readme
    assert (f"{100 * accuracy['natural']:.2f}% natural and {100 * accuracy['autoattack']:.2f}% "
            "standard-AutoAttack accuracy on all 10,000") in readme
    correct = round(accuracy["natural"] * n)
    assert (f"{name}: natural accuracy {accuracy['natural']:.4f} ({correct}/{n}) vs recorded "
            f"# {accuracy['natural']:.4f} ({correct}/{n}): reproduced.") in readme


def test_package_zoo_follows_the_size_rule():
    """Every entry of the package's manifest with a relative URL is a file bundled in the
    package, within the size rule (else the wheel leaves it out, setup.py); larger files are
    hosted (absolute URL). Every file in models/ is referenced by one entry."""
    manifest = zoo_manifest.read_manifest(zoo.PACKAGE_MANIFEST)
    assert zoo.PACKAGE_MANIFEST.parent == zoo_manifest.PACKAGE_DIR
    assert zoo_manifest.PACKAGE_DIR == pathlib.Path(zoo.__file__).resolve().parent
    referenced = set()
    for entry in manifest["models"]:
        for record in [entry, *entry.get("previous_versions", [])]:
            url, size = record["file"]["url"], record["file"]["size"]
            if not zoo_manifest.is_local_path(url):
                assert url.startswith("https://"), url
                continue
            path = zoo_manifest.PACKAGE_DIR / url
            assert size <= zoo_manifest.BUNDLE_MAX_BYTES and path.is_file(), url
            assert zoo.sha256_file(path) == record["file"]["sha256"], url
            referenced.add(path.name)
    assert sorted(p.name for p in (zoo_manifest.PACKAGE_DIR / "models").iterdir()) == \
        sorted(referenced)


# ---------------------------------------------------------------- a zoo built in tmp

def _export_tiny(root, *, seed, **export_options):
    """Trains a tiny digits model and exports it as NAME into the zoo under root/zoo."""
    model = zoo_helpers.train_tiny_model(seed=seed)
    x, y = zoo_helpers.check_examples()
    report = zoo_helpers.make_report(model, x, y)
    run_dir = zoo_helpers.make_run_dir(str(root / "run"), model, report)
    keras_path, meta, _ = export.read_run_dir(run_dir, "best")
    entry = export.export_to_zoo(
        keras_path, meta, report, x, y, name=NAME, out_dir=root / "zoo/models",
        card_dir=root / "zoo/cards", manifest_path=root / "zoo/manifest.json", **export_options)
    return model, x, y, report, entry


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A tiny digits model exported into a zoo in tmp (relative file URLs), plus its model."""
    root = tmp_path_factory.mktemp("zoo_src")
    model, x, y, report, entry = _export_tiny(root, seed=1, include_keras=True,
                                              code_version="0123abc")
    onnx_bytes = (root / "zoo/models" / f"{NAME}.onnx").read_bytes()
    return {"root": root, "manifest": root / "zoo/manifest.json", "entry": entry,
            "model": model, "onnx": onnx_bytes}


def test_tmp_zoo_reproduces_recorded_natural_accuracy(published, tmp_path):
    the_zoo = zoo.Zoo(published["manifest"], tmp_path / "cache")
    result = the_zoo.evaluate(NAME)  # atamp_tf.data.load_arrays("digits", "test", 120)
    recorded = published["entry"]["metrics"]["accuracy"]["natural"]
    assert result.matches and result.num_examples == zoo_helpers.NUM_CHECK
    assert result.accuracy == recorded and 0.5 < recorded < 1.0
    assert the_zoo.verify(NAME)["from_cache"] is True  # evaluate cached it

    # The same logic notices a manifest whose recorded accuracy is off by one example.
    entry = the_zoo.info(NAME)
    x, y = zoo_helpers.check_examples()
    entry["metrics"]["accuracy"]["natural"] = (result.correct + 1) / result.num_examples
    off = zoo.reproduce_natural_accuracy(entry, the_zoo.load(NAME), x, y)
    assert not off.matches and off.correct == result.correct
    with pytest.raises(ValueError, match="records 120 examples"):
        zoo.reproduce_natural_accuracy(entry, the_zoo.load(NAME), x[:50], y[:50])


def test_load_and_load_keras_give_the_published_model(published, tmp_path):
    the_zoo = zoo.Zoo(published["manifest"], tmp_path / "cache")
    x, _ = zoo_helpers.check_examples()
    want = published["model"].predict(x, verbose=0)
    session = the_zoo.load(NAME)
    assert isinstance(session, onnxruntime.InferenceSession)
    np.testing.assert_allclose(session.run(None, {"images": x})[0], want, atol=1e-4)
    keras_model = the_zoo.load_keras(NAME)
    np.testing.assert_allclose(keras_model.predict(x, verbose=0), want, atol=1e-6)
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert sorted(p.rsplit(".", 1)[1] for p in cached) == ["keras", "onnx"]


def test_list_info_and_unknown_names(published, tmp_path):
    kwargs = {"manifest": published["manifest"], "cache_dir": tmp_path}
    assert [e["name"] for e in zoo.list_models(**kwargs)] == [NAME]
    assert zoo.list(**kwargs) == zoo.list_models(**kwargs)
    assert zoo.info(NAME, **kwargs) == published["entry"]
    with pytest.raises(zoo.UnknownModelError, match=f"no model 'nope'.*known: \\['{NAME}'\\]"):
        zoo.info("nope", **kwargs)
    with pytest.raises(AttributeError):
        zoo.does_not_exist  # pylint: disable=pointless-statement


def test_cache_dir_comes_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "c"))
    assert zoo.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv(zoo.CACHE_ENV)
    assert zoo.default_cache_dir().name == "atamp_tf"


def test_zoo_cli_list_verify_evaluate(published, tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    flags = [f"--manifest={published['manifest']}", f"--cache_dir={tmp_path}"]

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "atamp_tf.zoo", *flags, *args], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=300, check=False)

    listed = cli("list")
    assert listed.returncode == 0 and NAME in listed.stdout, listed.stderr[-2000:]
    evaluated = cli("evaluate", NAME)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    n = zoo_helpers.NUM_CHECK
    correct = round(published["entry"]["metrics"]["accuracy"]["natural"] * n)
    assert f"({correct}/{n}) vs recorded" in evaluated.stdout and "reproduced" in evaluated.stdout
    unknown = cli("verify", "nope")
    assert unknown.returncode == 2 and "error: no model 'nope'" in unknown.stderr


# ---------------------------------------------------------------- manifest schema

def test_repo_manifest_and_exported_entry_validate(published):
    zoo_manifest.validate_manifest(json.loads(zoo.PACKAGE_MANIFEST.read_text()))
    zoo_manifest.validate_manifest(json.loads(published["manifest"].read_text()))


@pytest.mark.parametrize("path, value, field", [
    (("file", "sha256"), "abc", "file.sha256"),
    (("file", "url"), "ftp://example.org/x.onnx", "file.url"),
    (("threat_model", "eps"), -0.1, "threat_model.eps"),
    (("threat_model", "norm"), "l1", "threat_model.norm"),
    (("input", "range"), [0, 255], "input.range"),
    (("input", "shape"), [1, 8, 8, 1], "input.shape"),
    (("metrics", "accuracy", "natural"), 0.123456, "metrics.accuracy.natural"),
    (("training", "amp", "steps"), 1.5, "training.amp.steps"),
    (("created",), "02/01/2025", "created"),
    (("notes",), 42, "notes"),
    (("notes",), ["reduced scale"], "notes"),
    (("notes",), None, "notes"),
    (("notes",), "  ", "notes"),
])
def test_validate_manifest_names_entry_and_field(published, path, value, field):
    manifest = json.loads(published["manifest"].read_text())
    target = manifest["models"][0]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(zoo_manifest.ManifestError,
                       match=f"manifest entry 0 \\('{NAME}'\\): field '{field}'"):
        zoo.validate_manifest(manifest)


NOTES = ("Reduced-scale model: PreAct ResNet-18 at width 16 trained on the first 1,000 "
         "CIFAR-10 training images for 50 epochs; not comparable to the paper's full-scale "
         "numbers.")


def test_notes_validate_and_show_as_the_cards_scope_section(published):
    entry = copy.deepcopy(published["entry"])
    assert "notes" not in entry  # exported without --notes: no field, no Scope section
    plain = model_card.render_card(entry)
    assert "## Scope" not in plain
    entry["notes"] = NOTES
    zoo.validate_manifest({"schema_version": 1, "models": [entry]})
    card = model_card.render_card(entry)
    title, rest = plain.split("\n\n## Use\n", 1)
    assert card == f"{title}\n\n## Scope\n{NOTES}\n\n## Use\n{rest}"


def test_validate_manifest_structure(published):
    manifest = json.loads(published["manifest"].read_text())
    entry = manifest["models"][0]
    missing = copy.deepcopy(entry)
    del missing["metrics"]["examples"]
    with pytest.raises(zoo_manifest.ManifestError, match="missing field 'metrics.examples'"):
        zoo.validate_manifest({"schema_version": 1, "models": [missing]})
    with pytest.raises(zoo_manifest.ManifestError, match="names must be unique"):
        zoo.validate_manifest({"schema_version": 1, "models": [entry, entry]})
    lone = {k: v for k, v in entry.items() if k != "keras_sha256"}
    with pytest.raises(zoo_manifest.ManifestError, match="'keras_url' and 'keras_sha256'"):
        zoo.validate_manifest({"schema_version": 1, "models": [lone]})
    with pytest.raises(zoo_manifest.ManifestError, match="unknown field"):
        zoo.validate_manifest({"schema_version": 1, "models": [dict(entry, sha="x")]})
    with pytest.raises(zoo_manifest.ManifestError, match="'schema_version': expected 1"):
        zoo.validate_manifest({"schema_version": 2, "models": []})
    zoo.validate_manifest({"schema_version": 1, "models": []})


# ---------------------------------------------------------------- downloads over HTTP

class FileServer:
    """Serves bytes on 127.0.0.1 (ephemeral port), counting GETs; can truncate responses."""

    def __init__(self):
        self.files, self.truncated, self.requests = {}, set(), collections.Counter()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802  (http.server's name)
                server.requests[self.path] += 1
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                # A truncated response promises len(body) bytes, sends half, then hangs up.
                self.wfile.write(body[:len(body) // 2] if self.path in server.truncated else body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.running = True

    def stop(self):
        if self.running:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join(timeout=10)
            self.running = False


@pytest.fixture
def server():
    srv = FileServer()
    yield srv
    srv.stop()


@pytest.fixture
def http_zoo(published, server, tmp_path):
    """A manifest whose entry points at the server, an empty cache, and the served path."""
    entry = copy.deepcopy(published["entry"])
    entry["file"]["url"] = f"{server.url}/models/{NAME}.onnx"
    manifest = tmp_path / "manifest.json"
    zoo_manifest.write_manifest(manifest, {"schema_version": 1, "models": [entry]})
    server.files[f"/models/{NAME}.onnx"] = published["onnx"]
    return zoo.Zoo(manifest, tmp_path / "cache"), f"/models/{NAME}.onnx"


def _cache_files(the_zoo):
    return sorted(p.name for p in the_zoo.cache_dir.iterdir()) if the_zoo.cache_dir.exists() \
        else []


def test_download_then_cache_hit_without_a_request(http_zoo, server, published, caplog):
    the_zoo, path = http_zoo
    first = the_zoo.fetch(NAME)
    assert not first.from_cache and server.requests[path] == 1
    assert open(first.path, "rb").read() == published["onnx"]
    assert zoo.sha256_file(first.path) == published["entry"]["file"]["sha256"]
    with caplog.at_level(logging.INFO, logger="atamp_tf.zoo"):
        second = the_zoo.download(NAME)
    assert second == first.path and server.requests[path] == 1
    assert "using the verified cached copy" in caplog.text
    assert _cache_files(the_zoo) == [os.path.basename(first.path)]


def test_sha256_mismatch_is_refused_and_nothing_cached(http_zoo, server, published):
    the_zoo, path = http_zoo
    server.files[path] = published["onnx"][:-1] + b"\0"  # same size, other bytes
    with pytest.raises(zoo.ZooIntegrityError, match="does not match the manifest's sha256"):
        the_zoo.download(NAME)
    assert server.requests[path] == 1 and _cache_files(the_zoo) == []


def test_truncated_download_is_detected(http_zoo, server, published):
    the_zoo, path = http_zoo
    server.truncated.add(path)  # Content-Length says more than arrives
    with pytest.raises(zoo.ZooDownloadError, match=f"model '{NAME}'.*download from http") as info:
        the_zoo.download(NAME)
    assert "IncompleteRead" in str(info.value) or "ChunkedEncodingError" in str(info.value)
    assert _cache_files(the_zoo) == []
    server.truncated.clear()
    server.files[path] = published["onnx"][:1000]  # a short file served honestly
    with pytest.raises(zoo.ZooIntegrityError):
        the_zoo.download(NAME)
    assert _cache_files(the_zoo) == []


def test_tampered_cache_is_fetched_again(http_zoo, server, published, caplog):
    the_zoo, path = http_zoo
    cached = the_zoo.download(NAME)
    with open(cached, "r+b") as f:
        f.write(b"tampered")
    with caplog.at_level(logging.WARNING, logger="atamp_tf.zoo"):
        fetched = the_zoo.fetch(NAME)
    assert "fails its sha256 check" in caplog.text
    assert not fetched.from_cache and server.requests[path] == 2
    assert open(fetched.path, "rb").read() == published["onnx"]


def test_tampered_cache_offline_is_refused_and_removed(http_zoo, server):
    the_zoo, _ = http_zoo
    cached = the_zoo.download(NAME)
    with open(cached, "ab") as f:
        f.write(b"x")
    server.stop()
    with pytest.raises(zoo.ZooDownloadError, match="failed its sha256 check and was removed"):
        the_zoo.load(NAME)
    assert _cache_files(the_zoo) == []


def test_offline_uses_cache_and_says_so(http_zoo, server, caplog):
    the_zoo, path = http_zoo
    cached = the_zoo.download(NAME)
    server.stop()
    with caplog.at_level(logging.INFO, logger="atamp_tf.zoo"):
        fetched = the_zoo.fetch(NAME)
    assert fetched.from_cache and fetched.path == cached
    assert "using the verified cached copy" in caplog.text
    assert the_zoo.verify(NAME)["from_cache"] is True
    assert server.requests[path] == 1


def test_offline_without_cache_names_model_url_and_cache_path(http_zoo, server):
    the_zoo, path = http_zoo
    server.stop()
    with pytest.raises(zoo.ZooDownloadError) as info:
        the_zoo.download(NAME)
    message = str(info.value)
    assert f"model '{NAME}'" in message and f"{server.url}{path}" in message
    assert str(the_zoo.cache_dir) in message and "offline" in message
    assert _cache_files(the_zoo) == []


def test_file_url_missing_file_is_a_clear_download_error(published, tmp_path):
    entry = copy.deepcopy(published["entry"])
    entry["file"]["url"] = "models/not-there.onnx"
    manifest = tmp_path / "manifest.json"
    zoo_manifest.write_manifest(manifest, {"schema_version": 1, "models": [entry]})
    the_zoo = zoo.Zoo(manifest, tmp_path / "cache")
    with pytest.raises(zoo.ZooDownloadError, match="not-there.onnx"):
        the_zoo.download(NAME)
    assert _cache_files(the_zoo) == []


def test_card_lists_every_suite_attack_in_the_suite_order():
    """The card's rows follow the registry's report order, every attack the suite can run
    included (CW-L2 too), so an L2 card does not list CW-L2 after AutoAttack."""
    from atamp_tf.attacks import registry
    accuracy = {name: 0.5 for name in reversed(registry.names())}
    table = model_card._metrics_table({"accuracy": accuracy})  # pylint: disable=protected-access
    assert [row.split("|")[1].strip() for row in table.splitlines()[2:]] == list(registry.names())


def test_evaluate_and_export_share_one_parity_tolerance():
    from atamp_tf import evaluate
    assert export.DEFAULT_ATOL == evaluate.PARITY_ATOL == 1e-4


# ---------------------------------------------------------------- base: where files come from

def test_base_directory_or_url_replaces_the_entrys_url(http_zoo, server, published, tmp_path):
    """With a base, the file is <base>/<file name>: a directory (no request to the entry's
    URL) or an http URL (that server path is requested); the sha256 check is the same."""
    the_zoo, path = http_zoo
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / f"{NAME}.onnx").write_bytes(published["onnx"])
    local = zoo.Zoo(the_zoo.manifest_path, tmp_path / "cache-dir", base=mirror)
    fetched = local.fetch(NAME)
    assert fetched.url == (mirror / f"{NAME}.onnx").as_uri() and not fetched.from_cache
    assert open(fetched.path, "rb").read() == published["onnx"] and not server.requests

    server.files[f"/mirror/{NAME}.onnx"] = published["onnx"]
    remote = zoo.Zoo(the_zoo.manifest_path, tmp_path / "cache-url", base=f"{server.url}/mirror/")
    assert remote.verify(NAME)["url"] == f"{server.url}/mirror/{NAME}.onnx"
    assert server.requests == {f"/mirror/{NAME}.onnx": 1} and server.requests[path] == 0

    (mirror / f"{NAME}.onnx").write_bytes(published["onnx"][:-1] + b"\0")
    with pytest.raises(zoo.ZooIntegrityError, match="does not match the manifest's sha256"):
        zoo.Zoo(the_zoo.manifest_path, tmp_path / "cache-bad", base=mirror).download(NAME)


def test_base_from_environment_and_argument(published, monkeypatch, tmp_path):
    """$ATAMP_TF_ZOO_BASE applies when no base= is given; base= wins; bad bases are named."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / f"{NAME}.onnx").write_bytes(published["onnx"])
    monkeypatch.setenv(zoo.BASE_ENV, str(mirror))
    fetched = zoo.Zoo(published["manifest"], tmp_path / "c1").fetch(NAME)
    assert fetched.url == (mirror / f"{NAME}.onnx").as_uri()
    assert zoo.download(NAME, published["manifest"], tmp_path / "c2", base=mirror.as_uri())
    # base= wins over the environment: the same entry from the manifest's own directory.
    own = zoo.Zoo(published["manifest"], tmp_path / "c3", base=published["root"] / "zoo/models")
    assert own.fetch(NAME).url == (published["root"] / f"zoo/models/{NAME}.onnx").as_uri()
    with pytest.raises(ValueError, match=r"^base: 'ftp://host/zoo' is neither"):
        zoo.Zoo(published["manifest"], tmp_path, base="ftp://host/zoo")
    monkeypatch.setenv(zoo.BASE_ENV, str(tmp_path / "missing"))
    with pytest.raises(ValueError, match=r"^\$ATAMP_TF_ZOO_BASE: .*does not exist"):
        zoo.Zoo(published["manifest"], tmp_path)
    monkeypatch.setenv(zoo.BASE_ENV, "")  # empty: no base, each file from its own URL
    assert zoo.Zoo(published["manifest"], tmp_path).base is None


# ---------------------------------------------------------------- revisions

@pytest.fixture(scope="module")
def two_versions(published, tmp_path_factory):
    """The tmp zoo with NAME exported a second time from another model (another sha256)."""
    root = tmp_path_factory.mktemp("zoo_v2")
    shutil.copytree(published["root"] / "zoo", root / "zoo")
    model, x, y, report, entry = _export_tiny(root, seed=2, code_version="4567def",
                                              created="2025-02-03")
    return {"root": root, "manifest": root / "zoo/manifest.json", "entry": entry,
            "model": model, "old": published["entry"], "old_model": published["model"]}


def test_reexport_keeps_the_earlier_version_addressable(two_versions):
    entry, old = two_versions["entry"], two_versions["old"]
    new_sha, old_sha = entry["file"]["sha256"], old["file"]["sha256"]
    assert new_sha != old_sha and entry["file"]["url"] == f"models/{NAME}.onnx"
    (record,) = entry["previous_versions"]
    assert record == {"file": dict(old["file"], url=f"models/{NAME}-{old_sha[:16]}.onnx"),
                      "metrics": old["metrics"], "created": old["created"],
                      "code_version": old["code_version"], "parity": old["parity"]}
    models = two_versions["root"] / "zoo/models"
    assert zoo.sha256_file(models / f"{NAME}-{old_sha[:16]}.onnx") == old_sha
    assert zoo.sha256_file(models / f"{NAME}.onnx") == new_sha
    manifest = zoo_manifest.read_manifest(two_versions["manifest"])  # validates
    assert manifest["models"] == [entry]
    card = (two_versions["root"] / "zoo" / entry["card"]).read_text()
    assert card == model_card.render_card(entry) and "## Earlier versions" in card
    assert f"| `{old_sha[:16]}` | {old['created']} |" in card
    assert 'revision="<sha256' in card and new_sha[:16] not in card.split("## Earlier")[1]


def test_load_by_revision_gives_that_versions_model(two_versions, tmp_path):
    the_zoo = zoo.Zoo(two_versions["manifest"], tmp_path / "cache")
    old_sha = two_versions["old"]["file"]["sha256"]
    new_sha = two_versions["entry"]["file"]["sha256"]
    x, _ = zoo_helpers.check_examples()
    for revision, model in ((None, "model"), (new_sha, "model"), (old_sha[:8], "old_model"),
                            (old_sha.upper(), "old_model")):
        session = the_zoo.load(NAME, revision=revision)
        np.testing.assert_allclose(session.run(None, {"images": x})[0],
                                   two_versions[model].predict(x, verbose=0), atol=1e-4)
    assert [v["file"]["sha256"] for v in the_zoo.revisions(NAME)] == [new_sha, old_sha]
    old_info = the_zoo.info(NAME, revision=old_sha[:6])
    assert old_info["metrics"] == two_versions["old"]["metrics"]
    assert old_info["file"]["sha256"] == old_sha and old_info["created"] == \
        two_versions["old"]["created"]
    assert the_zoo.info(NAME, revision=new_sha) == the_zoo.info(NAME) == two_versions["entry"]
    # what describes only the newest file (its reference parity, its Keras file) is not
    # reported for an earlier revision
    newest = zoo_manifest.find_entry(the_zoo.manifest, NAME)
    newest.update(reference_parity={"onnx_sha256": new_sha}, keras_url="k.keras",
                  keras_sha256="0" * 64)
    assert not {"reference_parity", "keras_url", "keras_sha256"} & set(
        the_zoo.info(NAME, revision=old_sha[:8]))
    assert the_zoo.info(NAME, revision=new_sha)["reference_parity"] == {"onnx_sha256": new_sha}
    newest.pop("reference_parity"), newest.pop("keras_url"), newest.pop("keras_sha256")
    assert the_zoo.verify(NAME, revision=old_sha[:10])["sha256"] == old_sha
    assert the_zoo.evaluate(NAME, revision=old_sha[:10]).matches
    cached = sorted(p.name for p in the_zoo.cache_dir.iterdir())
    assert cached == sorted(f"{NAME}-{s[:16]}.onnx" for s in (new_sha, old_sha))


def test_revision_from_a_base_by_its_versioned_file_name(two_versions, tmp_path):
    old_sha = two_versions["old"]["file"]["sha256"]
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    versioned = f"{NAME}-{old_sha[:16]}.onnx"
    shutil.copyfile(two_versions["root"] / "zoo/models" / versioned, mirror / versioned)
    fetched = zoo.Zoo(two_versions["manifest"], tmp_path / "c", base=mirror).fetch(
        NAME, revision=old_sha[:12])
    assert fetched.url == (mirror / versioned).as_uri() and zoo.sha256_file(fetched.path) == \
        old_sha


def test_unknown_revision_names_the_revisions_there_are(two_versions, tmp_path):
    the_zoo = zoo.Zoo(two_versions["manifest"], tmp_path)
    old_sha = two_versions["old"]["file"]["sha256"]
    new_sha = two_versions["entry"]["file"]["sha256"]
    missing = next(h for h in ("0000", "ffff", "1234", "abcd")
                   if not any(s.startswith(h) for s in (old_sha, new_sha)))
    for bad in (missing, "abc", "not-a-sha"):  # absent, too short, not hex
        with pytest.raises(zoo.UnknownRevisionError, match=f"no revision '{bad}'") as info:
            the_zoo.download(NAME, revision=bad)
        message = str(info.value)
        assert f"{new_sha[:16]} (created 2025-02-03, newest)" in message
        assert f"{old_sha[:16]} (created {two_versions['old']['created']})" in message
    assert isinstance(info.value, ValueError) and isinstance(info.value, zoo.ZooError)
    assert not the_zoo.cache_dir.exists() or not list(the_zoo.cache_dir.iterdir())


def test_zoo_cli_revisions_and_revision_flag(two_versions, tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    flags = [f"--manifest={two_versions['manifest']}", f"--cache_dir={tmp_path}"]
    old_sha = two_versions["old"]["file"]["sha256"]
    new_sha = two_versions["entry"]["file"]["sha256"]

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "atamp_tf.zoo", *flags, *args], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=300, check=False)

    listed = cli("revisions", NAME)
    assert listed.returncode == 0, listed.stderr[-2000:]
    lines = listed.stdout.strip().splitlines()
    assert [ln.split()[0] for ln in lines] == [new_sha, old_sha] and "(newest)" in lines[0]
    verified = cli(f"--revision={old_sha[:12]}", "verify", NAME)
    assert verified.returncode == 0 and f"sha256 {old_sha}" in verified.stdout, verified.stderr
    unknown = cli("--revision=ffffffffffff", "verify", NAME)
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    (line,) = [ln for ln in unknown.stderr.splitlines() if ln.startswith("error: ")]
    assert "no revision 'ffffffffffff'" in line and old_sha[:16] in line
    misuse = cli(f"--revision={old_sha[:12]}", "list")
    assert misuse.returncode == 2 and "error: --revision" in misuse.stderr


def test_previous_versions_schema(two_versions):
    manifest = json.loads(two_versions["manifest"].read_text())
    entry = manifest["models"][0]
    zoo.validate_manifest(manifest)
    zoo.validate_manifest(json.loads(zoo.PACKAGE_MANIFEST.read_text()))  # none there: valid
    cases = [
        (lambda r: r["file"].update(sha256="abc"), "field 'previous_versions\\[0\\].file.sha256'"),
        (lambda r: r["file"].update(url="ftp://x/y.onnx"),
         "field 'previous_versions\\[0\\].file.url'"),
        (lambda r: r["metrics"].pop("examples"),
         "missing field 'previous_versions\\[0\\].metrics.examples'"),
        (lambda r: r.update(created="yesterday"), "field 'previous_versions\\[0\\].created'"),
        (lambda r: r.update(name="x"), "'previous_versions\\[0\\]': unknown field"),
        (lambda r: r["file"].update(sha256=entry["file"]["sha256"]), "listed once"),
    ]
    for change, message in cases:
        broken = copy.deepcopy(manifest)
        change(broken["models"][0]["previous_versions"][0])
        with pytest.raises(zoo_manifest.ManifestError, match=f"\\('{NAME}'\\): .*{message}"):
            zoo.validate_manifest(broken)
    broken = copy.deepcopy(manifest)
    broken["models"][0]["previous_versions"] = {"file": {}}
    with pytest.raises(zoo_manifest.ManifestError, match="'previous_versions': expected a list"):
        zoo.validate_manifest(broken)


def test_upsert_keeps_history_newest_first_and_never_repeats_a_version(published):
    """Three exports under one name: the history is [second, first]; re-publishing the first
    file makes it current again and drops it from the history."""
    first = copy.deepcopy(published["entry"])
    second = dict(first, file=dict(first["file"], sha256="b" * 64), created="2025-03-01")
    third = dict(first, file=dict(first["file"], sha256="c" * 64,
                                  url="https://host/zoo/x.onnx"))
    manifest = {"schema_version": 1, "models": [first]}
    for entry in (second, third):
        manifest = zoo_manifest.upsert_entry(manifest, entry)
    (current,) = manifest["models"]
    history = current["previous_versions"]
    assert [v["file"]["sha256"] for v in history] == ["b" * 64, first["file"]["sha256"]]
    # The second file's URL is free once the third went elsewhere; the first's was taken.
    assert history[0]["file"]["url"] == f"models/{NAME}.onnx"
    assert history[1]["file"]["url"] == f"models/{NAME}-{first['file']['sha256'][:16]}.onnx"
    zoo.validate_manifest(manifest)
    # Re-publishing the first file at models/NAME.onnx re-addresses the second, recorded there.
    again = zoo_manifest.upsert_entry(manifest, first)["models"][0]
    assert [v["file"]["sha256"] for v in again["previous_versions"]] == ["c" * 64, "b" * 64]
    assert again["previous_versions"][1]["file"]["url"] == f"models/{NAME}-{'b' * 16}.onnx"
    zoo.validate_manifest({"schema_version": 1, "models": [again]})
    assert zoo_manifest.versioned_url("https://h/p/m.onnx?x=1", "d" * 64) == \
        f"https://h/p/m-{'d' * 16}.onnx?x=1"


# ---------------------------------------------------------------- the offline switch

def test_offline_switch_refuses_before_any_request(http_zoo, server, monkeypatch):
    the_zoo, path = http_zoo
    monkeypatch.setenv(zoo.OFFLINE_ENV, "1")
    with pytest.raises(zoo.ZooOfflineError) as info:
        the_zoo.download(NAME)
    message = str(info.value)
    assert "ATAMP_TF_OFFLINE=1 forbids downloading" in message and "no request" in message
    assert f"model '{NAME}'" in message and f"{server.url}{path}" in message
    assert isinstance(info.value, zoo.ZooDownloadError)
    assert not server.requests and _cache_files(the_zoo) == []
    monkeypatch.setenv(zoo.OFFLINE_ENV, "0")  # off: the same call downloads
    assert the_zoo.fetch(NAME).from_cache is False and server.requests[path] == 1


def test_offline_switch_still_serves_cached_and_local_files(http_zoo, server, published,
                                                           monkeypatch, tmp_path):
    the_zoo, path = http_zoo
    cached = the_zoo.download(NAME)
    monkeypatch.setenv(zoo.OFFLINE_ENV, "true")
    assert zoo.offline()
    assert the_zoo.fetch(NAME).path == cached and server.requests[path] == 1
    assert the_zoo.verify(NAME)["from_cache"] is True
    # A relative URL (the bundled case) is a local copy, not a download.
    local = zoo.Zoo(published["manifest"], tmp_path / "local")
    assert local.fetch(NAME).from_cache is False and server.requests[path] == 1
    with open(cached, "ab") as f:  # a bad cached copy is removed; refetching is refused
        f.write(b"x")
    with pytest.raises(zoo.ZooOfflineError, match="failed its sha256 check and was removed"):
        the_zoo.download(NAME)
    assert _cache_files(the_zoo) == [] and server.requests[path] == 1


def test_listing_says_the_examples_and_a_non_standard_autoattack():
    from atamp_tf.zoo import cli as zoo_cli
    entry = {"name": "m", "dataset": "cifar10", "threat_model": {"norm": "linf", "eps": 0.03},
             "architecture": {"arch": "preact_resnet18"},
             "metrics": {"num_examples": 1000, "accuracy": {"natural": 0.5, "autoattack": 0.25},
                         "attacks": {"autoattack": {"autoattack_settings": {"version": "custom"}}}}}
    assert "0.2500 (autoattack custom, n=1000)" in zoo_cli.format_table([entry])
    entry["metrics"]["attacks"]["autoattack"]["autoattack_settings"]["version"] = "standard"
    assert "0.2500 (autoattack, n=1000)" in zoo_cli.format_table([entry])
    entry["metrics"]["accuracy"] = {"natural": 0.5, "pgd20": 0.3}
    assert "0.3000 (pgd20, n=1000)" in zoo_cli.format_table([entry])
    # A name longer than any before keeps the columns aligned.
    long_named = copy.deepcopy(entry)
    long_named["name"] = "x" * 60
    lines = zoo_cli.format_table([entry, long_named]).splitlines()
    assert len({line.index(" cifar10" if i else " dataset") for i, line in enumerate(lines)}) == 1


def test_compared_with_marks_a_non_standard_autoattack_beside_the_published_rows():
    from atamp_tf.zoo import cards
    entry = {"compared_with": {"threat_model": {"dataset": "mnist", "norm": "linf", "eps": 0.3},
                               "source": "AutoAttack README",
                               "rows": [{"model": "Madry", "natural": 0.9853, "reported": 0.8962,
                                         "autoattack": 0.885}]},
             "metrics": {"examples": "all 10000", "accuracy": {"natural": 0.99,
                                                                "autoattack": 0.9},
                         "attacks": {"autoattack": {"autoattack_settings": {"version": "custom"}}}}}
    assert "| 90.00% (custom, not the standard AutoAttack) |" in cards._compared_with(entry)
    entry["metrics"]["attacks"]["autoattack"]["autoattack_settings"]["version"] = "standard"
    assert "| 99.00% | - | 90.00% |" in cards._compared_with(entry)
