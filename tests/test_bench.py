"""atamp_tf.tools.bench: the report's structure, the FLOP arithmetic, the torch-reference plumbing,
the CLI, on tiny settings. No timing assertions: only that times are measured and positive."""
import dataclasses
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from atamp_tf.tools import bench

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(arch="small_cnn", width=2, image_size=8, batch_size=8, attack_steps=1, steps=2,
            warmup=1, peak_matmul_size=64)


def _check_report(report, settings):
    assert report["settings"] == {**dataclasses.asdict(bench.BenchSettings()), **settings}
    machine = report["machine"]
    assert machine["cpu_count"] == os.cpu_count()
    assert machine["tensorflow"] and machine["keras"] == keras.__version__
    assert report["peak_gflops_per_second"] > 0
    assert report["forward_flops_per_image"] > 0
    from atamp_tf.models import build_model  # the measured network's size, as a user builds it
    built = build_model(settings["arch"], width=settings["width"], num_classes=10,
                        input_shape=(settings["image_size"],) * 2 + (3,))
    assert report["parameters"] == built.count_params()
    results = report["results"]
    assert [(r["variant"], r["amp"]) for r in results] == [("pgd_at", False), ("at_amp", True)]
    assert results[0]["delta"] == 0.0 and results[1]["delta"] == settings.get("delta", 0.1)
    for r in results:
        assert len(r["step_seconds"]) == settings["steps"] == len(r["step_cpu_seconds"])
        for key in ("images_per_second", "seconds_per_step", "gflops_per_second",
                    "best_seconds_per_step", "first_step_seconds", "fraction_of_peak"):
            assert r[key] > 0, key
        assert r["images_per_second"] == pytest.approx(settings["batch_size"]
                                                       / r["seconds_per_step"])
        assert r["seconds_per_step"] == pytest.approx(float(np.median(r["step_seconds"])))
    # AMP does one more training pass: 3F more per image than PGD-AT.
    assert (results[1]["flops_per_image"] - results[0]["flops_per_image"]
            == 3 * report["forward_flops_per_image"])
    assert report["amp_overhead_floor"] == pytest.approx(1 / (settings["attack_steps"] + 1))
    assert set(report["amp_overhead_estimates"]) == {"median", "best", "cpu", "paired"}


def test_run_benchmark_reports_both_variants(tmp_path):
    settings = bench.BenchSettings(**TINY)
    report = bench.run_benchmark(settings, log=lambda *_: None)
    _check_report(report, TINY)
    path = tmp_path / "out" / "bench.json"
    bench.write_report(report, str(path))
    assert json.loads(path.read_text()) == json.loads(json.dumps(report))
    assert "AMP overhead" in bench.summary(report)


def test_mixed_precision_variant_restores_the_policy():
    settings = dict(TINY, mixed_precision=True, steps=1, warmup=0)
    report = bench.run_benchmark(bench.BenchSettings(**settings), log=lambda *_: None)
    _check_report(report, settings)
    assert report["peak_bfloat16_gflops_per_second"] > 0
    assert keras.mixed_precision.global_policy().name == "float32"


def test_both_variants_start_from_the_same_weights():
    settings = bench.BenchSettings(**TINY)
    a = bench.build_bench_model(settings, delta=0.0).network.get_weights()
    b = bench.build_bench_model(settings, delta=0.1).network.get_weights()
    assert len(a) == len(b) > 0
    for wa, wb in zip(a, b):
        np.testing.assert_array_equal(wa, wb)


def test_step_flops_formula():
    f = 1000
    assert bench.step_flops_per_image(f, attack_steps=10) == 23 * f
    assert bench.step_flops_per_image(f, attack_steps=10, amp=True) == 26 * f
    assert bench.step_flops_per_image(f, attack_steps=10, amp=True, amp_steps=2) == 49 * f
    # TRADES: one natural forward per attack, natural and adversarial training passes.
    assert bench.step_flops_per_image(f, attack_steps=10, method="trades") == 27 * f
    assert bench.step_flops_per_image(f, attack_steps=10, method="mart", amp=True) == 32 * f
    assert bench.step_flops_per_image_3f_rule(f, attack_steps=10) == 33 * f
    assert bench.step_flops_per_image_3f_rule(f, attack_steps=10, amp=True) == 36 * f
    assert bench.amp_overhead_floor(10) == pytest.approx(1 / 11)
    assert bench.amp_overhead_floor(10, 2) == pytest.approx(12 / 11)


@pytest.mark.parametrize("bad", [dict(delta=0.0), dict(steps=0), dict(warmup=-1),
                                 dict(method="nope"), dict(batch_size=1.5)])
def test_settings_are_validated(bad):
    with pytest.raises(ValueError):
        bench.run_benchmark(bench.BenchSettings(**{**TINY, **bad}), log=lambda *_: None)


def test_torch_reference_output_is_parsed(tmp_path):
    script = tmp_path / "fake_ref.py"
    script.write_text("import os\nprint('warming up')\n"
                      "print(f\"TORCH amp={os.environ['AMP'] == '1'} K={os.environ['K']} "
                      "B={os.environ['B']} W={os.environ['W']}: 0.250s/step  512.0 img/s\")\n")
    ref = bench.run_torch_reference(sys.executable, width=4, batch_size=128, attack_steps=3,
                                    amp=True, steps=1, script=str(script))
    assert ref["seconds_per_step"] == 0.25 and ref["images_per_second"] == 512.0
    assert "amp=True K=3 B=128 W=4" in ref["output"]


def test_torch_reference_failure_is_reported(tmp_path):
    script = tmp_path / "broken_ref.py"
    script.write_text("raise SystemExit('no torch here')\n")
    with pytest.raises(RuntimeError, match="no torch here"):
        bench.run_torch_reference(sys.executable, width=4, batch_size=8, attack_steps=1,
                                  amp=False, script=str(script))
    with pytest.raises(ValueError, match="--torch_script: no such file"):
        bench.run_torch_reference(sys.executable, width=4, batch_size=8, attack_steps=1,
                                  amp=False, script=str(tmp_path / "missing.py"))


def test_torch_reference_is_compared_only_on_its_own_network(tmp_path):
    with pytest.raises(ValueError, match="PreAct ResNet-18"):
        bench.run_benchmark(bench.BenchSettings(**TINY), torch_python=sys.executable,
                            torch_script=str(tmp_path / "unused.py"), log=lambda *_: None)


def test_cli_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    flags = [f"--{k}={v}" for k, v in TINY.items()]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-m", "atamp_tf.bench", *flags, "--delta=0.05",
                           f"--output={out}"], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "AMP overhead" in done.stdout
    _check_report(json.loads(out.read_text()), dict(TINY, delta=0.05))


@pytest.mark.parametrize("flags,isa", [(["fpu", "avx2", "avx512f", "amx_tile"], "AMX"),
                                       (["avx2", "avx512f"], "AVX-512"),
                                       (["sse4_2", "avx2"], "AVX2"),
                                       (["sse4_2"], "other")])
def test_cpu_isa_names_the_widest_vector_unit(flags, isa):
    assert bench.cpu_isa(flags) == isa


def test_cpu_description_reads_model_and_isa(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu avx avx2 fma\n")
    assert bench.cpu_description(str(info)) == ("AMD EPYC 7B13", "AVX2")
    assert bench.cpu_description(str(tmp_path / "missing")) == ("unknown", "unknown")


def test_importing_the_package_turns_onednn_on_unless_set():
    import subprocess
    import sys
    code = "import os, atamp_tf; print(os.environ['TF_ENABLE_ONEDNN_OPTS'])"
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "1"
    env["TF_ENABLE_ONEDNN_OPTS"] = "0"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "0"


def test_profile_names_the_convolutions_and_sums_to_the_op_time():
    settings = bench.BenchSettings(**TINY)
    report = bench.run_benchmark(settings, profile_steps=1, log=lambda *_: None)
    for variant in ("pgd_at", "at_amp"):
        rows = report["profile"][variant]
        ops = {r["op"] for r in rows}
        assert any("Conv2D" in op for op in ops), ops  # the network's convolutions are seen
        assert any("Backprop" in op for op in ops), ops  # and their gradients
        assert all(r["ms_per_step"] > 0 and r["ops_per_step"] >= 1 for r in rows)
        assert 0 < sum(r["share"] for r in rows) <= 1 + 1e-9
        assert rows == sorted(rows, key=lambda r: -r["ms_per_step"])
    assert "profile at_amp:" in bench.summary(report)
