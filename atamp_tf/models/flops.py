"""Forward-pass FLOPs per image of a Keras model: 2 x the multiply-accumulates of its
convolution and dense layers, from layer shapes alone (no data, no profiler).

Benchmarks divide by it to report an arithmetic rate. BatchNorm, activations, pooling and bias
additions are not counted (they are a few percent of a conv net and are memory-bound anyway).
"""
import math

import keras


def _conv_macs(layer, inputs, outputs):
    """Multiply-accumulates of one call of a conv layer, or None for other layers."""
    out_positions = math.prod(outputs.shape[1:-1])
    if isinstance(layer, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)):
        return out_positions * (math.prod(layer.depthwise_kernel.shape)
                                + math.prod(layer.pointwise_kernel.shape))
    if isinstance(layer, (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
                          keras.layers.Conv3DTranspose)):
        # Every input position scatters one kernel's worth of products.
        return math.prod(inputs.shape[1:-1]) * math.prod(layer.kernel.shape)
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
                          keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)):
        # Kernel (k..., in / groups, out) or depthwise (k..., in, multiplier): one kernel's
        # worth of products per output position either way.
        return out_positions * math.prod(layer.kernel.shape)
    if isinstance(layer, keras.layers.Dense):
        return out_positions * math.prod(layer.kernel.shape)
    return None


def count_flops(model, input_shape):
    """FLOPs (2 x MACs of conv and dense layers) of one forward pass of one image.

    ``model`` is a Functional or Sequential Keras model (nested models are counted through);
    ``input_shape`` is the image shape without the batch axis, e.g. (32, 32, 3). The model is
    traced symbolically on a copy, so a model built for variable-size inputs can be counted at
    any size and the model itself is left untouched.
    """
    if (not isinstance(input_shape, (tuple, list)) or not input_shape
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                       for d in input_shape)):
        raise ValueError(f"input_shape must be a non-empty tuple of positive ints (no batch "
                         f"axis), got {input_shape!r}")
    if not isinstance(model, keras.Model):
        raise ValueError(f"model must be a keras.Model, got {type(model).__name__}")
    input_shape = tuple(input_shape)
    if isinstance(model, keras.Sequential):
        return _count_sequential(model, input_shape)
    if not hasattr(model, "inputs") or not model.inputs or len(model.inputs) != 1:
        raise ValueError(f"model must be a Functional or Sequential model with one input, "
                         f"got {type(model).__name__} {model.name!r}")
    expected = tuple(model.inputs[0].shape[1:])
    if len(expected) != len(input_shape) or any(
            e is not None and e != d for e, d in zip(expected, input_shape)):
        raise ValueError(f"input_shape {input_shape} does not fit the model's input shape "
                         f"{expected}")

    macs = 0

    def record(layer, *args, **kwargs):
        nonlocal macs
        outputs = layer(*args, **kwargs)
        if isinstance(layer, keras.Model):
            macs += count_flops(layer, tuple(args[0].shape[1:])) // 2
        else:
            macs += _conv_macs(layer, args[0], outputs) or 0
        return outputs

    keras.models.clone_model(model, input_tensors=keras.Input(input_shape), call_function=record)
    return 2 * macs


def _count_sequential(model, input_shape):
    """FLOPs of a Sequential model, tracing a copy of its layers one after the other."""
    macs = 0
    x = keras.Input(input_shape)
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            macs += count_flops(layer, tuple(x.shape[1:])) // 2
            x = keras.KerasTensor(layer.compute_output_shape(x.shape))
            continue
        copy = layer.__class__.from_config(layer.get_config())
        y = copy(x)
        macs += _conv_macs(copy, x, y) or 0
        x = y
    return 2 * macs
