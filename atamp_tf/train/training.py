"""A training run from a TrainConfig to a finished run directory (what atamp_tf.train runs).

`setup` does everything that can fail on bad input (data, checkpoint, existing run
directory) before any training, raising ValueError with a message naming the flag; `fit`
trains, evaluating and recording every epoch; it resumes from the run directory's state.

Resume order: the state's epoch count decides `initial_epoch`; the model and optimizer weights
(optimizer.iterations included, so the per-step learning-rate schedule and AMPModel's attack
seeds continue exactly) are loaded from it; metrics.csv, summary.json and the checkpoints are
rewritten from it. Flags that only say where and how the run executes (config.RESUME_FREE:
strategy, data location, ...) may change between the start and a resume; any other change is
refused. The data order after a resume is a fresh shuffle keyed by (seed, epoch)
(tf.data shuffles cannot be fast-forwarded), so a resumed run matches an uninterrupted one in
everything but the order of its remaining batches.
"""
import dataclasses
import importlib.util
import os

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from atamp_tf import checkpoints, data, provenance, rundir
from atamp_tf import config as cfg
from atamp_tf import strategy as strategies
from atamp_tf.models import build_model
from atamp_tf.train import callbacks
from atamp_tf.train.amp import AMPModel

HOLDOUT_SEED_OFFSET = 2**31  # the held-out evaluation's seeds: seed * 2 + this
_FLAGS_HEADER = ("# Flags of this run, written by python -m atamp_tf.train; reproduce or resume "
                 "it with\n#   python -m atamp_tf.train --flagfile={path}\n")


@dataclasses.dataclass
class TrainingRun:
    """Everything `fit` needs, built by `setup`."""
    config: cfg.TrainConfig
    strategy: object
    chief: bool
    paths: rundir.RunPaths  # where this process writes (a temp dir on non-chief workers)
    model: object = None
    train_ds: object = None
    steps_per_epoch: int = 0
    initial_epoch: int = 0
    callbacks: list = dataclasses.field(default_factory=list)
    recorder: object = None
    lock: object = None  # the chief's lock of the run directory, held until fit ends

    def release(self):
        if self.lock is not None:
            self.lock.close()
            self.lock = None


def tensorboard_installed():
    return importlib.util.find_spec("tensorboard") is not None


# ----- pieces -------------------------------------------------------------------------------
def data_seed(seed, initial_epoch):
    """The data pipeline's seed: --seed for a fresh run, a fresh one keyed by (seed, epoch)
    after a resume (so resumed epochs do not replay epoch 1's order)."""
    if initial_epoch == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(initial_epoch)]).generate_state(1)[0])


def _naming_flags(read, num_examples_flag, **kwargs):
    """read(**kwargs) (a data reader); its ValueErrors about `holdout` or `num_examples` are
    re-raised naming the flag that set them (--holdout_examples, --<num_examples_flag>)."""
    try:
        return read(**kwargs)
    except data.DataNotPreparedError:
        raise
    except ValueError as err:
        for word, flag in (("holdout", "holdout_examples"), ("num_examples", num_examples_flag)):
            if str(err).startswith(word):
                raise ValueError(f"--{flag}: {err}") from None
        raise


def train_dataset(config, seed):
    """(tf.data.Dataset of training batches, steps per epoch): the training split minus its
    last --holdout_examples, then its first --train_examples."""
    ds = _naming_flags(
        data.make_dataset, "train_examples", name=config.dataset, split="train",
        batch_size=config.batch_size, training=True,
        data_dir=config.data_dir, npz_dir=config.npz_dir, seed=seed, crop=config.crop,
        flip=config.flip, cutout=config.cutout, crop_padding=config.crop_padding,
        crop_pad_mode=config.crop_pad_mode, num_examples=config.train_examples or None,
        extra_npz=config.extra_npz, extra_fraction=config.extra_fraction,
        holdout=config.holdout_examples)
    steps = int(ds.cardinality())
    if steps < 0 and not config.steps_per_epoch:
        raise ValueError(f"the {config.dataset} training pipeline has no known length "
                         f"(cardinality {steps}); set --steps_per_epoch")
    if config.steps_per_epoch:
        if not 0 <= config.steps_per_epoch <= steps:
            ds = ds.repeat()
        steps = config.steps_per_epoch
        ds = ds.take(steps)
    if steps == 0:
        raise ValueError(f"--batch_size={config.batch_size} leaves no full batch of the "
                         f"{config.dataset} training data")
    if config.strategy == "multi_worker":
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA)
        ds = ds.with_options(options)
    return ds, steps


def eval_arrays(config, split, num_examples, flag):
    """The fixed evaluation examples: the first `num_examples` (0: all) of `split` (train and
    holdout as split by --holdout_examples)."""
    return _naming_flags(data.load_arrays, flag, name=config.dataset, split=split,
                         data_dir=config.data_dir, npz_dir=config.npz_dir,
                         num_examples=num_examples or None, holdout=config.holdout_examples)


def lr_schedule(config, steps_per_epoch):
    """SGD learning rate per step: --lr, times --lr_decay at each boundary (the first step of
    the epoch the boundary names uses the new rate, as PyTorch's MultiStepLR)."""
    epochs = config.lr_boundary_epochs()
    if not epochs:
        return config.lr
    boundaries, last = [], -1
    for epoch in epochs:
        step = max(int(round(epoch * steps_per_epoch)) - 1, last + 1)
        boundaries.append(step)
        last = step
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, config.lr_values())


def load_init_network(path, spec, arch=None):
    """The network to fine-tune: a .keras file (plain network or AMPModel) or a run
    directory's checkpoints/last.keras; a new last layer if its classes differ. `arch`, if
    given, must match the network's builder name (what run_config.json will record)."""
    if os.path.isdir(path):
        path = rundir.RunPaths(path).last
    if not os.path.isfile(path):
        raise ValueError(f"--init_checkpoint: {path} does not exist (expected a .keras file "
                         "or a run directory with checkpoints/last.keras)")
    network = checkpoints.load_keras_model(path)
    built_as = next((a for a in cfg.ARCHITECTURES if network.name.startswith(a)), None)
    if arch is not None and built_as is not None and built_as != arch:
        raise ValueError(f"--init_checkpoint: {path} is a {built_as} network, but --arch={arch}"
                         f" (run_config.json records --arch); pass --arch={built_as}")
    shape = tuple(network.input_shape[1:])
    if shape != tuple(spec.image_shape):
        raise ValueError(f"--init_checkpoint: {path} takes images of shape {shape}, but "
                         f"--dataset={spec.name} has {tuple(spec.image_shape)}")
    if network.output_shape[-1] != spec.num_classes:
        head = network.layers[-1]
        if not isinstance(head, keras.layers.Dense):
            raise ValueError(f"--init_checkpoint: {path} has {network.output_shape[-1]} "
                             f"outputs, --dataset={spec.name} needs {spec.num_classes}, and "
                             "its last layer is not a Dense layer that could be replaced")
        logits = keras.layers.Dense(spec.num_classes, name="finetune_logits")(head.input)
        network = keras.Model(network.inputs, logits, name=f"{network.name}_finetune")
    return network


def build_network(config, spec):
    if config.init_checkpoint:
        return load_init_network(config.init_checkpoint, spec, config.arch)
    options = {"batchnorm": config.batchnorm} if config.arch == "small_cnn" else {}
    return build_model(config.arch, input_shape=tuple(spec.image_shape),
                       num_classes=spec.num_classes, mean=spec.mean, std=spec.std,
                       width=config.width, depth=config.depth, **options)


def build_model_and_optimizer(config, spec, steps_per_epoch):
    """The AMPModel, compiled with SGD (momentum, per-step schedule; weight decay is coupled
    inside AMPModel). Call under strategy.scope()."""
    keras.utils.set_random_seed(config.seed)
    network = build_network(config, spec)
    model = AMPModel(
        network, method=config.amp_method, norm=config.norm, eps=config.eps_value,
        step_size=config.step_size_value, attack_steps=config.attack_steps,
        random_start=config.random_start, attack_bn=config.attack_bn, delta=config.amp_delta,
        xi=config.amp_xi, amp_steps=config.amp_steps, amp_scope=config.amp_scope,
        amp_warmup_steps=config.amp_warmup_epochs * steps_per_epoch, beta=config.beta,
        mart_lambda=config.mart_lambda, mixup_alpha=config.mixup_alpha, l1=config.l1,
        l2=config.l2, weight_decay=config.weight_decay, eval_attack_steps=0,
        eps_ramp_steps=config.eps_ramp_epochs * steps_per_epoch, seed=config.seed)
    optimizer = keras.optimizers.SGD(lr_schedule(config, steps_per_epoch),
                                     momentum=config.momentum)
    jit = {"auto": "auto", "true": True, "false": False}[config.jit_compile]
    model.compile(optimizer=optimizer, jit_compile=jit)
    model.optimizer.build(model.trainable_variables)
    return model


def run_config_dict(config, spec, steps_per_epoch, num_replicas=1):
    """run_config.json: what evaluate / export / the zoo read about a run."""
    out = dataclasses.asdict(config)
    out.update(
        eps=config.eps_value, eps_text=config.eps, step_size=config.step_size_value,
        step_size_text=config.step_size, eval_step_size=config.eval_step_size_value,
        loss=config.amp_method, num_classes=spec.num_classes,
        input_shape=list(spec.image_shape), mean=list(spec.mean), std=list(spec.std),
        steps_per_epoch=steps_per_epoch, num_replicas=num_replicas, amp=config.amp_delta > 0,
        amp_warmup_steps=config.amp_warmup_epochs * steps_per_epoch,
        eps_ramp_steps=config.eps_ramp_epochs * steps_per_epoch,
        lr_boundary_epochs=config.lr_boundary_epochs(), lr_values=config.lr_values(),
        versions={"tensorflow": tf.__version__, "keras": keras.__version__})
    out["lr_boundaries"] = list(config.lr_boundaries)
    return out


def _flag_lines(text):
    """The flag lines of a flagfile that decide what a run computes (cfg.RESUME_FREE not)."""
    free = tuple(f"--{name}" for name in cfg.RESUME_FREE) + tuple(
        f"--no{name}" for name in cfg.RESUME_FREE)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    return [ln for ln in lines if ln.split("=", 1)[0] not in free]


def check_existing_run(paths, flags_text, meta):
    """A run directory with a resume state (meta, load_state_meta's) must have been started
    with the same flags (those in cfg.RESUME_FREE aside); one with recorded epochs but no
    state (copied without state/) is refused rather than trained again over its records."""
    recorded = [os.path.basename(p) for p in (paths.metrics, paths.summary) if os.path.isfile(p)]
    if recorded and meta is None:
        raise ValueError(f"--out_dir: {paths.root} holds a recorded run "
                         f"({', '.join(recorded)}) but no resume state ({paths.state}); "
                         "training it again would overwrite its records: restore its "
                         "state/ to resume it, or choose another --out_dir")
    if not os.path.isfile(paths.flags) or meta is None:
        return
    with open(paths.flags, encoding="utf-8") as f:
        old = _flag_lines(f.read())
    new = _flag_lines(flags_text)
    if old != new:
        changed = sorted(set(old) ^ set(new))
        raise ValueError(f"--out_dir: {paths.root} holds a run started with other flags "
                         f"(differing: {' '.join(changed)}); to resume it, use its flags "
                         f"(--flagfile={paths.flags}); else choose another --out_dir")


# ----- the run ------------------------------------------------------------------------------
def make_strategy(config):
    strategy = strategies.make_strategy(config.strategy)
    return strategy


def setup(config, flags_text):
    """Builds the run (strategy, data, model, restored state, callbacks); raises ValueError
    (data.DataNotPreparedError included) before any training for bad input."""
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = make_strategy(config)
    chief = strategies.is_chief(strategy)
    shared = rundir.RunPaths(config.out_dir)  # every worker resumes from the chief's state
    meta = rundir.load_state_meta(shared.state)
    if chief:
        check_existing_run(shared, flags_text, meta)
    run = TrainingRun(config, strategy, chief,
                      rundir.RunPaths(strategies.worker_dir(config.out_dir, strategy)),
                      initial_epoch=int(meta["epoch"]) if meta else 0)
    resuming = 0 < run.initial_epoch < config.epochs
    # Killed after the last epoch's state was saved but before its files were all written:
    # the state still has the weights, so restore them and write the files again.
    restore = resuming or (run.initial_epoch >= config.epochs and rundir.has_state_weights(meta))
    if resuming:
        print(f"{config.out_dir}: resuming after epoch {run.initial_epoch} of {config.epochs}.")
    spec = data.get_spec(config.dataset)
    run.train_ds, run.steps_per_epoch = train_dataset(
        config, data_seed(config.seed, run.initial_epoch))
    eval_sets = None
    if chief:
        eval_sets = (eval_arrays(config, "test", config.eval_test_examples, "eval_test_examples"),
                     eval_arrays(config, "train", config.eval_train_examples,
                                 "eval_train_examples"),
                     eval_arrays(config, "holdout", config.eval_holdout_examples,
                                 "eval_holdout_examples") if config.holdout_examples else None)
    if config.holdout_examples and chief:  # said once the data has accepted the split
        print(f"{config.out_dir}: the last {config.holdout_examples} training examples are held "
              "out (never trained on); best.keras is the epoch with the best held-out robust "
              "accuracy.")
    with strategy.scope():
        run.model = build_model_and_optimizer(config, spec, run.steps_per_epoch)
    if restore and not rundir.restore_weights(meta, run.model):
        raise ValueError(f"--out_dir: the resume state in {shared.state} has no weights; "
                         "delete that directory to start the run again")
    run.paths.make()
    if chief:  # from here on the run writes: one process at a time
        run.lock = rundir.lock_run_dir(run.paths.root)
        try:
            if rundir.load_state_meta(shared.state) != meta:
                raise ValueError(f"--out_dir: another process trained {config.out_dir} while "
                                 "this one started; run the command again to resume it")
            _start_recording(run, spec, flags_text, meta, eval_sets, restore)
        except BaseException:
            run.release()
            raise
    return run


def _start_recording(run, spec, flags_text, meta, eval_sets, restore):
    """The chief's first writes: flags.cfg, run_config.json, the recorder and callbacks."""
    config = run.config
    _record_start(run, spec, flags_text)
    run.recorder = callbacks.RunRecorder(
        run.paths, epochs=config.epochs, history=(meta or {}).get("history", ()),
        eval_info=eval_info(config, *(len(arrays[0]) if arrays else 0 for arrays in eval_sets)),
        run_label=os.path.basename(os.path.normpath(config.out_dir)))
    run.callbacks = chief_callbacks(run, eval_sets)
    if restore:  # a kill may have come between the state and the files derived from it
        run.recorder.write_outputs(run.model.network, current_epoch=run.initial_epoch)


def code_versions(run_config_path, initial_epoch):
    """Which code trained which epochs: the list recorded so far (kept on resume, started
    afresh at epoch 0) with this process's code version appended when it differs."""
    history = []
    if initial_epoch > 0 and os.path.isfile(run_config_path):
        history = list(rundir.read_json(run_config_path).get("code_versions", []))
    version = provenance.code_version()
    if not history or history[-1]["code_version"] != version:
        history.append({"from_epoch": int(initial_epoch), "code_version": version})
    return history


def _record_start(run, spec, flags_text):
    """flags.cfg and run_config.json."""
    rundir.atomic_write_text(run.paths.flags,
                             _FLAGS_HEADER.format(path=run.paths.flags) + flags_text)
    record = run_config_dict(run.config, spec, run.steps_per_epoch,
                             run.strategy.num_replicas_in_sync)
    record["code_versions"] = code_versions(run.paths.run_config, run.initial_epoch)
    rundir.atomic_write_json(run.paths.run_config, record)


def chief_callbacks(run, eval_sets):
    """EpochEvaluation, TensorBoard (if installed), RunRecorder, in that order."""
    config = run.config
    eval_kwargs = dict(norm=config.norm, eps=config.eps_value,
                       step_size=config.eval_step_size_value, steps=config.eval_attack_steps,
                       batch_size=config.eval_batch_size)
    # Seeds of the random starts: test, train, and the held-out stream (apart from both for
    # any --seed).
    seeds = (config.seed * 2 + 1, config.seed * 2 + 2, config.seed * 2 + HOLDOUT_SEED_OFFSET)
    evaluators, shared = [], None  # one compiled graph for all of them
    for arrays, seed in zip(eval_sets, seeds):
        if arrays is None:
            evaluators.append(None)
        elif shared is None:
            shared = callbacks.RobustEvaluator(run.model.network, *arrays, seed=seed,
                                               **eval_kwargs)
            evaluators.append(shared)
        else:
            evaluators.append(shared.on(*arrays, seed=seed))
    out = [callbacks.EpochEvaluation(*evaluators)]
    if config.tensorboard and tensorboard_installed():
        out.append(keras.callbacks.TensorBoard(run.paths.tensorboard, write_graph=False,
                                               profile_batch=0))
    elif config.tensorboard:
        logging.warning("--tensorboard: the tensorboard package is not installed (TF 2.21 no "
                        "longer depends on it), so no TensorBoard logs; pip install "
                        "tensorboard to get them.")
    return out + [run.recorder]


def eval_info(config, test_examples, train_examples, holdout_examples=0):
    """summary.json's "evaluation": the per-epoch attack and the examples it ran on."""
    info = {"attack": f"PGD-{config.eval_attack_steps}", "norm": config.norm,
            "eps": config.eps_value, "eps_text": config.eps,
            "step_size": config.eval_step_size_value, "random_start": True,
            "batchnorm": "inference", "test_examples": test_examples,
            "train_examples": train_examples,
            "test_subset": f"the first {test_examples} of the test split",
            "train_subset": f"the first {train_examples} of the training split, not augmented"}
    if config.holdout_examples:
        info.update(holdout_examples=holdout_examples, holdout_subset=(
            f"the first {holdout_examples} of the last {config.holdout_examples} examples of "
            "the training split, held out (never trained on), not augmented; the best epoch "
            "is selected on them"))
    return info


def fit(run, verbose=None):
    """Trains from run.initial_epoch to --epochs; returns summary.json's dict (chief) or None.
    verbose: Keras fit's (default: --verbose). Releases the run directory's lock."""
    try:
        return _fit(run, verbose)
    finally:
        run.release()


def _fit(run, verbose):
    config = run.config
    verbose = config.verbose if verbose is None else verbose
    if run.initial_epoch >= config.epochs:
        print(f"{config.out_dir}: all {config.epochs} epochs are done; nothing to train.")
    else:
        run.model.fit(run.train_ds, epochs=config.epochs, initial_epoch=run.initial_epoch,
                      callbacks=run.callbacks, verbose=verbose, shuffle=False)
    if not run.chief:
        strategies.cleanup_worker_dir(run.paths.root, config.out_dir)
        return None
    rundir.drop_state_weights(run.paths.state)
    summary = rundir.read_json(run.paths.summary)
    print(summary_line(summary))
    return summary


def summary_line(summary):
    """The run's closing log line: best (and on which split it was selected) and last."""
    best, last = summary["best"], summary["last"]
    if not best:
        return "no epoch recorded"
    attack = summary["evaluation"]["attack"]
    if summary.get("selected_on") == "holdout":
        selection = (f"selected on the held-out robust accuracy, "
                     f"{best['holdout_robust_acc']:.2%}")
    else:
        selection = "selected on the test subset"
    return (f"{attack} test robust accuracy: best {best['test_robust_acc']:.2%} (epoch "
            f"{best['epoch']} {selection}; natural {best['test_natural_acc']:.2%}); last "
            f"{last['test_robust_acc']:.2%} (epoch {last['epoch']}, natural "
            f"{last['test_natural_acc']:.2%}); {summary['train_seconds']:.0f} s of training")


def train(config, flags_text, verbose=None):
    """setup + fit."""
    return fit(setup(config, flags_text), verbose=verbose)
