"""Command line of the train-step benchmark: python -m atamp_tf.bench [flags].

Example (the project's reference setting, a few minutes on 2 cores):
  python -m atamp_tf.bench --arch=preact_resnet18 --width=16 --batch_size=128 \
      --attack_steps=10 --method=at --output=bench.json \
      --torch_python=../torch-ref/bin/python

Flags live here rather than in atamp_tf.tools.bench so that importing the library defines no absl
flags (the train and evaluate CLIs define flags of the same names).
"""
from absl import flags

from atamp_tf import cli
from atamp_tf.tools.bench_settings import BenchSettings

_D = BenchSettings()
_ARCH = flags.DEFINE_string("arch", _D.arch, "Network (atamp_tf.models.ARCHITECTURES).")
_WIDTH = flags.DEFINE_integer("width", _D.width, "Base width (preact_resnet18, small_cnn, "
                              "madry_cnn, trades_small_cnn: the MNIST references use 32) or "
                              "widen factor (wide_resnet). The default is the same for every "
                              "--arch; the report records the parameter count.", lower_bound=1)
_DEPTH = flags.DEFINE_integer("depth", None, "wide_resnet depth.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", _D.image_size, "Square image side.",
                                   lower_bound=1)
_CHANNELS = flags.DEFINE_integer("channels", _D.channels, "Image channels.", lower_bound=1)
_NUM_CLASSES = flags.DEFINE_integer("num_classes", _D.num_classes, "Classes.", lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", _D.batch_size, "Batch size.", lower_bound=1)
_ATTACK_STEPS = flags.DEFINE_integer("attack_steps", _D.attack_steps, "PGD steps K.",
                                     lower_bound=0)
_METHOD = flags.DEFINE_enum("method", _D.method, ["at", "trades", "mart"], "Training method.")
_NORM = flags.DEFINE_enum("norm", _D.norm, ["linf", "l2"], "Threat model norm.")
_EPS = flags.DEFINE_float("eps", _D.eps, "Attack radius.")
_STEP_SIZE = flags.DEFINE_float("step_size", _D.step_size, "Attack step size.")
_DELTA = flags.DEFINE_float("delta", _D.delta, "AMP radius of the AMP variant (> 0).")
_AMP_STEPS = flags.DEFINE_integer("amp_steps", _D.amp_steps, "AMP inner iterations N.",
                                  lower_bound=1)
_AMP_SCOPE = flags.DEFINE_enum("amp_scope", _D.amp_scope, ["tensor", "global", "awp"],
                               "Norm scope of Delta.")
_ATTACK_BN = flags.DEFINE_enum("attack_bn", _D.attack_bn, ["train", "eval"],
                               "BatchNorm mode during the attack.")
_STEPS = flags.DEFINE_integer("steps", _D.steps, "Timed steps per variant (median reported).",
                              lower_bound=1)
_WARMUP = flags.DEFINE_integer("warmup", _D.warmup, "Untimed steps per variant after the "
                               "first (tracing) step.", lower_bound=0)
_JIT = flags.DEFINE_bool("jit_compile", _D.jit_compile, "Compile the step with XLA.")
_MIXED = flags.DEFINE_bool("mixed_precision", _D.mixed_precision,
                           "Keras mixed_bfloat16 policy (bfloat16 compute, float32 weights).")
_THREADS = flags.DEFINE_integer("threads", 0, "TensorFlow intra-op threads (0: TF default).",
                                lower_bound=0)
_INTER_THREADS = flags.DEFINE_integer("inter_op_threads", 0,
                                      "TensorFlow inter-op threads (0: TF default).",
                                      lower_bound=0)
_PEAK_SIZE = flags.DEFINE_integer("peak_matmul_size", _D.peak_matmul_size,
                                  "Side of the square float32 matmul that measures the peak.",
                                  lower_bound=1)
_SEED = flags.DEFINE_integer("seed", _D.seed, "Seed of the weights and the synthetic batch.")
_TORCH_PYTHON = flags.DEFINE_string("torch_python", None, "A Python with torch: also run "
                                    "--torch_script for both variants and report our speedup.")
_TORCH_SCRIPT = flags.DEFINE_string("torch_script", None, "With --torch_python: the torch "
                                    "yardstick script (../shared/bench/torch_ref_step.py beside "
                                    "a checkout).")
_TORCH_STEPS = flags.DEFINE_integer("torch_steps", 3, "Timed steps of the torch reference.",
                                    lower_bound=1)
_TORCH_REPEATS = flags.DEFINE_integer("torch_repeats", 2, "Runs of the torch reference per "
                                     "variant (alternating; median and best reported).",
                                     lower_bound=1)
_PROFILE_STEPS = flags.DEFINE_integer("profile_steps", 0, "After timing, trace this many steps "
                                     "of each variant with TensorFlow's profiler and report "
                                     "the time per op type (0: no profile).", lower_bound=0)
_OUTPUT = flags.DEFINE_string("output", "bench.json", "Where to write the JSON report.")


def settings_from_flags():
    return BenchSettings(
        arch=_ARCH.value, width=_WIDTH.value, depth=_DEPTH.value, image_size=_IMAGE_SIZE.value,
        channels=_CHANNELS.value, num_classes=_NUM_CLASSES.value, batch_size=_BATCH_SIZE.value,
        attack_steps=_ATTACK_STEPS.value, method=_METHOD.value, norm=_NORM.value,
        eps=_EPS.value, step_size=_STEP_SIZE.value, delta=_DELTA.value,
        amp_steps=_AMP_STEPS.value, amp_scope=_AMP_SCOPE.value, attack_bn=_ATTACK_BN.value,
        steps=_STEPS.value, warmup=_WARMUP.value, jit_compile=_JIT.value,
        mixed_precision=_MIXED.value, peak_matmul_size=_PEAK_SIZE.value, seed=_SEED.value)


def main(argv):
    cli.no_positional(argv)
    from atamp_tf.tools import bench  # pylint: disable=import-outside-toplevel  (TensorFlow)

    settings = settings_from_flags()
    bench.set_threads(_THREADS.value, _INTER_THREADS.value)
    report = bench.run_benchmark(settings, torch_python=_TORCH_PYTHON.value,
                                 torch_script=_TORCH_SCRIPT.value,
                                 torch_steps=_TORCH_STEPS.value,
                                 torch_repeats=_TORCH_REPEATS.value,
                                 profile_steps=_PROFILE_STEPS.value)
    bench.write_report(report, _OUTPUT.value)
    print(bench.summary(report))
    print(f"wrote {_OUTPUT.value}")


def run():
    cli.run(main)
