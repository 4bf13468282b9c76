"""Building blocks shared by the model builders: input standardisation, PyTorch-faithful layers.

The reference networks (Rice et al. 2020, TRADES, AWP) are PyTorch code, so the convolutions
pad like PyTorch's ``padding=k//2``, BatchNorm uses PyTorch's defaults, and the initialisers
reproduce PyTorch's. Keeping that in one place keeps the builders short.
"""
import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

# PyTorch BatchNorm2d defaults: running = (1 - 0.1) * running + 0.1 * batch, eps 1e-5.
# Keras' momentum is the weight of the old value, so PyTorch's 0.1 is Keras' 0.9.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="atamp_tf")
class Standardize(keras.layers.Layer):
    """Per-channel ``(x - mean) / std`` on the last axis, with mean and std fixed constants.

    A layer of the model rather than a data transform, so attacks, ONNX files and the zoo all
    take pixels in [0, 1]. The constants are part of the config, not weights: they never train
    and never count as parameters (the AMP perturbation covers trainable weights only).
    """

    def __init__(self, mean=0.0, std=1.0, **kwargs):
        super().__init__(**kwargs)
        self.mean = [float(m) for m in np.atleast_1d(np.asarray(mean, dtype=np.float64))]
        self.std = [float(s) for s in np.atleast_1d(np.asarray(std, dtype=np.float64))]
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean and std must have the same length, got {len(self.mean)} "
                             f"and {len(self.std)}")
        if not all(math.isfinite(m) for m in self.mean):
            raise ValueError(f"mean must be finite numbers, got {self.mean}")
        if not all(math.isfinite(s) and s > 0 for s in self.std):
            raise ValueError(f"std must be finite positive numbers, got {self.std}")

    def build(self, input_shape):
        channels = input_shape[-1]
        if len(self.mean) != 1 and channels is not None and channels != len(self.mean):
            raise ValueError(f"mean/std have {len(self.mean)} entries but the input has "
                             f"{channels} channels")
        self.built = True

    def call(self, inputs):
        mean = ops.convert_to_tensor(np.asarray(self.mean), dtype=inputs.dtype)
        std = ops.convert_to_tensor(np.asarray(self.std), dtype=inputs.dtype)
        return ops.divide(ops.subtract(inputs, mean), std)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(mean=list(self.mean), std=list(self.std))
        return config


def torch_default_init(fan_in):
    """PyTorch's default Conv/Linear initialiser, U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    (kaiming_uniform with a = sqrt(5); the same bound serves PyTorch's default bias init.)
    A new instance per layer: an unseeded Keras initialiser draws the same values every call.
    """
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


def kaiming_normal_fan_out():
    """PyTorch ``kaiming_normal_(mode='fan_out', nonlinearity='relu')``: N(0, 2 / fan_out)."""
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_out",
                                              distribution="untruncated_normal")


def conv(x, filters, kernel_size, stride, name, kernel_initializer=None):
    """Bias-free square convolution padded exactly like PyTorch ``padding=kernel_size // 2``.

    Keras 'same' pads asymmetrically (0 before, 1 after) for stride 2 on even inputs, which
    shifts every window by a pixel relative to PyTorch; explicit symmetric zero padding plus
    'valid' does not. For stride 1 and odd kernels 'same' is already symmetric.
    """
    in_channels = x.shape[-1]
    if kernel_initializer is None:
        kernel_initializer = torch_default_init(kernel_size * kernel_size * in_channels)
    pad = kernel_size // 2
    padding = "same"
    if stride != 1 and pad > 0:
        x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        padding = "valid"
    elif pad == 0:
        padding = "valid"
    return keras.layers.Conv2D(filters, kernel_size, strides=stride, padding=padding,
                               use_bias=False, kernel_initializer=kernel_initializer,
                               name=name)(x)


@keras.saving.register_keras_serializable(package="atamp_tf")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """keras.layers.BatchNormalization whose training-mode pass is TensorFlow's fused kernel.

    Keras 3 writes training-mode BatchNorm as about ten elementwise ops and reductions (and
    twice that in the gradient); on CPU they cost more than the convolutions of a PreAct
    ResNet-18 at width 16. `tf.nn.fused_batch_norm` (oneDNN on x86) does the pass and its
    gradient in one kernel each. Results equal the parent's to float32 round-off, moving
    statistics included (Keras' biased batch variance; the kernel returns Bessel's unbiased
    one, undone here). Inference (one multiply-add per element), masks, renorm, synchronized
    BN, float64 and non-4D inputs take the parent's path, so exported graphs are unchanged.
    """

    def call(self, inputs, training=None, mask=None):
        if (not (training and self.trainable) or mask is not None or self.renorm
                or self.synchronized or len(inputs.shape) != 4 or self.axis not in (-1, 3)
                or inputs.dtype not in (tf.float32, tf.bfloat16, tf.float16)):
            return super().call(inputs, training=training, mask=mask)
        x = inputs
        gamma = self.gamma if self.scale else tf.ones_like(self.moving_mean)
        beta = self.beta if self.center else tf.zeros_like(self.moving_mean)
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, tf.cast(gamma, tf.float32), tf.cast(beta, tf.float32), epsilon=self.epsilon,
            is_training=True)
        count = tf.cast(tf.size(x) // tf.shape(x)[-1], tf.float32)
        variance = variance * ((count - 1.0) / tf.maximum(count, 1.0))
        self.moving_mean.assign(self.moving_mean * self.momentum
                                + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum
                                    + variance * (1.0 - self.momentum))
        return tf.cast(y, self.compute_dtype)


def bn_relu(x, name):
    """BatchNorm with PyTorch's momentum and epsilon, then ReLU (the pre-activation)."""
    x = FusedBatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def classifier(x, num_classes, name="logits", zero_bias=False):
    """Global average pool then a Dense layer to logits, initialised like ``nn.Linear``."""
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    fan_in = x.shape[-1]
    bias_init = "zeros" if zero_bias else torch_default_init(fan_in)
    # float32 logits under a mixed-precision policy: losses and attack gradients stay float32.
    return keras.layers.Dense(num_classes, kernel_initializer=torch_default_init(fan_in),
                              bias_initializer=bias_init, dtype="float32", name=name)(x)
