"""PreAct ResNet-18 as in Rice et al. 2020 (locuslab/robust_overfitting ``preactresnet.py``).

3x3 stem conv, four stages of two pre-activation blocks (planes w, 2w, 4w, 8w; strides 1, 2, 2,
2), a final BN + ReLU, global average pooling and a Dense layer. PyTorch's initialisers and
BatchNorm defaults are reproduced. At w = 64 and 10 classes it has 11,172,170 trainable
parameters (the final BN adds 1,024 to the 11,171,146 of kuangliu's variant, which omits it).
"""
import keras

from atamp_tf.models import layers as L

BLOCKS_PER_STAGE = (2, 2, 2, 2)
STAGE_STRIDES = (1, 2, 2, 2)
DEFAULT_WIDTH = 64


def preact_block(x, planes, stride, name):
    """Pre-activation basic block; the projection shortcut reads the pre-activated input."""
    out = L.bn_relu(x, f"{name}_preact")
    if stride != 1 or x.shape[-1] != planes:
        shortcut = L.conv(out, planes, 1, stride, f"{name}_shortcut")
    else:
        shortcut = x
    out = L.conv(out, planes, 3, stride, f"{name}_conv1")
    out = L.bn_relu(out, f"{name}_mid")
    out = L.conv(out, planes, 3, 1, f"{name}_conv2")
    return keras.layers.Add(name=f"{name}_add")([out, shortcut])


def build(inputs, x, *, num_classes, width=None, depth=None, name="preact_resnet18"):
    """Stack PreAct ResNet-18 on ``x`` (the standardised ``inputs``) and return the model."""
    width = DEFAULT_WIDTH if width is None else width
    if depth is not None and depth != 18:
        raise ValueError(f"depth for preact_resnet18 must be 18 or None, got {depth}")
    x = L.conv(x, width, 3, 1, "stem_conv")
    for stage, (blocks, stride) in enumerate(zip(BLOCKS_PER_STAGE, STAGE_STRIDES), start=1):
        planes = width * 2 ** (stage - 1)
        for block in range(1, blocks + 1):
            x = preact_block(x, planes, stride if block == 1 else 1,
                             f"stage{stage}_block{block}")
    x = L.bn_relu(x, "final")
    logits = L.classifier(x, num_classes)
    return keras.Model(inputs, logits, name=name)
