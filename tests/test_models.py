"""Tests for atamp_tf.models: architectures, parameter counts, normalisation, serialisation,
FLOP counting."""
import math

import keras
import numpy as np
import pytest

from atamp_tf.models import ARCHITECTURES, Standardize, build_model, count_flops
from atamp_tf.models import layers as L

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2471, 0.2435, 0.2616)


def _param_counts(model):
    trainable = sum(math.prod(v.shape) for v in model.trainable_weights)
    non_trainable = sum(math.prod(v.shape) for v in model.non_trainable_weights)
    return trainable, non_trainable


def _bn_channels(model):
    return sum(layer.gamma.shape[0] for layer in model.layers
               if isinstance(layer, keras.layers.BatchNormalization))


def _images(shape, n=2, seed=0):
    return np.random.default_rng(seed).random((n,) + tuple(shape), dtype=np.float32)


@pytest.fixture(scope="module")
def wrn_34_10():
    keras.utils.set_random_seed(0)
    return build_model("wide_resnet", input_shape=(32, 32, 3), num_classes=10, depth=34,
                       width=10)


def test_architectures_listed():
    assert set(ARCHITECTURES) == {"preact_resnet18", "wide_resnet", "small_cnn", "madry_cnn",
                                  "trades_small_cnn"}


def test_mnist_reference_networks_parameter_counts():
    """Counted from the reference definitions. Madry (mnist_challenge model.py): conv 5x5x1x32
    + 32, conv 5x5x32x64 + 64, fc 3136x1024 + 1024, fc 1024x10 + 10 = 3,274,634. TRADES
    SmallCNN: convs 3x3 (1-32, 32-32, 32-64, 64-64) with biases, fc 1024-200-200-10 = 312,202."""
    madry = build_model("madry_cnn", input_shape=(28, 28, 1), num_classes=10)
    trades = build_model("trades_small_cnn", input_shape=(28, 28, 1), num_classes=10)
    assert _param_counts(madry) == (832 + 51_264 + 3_212_288 + 10_250, 0) == (3_274_634, 0)
    assert _param_counts(trades) == (320 + 9_248 + 18_496 + 36_928 + 205_000 + 40_200 + 2_010,
                                     0) == (312_202, 0)
    assert madry.get_layer("flatten").output.shape[-1] == 7 * 7 * 64
    assert trades.get_layer("flatten").output.shape[-1] == 4 * 4 * 64


def test_mnist_reference_networks_initialise_as_their_code():
    madry = build_model("madry_cnn", input_shape=(28, 28, 1), num_classes=10)
    kernel = madry.get_layer("fc1").kernel.numpy()
    assert abs(kernel.std() - 0.088) < 0.005 and np.abs(kernel).max() <= 0.2  # truncated N(0, .1)
    assert np.all(madry.get_layer("conv1").bias.numpy() == 0.1)
    trades = build_model("trades_small_cnn", input_shape=(28, 28, 1), num_classes=10)
    assert np.all(trades.get_layer("logits").kernel.numpy() == 0)  # fc3 zero, as SmallCNN
    conv3 = trades.get_layer("conv3").kernel.numpy()
    assert abs(conv3.std() - np.sqrt(2 / (9 * 32))) < 0.01  # Kaiming normal, fan-in
    # dropout 0.5 acts only in training
    x = _images((28, 28, 1), n=4)
    assert np.array_equal(trades(x, training=False).numpy(), trades(x, training=False).numpy())
    with pytest.raises(ValueError, match="dropout"):
        build_model("trades_small_cnn", input_shape=(28, 28, 1), num_classes=10, dropout=1.0)


def test_preact_resnet18_parameter_count():
    # Rice et al.'s PreActResNet18 (with its final BatchNorm), counted like PyTorch's
    # sum(p.numel() for p in model.parameters()): convs without bias, BN weight + bias,
    # Linear weight + bias. Keras adds the BN moving mean/var as non-trainable weights.
    model = build_model("preact_resnet18", input_shape=(32, 32, 3), num_classes=10)
    trainable, non_trainable = _param_counts(model)
    assert trainable == 11_172_170
    assert non_trainable == 2 * _bn_channels(model) == 7_808


def test_wide_resnet_34_10_parameter_count(wrn_34_10):
    # TRADES / AWP / Rice et al. WideResNet(depth=34, widen_factor=10), 10 classes.
    trainable, non_trainable = _param_counts(wrn_34_10)
    assert trainable == 46_160_474
    assert non_trainable == 2 * _bn_channels(wrn_34_10)
    convs = [layer for layer in wrn_34_10.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 1 + 3 * 5 * 2 + 3  # stem, two per block, three projection shortcuts
    assert wrn_34_10.output.shape == (None, 10)


def test_wide_resnet_small_forward_and_depth_check():
    model = build_model("wide_resnet", input_shape=(32, 32, 3), num_classes=10, depth=10,
                        width=1)
    assert model(_images((32, 32, 3)), training=False).shape == (2, 10)
    assert model.get_layer("final_relu").output.shape == (None, 8, 8, 64)
    with pytest.raises(ValueError, match="depth"):
        build_model("wide_resnet", input_shape=(32, 32, 3), num_classes=10, depth=33)


@pytest.mark.parametrize("arch", ["preact_resnet18", "small_cnn", "madry_cnn",
                                  "trades_small_cnn"])
@pytest.mark.parametrize("shape,classes", [((32, 32, 3), 10), ((32, 32, 3), 100),
                                           ((8, 8, 1), 10), ((28, 28, 1), 10)])
def test_forward_shapes(arch, shape, classes):
    if arch == "trades_small_cnn" and shape[0] < 16:
        with pytest.raises(ValueError, match="input_shape"):
            build_model(arch, input_shape=shape, num_classes=classes, width=8)
        return
    model = build_model(arch, input_shape=shape, num_classes=classes, width=8)
    logits = model(_images(shape), training=False).numpy()
    assert logits.shape == (2, classes)
    assert logits.dtype == np.float32
    assert np.all(np.isfinite(logits))
    # Logits, not probabilities.
    assert not np.allclose(logits.sum(axis=1), 1.0)


@pytest.mark.parametrize("shape,final", [((32, 32, 3), 4), ((28, 28, 1), 4), ((8, 8, 1), 1)])
def test_preact_resnet18_downsamples_like_pytorch(shape, final):
    model = build_model("preact_resnet18", input_shape=shape, num_classes=10, width=8)
    assert model.get_layer("final_relu").output.shape == (None, final, final, 64)


@pytest.mark.parametrize("arch,depth,prefix", [("preact_resnet18", None, "stage"),
                                                ("wide_resnet", 16, "group")])
def test_shortcuts_follow_the_reference_wiring(arch, depth, prefix):
    # A projection shortcut reads the pre-activated input (BN + ReLU); an identity shortcut
    # adds the raw block input.
    model = build_model(arch, input_shape=(16, 16, 3), num_classes=10, width=2, depth=depth)
    projection = f"{prefix}2_block1"
    shortcut = model.get_layer(f"{projection}_shortcut")
    assert shortcut.input is model.get_layer(f"{projection}_preact_relu").output
    assert model.get_layer(f"{projection}_add").input[1] is shortcut.output
    identity = f"{prefix}2_block2"
    with pytest.raises(ValueError):
        model.get_layer(f"{identity}_shortcut")
    assert model.get_layer(f"{identity}_add").input[1] is model.get_layer(
        f"{projection}_add").output


@pytest.mark.parametrize("size", [8, 7])
def test_stride2_conv_pads_symmetrically_like_pytorch(size):
    # PyTorch Conv2d(k=3, stride=2, padding=1): the first window covers rows/cols -1..1, so
    # with an all-ones kernel output[0, 0] sums x[0:2, 0:2]. Keras 'same' pads only after
    # the input when the size is even, and would sum x[0:3, 0:3].
    inputs = keras.Input((size, size, 1))
    outputs = L.conv(inputs, 1, 3, 2, "c", kernel_initializer="ones")
    model = keras.Model(inputs, outputs)
    x = np.arange(size * size, dtype=np.float32).reshape(1, size, size, 1)
    y = model(x).numpy()[0, :, :, 0]
    out = (size + 2 - 3) // 2 + 1
    assert y.shape == (out, out)
    padded = np.pad(x[0, :, :, 0], 1)
    expected = np.array([[padded[2 * i:2 * i + 3, 2 * j:2 * j + 3].sum() for j in range(out)]
                         for i in range(out)])
    np.testing.assert_allclose(y, expected, rtol=1e-6)


def test_standardize_is_exactly_x_minus_mean_over_std():
    model = build_model("small_cnn", input_shape=(8, 8, 3), num_classes=10, mean=CIFAR_MEAN,
                        std=CIFAR_STD)
    layer = model.get_layer("standardize")
    x = _images((8, 8, 3), n=4)
    expected = (x - np.asarray(CIFAR_MEAN, np.float32)) / np.asarray(CIFAR_STD, np.float32)
    assert np.array_equal(layer(x).numpy(), expected)
    assert isinstance(model.layers[1], Standardize)
    assert model.layers[1] is layer


def test_standardize_defaults_to_identity_and_broadcasts_scalars():
    x = _images((8, 8, 3))
    identity = build_model("small_cnn", input_shape=(8, 8, 3), num_classes=10)
    assert np.array_equal(identity.get_layer("standardize")(x).numpy(), x)
    scalar = build_model("small_cnn", input_shape=(8, 8, 3), num_classes=10, mean=0.5, std=0.25)
    assert scalar.get_layer("standardize").mean == [0.5] * 3
    assert np.array_equal(scalar.get_layer("standardize")(x).numpy(),
                          (x - np.float32(0.5)) / np.float32(0.25))


def test_standardize_rejects_bad_statistics():
    with pytest.raises(ValueError, match="mean"):
        build_model("small_cnn", input_shape=(8, 8, 3), num_classes=10, mean=(0.5, 0.5))
    with pytest.raises(ValueError, match="std"):
        build_model("small_cnn", input_shape=(8, 8, 1), num_classes=10, std=0.0)
    with pytest.raises(ValueError, match="std"):
        Standardize(mean=(0.1, 0.2), std=(0.3,))


@pytest.mark.parametrize("arch,options", [("preact_resnet18", {}),
                                          ("small_cnn", {"batchnorm": True})])
def test_inference_is_deterministic_and_per_example(arch, options):
    model = build_model(arch, input_shape=(32, 32, 3), num_classes=10, width=8, **options)
    x = _images((32, 32, 3), n=4, seed=1)
    model(x, training=True)  # move BatchNorm statistics away from their initial values
    first = model(x, training=False).numpy()
    assert np.array_equal(first, model(x, training=False).numpy())
    # Inference mode uses moving statistics: one example's logits do not depend on the batch.
    np.testing.assert_allclose(model(x[:1], training=False).numpy(), first[:1], atol=1e-5)
    assert not np.allclose(model(x, training=True).numpy(), first, atol=1e-5)


@pytest.mark.parametrize("arch,options", [("preact_resnet18", {}),
                                          ("small_cnn", {"batchnorm": True}),
                                          ("wide_resnet", {"depth": 10, "width": 1})])
def test_keras_save_load_round_trip(tmp_path, arch, options):
    options = dict({"width": 8}, **options)
    model = build_model(arch, input_shape=(32, 32, 3), num_classes=10, mean=CIFAR_MEAN,
                        std=CIFAR_STD, **options)
    x = _images((32, 32, 3), n=3, seed=2)
    model(x, training=True)  # non-trivial BatchNorm moving statistics
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert np.array_equal(loaded(x, training=False).numpy(), model(x, training=False).numpy())
    assert loaded.get_layer("standardize").get_config()["std"] == list(CIFAR_STD)
    assert loaded.name == model.name


def test_exports_to_onnx_with_matching_logits():
    tf = pytest.importorskip("tensorflow")
    tf2onnx = pytest.importorskip("tf2onnx")
    ort = pytest.importorskip("onnxruntime")
    model = build_model("small_cnn", input_shape=(8, 8, 3), num_classes=10, width=4,
                        mean=CIFAR_MEAN, std=CIFAR_STD, batchnorm=True)
    spec = (tf.TensorSpec((None, 8, 8, 3), tf.float32, name="images"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=13)
    session = ort.InferenceSession(proto.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    x = _images((8, 8, 3), n=3, seed=3)
    onnx_logits = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(onnx_logits, model(x, training=False).numpy(), atol=1e-5)


def test_initialisers_follow_the_pytorch_references():
    keras.utils.set_random_seed(1)
    # PreAct ResNet: PyTorch default conv init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    preact = build_model("preact_resnet18", input_shape=(8, 8, 3), num_classes=10, width=16)
    kernel = preact.get_layer("stage4_block2_conv2").kernel.numpy()
    bound = 1 / math.sqrt(3 * 3 * 128)
    assert np.abs(kernel).max() <= bound
    assert np.abs(kernel).max() > 0.99 * bound
    # WideResNet: kaiming_normal(fan_out), N(0, 2 / (3 * 3 * out_channels)); zero Dense bias.
    wrn = build_model("wide_resnet", input_shape=(8, 8, 3), num_classes=10, depth=10, width=4)
    kernel = wrn.get_layer("group3_block1_conv2").kernel.numpy()
    assert kernel.shape == (3, 3, 256, 256)
    assert abs(kernel.std() / math.sqrt(2 / (9 * 256)) - 1) < 0.02
    assert np.array_equal(wrn.get_layer("logits").bias.numpy(), np.zeros(10, np.float32))
    # Distinct layers get distinct initial values (no reused unseeded initialiser).
    a = preact.get_layer("stage1_block1_conv1").kernel.numpy()
    b = preact.get_layer("stage1_block2_conv1").kernel.numpy()
    assert not np.array_equal(a, b)


def test_batchnorm_matches_pytorch_defaults():
    model = build_model("preact_resnet18", input_shape=(8, 8, 1), num_classes=10, width=8)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 1 + 8 * 2  # two per block plus the final one
    assert all(bn.momentum == 0.9 and bn.epsilon == 1e-5 for bn in bns)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert not any(conv.use_bias for conv in convs)


def test_small_cnn_batchnorm_option():
    plain = build_model("small_cnn", input_shape=(8, 8, 1), num_classes=10, width=8)
    with_bn = build_model("small_cnn", input_shape=(8, 8, 1), num_classes=10, width=8,
                          batchnorm=True)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in plain.layers)
    assert sum(isinstance(layer, keras.layers.BatchNormalization)
               for layer in with_bn.layers) == 3
    # conv1 (9*1*8 + 8) + conv2 (9*8*16 + 16) + dense1 (4*4*16*32 + 32) + logits (32*10 + 10)
    assert _param_counts(plain)[0] == 80 + 1168 + 8224 + 330


def test_unknown_arch_names_it_and_the_known_ones():
    with pytest.raises(ValueError, match=r"resnet50.*preact_resnet18.*wide_resnet.*small_cnn"):
        build_model("resnet50", input_shape=(32, 32, 3), num_classes=10)


@pytest.mark.parametrize("kwargs,argname", [
    ({"input_shape": (32, 32), "num_classes": 10}, "input_shape"),
    ({"input_shape": (32, 32, 3), "num_classes": 0}, "num_classes"),
    ({"input_shape": (32, 32, 3), "num_classes": 10, "width": 0}, "width"),
    ({"input_shape": (32, 32, 3), "num_classes": 10, "depth": 34}, "depth"),
    ({"input_shape": (32, 32, 3), "num_classes": 10, "dropout": 0.3}, "dropout"),
])
def test_bad_arguments_raise_value_error(kwargs, argname):
    with pytest.raises(ValueError, match=argname):
        build_model("small_cnn", **kwargs)


def test_count_flops_matches_hand_computation():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)       # 8*8 positions * 3*3*1*4
    x = keras.layers.Conv2D(6, 3, strides=2)(x)                 # 3*3 positions * 3*3*4*6
    x = keras.layers.ReLU()(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(5)(x)                          # 54 * 5
    model = keras.Model(inputs, outputs)
    expected = 2 * (64 * 36 + 9 * 216 + 54 * 5)
    assert count_flops(model, (8, 8, 1)) == expected == 9036
    sequential = keras.Sequential([keras.Input((8, 8, 1))] + model.layers[1:])
    assert count_flops(sequential, (8, 8, 1)) == expected
    # A nested model is counted through, in a Functional or a Sequential outer model.
    outer_in = keras.Input((8, 8, 1))
    outer = keras.Model(outer_in, keras.layers.Dense(3)(model(outer_in)))
    assert count_flops(outer, (8, 8, 1)) == expected + 2 * 5 * 3
    nested = keras.Sequential([keras.Input((8, 8, 1)), model, keras.layers.Dense(3)])
    assert count_flops(nested, (8, 8, 1)) == expected + 2 * 5 * 3


def test_count_flops_variable_size_model_and_small_cnn():
    inputs = keras.Input((None, None, 2))
    outputs = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(inputs)
    model = keras.Model(inputs, outputs)
    assert count_flops(model, (5, 7, 2)) == 2 * (5 * 7 * 3 * 3 * 2 * 2)
    assert count_flops(model, (10, 10, 2)) == 2 * (100 * 3 * 3 * 2 * 2)
    w = 8
    cnn = build_model("small_cnn", input_shape=(8, 8, 1), num_classes=10, width=w)
    macs = 64 * 9 * 1 * w + 64 * 9 * w * 2 * w + (16 * 2 * w) * 4 * w + 4 * w * 10
    assert count_flops(cnn, (8, 8, 1)) == 2 * macs


def test_count_flops_rejects_bad_input():
    cnn = build_model("small_cnn", input_shape=(8, 8, 1), num_classes=10, width=4)
    with pytest.raises(ValueError, match="input_shape"):
        count_flops(cnn, (16, 16, 1))
    with pytest.raises(ValueError, match="input_shape"):
        count_flops(cnn, (8, 0, 1))


def test_fused_batchnorm_equals_keras_batchnorm_under_stateless_call():
    """The fused training-mode kernel gives Keras' outputs, moving statistics and gradients,
    and reads perturbed weights passed to stateless_call (AMP's theta + Delta)."""
    import tensorflow as tf

    from atamp_tf.models.layers import FusedBatchNormalization

    def net(cls):
        keras.utils.set_random_seed(0)
        inp = keras.Input((6, 6, 3))
        h = keras.layers.Conv2D(4, 3, use_bias=False)(inp)
        h = keras.layers.Flatten()(cls(momentum=0.9, epsilon=1e-5)(h))
        return keras.Model(inp, keras.layers.Dense(3)(h))

    plain, fused = net(keras.layers.BatchNormalization), net(FusedBatchNormalization)
    x = tf.random.stateless_uniform((8, 6, 6, 3), seed=[1, 2])
    weights = [v.value + 0.3 for v in plain.trainable_variables]  # perturbed, incl. gamma/beta
    state = [v.value for v in plain.non_trainable_variables]

    def run(model, w):
        with tf.GradientTape() as tape:
            tape.watch(w)
            out, new_state = model.stateless_call(w, state, x, training=True)
            loss = tf.reduce_sum(out ** 2)
        return out, new_state, tape.gradient(loss, w)

    out_a, state_a, grad_a = run(plain, weights)
    out_b, state_b, grad_b = run(fused, weights)
    np.testing.assert_allclose(out_b, out_a, rtol=1e-4, atol=1e-4)
    for s_a, s_b in zip(state_a, state_b):
        np.testing.assert_allclose(s_b, s_a, rtol=1e-5, atol=1e-6)
    for g_a, g_b in zip(grad_a, grad_b):
        np.testing.assert_allclose(g_b, g_a, rtol=1e-3, atol=1e-3 * float(np.abs(g_a).max()))
    # Inference takes Keras' own path: identical outputs.
    np.testing.assert_array_equal(fused(x, training=False), plain(x, training=False))


def test_logits_are_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        for arch in ("small_cnn", "preact_resnet18"):
            net = build_model(arch, input_shape=(8, 8, 1), num_classes=10, width=4)
            assert net(np.zeros((2, 8, 8, 1), "float32")).dtype == "float32", arch
    finally:
        keras.mixed_precision.set_global_policy("float32")
