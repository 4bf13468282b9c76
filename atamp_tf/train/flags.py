"""The flags of `python -m atamp_tf.train`, and their conversion to a TrainConfig.

One flag per TrainConfig field, same name. Defaults are the paper's (section 4.1): a bare
`--dataset=svhn --norm=l2` is its SVHN L2 PGD-AT-AMP run. The training attack and the
evaluation attack are separate flag groups (as DeepMind's adversarial_robustness does).
Single-flag checks (choices, bounds, number syntax) run while absl parses, so a bad value
stops the program with absl's one-line message naming the flag; checks that involve several
flags (step size vs eps, method vs extra data) raise ValueError from `config_from_flags`.
`define_flags()` defines them (on absl's global FLAGS for the command line); this module
does not import TensorFlow, so bad flags are rejected in a moment.
"""
import copy
import dataclasses

from absl import flags

from atamp_tf import config as cfg

FLAGS = flags.FLAGS
_D = cfg.TrainConfig()  # the defaults


def _number_validator(name, fv, allow_none=True):
    def check(value):
        if value is None:
            return allow_none
        try:
            return cfg.parse_number(value, name) >= 0
        except ValueError:
            return False
    flags.register_validator(name, check, message=f"expected a number >= 0 or a fraction "
                                                  f"like 8/255 (e.g. --{name}=8/255)",
                             flag_values=fv)


def define_flags(fv=FLAGS):
    """Defines the program's flags on `fv` (absl's global FLAGS for the command line; tests
    pass a fresh flags.FlagValues) and returns it."""
    def _def(define, *args, **kwargs):
        return define(*args, flag_values=fv, **kwargs)

    # ----- data ------------------------------------------------------------------------------
    _def(flags.DEFINE_enum, "dataset", _D.dataset, cfg.DATASETS,
         "Dataset: svhn, cifar10, cifar100 (paper, via tensorflow-datasets or --npz_dir), mnist, "
         "or digits (scikit-learn's 8x8 digits, offline; the quick start).")
    _def(flags.DEFINE_string, "data_dir", None,
         "tensorflow-datasets data directory (default $TFDS_DATA_DIR or ~/tensorflow_datasets). "
         "Never downloads.")
    _def(flags.DEFINE_string, "npz_dir", None,
         "Read the dataset from local .npz arrays instead: <npz_dir>/<dataset>/{train,test}.npz "
         "(or train_*.npz), x uint8 NHWC, y int labels.")
    _def(flags.DEFINE_integer, "train_examples", _D.train_examples,
         "Train on the first N examples of the training split (0: all of it; with "
         "--holdout_examples, of what remains).", lower_bound=0)
    _def(flags.DEFINE_integer, "holdout_examples", _D.holdout_examples,
         "Hold out the LAST K examples of the training split (0 <= K < its size): never "
         "trained on, evaluated every epoch (holdout_* columns of metrics.csv), and the best "
         "checkpoint is the epoch with the best held-out robust accuracy instead of the test "
         "set's. 0: no held-out split, best on the test subset (the paper's 'best').",
         lower_bound=0)
    _def(flags.DEFINE_bool, "crop", _D.crop,
         "Random crop after padding (paper: 4 pixels; see --crop_pad_mode). Default: on, "
         "off for SVHN (as AWP's SVHN script).")
    _def(flags.DEFINE_bool, "flip", _D.flip,
         "Random horizontal flip (paper: on; off for digits). Default: on, off for SVHN.")
    _def(flags.DEFINE_integer, "crop_padding", _D.crop_padding,
         "Padding in pixels before the random crop (paper: 4; 1 suits 8x8 digits).",
         lower_bound=0)
    _def(flags.DEFINE_enum, "crop_pad_mode", _D.crop_pad_mode, cfg.CROP_PAD_MODES,
         "How the crop pads: reflect (robust_overfitting, whose setup Table 1 follows) or "
         "zero (torchvision's RandomCrop in TRADES, MART and AWP).")
    _def(flags.DEFINE_integer, "cutout", _D.cutout,
         "Cutout patch side in pixels, 0 = off (Table 4/5 baseline: 14).", lower_bound=0)
    _def(flags.DEFINE_string, "extra_npz", None,
         "RST: .npz of pseudo-labelled extra images (x uint8 NHWC, y int labels), mixed into "
         "every batch.")
    _def(flags.DEFINE_float, "extra_fraction", _D.extra_fraction,
         "RST: fraction of each batch drawn from --extra_npz (Carmon et al.: 0.5).",
         lower_bound=0.0, upper_bound=0.99)

    # ----- threat model and training attack --------------------------------------------------
    _def(flags.DEFINE_enum, "norm", _D.norm, cfg.NORMS,
         "Threat model: linf or l2.")
    _def(flags.DEFINE_string, "eps", None,
         "Perturbation radius, a number or a fraction like 8/255. Default: the paper's, 8/255 "
         "(linf) or 128/255 (l2).")
    _def(flags.DEFINE_string, "step_size", None,
         "Training PGD step size, number or fraction. Default: the paper's, linf 2/255 (SVHN "
         "1/255), l2 15/255.")
    _def(flags.DEFINE_integer, "attack_steps", _D.attack_steps,
         "Training PGD steps (paper: PGD-10; 0 = natural training).", lower_bound=0)
    _def(flags.DEFINE_enum, "attack_bn", _D.attack_bn, cfg.ATTACK_BN_MODES,
         "BatchNorm during the training attack: train (batch statistics, moving averages "
         "untouched; robust_overfitting, AWP) or eval (moving averages; TRADES-style code).")
    _def(flags.DEFINE_bool, "random_start", _D.random_start,
         "Training PGD starts from a random point of the eps-ball.")
    _def(flags.DEFINE_integer, "eps_ramp_epochs", _D.eps_ramp_epochs,
         "Ramp the training attack over the first N epochs: eps and its step size grow "
         "linearly per step from eps / (N * steps per epoch) to --eps at the last step of "
         "epoch N (stability at large eps, e.g. MNIST 0.3). The per-epoch evaluation always "
         "uses the full --eps. 0: no ramp.", lower_bound=0)
    _number_validator("eps", fv)
    _number_validator("step_size", fv)

    # ----- evaluation attack (every epoch) ---------------------------------------------------
    _def(flags.DEFINE_integer, "eval_attack_steps", _D.eval_attack_steps,
         "PGD steps of the per-epoch robust accuracy (paper: PGD-20). Random start, same seed "
         "every epoch.", lower_bound=1)
    _def(flags.DEFINE_string, "eval_step_size", None,
         "Step size of the evaluation PGD (default: --step_size).")
    _def(flags.DEFINE_integer, "eval_test_examples", _D.eval_test_examples,
         "Evaluate on the first N test examples each epoch (0: the whole test split, as the "
         "paper).", lower_bound=0)
    _def(flags.DEFINE_integer, "eval_train_examples", _D.eval_train_examples,
         "Fixed subset of the training split (first N, not augmented) evaluated each epoch for "
         "the robust generalisation gap (Fig. 1); 0: all.", lower_bound=0)
    _def(flags.DEFINE_integer, "eval_holdout_examples", _D.eval_holdout_examples,
         "Evaluate the first N held-out examples each epoch (0: all of --holdout_examples); "
         "needs --holdout_examples.", lower_bound=0)
    _def(flags.DEFINE_integer, "eval_batch_size", _D.eval_batch_size,
         "Batch size of the per-epoch evaluation.", lower_bound=1)
    _number_validator("eval_step_size", fv)

    # ----- method ----------------------------------------------------------------------------
    _def(flags.DEFINE_enum, "method", _D.method, cfg.METHODS,
         "at: PGD-AT (Madry et al.); trades (Zhang et al.); mart (Wang et al.); rst: TRADES on "
         "labelled + pseudo-labelled batches (Carmon et al.; needs --extra_npz); pretrain: PGD-AT "
         "fine-tuning of --init_checkpoint (Hendrycks et al.; paper: 50 epochs at lr 0.001).")
    _def(flags.DEFINE_float, "beta", _D.beta,
         "TRADES / RST: weight of the KL term.", lower_bound=0.0)
    _def(flags.DEFINE_float, "mart_lambda", _D.mart_lambda,
         "MART: weight of the KL term.", lower_bound=0.0)
    _def(flags.DEFINE_string, "init_checkpoint", None,
         "Start from this network: a .keras file or a run directory (its checkpoints/last.keras). "
         "A classifier with another number of classes gets a new last layer. Any method.")

    # ----- AMP -------------------------------------------------------------------------------
    _def(flags.DEFINE_float, "amp_delta", _D.amp_delta,
         "AMP radius delta of the weight perturbation (paper: 0.1; Fig. 4 sweeps 0..1). 0 turns "
         "AMP off (plain adversarial training).", lower_bound=0.0)
    _def(flags.DEFINE_float, "amp_xi", _D.amp_xi,
         "AMP inner step size xi (gradient ascent on the weights; official AMP code: 1).",
         lower_bound=0.0)
    _def(flags.DEFINE_integer, "amp_steps", _D.amp_steps,
         "AMP inner iterations N.", lower_bound=1)
    _def(flags.DEFINE_enum, "amp_scope", _D.amp_scope, cfg.AMP_SCOPES,
         "Ball of the weight perturbation: tensor (one per parameter tensor, official AMP code), "
         "global (one over all weights, paper eq. 7), awp (layer-wise relative, AWP).")
    _def(flags.DEFINE_integer, "amp_warmup_epochs", _D.amp_warmup_epochs,
         "Epochs of plain adversarial training before AMP starts (AWP uses 0 for AT, 10 for "
         "TRADES).", lower_bound=0)

    # ----- network ---------------------------------------------------------------------------
    _def(flags.DEFINE_enum, "arch", _D.arch, cfg.ARCHITECTURES,
         "Network: preact_resnet18 (paper default), wide_resnet (Tables 2, 3: --depth=34 "
         "--width=10), small_cnn (quick start, tests).")
    _def(flags.DEFINE_integer, "width", None,
         "Base channels (preact_resnet18: 64, small_cnn: 32) or widen factor (wide_resnet: 10). "
         "Default: the arch's.", lower_bound=1)
    _def(flags.DEFINE_integer, "depth", None,
         "wide_resnet depth, 6n + 4 (default 34).", lower_bound=1)
    _def(flags.DEFINE_bool, "batchnorm", _D.batchnorm,
         "small_cnn only: BatchNorm after each conv / dense layer.")

    # ----- optimisation ----------------------------------------------------------------------
    _def(flags.DEFINE_integer, "epochs", _D.epochs,
         "Training epochs (paper: 200).", lower_bound=1)
    _def(flags.DEFINE_integer, "steps_per_epoch", _D.steps_per_epoch,
         "Batches per epoch (0: one pass over the data).", lower_bound=0)
    _def(flags.DEFINE_integer, "batch_size", _D.batch_size,
         "Global batch size, split over all replicas (paper: 128).", lower_bound=1)
    _def(flags.DEFINE_float, "lr", _D.lr,
         "Initial SGD learning rate (paper: 0.1). Default: 0.1, SVHN 0.01 (as AWP's SVHN "
         "script, whose logged baseline the paper's SVHN row matches).")
    _def(flags.DEFINE_list, "lr_boundaries", list(_D.lr_boundaries),
         "Where the learning rate is multiplied by --lr_decay: fractions of training in (0, 1) or "
         "whole epochs >= 1 (paper: 0.5,0.75 = epochs 100 and 150 of 200). Applied per step, so a "
         "resumed run continues on the same schedule. Empty: constant.")
    _def(flags.DEFINE_float, "lr_decay", _D.lr_decay,
         "Factor at each --lr_boundaries.")
    _def(flags.DEFINE_float, "momentum", _D.momentum,
         "SGD momentum (paper: 0.9).", lower_bound=0.0)
    _def(flags.DEFINE_float, "weight_decay", _D.weight_decay,
         "Coupled weight decay (PyTorch SGD style, on all weights; paper: 5e-4).", lower_bound=0.0)
    _def(flags.DEFINE_float, "l1", _D.l1,
         "L1 baseline (Tables 4/5: 5e-6): l1 * |w| on conv and dense kernels, as Rice et al.",
         lower_bound=0.0)
    _def(flags.DEFINE_float, "l2", _D.l2,
         "L2 baseline (Tables 4/5: 5e-3), as Rice et al.: replaces --weight_decay with l2 on conv "
         "and dense kernels and none on BatchNorm parameters and biases.", lower_bound=0.0)
    _def(flags.DEFINE_float, "mixup_alpha", _D.mixup_alpha,
         "Mixup Beta(alpha, alpha), 0 = off (Table 4/5 baseline: 1.4).", lower_bound=0.0)

    # ----- run -------------------------------------------------------------------------------
    _def(flags.DEFINE_integer, "seed", _D.seed,
         "Seed of weights, data order, augmentation and attacks.", lower_bound=0)
    _def(flags.DEFINE_string, "out_dir", None,
         "Run directory (default runs/<dataset>-<norm>-<arch>-<method>[-amp<delta>]-seed<seed>). "
         "Started again with the same flags, a run resumes from its last finished epoch.")
    _def(flags.DEFINE_enum, "strategy", _D.strategy, cfg.STRATEGIES,
         "default: one device; mirrored: all local GPUs (or logical devices); multi_worker: "
         "MultiWorkerMirroredStrategy from TF_CONFIG (one process per machine; see WORKSPACE.md).")
    _def(flags.DEFINE_bool, "mixed_precision", _D.mixed_precision,
         "Keras mixed_float16 policy with loss scaling (GPUs).")
    _def(flags.DEFINE_enum, "jit_compile", _D.jit_compile, cfg.JIT_MODES,
         "XLA for the train step: auto (Keras: on with a GPU), true, false.")
    _def(flags.DEFINE_bool, "tensorboard", _D.tensorboard,
         "Write TensorBoard logs to <out_dir>/tensorboard.")
    _def(flags.DEFINE_integer, "verbose", _D.verbose,
         "Progress output of Keras fit: 1 a progress bar, 2 one line per epoch (log files), "
         "0 none.", lower_bound=0, upper_bound=2)
    _def(flags.DEFINE_bool, "smoke", _D.smoke,
         "Shrink the run to 2 epochs of 2 tiny batches, a narrow network and a tiny evaluation: "
         "checks a flagfile end to end.")
    return fv


_FIELDS = tuple(f.name for f in dataclasses.fields(cfg.TrainConfig))


def raw_config(flag_values=FLAGS):
    """The TrainConfig exactly as the flags say (defaults unresolved, no --smoke applied)."""
    values = {name: flag_values[name].value for name in _FIELDS}
    values["lr_boundaries"] = tuple(values["lr_boundaries"] or ())
    return cfg.TrainConfig(**values)


def config_from_flags(flag_values=FLAGS):
    """(run config, recorded config): the config to run (defaults filled, --smoke applied,
    validated) and the one flags.cfg records (defaults filled, --smoke left as a flag).
    Raises ValueError naming the flag."""
    raw = raw_config(flag_values)
    cfg.validate(cfg.resolve(dataclasses.replace(raw, smoke=False)))
    recorded = cfg.resolve(dataclasses.replace(raw, smoke=False))
    recorded = dataclasses.replace(recorded, smoke=raw.smoke)
    return cfg.validate(cfg.resolve(raw)), recorded


def flagfile_text(config, flag_values=FLAGS):
    """A flagfile that sets every field of `config` (None fields are left to their default)."""
    lines = []
    for name in _FIELDS:
        value = getattr(config, name)
        if value is None:
            continue
        flag = copy.deepcopy(flag_values[name])
        flag.value = list(value) if isinstance(value, tuple) else value
        lines.append(flag.serialize())
    return "\n".join(lines) + "\n"


def parse(argv, flag_values=FLAGS):
    """Parses argv (argv[0] is the program) into the flags, forgetting earlier values."""
    flag_values.unparse_flags()
    return flag_values(list(argv))
