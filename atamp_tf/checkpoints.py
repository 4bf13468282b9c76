"""Finding and loading trained networks: run directories, `.keras` files; flag-value parsing
shared by the command-line programs. Flag-free, so every CLI can import it."""
import dataclasses
import json
import os

from atamp_tf import config

PARITY_ATOL = 1e-4  # largest |Keras - ONNX| logit difference accepted as the same model


def parse_fraction(text, flag):
    """A non-negative finite number from '0.03' or '8/255' (config.parse_number, the one
    parser of numbers and fractions); ValueError naming the flag."""
    try:
        value = config.parse_number(text.replace(" ", "") if isinstance(text, str) else text,
                                    flag)
    except ValueError:
        value = None
    if value is None or value < 0:
        raise ValueError(f"--{flag} must be a non-negative number or a fraction such as 8/255, "
                         f"got {text!r}")
    return value


def parse_indices(text, flag="--indices"):
    """Example positions from a comma/whitespace list ("3,17,42") or a file of them: sorted,
    each once (the split's canonical order). ValueError naming flag on anything else."""
    text = str(text).strip()
    if os.path.isfile(text):
        with open(text, encoding="utf-8") as f:
            text = f.read()
    parts = text.replace(",", " ").split()
    try:
        indices = sorted({int(p) for p in parts})
    except ValueError:
        indices = []  # refused below with the same message as an empty or negative list
    if not indices or indices[0] < 0:
        raise ValueError(f"{flag}: expected whole numbers >= 0 separated by commas (or a file "
                         f"of them), got {text[:60]!r}")
    return indices


def index_ranges(indices):
    """'0-2, 7, 9-10' for [0, 1, 2, 7, 9, 10]: sorted indices as compact ranges."""
    ranges, start = [], None
    for i, index in enumerate(indices):
        if start is None:
            start = index
        if i + 1 == len(indices) or indices[i + 1] != index + 1:
            ranges.append(str(start) if start == index else f"{start}-{index}")
            start = None
    return ", ".join(ranges)


def read_run_config(run_dir):
    """The run's run_config.json as a dict ({} when there is none)."""
    path = os.path.join(run_dir, "run_config.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def run_dir_of(keras_path):
    """The run directory a checkpoint belongs to (<run>/checkpoints/x.keras -> <run>)."""
    parent = os.path.dirname(os.path.abspath(keras_path))
    return os.path.dirname(parent) if os.path.basename(parent) == "checkpoints" else parent


def checkpoint_path(path, checkpoint="best", flag="model"):
    """The .keras file that `path` (a run directory or a .keras file) stands for."""
    if os.path.isdir(path):
        keras_path = os.path.join(path, "checkpoints", f"{checkpoint}.keras")
        if not os.path.isfile(keras_path):
            raise ValueError(f"--{flag}: run directory {path} has no {keras_path} "
                             "(--checkpoint picks best or last)")
        return keras_path
    if not os.path.isfile(path):
        raise ValueError(f"--{flag}: {path} does not exist")
    if not path.endswith(".keras"):
        raise ValueError(f"--{flag}: expected a run directory or a .keras file, got {path}")
    return path


def load_keras_model(path):
    """The plain Keras network stored at path (an AMPModel's `network` if it is one)."""
    import keras  # pylint: disable=import-outside-toplevel

    import atamp_tf  # pylint: disable=import-outside-toplevel
    atamp_tf.register_keras_objects()
    model = keras.saving.load_model(path, compile=False)
    return getattr(model, "network", model)


def load_network(path, checkpoint="best", flag="model"):
    """(network, run_config) for a run directory or a .keras file."""
    keras_path = checkpoint_path(path, checkpoint, flag)
    return load_keras_model(keras_path), read_run_config(run_dir_of(keras_path))


def onnx_session(path, providers=None):
    """An onnxruntime session of the ONNX file at path (CPU unless providers are given)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options,
                                providers=providers or ["CPUExecutionProvider"])


@dataclasses.dataclass
class ModelSource:
    """What --model (and --keras_model) point at, resolved to files."""
    path: str
    kind: str                   # "run_dir", "keras" or "onnx"
    keras_path: str | None
    onnx_path: str | None
    run_config: dict

    @property
    def name(self):
        base = os.path.basename(os.path.normpath(self.path))
        return base if self.kind == "run_dir" else os.path.splitext(base)[0]


def resolve_model(path, *, checkpoint="best", keras_model=None):
    """ModelSource of a run directory, .keras or .onnx path; ValueError naming the flag."""
    if not path:
        raise ValueError("--model is required: a run directory, a .keras file or an .onnx file")
    if keras_model is not None and not str(path).endswith(".onnx"):
        raise ValueError("--keras_model goes with an .onnx --model only")
    if keras_model is not None and not os.path.isfile(keras_model):
        raise ValueError(f"--keras_model: {keras_model} is not a file")
    if str(path).endswith(".onnx"):
        if not os.path.isfile(path):
            raise ValueError(f"--model: {path} does not exist")
        # The run's config comes from the Keras checkpoint's run when there is one.
        config = read_run_config(run_dir_of(keras_model or path))
        return ModelSource(path, "onnx", keras_model, path, config)
    keras_path = checkpoint_path(path, checkpoint, "model")
    kind = "run_dir" if os.path.isdir(path) else "keras"
    return ModelSource(path, kind, keras_path, None, read_run_config(run_dir_of(keras_path)))
