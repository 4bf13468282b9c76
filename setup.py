"""atamp-tf: adversarial training with Adversarial Model Perturbation (AT-AMP) in TF2 / Keras 3."""
from setuptools import find_packages, setup

setup(
    name="atamp_tf",
    version="0.1.0",
    license="MIT",
    description="Adversarial training with adversarial model perturbation (AT-AMP) for "
                "TensorFlow 2 / Keras 3, with an ONNX model zoo of robust networks.",
    packages=find_packages(include=["atamp_tf", "atamp_tf.*"]),
    python_requires=">=3.11,<3.12",
    # Ranges verified together on Python 3.11 (CPU): TF 2.21.0, Keras 3.15.1, tfds 4.9.10,
    # cleverhans 4.0.0, tf2onnx 1.17.0, onnx 1.23, onnxruntime 1.32. (ART was listed until
    # session 3 but never imported.)
    # Keras is pinned to a minor range because the multi-worker fit fix touches private API.
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.15,<3.16",
        "tensorflow-datasets>=4.9.10,<5",
        "cleverhans==4.0.0",
        "onnx>=1.17,<2",
        "tf2onnx>=1.17,<1.18",
        "onnxruntime>=1.20,<2",
        "absl-py>=2.1,<3",
        "numpy>=1.26,<3",
        "scikit-learn>=1.5,<2",
        "matplotlib>=3.8,<4",
        "tensorboard>=2.21,<2.22",
        "pooch>=1.8,<2",
    ],
    extras_require={"test": ["pytest>=8,<10"]},
)
