"""WideResNet-depth-k (Zagoruyko & Komodakis 2016) as used by TRADES, AWP and Rice et al.

Stem 3x3 conv to 16 channels, three groups of n = (depth - 4) / 6 pre-activation basic blocks
(16k, 32k, 64k channels; strides 1, 2, 2), a final BN + ReLU, global average pooling and a
Dense layer. A block whose channel count changes pre-activates its input once and feeds it to
both the first conv and a 1x1 projection shortcut; other blocks add the raw input. Convs use
Kaiming-normal (fan_out) init and the Dense bias starts at zero, as in the reference.
WRN-34-10 with 10 classes has 46,160,474 trainable parameters.
"""
import keras

from atamp_tf.models import layers as L

DEFAULT_DEPTH = 34
DEFAULT_WIDEN = 10
GROUP_STRIDES = (1, 2, 2)


def wide_block(x, channels, stride, dropout, name):
    """One WRN basic block (pre-activation, optional dropout between the two convs)."""
    out = L.bn_relu(x, f"{name}_preact")
    if x.shape[-1] != channels:
        shortcut = L.conv(out, channels, 1, stride, f"{name}_shortcut",
                          kernel_initializer=L.kaiming_normal_fan_out())
    else:
        shortcut = x
    out = L.conv(out, channels, 3, stride, f"{name}_conv1",
                 kernel_initializer=L.kaiming_normal_fan_out())
    out = L.bn_relu(out, f"{name}_mid")
    if dropout > 0:
        out = keras.layers.Dropout(dropout, name=f"{name}_dropout")(out)
    out = L.conv(out, channels, 3, 1, f"{name}_conv2",
                 kernel_initializer=L.kaiming_normal_fan_out())
    return keras.layers.Add(name=f"{name}_add")([out, shortcut])


def build(inputs, x, *, num_classes, width=None, depth=None, dropout=0.0, name=None):
    """Stack WRN-``depth``-``width`` on ``x`` (the standardised ``inputs``); return the model."""
    depth = DEFAULT_DEPTH if depth is None else depth
    widen = DEFAULT_WIDEN if width is None else width
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 10 or (depth - 4) % 6:
        raise ValueError(f"depth for wide_resnet must be an int >= 10 with (depth - 4) % 6 == 0 "
                         f"(e.g. 16, 28, 34), got {depth!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    blocks = (depth - 4) // 6
    x = L.conv(x, 16, 3, 1, "stem_conv", kernel_initializer=L.kaiming_normal_fan_out())
    for group, stride in enumerate(GROUP_STRIDES, start=1):
        channels = 16 * widen * 2 ** (group - 1)
        for block in range(1, blocks + 1):
            x = wide_block(x, channels, stride if block == 1 else 1, dropout,
                           f"group{group}_block{block}")
    x = L.bn_relu(x, "final")
    logits = L.classifier(x, num_classes, zero_bias=True)
    return keras.Model(inputs, logits, name=name or f"wide_resnet_{depth}_{widen}")
