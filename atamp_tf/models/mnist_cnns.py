"""The two published MNIST robustness networks, as their reference code defines them.

madry_cnn (MadryLab/mnist_challenge, model.py): conv 5x5 32 (same) - maxpool 2 - conv 5x5 64
  (same) - maxpool 2 - dense 1024 - dense 10, ReLU, weights truncated N(0, 0.1), biases 0.1;
  3,274,634 parameters at 28x28x1.
trades_small_cnn (yaodongyu/TRADES, models/small_cnn.py, SmallCNN): conv 3x3 32, 32 (valid) -
  maxpool 2 - conv 3x3 64, 64 (valid) - maxpool 2 - dense 200 - dropout 0.5 - dense 200 -
  dense 10, ReLU; convolutions Kaiming-normal with zero bias, the last layer zero, the other
  dense layers PyTorch's default; 312,202 parameters at 28x28x1.
`width` is the first convolution's channels (32, the references'); the rest scale with it,
which only `--smoke` uses.
"""
import keras

from atamp_tf.models import layers as L

DEFAULT_WIDTH = 32


def _check(depth, arch):
    if depth is not None:
        raise ValueError(f"depth is not used by {arch}; pass None, got {depth!r}")


def build_madry(inputs, x, *, num_classes, width=None, depth=None, name="madry_cnn"):
    """Madry et al. (2018)'s MNIST network on ``x`` (the standardised ``inputs``)."""
    _check(depth, "madry_cnn")
    width = DEFAULT_WIDTH if width is None else width

    def weights():
        return keras.initializers.TruncatedNormal(stddev=0.1)

    def bias():
        return keras.initializers.Constant(0.1)

    for i, filters in enumerate((width, 2 * width), start=1):
        x = keras.layers.Conv2D(filters, 5, padding="same", activation="relu",
                                kernel_initializer=weights(), bias_initializer=bias(),
                                name=f"conv{i}")(x)
        x = keras.layers.MaxPooling2D(2, padding="same", name=f"pool{i}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(32 * width, activation="relu", kernel_initializer=weights(),
                           bias_initializer=bias(), name="fc1")(x)
    logits = keras.layers.Dense(num_classes, kernel_initializer=weights(),
                                bias_initializer=bias(), dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name=name)


def build_trades(inputs, x, *, num_classes, width=None, depth=None, dropout=0.5,
                 name="trades_small_cnn"):
    """TRADES' SmallCNN (Zhang et al. 2019) on ``x`` (the standardised ``inputs``)."""
    _check(depth, "trades_small_cnn")
    width = DEFAULT_WIDTH if width is None else width
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    if min(inputs.shape[1:3]) < 16:
        raise ValueError("trades_small_cnn needs input height and width >= 16 (four valid 3x3 "
                         f"convolutions and two 2x2 pools), got input_shape "
                         f"{tuple(inputs.shape[1:])}")
    kaiming = dict(kernel_initializer=keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_in", distribution="untruncated_normal"), bias_initializer="zeros")
    for i, filters in enumerate((width, width, 2 * width, 2 * width), start=1):
        x = keras.layers.Conv2D(filters, 3, padding="valid", activation="relu", **kaiming,
                                name=f"conv{i}")(x)
        if i % 2 == 0:
            x = keras.layers.MaxPooling2D(2, name=f"pool{i // 2}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    hidden = max(1, round(200 * width / DEFAULT_WIDTH))
    for i in (1, 2):
        fan_in = x.shape[-1]
        x = keras.layers.Dense(hidden, activation="relu",
                               kernel_initializer=L.torch_default_init(fan_in),
                               bias_initializer=L.torch_default_init(fan_in), name=f"fc{i}")(x)
        if i == 1 and dropout:
            x = keras.layers.Dropout(dropout, name="drop")(x)
    logits = keras.layers.Dense(num_classes, kernel_initializer="zeros", bias_initializer="zeros",
                                dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name=name)
