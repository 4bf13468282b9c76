"""The zoo after a non-editable install: a wheel built from this checkout, installed into a new
virtual environment (reusing this environment's dependencies), used from outside the checkout,
its downloads through a 127.0.0.1 HTTP server."""
import functools
import http.server
import json
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import threading
import zipfile

import pytest

from atamp_tf.zoo import manifest as zoo_manifest

REPO = pathlib.Path(__file__).resolve().parents[1]
BUILD_FILES = ("pyproject.toml", "setup.py", "README.md", "LICENSE")
TOO_LARGE = "zz-above-the-size-rule.onnx"  # added to the build's copy only
CLEARED_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "ATAMP_TF_ZOO_MANIFEST",
               "ATAMP_TF_ZOO_BASE", "ATAMP_TF_OFFLINE", "ATAMP_TF_CACHE")


def _run(args, **kwargs):
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300,
                          check=False, **kwargs)
    assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def package_manifest():
    return json.loads((REPO / "atamp_tf/zoo/manifest.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Builds the wheel from a copy of the checkout (the build writes build/ and egg-info
    beside its sources), installs it into a new venv D; returns paths and a runner."""
    root = tmp_path_factory.mktemp("install")
    src = root / "src"
    src.mkdir()
    for name in BUILD_FILES:
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "atamp_tf", src / "atamp_tf",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
    with open(src / "atamp_tf/zoo/models" / TOO_LARGE, "wb") as f:
        f.truncate(zoo_manifest.BUNDLE_MAX_BYTES + 1)  # sparse: the size rule must drop it
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", root / "wheels", src])
    (wheel,) = (root / "wheels").glob("atamp_tf-*.whl")

    venv = root / "D"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    purelib = pathlib.Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                                 "['purelib'])"]).stdout.strip())
    # This environment's dependencies as plain path entries: a .pth line adds a directory to
    # sys.path without running that directory's .pth files, so the editable install's finder
    # (a .pth there) does not come along.
    ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (purelib / "test_environment.pth").write_text("\n".join(ours) + "\n", encoding="utf-8")
    _run([*pip, "install", "--no-deps", "--no-index", "--no-compile", "-q", "--target", purelib,
          wheel])

    outside = root / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV}
    env.update(PYTHONNOUSERSITE="1", TF_CPP_MIN_LOG_LEVEL="3")

    def run(args, *, cache, check=True, **extra_env):
        """python (of D) with args, from outside the checkout, with cache and extra_env."""
        run_env = dict(env, ATAMP_TF_CACHE=str(root / cache), **extra_env)
        done = subprocess.run([str(python), *args], cwd=outside, env=run_env,
                              capture_output=True, text=True, timeout=300, check=False)
        if check:
            assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        return done

    return {"root": root, "wheel": wheel, "venv": venv, "purelib": purelib, "run": run,
            "outside": outside}


class DirectoryServer:
    """http.server on 127.0.0.1 (a free port) serving a directory, recording each GET path."""

    def __init__(self, directory):
        self.requests = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802  (http.server's name)
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        handler = functools.partial(Handler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def served(installed, package_manifest):
    """The smallest bundled entry's file, copied into a directory that a server serves."""
    entry = min((e for e in package_manifest["models"]
                 if zoo_manifest.is_local_path(e["file"]["url"])), key=lambda e: e["file"]["size"])
    directory = installed["root"] / "served"
    directory.mkdir()
    shutil.copyfile(REPO / "atamp_tf/zoo" / entry["file"]["url"],
                    directory / os.path.basename(entry["file"]["url"]))
    server = DirectoryServer(directory)
    yield {"server": server, "name": entry["name"], "entry": entry,
           "path": "/" + os.path.basename(entry["file"]["url"])}
    server.stop()


def test_wheel_bundles_the_zoo_within_the_size_rule(installed, package_manifest):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    assert "atamp_tf/zoo/manifest.json" in names
    for entry in package_manifest["models"]:
        assert f"atamp_tf/zoo/{entry['card']}" in names
        if zoo_manifest.is_local_path(entry["file"]["url"]):
            assert f"atamp_tf/zoo/{entry['file']['url']}" in names
    models = {n for n in names if n.startswith("atamp_tf/zoo/models/")}
    assert models and f"atamp_tf/zoo/models/{TOO_LARGE}" not in names
    installed_models = installed["purelib"] / "atamp_tf/zoo/models"
    assert sorted(p.name for p in installed_models.iterdir()) == sorted(
        os.path.basename(n) for n in models)
    assert all(p.stat().st_size <= zoo_manifest.BUNDLE_MAX_BYTES
               for p in installed_models.iterdir())


def test_installed_package_is_the_wheel_not_a_checkout(installed):
    done = installed["run"](["-c", "import atamp_tf, atamp_tf.zoo as z; print(atamp_tf.__file__);"
                             " print(z.PACKAGE_MANIFEST)"], cache="c0")
    package_file, manifest = (pathlib.Path(line) for line in done.stdout.split())
    venv = installed["venv"].resolve()
    assert package_file.resolve().is_relative_to(venv), package_file
    assert manifest.resolve() == installed["purelib"].resolve() / "atamp_tf/zoo/manifest.json"
    assert not package_file.resolve().is_relative_to(REPO)
    assert not installed["outside"].resolve().is_relative_to(REPO)


def test_installed_cli_lists_and_verifies_the_bundled_zoo(installed, package_manifest, served):
    listed = installed["run"](["-m", "atamp_tf.zoo", "list"], cache="c1")
    assert all(e["name"] in listed.stdout for e in package_manifest["models"])
    # The bundled file, with the offline switch on: no network needed, none used.
    name = served["name"]
    verified = installed["run"](["-m", "atamp_tf.zoo", "verify", name], cache="c1",
                                ATAMP_TF_OFFLINE="1")
    assert f"OK {name}: sha256 {served['entry']['file']['sha256']}" in verified.stdout
    assert "site-packages/atamp_tf/zoo/models/" in verified.stderr  # copied from the package
    assert served["server"].requests == []


def test_installed_zoo_downloads_through_an_http_base(installed, served):
    name, server, path = served["name"], served["server"], served["path"]
    sha256 = served["entry"]["file"]["sha256"]
    before = len(server.requests)
    verified = installed["run"](["-m", "atamp_tf.zoo", f"--base={server.url}", "verify", name],
                                cache="c2")
    assert f"OK {name}: sha256 {sha256}" in verified.stdout
    assert server.requests[before:] == [path]
    script = ("import sys, numpy as np; from atamp_tf import zoo; s = zoo.load(sys.argv[1]); "
              "i = s.get_inputs()[0]; x = np.zeros([2, *i.shape[1:]], np.float32); "
              "print(s.run(None, {i.name: x})[0].shape)")
    loaded = installed["run"](["-c", script, name], cache="c3", ATAMP_TF_ZOO_BASE=server.url)
    classes = served["entry"]["output"]["num_classes"]
    assert loaded.stdout.strip() == f"(2, {classes})"
    assert server.requests[before:] == [path, path]
    assert (installed["root"] / "c3" / f"{name}-{sha256[:16]}.onnx").is_file()


def test_installed_offline_switch_refuses_before_any_request(installed, served):
    name, server, path = served["name"], served["server"], served["path"]
    before = len(server.requests)
    args = ["-m", "atamp_tf.zoo", f"--base={server.url}", "verify", name]
    refused = installed["run"](args, cache="c4", check=False, ATAMP_TF_OFFLINE="1")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    (line,) = [ln for ln in refused.stderr.splitlines() if ln.startswith("error: ")]
    assert "ATAMP_TF_OFFLINE=1 forbids downloading" in line and f"{server.url}{path}" in line
    assert server.requests[before:] == []
    # Once cached (one download), the same command works offline without a request.
    installed["run"](args, cache="c4")
    cached = installed["run"](args, cache="c4", ATAMP_TF_OFFLINE="1")
    assert f"OK {name}" in cached.stdout and "using the verified cached copy" in cached.stderr
    assert server.requests[before:] == [path]
