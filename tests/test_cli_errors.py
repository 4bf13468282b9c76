"""Bad input to a command: one line naming the flag or file, a non-zero status, no traceback."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, check=False, env=env)


@pytest.mark.parametrize("args,named", [
    (("atamp_tf.evaluate", "--model=/nonexistent"), "--model: /nonexistent"),
    (("atamp_tf.export", "--run_dir=/nonexistent", "--name=x"), "--run_dir: /nonexistent"),
])
def test_missing_model_is_one_line_without_traceback(args, named):
    done = _run(*args)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and named in errors[0], done.stderr
