"""AMPModel: a keras.Model whose train_step is adversarial training with AMP (Algorithm 1).

Per mini-batch: PGD finds x' at theta; the weights are moved up the outer loss to
theta + Delta inside Delta's ball (N ascent steps, re-attacking at theta + Delta after the
first); the gradient c measured at theta + Delta is applied to theta by the optimiser. Every
pass is `network.stateless_call` on plain tensors, so theta + Delta is never assigned to a
variable and nothing has to be restored.

Decisions (WORKSPACE.md, "Decisions"): the attack runs with BatchNorm in training mode (batch
statistics) without touching the moving statistics; those are updated once per step, from a
training-mode pass at theta on x' (the weights that evaluation and export use): AMP's first
ascent pass, or the descent pass when Delta is 0. The logged `loss` and `adv_acc` are those
of the descent pass, so under AMP they are measured at theta + Delta. Under tf.distribute the
ascent gradient b is summed over replicas before any norm is taken, so Delta is the one a
single device computes on the global batch.
"""
import keras
import tensorflow as tf

from atamp_tf import losses
from atamp_tf._keras_compat import MultiWorkerFitMixin, replica_count, scale_loss_for_distribution
from atamp_tf.attacks import geometry
from atamp_tf.attacks.pgd import pgd
from atamp_tf.train import weight_perturbation

ATTACK_BN_MODES = ("train", "eval")


@keras.saving.register_keras_serializable(package="atamp_tf")
class AMPModel(MultiWorkerFitMixin, keras.Model):
    """Adversarial training (AT / TRADES / MART) with adversarial model perturbation.

    `network` is a built Keras model mapping images in [0,1] to logits; it is what evaluation
    and export use. `delta=0` turns AMP off (plain adversarial training, one pass fewer).
    `eps_ramp_steps` > 0 ramps the training attack's eps and step size linearly over the
    first steps (`attack_budget`); test_step always attacks at the full eps.
    """

    def __init__(self, network, *, method="at", norm="linf", eps=8 / 255, step_size=2 / 255,
                 attack_steps=10, random_start=True, attack_bn="train", delta=0.1, xi=1.0,
                 amp_steps=1, amp_scope="tensor", amp_warmup_steps=0, beta=6.0,
                 mart_lambda=5.0, mixup_alpha=0.0, l1=0.0, l2=0.0, weight_decay=0.0,
                 eval_attack_steps=20, eps_ramp_steps=0, seed=0, **kwargs):
        super().__init__(**kwargs)
        self._method = losses.get_method(method)
        geometry.check_threat_model(norm, eps, step_size, attack_steps)
        if step_size > eps and attack_steps > 0 and eps > 0 and norm == "linf":
            raise ValueError(f"step_size ({step_size}) must not exceed eps ({eps})")
        weight_perturbation.check_scope(amp_scope)
        if attack_bn not in ATTACK_BN_MODES:
            raise ValueError(f"attack_bn must be one of {ATTACK_BN_MODES}, got {attack_bn!r}")
        for name, value in dict(delta=delta, xi=xi, amp_warmup_steps=amp_warmup_steps,
                                beta=beta, mart_lambda=mart_lambda, mixup_alpha=mixup_alpha,
                                l1=l1, l2=l2, weight_decay=weight_decay,
                                eval_attack_steps=eval_attack_steps,
                                eps_ramp_steps=eps_ramp_steps).items():
            geometry.check_number(name, value)
        geometry.check_number("amp_steps", amp_steps, low=1, whole=True)
        if not isinstance(network, keras.Model):
            raise ValueError(f"network must be a keras.Model, got {type(network).__name__}")
        self.network = network
        self.method, self.norm = method, norm
        self.eps, self.step_size = float(eps), float(step_size)
        self.attack_steps = int(attack_steps)
        self.random_start, self.attack_bn = bool(random_start), attack_bn
        self.delta, self.xi, self.amp_steps = float(delta), float(xi), int(amp_steps)
        self.amp_scope, self.amp_warmup_steps = amp_scope, int(amp_warmup_steps)
        self.beta, self.mart_lambda = float(beta), float(mart_lambda)
        self.mixup_alpha, self.l1, self.l2 = float(mixup_alpha), float(l1), float(l2)
        self.weight_decay = float(weight_decay)
        self.eval_attack_steps, self.seed = int(eval_attack_steps), int(seed)
        self.eps_ramp_steps = int(eps_ramp_steps)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.adv_acc_tracker = keras.metrics.SparseCategoricalAccuracy(name="adv_acc")
        self.nat_acc_tracker = keras.metrics.SparseCategoricalAccuracy(name="nat_acc")
        if network.built:
            self.built = True

    # ----- Keras plumbing -------------------------------------------------------------------
    def call(self, x, training=False):
        return self.network(x, training=training)

    @property
    def metrics(self):
        return [self.loss_tracker, self.adv_acc_tracker, self.nat_acc_tracker]

    def compile(self, optimizer="sgd", loss=None, **kwargs):
        """Like keras.Model.compile; the loss is the method's own, so `loss` must be None."""
        if loss is not None:
            raise ValueError("AMPModel.compile: the loss is defined by `method` "
                             f"({self.method!r}); do not pass loss={loss!r}")
        for name in ("metrics", "weighted_metrics"):
            if kwargs.get(name):
                raise ValueError(f"AMPModel.compile: {name}={kwargs[name]!r} would be ignored: "
                                 "the train and test steps report their own loss, adv_acc and "
                                 "nat_acc; evaluate other metrics with python -m atamp_tf.evaluate")
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        """Recompile on `load_model` (Keras skips models that override compile)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def get_config(self):
        config = super().get_config()
        config.update(
            network=keras.saving.serialize_keras_object(self.network),
            method=self.method, norm=self.norm, eps=self.eps, step_size=self.step_size,
            attack_steps=self.attack_steps, random_start=self.random_start,
            attack_bn=self.attack_bn, delta=self.delta, xi=self.xi, amp_steps=self.amp_steps,
            amp_scope=self.amp_scope, amp_warmup_steps=self.amp_warmup_steps, beta=self.beta,
            mart_lambda=self.mart_lambda, mixup_alpha=self.mixup_alpha, l1=self.l1, l2=self.l2,
            weight_decay=self.weight_decay, eval_attack_steps=self.eval_attack_steps,
            eps_ramp_steps=self.eps_ramp_steps, seed=self.seed)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["network"] = keras.saving.deserialize_keras_object(config["network"])
        return cls(**config)

    @property
    def uses_amp(self):
        return self.delta > 0

    # ----- pieces of the step ---------------------------------------------------------------
    def _seed(self, stream):
        """A stateless seed unique to (model seed, stream, optimiser step, replica)."""
        step = (tf.cast(self.optimizer.iterations, tf.int64) if self.optimizer
                else tf.constant(0, tf.int64))
        seed = tf.stack([tf.constant(self.seed * 7919 + stream, tf.int64), step])
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            seed = tf.random.experimental.stateless_fold_in(
                seed, tf.cast(ctx.replica_id_in_sync_group, tf.int64))
        return seed

    def attack_budget(self):
        """(eps, step size) of this step's training attack: the full values, or in the eps
        ramp (the first eps_ramp_steps optimiser steps) both scaled by (step + 1) / ramp."""
        if self.eps_ramp_steps <= 0:
            return self.eps, self.step_size
        step = tf.cast(self.optimizer.iterations, tf.float32) + 1.0
        scale = tf.minimum(1.0, step / float(self.eps_ramp_steps))
        return self.eps * scale, self.step_size * scale

    def _forward(self, weights, state, x, training):
        return self.network.stateless_call(weights, state, x, training=training)

    def _attack(self, weights, state, x, y, label_mix, seed):
        """PGD against the method's inner loss at `weights` (BatchNorm as set by attack_bn)."""
        if self.attack_steps == 0:
            return x  # natural training
        training = self.attack_bn == "train"

        def logits_fn(images):
            return self._forward(weights, state, images, training)[0]

        logits_nat = logits_fn(x) if self._method.inner_needs_natural else None
        x_init = None
        if self.random_start and self._method.start == "normal":
            noise = tf.random.stateless_normal(tf.shape(x), seed=seed, dtype=x.dtype)
            x_init = x + 0.001 * noise
        eps, step_size = self.attack_budget()
        return pgd(
            logits_fn, x, y, eps=eps, step_size=step_size, steps=self.attack_steps,
            norm=self.norm, random_start=self.random_start, seed=seed, x_init=x_init,
            loss_fn=lambda logits, _: label_mix(
                lambda labels: self._method.inner(logits, labels, logits_nat)))

    def _outer(self, weights, state, x, x_adv, label_mix):
        """The method's outer loss (batch mean) at `weights`, in training mode.

        Returns (loss, logits_nat or None, logits_adv, non-trainable state updated by the pass
        on x' alone: one BatchNorm update per step, whatever the method).
        """
        logits_nat = None
        if self._method.outer_needs_natural:
            logits_nat = self._forward(weights, state, x, True)[0]
        logits_adv, state = self._forward(weights, state, x_adv, True)
        per_example = label_mix(lambda labels: self._method.outer(
            logits_nat, logits_adv, labels, beta=self.beta, mart_lambda=self.mart_lambda))
        return tf.reduce_mean(per_example), logits_nat, logits_adv, state

    def _mixup(self, x, y, seed):
        """Mixup (Zhang et al. 2018): one lambda ~ Beta(a, a) per batch, a seeded pairing."""
        if self.mixup_alpha <= 0:
            return x, lambda fn: fn(y)
        seeds = tf.random.experimental.stateless_split(seed, 3)
        ga = tf.random.stateless_gamma([], seed=seeds[0], alpha=self.mixup_alpha)
        gb = tf.random.stateless_gamma([], seed=seeds[1], alpha=self.mixup_alpha)
        lam = ga / (ga + gb)
        perm = tf.argsort(tf.random.stateless_uniform(tf.shape(y), seed=seeds[2]))
        x = lam * x + (1.0 - lam) * tf.gather(x, perm)
        y_b = tf.gather(y, perm)
        return x, lambda fn: lam * fn(y) + (1.0 - lam) * fn(y_b)

    def _ascent_gradient(self, weights, state, x, x_adv, label_mix):
        """b: the outer loss's gradient at `weights`, summed over replicas (global-batch mean),
        and the non-trainable state that pass updated."""
        with tf.GradientTape() as tape:
            tape.watch(weights)
            loss, _, _, new_state = self._outer(weights, state, x, x_adv, label_mix)
            loss = scale_loss_for_distribution(loss)
        grads = tape.gradient(loss, weights)
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        return grads, new_state

    def _perturbation(self, theta, state, x, y, x_adv, label_mix, seed):
        """Algorithm 1, steps 1-2: Delta after N ascent steps, the last x', and the state of
        the first ascent pass (training mode at theta on x': the step's BatchNorm update)."""
        deltas = [tf.zeros_like(t) for t in theta]
        theta_state = None
        for n in range(self.amp_steps):
            weights = [t + d for t, d in zip(theta, deltas)]
            if n > 0:
                x_adv = self._attack(weights, state, x, y, label_mix,
                                     tf.random.experimental.stateless_fold_in(seed, n))
            grads, pass_state = self._ascent_gradient(weights, state, x, x_adv, label_mix)
            theta_state = pass_state if theta_state is None else theta_state
            deltas = weight_perturbation.ascend(deltas, grads, theta, radius=self.delta,
                                                xi=self.xi, scope=self.amp_scope)
        return deltas, x_adv, theta_state

    def _regulariser_gradients(self, theta):
        """Coupled weight decay, and the L1 / L2 baselines as in Rice et al. 2020, as gradients.

        weight_decay: on every trainable weight (PyTorch SGD's weight_decay). l2 > 0 replaces
        it: l2 on kernels (rank >= 2), nothing on BatchNorm parameters and biases. l1 adds
        l1 * sign(w) on kernels. Split evenly over replicas, which the optimiser sums.
        """
        if self.weight_decay == 0 and self.l1 == 0 and self.l2 == 0:
            return None
        scale = self.optimizer.scale_loss(tf.constant(1.0 / replica_count()))
        grads = []
        for t in theta:
            kernel = len(t.shape) >= 2
            decay = (self.l2 if kernel else 0.0) if self.l2 > 0 else self.weight_decay
            g = decay * t
            if self.l1 > 0 and kernel:
                g = g + self.l1 * tf.sign(t)
            grads.append(scale * g)
        return grads

    # ----- the step -------------------------------------------------------------------------
    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if sample_weight is not None:
            raise ValueError("AMPModel does not support sample weights")
        y = tf.cast(tf.reshape(y, [-1]), tf.int32)
        variables = self.network.trainable_variables
        theta = [v.value for v in variables]
        state = [v.value for v in self.network.non_trainable_variables]
        seed = self._seed(0)
        x, label_mix = self._mixup(x, y, tf.random.experimental.stateless_fold_in(seed, 101))
        x_adv = self._attack(theta, state, x, y, label_mix, seed)

        # theta_state: BatchNorm statistics from a training pass at theta on x' (None: the
        # descent pass below is at theta and its own state is the one to keep).
        theta_state, use_theta_state = None, None
        if self.uses_amp:
            def amp_deltas():
                return self._perturbation(theta, state, x, y, x_adv, label_mix, seed)

            if self.amp_warmup_steps <= 0:
                deltas, x_adv, theta_state = amp_deltas()
            elif replica_count() == 1:
                use_theta_state = self.optimizer.iterations >= self.amp_warmup_steps
                deltas, x_adv, theta_state = tf.cond(
                    use_theta_state, amp_deltas,
                    lambda: ([tf.zeros_like(t) for t in theta], x_adv, list(state)))
            else:
                # Cross-replica all-reduce cannot run inside tf.cond under MirroredStrategy:
                # compute Delta on every step and mask it during the warm-up instead (the
                # ascent pass is at theta on the step's x' either way, so its state is kept).
                active = self.optimizer.iterations >= self.amp_warmup_steps
                amp_delta_list, amp_x_adv, theta_state = amp_deltas()
                mask = tf.cast(active, theta[0].dtype)
                deltas = [mask * d for d in amp_delta_list]
                x_adv = tf.where(active, amp_x_adv, x_adv)
            weights = [t + d for t, d in zip(theta, deltas)]
        else:
            weights = theta

        with tf.GradientTape() as tape:
            tape.watch(weights)
            loss, logits_nat, logits_adv, new_state = self._outer(weights, state, x, x_adv,
                                                                  label_mix)
            scaled = self.optimizer.scale_loss(scale_loss_for_distribution(loss))
        grads = tape.gradient(scaled, weights)
        extra = self._regulariser_gradients(theta)
        if extra is not None:
            grads = [g + e for g, e in zip(grads, extra)]
        self.optimizer.apply_gradients(zip(grads, variables))
        if use_theta_state is not None:  # single device with warm-up: theta's pass if AMP ran
            new_state = [tf.where(use_theta_state, a, b) for a, b in zip(theta_state, new_state)]
        elif theta_state is not None:
            new_state = theta_state
        for variable, value in zip(self.network.non_trainable_variables, new_state):
            variable.assign(value)

        self.loss_tracker.update_state(loss)
        self.adv_acc_tracker.update_state(y, logits_adv)
        logs = {"loss": self.loss_tracker.result(), "adv_acc": self.adv_acc_tracker.result()}
        if logits_nat is not None:
            self.nat_acc_tracker.update_state(y, logits_nat)
            logs["nat_acc"] = self.nat_acc_tracker.result()
        return self._format_logs(logs)

    def test_step(self, data):
        """Natural loss and accuracy; PGD-`eval_attack_steps` accuracy (BatchNorm in eval mode)."""
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        y = tf.cast(tf.reshape(y, [-1]), tf.int32)
        logits = self.network(x, training=False)
        self.loss_tracker.update_state(losses.cross_entropy(logits, y))
        self.nat_acc_tracker.update_state(y, logits)
        logs = {"loss": self.loss_tracker.result(), "nat_acc": self.nat_acc_tracker.result()}
        if self.eval_attack_steps > 0:
            x_adv = pgd(lambda images: self.network(images, training=False), x, y,
                                eps=self.eps, step_size=self.step_size,
                                steps=self.eval_attack_steps, norm=self.norm,
                                random_start=self.random_start, seed=self._seed(1))
            self.adv_acc_tracker.update_state(y, self.network(x_adv, training=False))
            logs["adv_acc"] = self.adv_acc_tracker.result()
        return self._format_logs(logs)
