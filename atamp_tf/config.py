"""TrainConfig: every setting of a training run, the paper's defaults, and their validation.

Pure Python (no TensorFlow import), so the command line can reject bad flags in a moment.
Field names are the flag names of `python -m atamp_tf.train`; errors name the flag
(`--eps`, ...) so the command line can print them as they are. The name lists below mirror
the library's registries (data, models, losses, weight_perturbation, amp); tests/test_flags.py
checks that they agree.
"""
import dataclasses
import fractions
import math

from atamp_tf.attacks.registry import NORMS  # the threat models (pure Python, as this module)

DATASETS = ("cifar10", "cifar100", "digits", "mnist", "svhn")
# Training methods. rst = the TRADES loss on labelled + pseudo-labelled batches (--extra_npz);
# pretrain = PGD-AT fine-tuning of --init_checkpoint (Hendrycks et al. 2019).
METHODS = ("at", "trades", "mart", "rst", "pretrain")
ARCHITECTURES = ("preact_resnet18", "wide_resnet", "small_cnn", "madry_cnn", "trades_small_cnn")
AMP_SCOPES = ("tensor", "global", "awp")
ATTACK_BN_MODES = ("train", "eval")
CROP_PAD_MODES = ("reflect", "zero")
STRATEGIES = ("default", "mirrored", "multi_worker")
JIT_MODES = ("auto", "true", "false")

# Paper, section 4.1: L-inf eps 8/255 (step 2/255; SVHN 1/255), L2 eps 128/255 (step 15/255).
DEFAULT_EPS = {"linf": "8/255", "l2": "128/255"}
DEFAULT_STEP_SIZE = {"linf": "2/255", "l2": "15/255"}
DATASET_STEP_SIZE = {("svhn", "linf"): "1/255"}
# Training settings that differ by dataset (None in TrainConfig: filled by `resolve`). SVHN
# trains with lr 0.01 and no augmentation, as AWP's SVHN script, whose logged PGD-AT baseline
# the paper's SVHN row reproduces (flags/base/svhn_*.cfg says more).
DATASET_TRAINING = {"svhn": dict(lr=0.01, crop=False, flip=False)}
PAPER_TRAINING = dict(lr=0.1, crop=True, flip=True)
PAPER_LR_BOUNDARIES = ("0.5", "0.75")  # epochs 100 and 150 of 200

# Flags a run may be resumed with different values of: where and how it runs, not what it
# computes.
RESUME_FREE = ("data_dir", "npz_dir", "strategy", "jit_compile", "tensorboard", "verbose",
               "eval_batch_size")

# --smoke: what a run shrinks to (enough to pass every code path once).
SMOKE = dict(epochs=2, steps_per_epoch=2, batch_size=8, attack_steps=2, eval_attack_steps=2,
             eval_test_examples=16, eval_train_examples=16, eval_batch_size=16)
SMOKE_HOLDOUT = 16  # --smoke: held-out examples evaluated per epoch (when there are any)


def parse_number(text, flag):
    """A float from "8/255", "0.03" or "1e-3" (a number is returned as a float)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        try:
            value = float(fractions.Fraction(str(text).strip()))
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"--{flag}: expected a number or a fraction like 8/255, "
                             f"got {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"--{flag}: expected a finite number, got {text!r}")
    return value


def model_method(method):
    """The AMPModel loss of a training method (rst trains with TRADES, pretrain with AT)."""
    return {"rst": "trades", "pretrain": "at"}.get(method, method)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A training run. Text fields (eps, step sizes) keep what the user wrote, e.g. "8/255";
    `None` means the paper's default for the dataset and norm (see `resolve`)."""
    # data
    dataset: str = "cifar10"
    data_dir: str | None = None
    npz_dir: str | None = None
    train_examples: int = 0  # 0: the whole training split (minus the held-out examples)
    # the last K training examples, never trained on, select the best epoch; K < the split's
    # size is checked against the data when the run is set up (train.training)
    holdout_examples: int = 0
    crop: bool | None = None  # None: by dataset (DATASET_TRAINING), crop + flip elsewhere
    flip: bool | None = None
    crop_padding: int = 4
    crop_pad_mode: str = "reflect"
    cutout: int = 0
    extra_npz: str | None = None
    extra_fraction: float = 0.0
    # threat model and training attack
    norm: str = "linf"
    eps: str | None = None
    step_size: str | None = None
    attack_steps: int = 10
    eps_ramp_epochs: int = 0  # training attack's eps (and step) grow linearly over these
    attack_bn: str = "train"
    random_start: bool = True
    # evaluation attack (PGD, every epoch)
    eval_attack_steps: int = 20
    eval_step_size: str | None = None
    eval_test_examples: int = 0  # 0: the whole test split
    eval_train_examples: int = 1000
    eval_holdout_examples: int = 0  # 0: every held-out example
    eval_batch_size: int = 256
    # method
    method: str = "at"
    beta: float = 6.0
    mart_lambda: float = 5.0
    init_checkpoint: str | None = None
    # AMP
    amp_delta: float = 0.1
    amp_xi: float = 1.0
    amp_steps: int = 1
    amp_scope: str = "tensor"
    amp_warmup_epochs: int = 0
    # network
    arch: str = "preact_resnet18"
    width: int | None = None
    depth: int | None = None
    batchnorm: bool = True
    # optimisation
    epochs: int = 200
    steps_per_epoch: int = 0  # 0: one pass over the training data
    batch_size: int = 128
    lr: float | None = None  # None: by dataset, 0.1 (paper) except SVHN's 0.01
    lr_boundaries: tuple = PAPER_LR_BOUNDARIES
    lr_decay: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    l1: float = 0.0
    l2: float = 0.0
    mixup_alpha: float = 0.0
    # run
    seed: int = 0
    out_dir: str | None = None
    strategy: str = "default"
    mixed_precision: bool = False
    jit_compile: str = "auto"
    tensorboard: bool = True
    verbose: int = 1  # Keras fit: 1 progress bar, 2 one line per epoch, 0 silent
    smoke: bool = False

    # ----- derived values -------------------------------------------------------------------
    @property
    def eps_value(self):
        return parse_number(self.eps, "eps")

    @property
    def step_size_value(self):
        return parse_number(self.step_size, "step_size")

    @property
    def eval_step_size_value(self):
        return parse_number(self.eval_step_size, "eval_step_size")

    @property
    def amp_method(self):
        return model_method(self.method)

    def lr_boundary_epochs(self):
        """The learning-rate drops in epochs (floats): fractions in (0, 1) scale by --epochs,
        whole numbers >= 1 are epochs."""
        epochs = []
        for text in self.lr_boundaries:
            value = parse_number(text, "lr_boundaries")
            epochs.append(value * self.epochs if 0 < value < 1 else value)
        return epochs

    def lr_values(self):
        return [self.lr * self.lr_decay ** i for i in range(len(self.lr_boundaries) + 1)]


def resolve(config):
    """Fills the paper's defaults left as None: eps and step sizes by norm and dataset, lr,
    crop and flip by dataset, the output directory; applies --smoke. Returns a new TrainConfig."""
    changes = {}
    if config.norm in NORMS:
        if config.eps is None:
            changes["eps"] = DEFAULT_EPS[config.norm]
        if config.step_size is None:
            changes["step_size"] = DATASET_STEP_SIZE.get((config.dataset, config.norm),
                                                         DEFAULT_STEP_SIZE[config.norm])
    for name, paper_value in PAPER_TRAINING.items():
        if getattr(config, name) is None:
            changes[name] = DATASET_TRAINING.get(config.dataset, {}).get(name, paper_value)
    config = dataclasses.replace(config, **changes)
    if config.eval_step_size is None:
        config = dataclasses.replace(config, eval_step_size=config.step_size)
    if config.out_dir is None:
        amp = f"-amp{config.amp_delta:g}" if config.amp_delta > 0 else ""
        config = dataclasses.replace(config, out_dir=(
            f"runs/{config.dataset}-{config.norm}-{config.arch}-{config.method}{amp}"
            f"-seed{config.seed}"))
    return shrink_for_smoke(config) if config.smoke else config


def shrink_for_smoke(config):
    """--smoke: two epochs of two tiny steps, tiny evaluation, a narrow network."""
    small = {k: min(getattr(config, k), v) if getattr(config, k) else v
             for k, v in SMOKE.items()}
    small["attack_steps"] = min(config.attack_steps, SMOKE["attack_steps"])
    small["train_examples"] = small["steps_per_epoch"] * small["batch_size"]
    small["amp_warmup_epochs"] = min(config.amp_warmup_epochs, 1)
    small["eps_ramp_epochs"] = min(config.eps_ramp_epochs, 1)
    if config.holdout_examples:  # the held-out split itself stays: it decides the best epoch
        small["eval_holdout_examples"] = min(config.eval_holdout_examples or SMOKE_HOLDOUT,
                                             SMOKE_HOLDOUT, config.holdout_examples)
    # lr drops keep their place in training: whole-epoch boundaries become fractions.
    small["lr_boundaries"] = tuple(f"{e / config.epochs:g}"
                                   for e in config.lr_boundary_epochs())
    small["width"] = 4 if config.arch != "wide_resnet" else 1
    small["depth"] = 10 if config.arch == "wide_resnet" else None
    return dataclasses.replace(config, **small)


def _show(text):
    """"8/255 = 0.0314" for a fraction, the number itself otherwise."""
    value = parse_number(text, "")
    return f"{text} = {value:.4g}" if "/" in str(text) else f"{value:g}"


def _check(condition, message):
    if not condition:
        raise ValueError(message)


def validate(config):
    """Raises ValueError naming the flag for any setting the run cannot use."""
    _check(config.dataset in DATASETS, f"--dataset: unknown dataset {config.dataset!r}; "
                                       f"expected one of {', '.join(DATASETS)}")
    _check(config.norm in NORMS,
           f"--norm: expected one of {', '.join(NORMS)}, got {config.norm!r}")
    _check(config.method in METHODS,
           f"--method: expected one of {', '.join(METHODS)}, got {config.method!r}")
    _check(config.arch in ARCHITECTURES,
           f"--arch: expected one of {', '.join(ARCHITECTURES)}, got {config.arch!r}")
    _check(config.amp_scope in AMP_SCOPES,
           f"--amp_scope: expected one of {', '.join(AMP_SCOPES)}, got {config.amp_scope!r}")
    _check(config.attack_bn in ATTACK_BN_MODES,
           f"--attack_bn: expected one of {', '.join(ATTACK_BN_MODES)}, "
           f"got {config.attack_bn!r}")
    _check(config.crop_pad_mode in CROP_PAD_MODES,
           f"--crop_pad_mode: expected one of {', '.join(CROP_PAD_MODES)}, "
           f"got {config.crop_pad_mode!r}")
    _check(config.strategy in STRATEGIES,
           f"--strategy: expected one of {', '.join(STRATEGIES)}, got {config.strategy!r}")
    _check(config.jit_compile in JIT_MODES,
           f"--jit_compile: expected one of {', '.join(JIT_MODES)}, got {config.jit_compile!r}")
    eps, step, eval_step = config.eps_value, config.step_size_value, config.eval_step_size_value
    _check(eps >= 0, f"--eps: must be >= 0, got {config.eps}")
    _check(step >= 0, f"--step_size: must be >= 0, got {config.step_size}")
    _check(eval_step >= 0, f"--eval_step_size: must be >= 0, got {config.eval_step_size}")
    _check(step <= eps, f"--step_size: the attack step ({_show(config.step_size)}) must not "
                        f"exceed --eps ({_show(config.eps)})")
    _check(eval_step <= eps, f"--eval_step_size: the attack step "
                             f"({_show(config.eval_step_size)}) must not exceed --eps "
                             f"({_show(config.eps)})")
    if config.norm == "linf":
        _check(eps <= 1, f"--eps: an L-inf radius above 1 covers the whole [0, 1] pixel box, "
                         f"got {config.eps}")
    for name in ("attack_steps", "eval_attack_steps", "train_examples", "eval_test_examples",
                 "eval_train_examples", "steps_per_epoch", "cutout", "crop_padding",
                 "amp_warmup_epochs", "seed", "holdout_examples", "eval_holdout_examples",
                 "eps_ramp_epochs"):
        value = getattr(config, name)
        _check(value >= 0, f"--{name}: must be >= 0, got {value}")
    for name in ("epochs", "batch_size", "eval_batch_size", "amp_steps"):
        value = getattr(config, name)
        _check(value >= 1, f"--{name}: must be >= 1, got {value}")
    for name in ("amp_delta", "amp_xi", "beta", "mart_lambda", "momentum", "weight_decay",
                 "l1", "l2", "mixup_alpha"):
        value = getattr(config, name)
        _check(value >= 0, f"--{name}: must be >= 0, got {value}")
    _check(config.lr > 0, f"--lr: must be > 0, got {config.lr}")
    _check(0 < config.lr_decay <= 1, f"--lr_decay: must be in (0, 1], got {config.lr_decay}")
    for name in ("width", "depth"):
        value = getattr(config, name)
        _check(value is None or value >= 1, f"--{name}: must be >= 1 (or unset), got {value}")
    bounds = config.lr_boundary_epochs()
    _check(all(b > 0 for b in bounds) and bounds == sorted(set(bounds)),
           f"--lr_boundaries: expected increasing fractions of training in (0, 1) or epochs "
           f">= 1, got {','.join(config.lr_boundaries)}")
    if bounds:
        _check(bounds[-1] < config.epochs,
               f"--lr_boundaries: a boundary at epoch {bounds[-1]:g} is not before the end of "
               f"training (--epochs={config.epochs})")
    if config.holdout_examples:
        _check(config.eval_holdout_examples <= config.holdout_examples,
               f"--eval_holdout_examples: {config.eval_holdout_examples} is more than the "
               f"{config.holdout_examples} held-out examples (--holdout_examples)")
    else:
        _check(config.eval_holdout_examples == 0,
               "--eval_holdout_examples: there are no held-out examples to evaluate; set "
               "--holdout_examples (e.g. 5000: the last 5,000 training examples)")
    _check(config.eps_ramp_epochs <= config.epochs,
           f"--eps_ramp_epochs: the ramp of {config.eps_ramp_epochs} epochs does not end "
           f"within training (--epochs={config.epochs})")
    _check(0 <= config.extra_fraction < 1,
           f"--extra_fraction: must be in [0, 1), got {config.extra_fraction}")
    if config.method == "rst":
        _check(config.extra_npz and config.extra_fraction > 0,
               "--method=rst trains on pseudo-labelled extra data: set --extra_npz and "
               "--extra_fraction (> 0, e.g. 0.5)")
    else:
        _check(not config.extra_npz and config.extra_fraction == 0,
               f"--extra_npz/--extra_fraction: extra data is for --method=rst, "
               f"not --method={config.method}")
    if config.method == "pretrain":
        _check(bool(config.init_checkpoint),
               "--method=pretrain fine-tunes a pre-trained network: set --init_checkpoint "
               "(a .keras network or a run directory)")
    if config.arch in ("small_cnn", "madry_cnn", "trades_small_cnn"):
        _check(config.depth is None, f"--depth: {config.arch} has no depth; leave it unset")
    if config.arch == "preact_resnet18":
        _check(config.depth in (None, 18), f"--depth: preact_resnet18 has depth 18; leave it "
                                           f"unset, got {config.depth}")
    if config.arch == "wide_resnet" and config.depth is not None:
        _check(config.depth >= 10 and (config.depth - 4) % 6 == 0,
               f"--depth: WideResNet depth must be 6n + 4 >= 10 (e.g. 28, 34), "
               f"got {config.depth}")
    _check(bool(config.out_dir), "--out_dir: must not be empty")
    return config
