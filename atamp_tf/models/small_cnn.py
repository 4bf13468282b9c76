"""A small CNN for the quick start and the tests: conv(w) - conv(2w) - maxpool - dense(4w).

Fast on 8x8x1 digits and still a real network on 32x32x3. ``batchnorm=True`` puts a
BatchNorm (PyTorch defaults) between each conv/dense and its ReLU, so the AMP code paths that
handle BatchNorm statistics can be exercised cheaply.
"""
import keras

from atamp_tf.models import layers as L

DEFAULT_WIDTH = 32


def _dense_or_conv_block(x, layer, batchnorm, name):
    """Apply ``layer`` (bias-free when a BatchNorm follows), then optional BN, then ReLU."""
    x = layer(x)
    if batchnorm:
        x = L.FusedBatchNormalization(momentum=L.BN_MOMENTUM, epsilon=L.BN_EPSILON,
                                      name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def build(inputs, x, *, num_classes, width=None, depth=None, batchnorm=False,
          name="small_cnn"):
    """Stack the small CNN on ``x`` (the standardised ``inputs``) and return the model."""
    width = DEFAULT_WIDTH if width is None else width
    if depth is not None:
        raise ValueError(f"depth is not used by small_cnn; pass None, got {depth!r}")
    if not isinstance(batchnorm, bool):
        raise ValueError(f"batchnorm must be a bool, got {batchnorm!r}")
    if min(inputs.shape[1:3]) < 2:
        raise ValueError(f"small_cnn needs input height and width >= 2 for its 2x2 max pool, "
                         f"got input_shape {tuple(inputs.shape[1:])}")
    use_bias = not batchnorm
    x = _dense_or_conv_block(
        x, keras.layers.Conv2D(width, 3, padding="same", use_bias=use_bias, name="conv1"),
        batchnorm, "conv1")
    x = _dense_or_conv_block(
        x, keras.layers.Conv2D(2 * width, 3, padding="same", use_bias=use_bias, name="conv2"),
        batchnorm, "conv2")
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = _dense_or_conv_block(
        x, keras.layers.Dense(4 * width, use_bias=use_bias, name="dense1"), batchnorm, "dense1")
    # float32 logits under a mixed-precision policy: losses and attack gradients stay float32.
    logits = keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name=name)
