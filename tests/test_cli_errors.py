"""Every command: --help works, and bad input is one line naming the flag or file, exit status 2,
no traceback (atamp_tf/cli.py). The commands are the ones the docs and flagfiles name, and the
console scripts pyproject.toml declares; all are started at once, so the suite waits for one."""
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "WORKSPACE.md", *sorted((ROOT / "flags").rglob("*.cfg")),
        *sorted((ROOT / "docs").glob("*.md"))]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]

# A bad input per command and the text its one error line must contain.
BAD_INPUT = {
    "atamp_tf.train": (["--eps=abc"], "eps"),
    "atamp_tf.evaluate": (["--model=/nonexistent"], "--model: /nonexistent"),
    "atamp_tf.export": (["--run_dir=/nonexistent", "--name=x"], "--run_dir: /nonexistent"),
    "atamp_tf.zoo": (["verify", "nope"], "no model 'nope'"),
    "atamp_tf.bench": (["--batch_size=0"], "batch_size"),
    "atamp_tf.landscape": (["--models=/nonexistent", "--output_dir=/tmp/x"], "/nonexistent"),
    "atamp_tf.reproduction": (["--runs=/nonexistent", "--output_dir=/tmp/x",
                               "--paper_csv=docs/reproduction/paper_table1.csv"],
                              "/nonexistent"),
    "atamp_tf.plot": (["--run_dirs=/nonexistent", "--output=/tmp/x.png"], "/nonexistent"),
    "atamp_tf.evaluate.reference_cli": (["--onnx=/nonexistent.onnx", "--dataset=digits",
                                         "--norm=linf", "--eps=0.1"], "--onnx: /nonexistent"),
}


def documented_modules():
    found = set()
    for path in DOCS:
        found.update(re.findall(r"python -m (atamp_tf(?:\.\w+)+)", path.read_text()))
    return sorted(found)


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """Starts every command case at once; returns {case: (exit status, stdout, stderr)}."""
    cwd = tmp_path_factory.mktemp("elsewhere")  # not the checkout: the installed commands
    cases = {("help", m): [sys.executable, "-m", m, "--help"] for m in documented_modules()}
    bindir = Path(sys.executable).parent
    for script in SCRIPTS:
        cases[("script", script)] = [str(bindir / script), "--help"]
    for module, (args, _) in BAD_INPUT.items():
        cases[("bad", module)] = [sys.executable, "-m", module, *args]
    procs = {case: subprocess.Popen(cmd, cwd=ROOT if case[0] == "bad" else cwd, env=_env(),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for case, cmd in cases.items()}
    results = {}
    for case, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        results[case] = (proc.returncode, out, err)
    return results


def test_every_documented_command_is_covered():
    documented = documented_modules()
    assert "atamp_tf.train" in documented and "atamp_tf.zoo" in documented
    assert set(documented) <= set(BAD_INPUT), "a documented command without a bad-input case"
    for script, target in SCRIPTS.items():
        module = target.split(":")[0]
        assert shutil.which(script, path=str(Path(sys.executable).parent)), \
            f"console script {script} not installed (pip install -e .)"
        assert module.startswith("atamp_tf.")


@pytest.mark.parametrize("module", documented_modules())
def test_help_lists_the_commands_flags(finished, module):
    code, out, err = finished[("help", module)]
    assert code == 0, err[-2000:]
    assert "Traceback" not in err
    assert re.search(r"^\s+--\w+", out, re.M), f"{module} --help lists no flags:\n{out[:2000]}"


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_console_script_help(finished, script):
    code, out, err = finished[("script", script)]
    assert code == 0, err[-2000:]
    assert re.search(r"^\s+--\w+", out, re.M), out[:2000]


@pytest.mark.parametrize("module", sorted(BAD_INPUT))
def test_bad_input_is_one_line_without_traceback(finished, module):
    code, _, err = finished[("bad", module)]
    named = BAD_INPUT[module][1]
    assert code == 2, err[-2000:]
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and named in errors[0], err[-2000:]


CLI_MODULES = ["atamp_tf.train.cli", "atamp_tf.evaluate.cli", "atamp_tf.evaluate.reference_cli",
               "atamp_tf.export.cli", "atamp_tf.zoo.cli", "atamp_tf.tools.bench_cli",
               "atamp_tf.tools.landscape_cli", "atamp_tf.tools.reproduction_cli",
               "atamp_tf.tools.plot_cli"]


def test_command_modules_load_without_tensorflow():
    """--help and flag errors must not wait ~9 s for TensorFlow: no command module (nor what it
    imports at the top) loads it; each is checked in a fresh interpreter, all at once."""
    code = ("import importlib, sys; importlib.import_module(sys.argv[1]); "
            "print(sorted(m for m in ('tensorflow', 'keras', 'torch') if m in sys.modules))")
    procs = {m: subprocess.Popen([sys.executable, "-c", code, m], env=_env(), text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for m in CLI_MODULES}
    for module, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        assert out.strip() == "[]", f"{module} imports {out.strip()} at load time"
