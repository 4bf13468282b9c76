"""Which code produced a result: the git commit of the checkout the package runs from."""
import os
import subprocess

import atamp_tf


def git_code_version():
    """HEAD commit of the checkout this package runs from, "-dirty" if atamp_tf/ has edits;
    ValueError outside a git checkout (an installed package)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args):
        return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "atamp_tf")
    except (OSError, subprocess.CalledProcessError):
        raise ValueError("code version: not a git checkout; pass --code_version.") from None
    return commit + ("-dirty" if dirty else "")


def code_version():
    """git_code_version(), or the package version when not run from a checkout."""
    try:
        return git_code_version()
    except ValueError:
        return f"atamp_tf {atamp_tf.__version__} (installed, not a git checkout)"
