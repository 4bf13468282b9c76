"""Network builders: ``build_model(arch, ...)`` returns a Functional Keras model that takes
images in [0, 1] (NHWC), standardises them in its first layer and returns logits.

Functional models serialise in the ``.keras`` format and export to ONNX through tf2onnx.
"""
import inspect

import keras

from atamp_tf.models import mnist_cnns, preact_resnet, small_cnn, wide_resnet
from atamp_tf.models.flops import count_flops
from atamp_tf.models.layers import Standardize

_BUILDERS = {
    "preact_resnet18": preact_resnet.build,
    "wide_resnet": wide_resnet.build,
    "small_cnn": small_cnn.build,
    "madry_cnn": mnist_cnns.build_madry,
    "trades_small_cnn": mnist_cnns.build_trades,
}
ARCHITECTURES = tuple(_BUILDERS)
_COMMON_PARAMS = {"inputs", "x", "num_classes", "width", "depth", "name"}

__all__ = ["ARCHITECTURES", "Standardize", "build_model", "count_flops"]


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _channel_constants(value, default, channels, argname):
    """``value`` as a list of ``channels`` floats (a scalar is broadcast; None -> default)."""
    if value is None:
        return [default] * channels
    try:
        values = [float(v) for v in (value if hasattr(value, "__len__") else [value])]
    except (TypeError, ValueError):
        raise ValueError(f"{argname} must be a number or a sequence of {channels} numbers, "
                         f"got {value!r}") from None
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise ValueError(f"{argname} must have one entry per channel ({channels}), "
                         f"got {len(values)}: {value!r}")
    return values


def build_model(arch, *, input_shape, num_classes, mean=None, std=None, width=None,
                depth=None, name=None, **options):
    """Build ``arch`` (one of ``ARCHITECTURES``) for ``input_shape`` (H, W, C) images.

    ``mean``/``std`` are per-channel statistics of [0, 1] pixels (None: 0 and 1, identity).
    ``width``: base channels for preact_resnet18 (64) and small_cnn (32), widen factor for
    wide_resnet (10), first-layer channels for madry_cnn and trades_small_cnn (32). ``depth``:
    wide_resnet only (34). ``options``: arch-specific extras, ``batchnorm`` for small_cnn,
    ``dropout`` for wide_resnet and trades_small_cnn.
    """
    if arch not in _BUILDERS:
        raise ValueError(f"unknown arch {arch!r}; known architectures: {', '.join(ARCHITECTURES)}")
    if (not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3
            or not all(_is_int(d) and d > 0 for d in input_shape)):
        raise ValueError(f"input_shape must be (height, width, channels) positive ints, "
                         f"got {input_shape!r}")
    if not _is_int(num_classes) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if width is not None and (not _is_int(width) or width < 1):
        raise ValueError(f"width must be a positive int or None, got {width!r}")
    if depth is not None and (not _is_int(depth) or depth < 1):
        raise ValueError(f"depth must be a positive int or None, got {depth!r}")
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"name must be a non-empty string or None, got {name!r}")
    allowed = set(inspect.signature(_BUILDERS[arch]).parameters) - _COMMON_PARAMS
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for arch {arch!r}; it takes "
                         f"{sorted(allowed) or 'none'}")
    channels = input_shape[-1]
    mean = _channel_constants(mean, 0.0, channels, "mean")
    std = _channel_constants(std, 1.0, channels, "std")

    inputs = keras.Input(tuple(input_shape), name="images")
    x = Standardize(mean=mean, std=std, name="standardize")(inputs)
    kwargs = dict(num_classes=num_classes, width=width, depth=depth, **options)
    if name is not None:
        kwargs["name"] = name
    return _BUILDERS[arch](inputs, x, **kwargs)
