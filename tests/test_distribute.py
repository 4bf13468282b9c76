"""AMPModel under tf.distribute: mirrored == one device on the global batch; two workers in step.

Each case runs in a subprocess, since logical devices and TF_CONFIG must be set before
TensorFlow starts.
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(__file__), "dist_worker.py")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.update(extra)
    return env


SCOPES = ("tensor", "global")


@pytest.fixture(scope="module")
def mirrored_run(tmp_path_factory):
    """One subprocess trains every case of both AMP scopes (one TensorFlow start, not two)."""
    out = tmp_path_factory.mktemp("mirrored") / "w.npz"
    proc = subprocess.run([sys.executable, WORKER, "mirrored", str(out), ",".join(SCOPES)],
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(np.load(out))


@pytest.mark.parametrize("scope", SCOPES)
def test_mirrored_two_cpus_equals_one_device(mirrored_run, scope):
    r = {k[len(scope) + 1:]: v for k, v in mirrored_run.items() if k.startswith(f"{scope}_")}
    assert np.abs(r["single"] - mirrored_run["initial"]).max() > 1e-3  # it trained
    np.testing.assert_allclose(r["mirrored"], r["single"], rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(r["bn_loss"]))
    # AMP switched on after a warm-up (masked Delta under replicas, tf.cond on one device).
    np.testing.assert_allclose(r["mirrored_warm"], r["single_warm"], rtol=1e-5, atol=1e-6)
    # BatchNorm statistics update under mirrored
    assert np.abs(r["single_warm"] - r["single"]).max() > 1e-6


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_two_workers_train_in_step(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(
            [sys.executable, WORKER, "multi_worker", str(tmp_path / f"w{index}.npz")],
            env=_env(TF_CONFIG=tf_config), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True))
    for p in procs:
        try:
            _, err = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        assert p.returncode == 0, err[-3000:]
    w0, w1 = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    assert int(w0["replicas"]) == 2
    assert np.abs(w0["weights"] - w0["initial"]).max() > 1e-3
    np.testing.assert_allclose(w0["weights"], w1["weights"], rtol=0, atol=1e-6)
    assert np.all(np.isfinite(w0["loss"]))
