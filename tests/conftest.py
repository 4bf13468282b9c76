"""Quiet TensorFlow and keep tests on the CPU, deterministic."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
import atamp_tf  # noqa: E402,F401  (before any TensorFlow import: its oneDNN default)
