"""Flags of atamp_tf.train: paper defaults, validation, every flagfile, bad flags on the CLI."""
import dataclasses
import glob
import os
import re
import subprocess
import sys

import pytest
from absl import flags

from atamp_tf import config as cfg
from atamp_tf.train import flags as flags_def

FV = flags_def.define_flags(flags.FlagValues())  # not absl's global FLAGS: no clashes
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGFILES = sorted(glob.glob(os.path.join(ROOT, "flags", "**", "*.cfg"), recursive=True))


def parse(*args):
    """(run config, recorded config) of `python -m atamp_tf.train <args>`, from ROOT."""
    cwd = os.getcwd()
    os.chdir(ROOT)  # nested flagfiles are relative to the repository root
    try:
        flags_def.parse(["train", *args], FV)
        return flags_def.config_from_flags(FV)
    finally:
        os.chdir(cwd)


# ----- the name lists mirror the library ----------------------------------------------------
def test_name_lists_match_the_library():
    from atamp_tf import data, losses, models
    from atamp_tf.train import amp, weight_perturbation
    for name in cfg.DATASETS:
        assert data.get_spec(name).name == name
    assert set(cfg.DATASETS) == set(data._SPECS)  # pylint: disable=protected-access
    assert set(cfg.ARCHITECTURES) == set(models.ARCHITECTURES)
    assert set(cfg.AMP_SCOPES) == set(weight_perturbation.SCOPES)
    assert set(cfg.ATTACK_BN_MODES) == set(amp.ATTACK_BN_MODES)
    assert set(cfg.CROP_PAD_MODES) == set(data.CROP_PAD_MODES)
    assert {cfg.model_method(m) for m in cfg.METHODS} == set(losses.METHODS)


# ----- numbers and defaults -----------------------------------------------------------------
@pytest.mark.parametrize("text,value", [("8/255", 8 / 255), ("0.1", 0.1), ("1e-3", 1e-3),
                                        ("128/255", 128 / 255), (0.5, 0.5)])
def test_parse_number(text, value):
    assert cfg.parse_number(text, "eps") == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("text", ["abc", "1/0", "inf", ""])
def test_parse_number_rejects_with_the_flag_name(text):
    with pytest.raises(ValueError, match="--eps"):
        cfg.parse_number(text, "eps")


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_svhn_flagfiles_and_bare_svhn_agree_on_lr_and_augmentation(norm):
    flagfile, _ = parse(f"--flagfile=flags/table1/svhn_{norm}_pgd_at.cfg")
    bare, _ = parse("--dataset=svhn", f"--norm={norm}")
    cifar, _ = parse("--dataset=cifar10", f"--norm={norm}")
    for config in (flagfile, bare):
        assert (config.lr, config.crop, config.flip) == (0.01, False, False)
    assert (cifar.lr, cifar.crop, cifar.flip) == (0.1, True, True)


def test_bare_svhn_l2_is_the_papers_run():
    config, _ = parse("--dataset=svhn", "--norm=l2")
    assert (config.arch, config.method, config.amp_delta) == ("preact_resnet18", "at", 0.1)
    assert config.eps_value == pytest.approx(128 / 255)
    assert config.step_size_value == pytest.approx(15 / 255)
    assert config.eval_step_size_value == pytest.approx(15 / 255)
    assert (config.attack_steps, config.eval_attack_steps) == (10, 20)
    # lr 0.01, no crop or flip: AWP's SVHN script, whose logged baseline the paper's row matches
    assert (config.epochs, config.batch_size, config.lr, config.momentum) == (200, 128, 0.01, 0.9)
    assert (config.crop, config.flip) == (False, False)
    assert config.lr_boundary_epochs() == [100, 150]
    assert config.lr_values() == pytest.approx([0.01, 0.001, 0.0001])
    assert config.weight_decay == 5e-4 and config.l1 == config.l2 == 0
    assert config.out_dir == "runs/svhn-l2-preact_resnet18-at-amp0.1-seed0"


@pytest.mark.parametrize("dataset,norm,eps,step", [
    ("svhn", "linf", 8, 1), ("cifar10", "linf", 8, 2), ("cifar100", "linf", 8, 2),
    ("cifar10", "l2", 128, 15), ("svhn", "l2", 128, 15)])
def test_dataset_step_sizes(dataset, norm, eps, step):
    config, _ = parse(f"--dataset={dataset}", f"--norm={norm}")
    assert config.eps_value == pytest.approx(eps / 255)
    assert config.step_size_value == pytest.approx(step / 255)


def test_lr_boundaries_accept_epochs_and_fractions():
    config, _ = parse("--epochs=40", "--lr_boundaries=0.5,30")
    assert config.lr_boundary_epochs() == [20, 30]
    config, _ = parse("--epochs=40", "--lr_boundaries=")
    assert config.lr_boundary_epochs() == [] and config.lr_values() == [0.1]


def test_l2_baseline_flag():
    config, _ = parse("--l2=5e-3")
    assert config.l2 == pytest.approx(5e-3) and config.weight_decay == 5e-4


def test_smoke_shrinks_but_records_the_flags():
    config, recorded = parse("--dataset=cifar10", "--arch=wide_resnet", "--depth=34",
                             "--width=10", "--epochs=200", "--lr_boundaries=100,150", "--smoke")
    assert (config.epochs, config.steps_per_epoch, config.batch_size) == (2, 2, 8)
    assert (config.depth, config.width, config.train_examples) == (10, 1, 16)
    assert config.attack_steps == 2 and config.eval_test_examples == 16
    assert config.lr_boundary_epochs() == [1.0, 1.5]  # same place in training
    assert recorded.epochs == 200 and recorded.depth == 34 and recorded.smoke


def test_holdout_and_eps_ramp_flags_and_their_smoke_sizes():
    config, _ = parse("--dataset=mnist", "--holdout_examples=5000", "--eps_ramp_epochs=5",
                      "--epochs=40")
    assert (config.holdout_examples, config.eval_holdout_examples) == (5000, 0)
    assert config.eps_ramp_epochs == 5
    smoke, recorded = parse("--dataset=mnist", "--holdout_examples=5000", "--eps_ramp_epochs=5",
                            "--epochs=40", "--smoke")
    # the held-out split stays (it decides the best epoch); only its evaluation shrinks
    assert (smoke.holdout_examples, smoke.eval_holdout_examples) == (5000, cfg.SMOKE_HOLDOUT)
    assert smoke.eps_ramp_epochs == 1 and recorded.eps_ramp_epochs == 5
    assert parse("--smoke")[0].eval_holdout_examples == 0  # nothing held out, nothing evaluated
    assert parse("--holdout_examples=5", "--smoke")[0].eval_holdout_examples == 5
    defaults = cfg.TrainConfig()
    assert (defaults.holdout_examples, defaults.eval_holdout_examples,
            defaults.eps_ramp_epochs) == (0, 0, 0)


@pytest.mark.parametrize("changes,flag", [
    (dict(holdout_examples=-1), "--holdout_examples: must be >= 0"),
    (dict(eval_holdout_examples=-2), "--eval_holdout_examples: must be >= 0"),
    (dict(eps_ramp_epochs=-1), "--eps_ramp_epochs: must be >= 0"),
])
def test_config_validation_of_the_new_fields_names_the_flag(changes, flag):
    config = cfg.resolve(dataclasses.replace(cfg.TrainConfig(), **changes))
    with pytest.raises(ValueError, match=re.escape(flag)):
        cfg.validate(config)


def test_flagfile_text_round_trips(tmp_path):
    _, recorded = parse("--dataset=cifar100", "--norm=l2", "--eps=0.5", "--amp_delta=0.3",
                        "--lr_boundaries=0.25,0.5,0.75", "--nocrop", "--width=8",
                        "--extra_npz=x.npz", "--extra_fraction=0.5", "--method=rst")
    path = tmp_path / "flags.cfg"
    path.write_text(flags_def.flagfile_text(recorded, FV))
    _, again = parse(f"--flagfile={path}")
    assert again == recorded
    assert "--eps=0.5" in path.read_text() and "--nocrop" in path.read_text()


# ----- cross-flag validation (ValueError naming the flag) -----------------------------------
@pytest.mark.parametrize("args,flag", [
    (["--norm=l2", "--eps=0.1", "--step_size=0.2"], "--step_size"),
    (["--eps=8/255", "--eval_step_size=9/255"], "--eval_step_size"),
    (["--method=rst"], "--method=rst"),
    (["--extra_npz=x.npz", "--extra_fraction=0.5"], "--extra_npz"),
    (["--method=pretrain"], "--method=pretrain"),
    (["--lr_boundaries=150,100"], "--lr_boundaries"),
    (["--epochs=10", "--lr_boundaries=5,10"], "--lr_boundaries"),
    (["--lr=0"], "--lr"),
    (["--arch=wide_resnet", "--depth=20"], "--depth"),
    (["--arch=small_cnn", "--depth=3"], "--depth"),
    (["--norm=linf", "--eps=2"], "--eps"),
    (["--eval_holdout_examples=100"], "--eval_holdout_examples: there are no held-out"),
    (["--holdout_examples=50", "--eval_holdout_examples=51"], "--eval_holdout_examples: 51"),
    (["--epochs=10", "--eps_ramp_epochs=11"], "--eps_ramp_epochs"),
])
def test_bad_combinations_name_the_flag(args, flag):
    with pytest.raises(ValueError, match=re.escape(flag)):
        parse(*args)


# ----- every flagfile -----------------------------------------------------------------------
def test_there_is_a_flagfile_for_every_experiment():
    names = {os.path.relpath(p, os.path.join(ROOT, "flags")) for p in FLAGFILES}
    table1 = {f"table1/{d}_{n}_{m}.cfg" for d in ("svhn", "cifar10", "cifar100")
              for n in ("linf", "l2") for m in ("pgd_at", "pgd_at_amp")}
    table2 = {f"table2/{d}_linf_wrn34_10_{m}.cfg" for d in ("cifar10", "cifar100")
              for m in ("pgd_at", "pgd_at_amp")}
    table3 = {f"table3/{m}{a}.cfg" for m in ("pgd_at", "trades", "mart", "pretraining", "rst")
              for a in ("", "_amp")}
    table45 = {f"table{t}/{b}.cfg" for t in (4, 5) for b in ("l1", "l2", "mixup", "cutout")}
    fig4 = {f"fig4/delta_{d / 10:.1f}.cfg" for d in range(11)}
    assert table1 | table2 | table3 | table45 | fig4 | {"quickstart.cfg"} <= names


def _experiment_files():
    return [p for p in FLAGFILES if os.sep + "base" + os.sep not in p]


@pytest.mark.parametrize("path", _experiment_files(), ids=lambda p: os.path.relpath(p, ROOT))
def test_every_flagfile_parses_and_opens_with_its_command(path):
    rel = os.path.relpath(path, ROOT)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert text.startswith("#")
    header = text.split("\n--", 1)[0]
    assert f"python -m atamp_tf.train --flagfile={rel}" in header
    config, recorded = parse(f"--flagfile={rel}")
    name = os.path.splitext(os.path.basename(rel))[0]
    if rel.startswith(("table1", "table2")):
        dataset, norm = name.split("_")[:2]
        assert (config.dataset, config.norm) == (dataset, norm)
        assert (config.amp_delta > 0) == name.endswith("_amp")
        assert config.arch == ("wide_resnet" if rel.startswith("table2") else "preact_resnet18")
        assert config.eps_value == pytest.approx((8 if norm == "linf" else 128) / 255)
    if rel.startswith("table3"):
        assert (config.dataset, config.norm, config.arch) == ("cifar10", "linf", "wide_resnet")
        assert (config.depth, config.width) == (34, 10)
        assert (config.amp_delta > 0) == name.endswith("_amp")
        first = name.split("_")[0]
        assert config.method == {"pgd": "at", "pretraining": "pretrain"}.get(first, first)
    if rel.startswith(("table4", "table5")):
        assert config.norm == ("linf" if rel.startswith("table4") else "l2")
        assert config.amp_delta == 0
        expected = {"l1": ("l1", 5e-6), "l2": ("l2", 5e-3), "mixup": ("mixup_alpha", 1.4),
                    "cutout": ("cutout", 14)}[name]
        assert getattr(config, expected[0]) == expected[1]
    if rel.startswith("fig4"):
        assert config.amp_delta == pytest.approx(float(name.split("_")[1]))
    if rel.startswith("mnist"):
        assert (config.dataset, config.norm, config.eps_value) == ("mnist", "linf", 0.3)
        assert config.npz_dir == "$ATAMP_TF_NPZ_DIR" and config.holdout_examples == 5000
        assert (config.crop, config.flip, config.arch) == (False, False, "trades_small_cnn")
        assert (config.amp_delta > 0) == name.endswith("_amp")
        assert config.method == ("trades" if name.startswith("trades") else "at")
        command = (f"ATAMP_TF_NPZ_DIR=../shared/data python -m atamp_tf.train --flagfile={rel} "
                   f"--out_dir=$HOME/atamp_runs/mnist/{name}")
        assert command in header
    assert recorded.out_dir == config.out_dir


@pytest.mark.parametrize("plain,amp", [("pgd_at", "pgd_at_amp"), ("trades", "trades_amp")])
def test_mnist_pairs_differ_in_delta_only(plain, amp):
    """Same budget: the AMP file of a pair changes nothing but delta (and its out_dir)."""
    a, _ = parse(f"--flagfile=flags/mnist/{plain}.cfg")
    b, _ = parse(f"--flagfile=flags/mnist/{amp}.cfg")
    assert a.amp_delta == 0 and b.amp_delta > 0
    assert dataclasses.replace(b, amp_delta=0.0, out_dir=a.out_dir) == a


def test_out_dirs_are_distinct():
    outs = [parse(f"--flagfile={os.path.relpath(p, ROOT)}")[0].out_dir
            for p in _experiment_files()]
    assert len(outs) == len(set(outs))


def test_quickstart_is_digits_offline():
    config, _ = parse("--flagfile=flags/quickstart.cfg")
    assert config.dataset == "digits" and config.arch == "small_cnn"
    assert config.data_dir is None and config.npz_dir is None
    assert config.eps_value >= 0.1 and config.norm == "linf"
    assert config.eval_attack_steps == 20 and config.amp_delta > 0


# ----- the command line: bad values stop it with a message naming the flag ---------------------
BAD = {
    "unknown dataset": (["--dataset=imagenet"], "--dataset"),
    "norm l1": (["--norm=l1"], "--norm"),
    "negative eps": (["--eps=-1"], "--eps"),
    "step larger than eps": (["--eps=8/255", "--step_size=16/255"], "--step_size"),
    "unknown method": (["--method=fgsm"], "--method"),
}


def test_cli_rejects_bad_flags_with_one_line_naming_the_flag(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    cases = dict(BAD)
    cases["data not prepared"] = (["--dataset=svhn", f"--data_dir={tmp_path}"],
                                  "not prepared")
    procs = {name: subprocess.Popen(
        [sys.executable, "-m", "atamp_tf.train", *args, f"--out_dir={tmp_path / 'run'}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, (args, _) in cases.items()}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        expected = cases[name][1]
        assert proc.returncode != 0, name
        assert "Traceback" not in err, (name, err)
        lines = [ln for ln in err.splitlines() if expected in ln]
        assert lines, (name, err)
        assert lines[0].startswith(("FATAL Flags parsing error: flag " + expected, "error: ")), \
            (name, lines[0])
    assert not (tmp_path / "run").exists()  # stopped before any work
