"""Train-step speed of AMPModel: images per second with and without AMP, and the arithmetic rate.

`python -m atamp_tf.bench` (flags in `bench_cli.py`) times `AMPModel`'s compiled train step on a
fixed synthetic batch for two variants, PGD-AT (delta = 0) and AT-AMP (delta > 0, N ascent
steps), and writes one JSON record per variant beside the machine's measured float32 matmul
peak. Tracing and compilation are excluded: each variant is warmed up first, and the timed
steps of the variants are interleaved (A B A B ...) so that load from other processes on a
shared machine falls on both alike; the per-variant figure is the median step.

The hot path is exactly Keras' own: `model.train_function(((x, y),))` calls the compiled
`one_step_on_data` on the batch, which is a pair of tensors held on the device, with no
`tf.data`, no `_maybe_symbolic_build`, no metric reset. Each timed step ends by reading the
loss, so the clock stops only after the step has run.

Arithmetic per image (`step_flops_per_image`), F = forward FLOPs of one image
(`atamp_tf.models.count_flops`: 2 x multiply-accumulates of conv and dense layers):
  attack pass (forward + gradient w.r.t. the input only)   2F   (K per attack)
  training pass (forward + gradients w.r.t. input and weights) 3F
  natural forward for TRADES' attack loss                  1F   (once per attack)
  PGD-AT:       K x 2F + 3F                   (AT, K = 10: 23F)
  AT-AMP (N):   N x (K x 2F) + (N + 1) x 3F   (AT, K = 10, N = 1: 26F)
with one more 3F per training pass for TRADES and MART (their outer loss also runs on x) and
one more 1F per attack for TRADES. The common rule of thumb "every pass costs 3F" (K + 1 passes,
+1 for AMP) overstates the attack: it needs no weight gradients, and the graph never computes
them. Both counts are in the JSON (`flops_per_image` uses the one above,
`flops_per_image_3f_rule` the rule of thumb); `gflops_per_second` divides the first by the
step time. BatchNorm, activations and the optimiser update are not counted.

The PyTorch yardstick `../shared/bench/torch_ref_step.py` can be run from here in the same run
(`torch_python`): its images/s for each variant and our speedup over it go into the JSON. It
attacks with BatchNorm in eval mode and uses one global Delta ball; `--attack_bn=eval
--amp_scope=global` runs the same algorithm here (our defaults are train-mode BN and per-tensor
Delta, AMPModel's own defaults).

Seen on the 2-core Sapphire Rapids development machine (TF 2.21, PreAct ResNet-18 width 16,
batch 128, K = 10): XLA (`jit_compile`) was about 7x slower than the plain graph (its CPU
convolutions are not oneDNN's); `mixed_precision` (bfloat16) about 10% faster, because Keras 3
computes BatchNorm in float32 from ~10 unfused ops, which cost more than the convolutions here.
"""
import dataclasses
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from atamp_tf import rundir
from atamp_tf.losses import get_method
from atamp_tf.models import build_model, count_flops
from atamp_tf.tools.bench_settings import BenchSettings  # noqa: F401 (public here)
from atamp_tf.train.amp import AMPModel

_TORCH_LINE = re.compile(r"TORCH .*?([0-9.]+)s/step\s+([0-9.]+) img/s")


# ----- arithmetic ----------------------------------------------------------------------------
def step_flops_per_image(forward_flops, *, attack_steps, method="at", amp=False, amp_steps=1):
    """FLOPs of one train step per image, with the pass costs of the module docstring."""
    spec = get_method(method)
    attacks = amp_steps if amp else 1
    training_passes = (amp_steps + 1) if amp else 1
    per_attack = 2 * attack_steps + (1 if spec.inner_needs_natural else 0)
    per_training_pass = 3 * (2 if spec.outer_needs_natural else 1)
    return forward_flops * (attacks * per_attack + training_passes * per_training_pass)


def step_flops_per_image_3f_rule(forward_flops, *, attack_steps, amp=False, amp_steps=1):
    """The rule of thumb: (K + 1 [+ N for AMP]) forward-backward passes of 3F each (AT)."""
    attacks = amp_steps if amp else 1
    return 3 * forward_flops * (attacks * attack_steps + 1 + (amp_steps if amp else 0))


def amp_overhead_floor(attack_steps, amp_steps=1):
    """AMP's extra work over PGD-AT in units of PGD-AT's K + 1 passes, every pass counted
    alike: N training passes and N - 1 more attacks, so 1 / (K + 1) for N = 1."""
    return ((amp_steps - 1) * attack_steps + amp_steps) / (attack_steps + 1)


def measure_peak_gflops(size=4096, repeats=5, dtype=tf.float32):
    """The machine's dense float32 matmul rate: (best, median) GFLOP/s of `repeats` timed
    size x size matmuls. The best is the estimate of the peak: on a shared machine every
    disturbance only slows a run down."""
    a = tf.random.stateless_uniform([size, size], seed=[1, 2], dtype=tf.float32)
    b = tf.random.stateless_uniform([size, size], seed=[3, 4], dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(b, dtype)
    matmul = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)[:1, :1]))
    matmul(a, b).numpy()  # trace, and let oneDNN pick its kernel
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).numpy()
        times.append(time.perf_counter() - start)
    flops = 2.0 * size ** 3
    return flops / min(times) / 1e9, flops / statistics.median(times) / 1e9


# ----- the models and the timing -------------------------------------------------------------
def synthetic_batch(settings):
    """A fixed batch: uniform images in [0, 1] and uniform labels, as tensors on the device."""
    rng = np.random.default_rng(settings.seed)
    shape = (settings.batch_size, settings.image_size, settings.image_size, settings.channels)
    x = tf.constant(rng.uniform(0.0, 1.0, shape).astype(np.float32))
    y = tf.constant(rng.integers(0, settings.num_classes, settings.batch_size).astype(np.int32))
    return x, y


def build_bench_model(settings, *, delta):
    """A compiled AMPModel around a fresh network (the same initial weights for every delta)."""
    keras.utils.set_random_seed(settings.seed)
    network = build_model(settings.arch, width=settings.width, depth=settings.depth,
                          num_classes=settings.num_classes,
                          input_shape=(settings.image_size, settings.image_size,
                                       settings.channels))
    model = AMPModel(network, method=settings.method, norm=settings.norm, eps=settings.eps,
                     step_size=settings.step_size, attack_steps=settings.attack_steps,
                     attack_bn=settings.attack_bn, delta=delta, amp_steps=settings.amp_steps,
                     amp_scope=settings.amp_scope, eval_attack_steps=0, seed=settings.seed)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  jit_compile=settings.jit_compile)
    return model


class StepTimer:
    """Runs one model's compiled train step on a fixed batch; the first call traces it."""

    def __init__(self, model, x, y):
        self.model, self.batch = model, ((x, y),)
        start = time.perf_counter()
        model.train_on_batch(x, y)  # builds the optimiser, traces and compiles the step
        self.first_step_seconds = time.perf_counter() - start

    def step(self):
        """One step; returns (wall seconds, process CPU seconds). Reading the loss waits for it."""
        cpu, start = time.process_time(), time.perf_counter()
        logs = self.model.train_function(self.batch)
        float(logs["loss"])
        return time.perf_counter() - start, time.process_time() - cpu


_PROFILE_BOOKKEEPING = ("Process", "Record", "StartRegion", "StopRegion", "ExecutorDoneCallback")


def profile_step(timer, *, steps=2, top=12):
    """Where one train step's time goes: TensorFlow's profiler traces `steps` steps and the
    executor threads' op events are summed by op type (op time over all threads, so the sum
    can exceed the wall time). Returns rows of (op, ms per step, ops per step, share of the
    op time), largest first; the executor's bookkeeping events, which enclose ops, and events
    nested inside an op are left out."""
    import collections
    import glob
    import tempfile

    from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=no-name-in-module
    timer.step()
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(steps):
            timer.step()
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        path = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))[-1]
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
    picoseconds, counts = collections.Counter(), collections.Counter()
    for plane in space.planes:
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            covered_until = -1  # ops only: skip events nested in an op (Eigen's ParallelFor)
            for event in sorted(line.events, key=lambda e: e.offset_ps):
                op = names.get(event.metadata_id, "?").split(":")[-1]
                if op in _PROFILE_BOOKKEEPING or event.offset_ps < covered_until:
                    continue
                covered_until = event.offset_ps + event.duration_ps
                picoseconds[op] += event.duration_ps
                counts[op] += 1
    total = sum(picoseconds.values()) or 1
    return [{"op": op, "ms_per_step": ps / 1e9 / steps, "ops_per_step": counts[op] // steps,
             "share": ps / total} for op, ps in picoseconds.most_common(top)]


def time_variants(timers, *, steps, warmup):
    """Warm every timer up, then time `steps` steps each, interleaved (A B A B ...).

    Returns, per timer, a list of (wall seconds, CPU seconds) pairs.
    """
    for timer in timers:
        for _ in range(warmup):
            timer.step()
    seconds = [[] for _ in timers]
    for _ in range(steps):
        for timer, record in zip(timers, seconds):
            record.append(timer.step())
    return seconds


# ----- the PyTorch yardstick -----------------------------------------------------------------
def run_torch_reference(python, *, width, batch_size, attack_steps, amp, steps=3,
                        script, timeout=1800):
    """Runs the PyTorch reference step in a subprocess; returns its seconds/step and images/s."""
    if not script or not os.path.isfile(script):
        raise ValueError(f"--torch_script: no such file {script!r} (the yardstick, e.g. "
                         "../shared/bench/torch_ref_step.py beside a checkout)")
    env = dict(os.environ, W=str(width), B=str(batch_size), K=str(attack_steps),
               AMP="1" if amp else "0", STEPS=str(steps))
    done = subprocess.run([python, script], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    match = _TORCH_LINE.search(done.stdout)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"torch reference failed (exit {done.returncode}):\n"
                           f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return {"seconds_per_step": float(match.group(1)),
            "images_per_second": float(match.group(2)), "output": match.group(0)}


def set_threads(intra_op=0, inter_op=0):
    """TensorFlow's thread pools (0 keeps TF's default); call before TensorFlow runs an op."""
    if intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    if inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)


# ----- the whole run -------------------------------------------------------------------------
def cpu_isa(flags):
    """The widest vector ISA of a CPU from its /proc/cpuinfo flags: AMX, AVX-512, AVX2 or other."""
    flags = set(flags)
    if "amx_tile" in flags:
        return "AMX"
    if "avx512f" in flags:
        return "AVX-512"
    if "avx2" in flags:
        return "AVX2"
    return "other"


def cpu_description(cpuinfo="/proc/cpuinfo"):
    """(model name, ISA) of this machine's CPU; ("unknown", "unknown") off Linux."""
    try:
        with open(cpuinfo) as f:
            text = f.read()
    except OSError:
        return "unknown", "unknown"
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    flags = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
    return (model.group(1).strip() if model else "unknown",
            cpu_isa(flags.group(1).split()) if flags else "unknown")


def machine_info():
    model, isa = cpu_description()
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(),
            "cpu_model": model, "isa": isa,
            "processor": platform.processor() or platform.machine(),
            "python": sys.version.split()[0], "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset"),
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads()}


def _variant_record(name, amp, delta, timings, first_step_seconds, batch_size, flops,
                    flops_3f, peak):
    """One variant's numbers: the median wall-clock step is the headline; the best step and
    the process CPU time per step are there to read through the load of a shared machine."""
    wall = [w for w, _ in timings]
    cpu = [c for _, c in timings]
    median, best = statistics.median(wall), min(wall)
    return {"variant": name, "amp": amp, "delta": delta,
            "seconds_per_step": median,
            "images_per_second": batch_size / median,
            "gflops_per_second": flops * batch_size / median / 1e9,
            "fraction_of_peak": flops * batch_size / median / 1e9 / peak,
            "best_seconds_per_step": best,
            "best_images_per_second": batch_size / best,
            "best_gflops_per_second": flops * batch_size / best / 1e9,
            "cpu_seconds_per_step": statistics.median(cpu),
            "flops_per_image": flops, "flops_per_image_3f_rule": flops_3f,
            "step_seconds": wall, "step_cpu_seconds": cpu,
            "first_step_seconds": first_step_seconds}


def amp_overhead(base, amp):
    """AMP's extra time over PGD-AT, four ways: ratio of medians (the headline), of best
    steps, of median CPU times, and the median of the per-round ratios (steps interleaved, so
    each round's pair saw about the same load)."""
    paired = [a / b for a, b in zip(amp["step_seconds"], base["step_seconds"])]
    return {"median": amp["seconds_per_step"] / base["seconds_per_step"] - 1.0,
            "best": amp["best_seconds_per_step"] / base["best_seconds_per_step"] - 1.0,
            "cpu": amp["cpu_seconds_per_step"] / base["cpu_seconds_per_step"] - 1.0,
            "paired": statistics.median(paired) - 1.0}


def run_benchmark(settings, *, torch_python=None, torch_script=None,
                  torch_steps=3, torch_repeats=2, profile_steps=0, log=print):
    """Times PGD-AT and AT-AMP train steps for `settings`; returns the JSON-ready report.
    profile_steps > 0: then also traces that many steps of each variant (`profile_step`)."""
    settings.validate()
    if torch_python and (settings.arch, settings.image_size, settings.channels) != (
            "preact_resnet18", 32, 3):
        raise ValueError("the torch reference is PreAct ResNet-18 on 32x32x3 images only; "
                         f"got {settings.arch} on {settings.image_size}x{settings.image_size}"
                         f"x{settings.channels}")
    load_before = _load_average()
    peaks = [measure_peak_gflops(settings.peak_matmul_size)]
    if settings.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        x, y = synthetic_batch(settings)
        variants = [("pgd_at", False, 0.0), ("at_amp", True, settings.delta)]
        models = [build_bench_model(settings, delta=delta) for _, _, delta in variants]
        shape = (settings.image_size, settings.image_size, settings.channels)
        forward_flops = count_flops(models[0].network, shape)
        timers = []
        for (name, _, _), model in zip(variants, models):
            timers.append(StepTimer(model, x, y))
            log(f"{name}: first step (trace + compile) {timers[-1].first_step_seconds:.1f}s")
        timings = time_variants(timers, steps=settings.steps, warmup=settings.warmup)
        profiles = ({name: profile_step(timer, steps=profile_steps)
                     for (name, _, _), timer in zip(variants, timers)} if profile_steps else None)
    finally:
        if settings.mixed_precision:
            keras.mixed_precision.set_global_policy("float32")
    load_after = _load_average()
    peaks.append(measure_peak_gflops(settings.peak_matmul_size))
    peak = max(best for best, _ in peaks)
    peak_bf16 = (measure_peak_gflops(settings.peak_matmul_size, dtype=tf.bfloat16)[0]
                 if settings.mixed_precision else None)
    results = []
    for (name, amp, delta), timer, timing in zip(variants, timers, timings):
        flops = step_flops_per_image(forward_flops, attack_steps=settings.attack_steps,
                                     method=settings.method, amp=amp,
                                     amp_steps=settings.amp_steps)
        flops_3f = step_flops_per_image_3f_rule(forward_flops,
                                                attack_steps=settings.attack_steps, amp=amp,
                                                amp_steps=settings.amp_steps)
        results.append(_variant_record(name, amp, delta, timing, timer.first_step_seconds,
                                       settings.batch_size, flops, flops_3f, peak))
    overhead = amp_overhead(*results)
    floor = amp_overhead_floor(settings.attack_steps, settings.amp_steps)
    report = {
        "settings": dataclasses.asdict(settings),
        "machine": machine_info(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "parameters": int(models[0].network.count_params()),
        "forward_flops_per_image": forward_flops,
        "peak_gflops_per_second": peak,
        "peak_gflops_per_second_median": statistics.median(m for _, m in peaks),
        "peak_bfloat16_gflops_per_second": peak_bf16,
        "results": results,
        "amp_overhead": overhead["median"],
        "amp_overhead_estimates": overhead,
        "amp_overhead_floor": floor,
        "amp_overhead_target": floor + 0.03,
        "amp_overhead_within_target": overhead["median"] <= floor + 0.03,
    }
    if profiles:
        report["profile"] = profiles
    if torch_python:
        report["torch_reference"] = _torch_block(torch_python, torch_script, settings, results,
                                                 torch_steps, torch_repeats, log)
    return report


def _load_average():
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def _torch_block(python, script, settings, results, steps, repeats, log):
    """The reference's numbers for both variants and our speedup over each.

    The reference runs `repeats` times per variant, alternating PGD-AT and AMP; each run
    reports its mean step over `steps` steps after one warm-up step. The median run is compared
    with our median step, the best run with our best step.
    """
    block = {"python": python, "script": script, "steps": steps,
             "repeats": repeats, "load_average_before": _load_average(), "results": []}
    runs = {record["amp"]: [] for record in results}
    for _ in range(repeats):
        for record in results:
            ref = run_torch_reference(python, width=settings.width,
                                      batch_size=settings.batch_size,
                                      attack_steps=settings.attack_steps, amp=record["amp"],
                                      steps=steps, script=script)
            log(ref["output"])
            runs[record["amp"]].append(ref["seconds_per_step"])
    block["load_average_after"] = _load_average()
    for record in results:
        seconds = runs[record["amp"]]
        median, best = statistics.median(seconds), min(seconds)
        ref = {"amp": record["amp"], "run_seconds_per_step": seconds,
               "seconds_per_step": median,
               "images_per_second": settings.batch_size / median,
               "best_images_per_second": settings.batch_size / best}
        ref["speedup"] = record["images_per_second"] / ref["images_per_second"]
        ref["best_speedup"] = record["best_images_per_second"] / ref["best_images_per_second"]
        record["torch_images_per_second"] = ref["images_per_second"]
        record["speedup_vs_torch"] = ref["speedup"]
        block["results"].append(ref)
    return block


def summary(report):
    """A few printable lines: each variant, the AMP overhead, the peak and the torch speedup."""
    machine = report.get("machine", {})
    lines = [f"machine: {machine.get('cpu_model', '?')}, {machine.get('isa', '?')}, "
             f"{machine.get('cpu_count', '?')} cores, TF_ENABLE_ONEDNN_OPTS="
             f"{machine.get('tf_enable_onednn_opts', '?')}"]
    for r in report["results"]:
        line = (f"{r['variant']:7s} amp={str(r['amp']):5s} {r['seconds_per_step']:.3f} s/step "
                f"{r['images_per_second']:7.1f} img/s {r['gflops_per_second']:6.1f} GFLOP/s "
                f"({100 * r['fraction_of_peak']:.0f}% of peak); best "
                f"{r['best_seconds_per_step']:.3f} s/step, "
                f"CPU {r['cpu_seconds_per_step']:.2f} s/step")
        if "speedup_vs_torch" in r:
            line += (f"  torch {r['torch_images_per_second']:.1f} img/s, "
                     f"speedup {r['speedup_vs_torch']:.2f}x")
        lines.append(line)
    others = ", ".join(f"{k} {100 * v:.1f}%" for k, v in report["amp_overhead_estimates"].items()
                       if k != "median")
    lines.append(f"AMP overhead {100 * report['amp_overhead']:.1f}% ({others}; floor "
                 f"1/(K+1) = {100 * report['amp_overhead_floor']:.1f}%, target <= "
                 f"{100 * report['amp_overhead_target']:.1f}%)")
    lines.append(f"peak (float32 matmul) {report['peak_gflops_per_second']:.1f} GFLOP/s; "
                 f"forward {report['forward_flops_per_image'] / 1e6:.1f} MFLOP/image; "
                 f"{report['settings']['arch']} width {report['settings']['width']}, "
                 f"{report['parameters']:,} parameters")
    for variant, rows in report.get("profile", {}).items():
        lines.append(f"profile {variant}: " + ", ".join(
            f"{r['op']} {r['ms_per_step']:.0f} ms ({100 * r['share']:.0f}%)" for r in rows[:6]))
    return "\n".join(lines)


def write_report(report, path):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    rundir.atomic_write_text(path, json.dumps(report, indent=2, default=_jsonable) + "\n")


def _jsonable(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    raise TypeError(f"not JSON serialisable: {value!r}")

