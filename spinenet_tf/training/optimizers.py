"""Optimizers and learning-rate schedules for training (`build_optimizer`, `WarmupSchedule`, `FusedAdamW`,
`FusedSGD`).

The L2 term SGD adds to the loss is the models' own (`spinenet_tf.layers.keras_fit.l2_loss`).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="spinenet_tf")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from `warmup_learning_rate`, then constant, step or cosine decay of `learning_rate`.

    Step decay multiplies by `decay_factor` at each boundary (absolute steps), as Model Garden's `stepwise` with
    `linear` warm-up does (SpineNet recipes: x0.1 at epochs 475 and 490 of 500). Cosine decays to
    `alpha * learning_rate` at `total_steps`, counting from the end of the warm-up.
    """

    def __init__(self, learning_rate: float, total_steps: int, schedule: str = "constant", warmup_steps: int = 0,
                 warmup_learning_rate: float = 0.0, boundaries=(), decay_factor: float = 0.1, alpha: float = 0.0):
        self.learning_rate = float(learning_rate)
        self.total_steps = int(total_steps)
        self.schedule = schedule
        self.warmup_steps = int(warmup_steps)
        self.warmup_learning_rate = float(warmup_learning_rate)
        self.boundaries = [int(b) for b in boundaries]
        self.decay_factor = float(decay_factor)
        self.alpha = float(alpha)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        rate = keras.ops.convert_to_tensor(self.learning_rate, "float32")
        if self.schedule == "step":
            for boundary in self.boundaries:
                rate = keras.ops.where(step >= boundary, rate * self.decay_factor, rate)
        elif self.schedule == "cosine":
            span = max(self.total_steps - self.warmup_steps, 1)
            progress = keras.ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
            cosine = 0.5 * (1.0 + keras.ops.cos(math.pi * progress))
            rate = self.learning_rate * ((1.0 - self.alpha) * cosine + self.alpha)
        if self.warmup_steps:
            fraction = keras.ops.minimum(step / self.warmup_steps, 1.0)
            warmup = self.warmup_learning_rate + fraction * (self.learning_rate - self.warmup_learning_rate)
            rate = keras.ops.where(step < self.warmup_steps, warmup, rate)
        return rate

    def get_config(self):
        return {"learning_rate": self.learning_rate, "total_steps": self.total_steps, "schedule": self.schedule,
                "warmup_steps": self.warmup_steps, "warmup_learning_rate": self.warmup_learning_rate,
                "boundaries": self.boundaries, "decay_factor": self.decay_factor, "alpha": self.alpha}


# AdamW's decoupled decay skips batch norm and biases (Loshchilov & Hutter; the usual practice for conv nets).
NO_WEIGHT_DECAY = ("gamma", "beta", "bias")


# Variable dtypes the fused path takes. TF 2.20 has CPU kernels of ResourceApplyAdam, ResourceApplyKerasMomentum and
# ResourceApplyGradientDescent for float16, bfloat16, float32 and float64. SGD's kernel gives Keras' numbers for all
# four; Adam's computes 1 - beta_1 and 1 - beta_2 in the variable dtype, where float16 / bfloat16 round 0.999 to 1
# (or lose epsilon), unlike Keras, which takes 1 - beta from Python floats: so AdamW fuses float32 / float64 only.
# Mixed precision (mixed_float16 / mixed_bfloat16) keeps float32 variables and is fused.
_SGD_FUSED_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64"})
_ADAM_FUSED_DTYPES = frozenset({"float32", "float64"})


class _StepScalars:
    """The per-step scalars (learning rate, bias corrections, ...) of one `_backend_update_step`, by dtype.

    A plain object, so that neither Keras nor `tf.train.Checkpoint` tracks it.
    """

    def __init__(self):
        self.cache = None


def _tf_variable(variable):
    """The `tf.Variable` behind a Keras variable (or the variable itself), or None when there is none."""
    if isinstance(variable, keras.Variable):
        if keras.backend.backend() != "tensorflow":
            return None
        variable = variable.value  # the tf.Variable (optimizers do not run in an autocast scope)
    return variable if isinstance(variable, tf.Variable) else None


def _keras_default_name(class_name: str) -> str | None:
    """The name Keras gives an unnamed optimizer of `class_name` ("adam_w", "sgd", uniquified), so that the fused
    optimizers' variable paths ("adam_w/conv_kernel_momentum") are Keras'. None (Keras names it after our class)
    if the Keras-internal helper moves."""
    try:
        from keras.src.utils import naming
    except ImportError:
        return None
    return naming.auto_name(class_name)


class _FusedUpdate:
    """What `FusedAdamW` and `FusedSGD` share: per-step scalars computed once, decoupled weight decay applied in
    `update_step` (with the learning rate Keras evaluated once for the step), and the check for the fused path."""

    _fused_dtypes = frozenset()  # variable dtypes the subclass's fused ops take

    def _init_fused(self):
        self._fused_step = _StepScalars()

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        # Keras evaluates `self.learning_rate` (the schedule) once per step and passes it here; the scalars derived
        # from it are computed on first use and shared by all variables of this step.
        self._fused_step.cache = {}
        try:
            super()._backend_update_step(grads, trainable_variables, learning_rate)
        finally:
            self._fused_step.cache = None

    def _apply_weight_decay(self, variables):
        # Keras' version re-reads `self.learning_rate` (re-evaluating the schedule) per variable. The decay is done
        # in `update_step` instead, with the step's learning rate: each variable's decay still precedes its update,
        # as in Keras (decay and update of one variable touch no other).
        del variables

    def _step_scalars(self, learning_rate, dtype) -> dict:
        """Scalars of `dtype` for this step: learning rate `lr`, `decay` = weight_decay * lr, and the optimizer's own
        (`_fused_scalars`). Cached per learning-rate tensor (one per replica under tf.distribute) and dtype."""
        cache = self._fused_step.cache
        key = (id(learning_rate), dtype)
        if cache is not None and key in cache:
            return cache[key]
        scalars = {"lr": tf.cast(learning_rate, dtype)}
        if self.weight_decay:
            scalars["decay"] = tf.cast(self.weight_decay, dtype) * scalars["lr"]
        scalars.update(self._fused_scalars(dtype))
        if cache is not None:
            cache[key] = scalars
        return scalars

    def _fused_scalars(self, dtype) -> dict:
        return {}

    def _fused_variables(self, gradient, variable, slots):
        """(variable, slots) as `tf.Variable`s when the fused ops apply, else None: TensorFlow backend, a dense
        gradient, and a variable dtype in the class's `_fused_dtypes`."""
        if isinstance(gradient, tf.IndexedSlices):
            return None
        variables = [_tf_variable(v) for v in (variable, *slots)]
        if any(v is None for v in variables) or variables[0].dtype.name not in self._fused_dtypes:
            return None
        return variables[0], variables[1:]

    def _keras_weight_decay(self, variable, learning_rate):
        """Keras' decoupled decay of one variable (the fallback path), with the step's learning rate."""
        if self.weight_decay and self._use_weight_decay(variable):
            lr = keras.ops.cast(learning_rate, variable.dtype)
            wd = keras.ops.cast(self.weight_decay, variable.dtype)
            self.assign_sub(variable, variable * wd * lr)

    def _fused_weight_decay(self, variable, scalars):
        """variable -= weight_decay * lr * variable: one ReadVariableOp and one ResourceApplyGradientDescent."""
        if "decay" in scalars and self._use_weight_decay(variable):
            value = tf.raw_ops.ReadVariableOp(resource=variable.handle, dtype=variable.dtype)
            tf.raw_ops.ResourceApplyGradientDescent(var=variable.handle, alpha=scalars["decay"], delta=value)


@keras.saving.register_keras_serializable(package="spinenet_tf")
class FusedAdamW(_FusedUpdate, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` whose per-variable update is one `ResourceApplyAdam` (plus, for a variable with
    decoupled weight decay, one `ResourceApplyGradientDescent` of `weight_decay * lr * variable`).

    Same arguments, slot variables (`momentum`, `velocity`, same paths), `iterations`, checkpoints,
    `exclude_from_weight_decay`, clipping and `LossScaleOptimizer` wrapping as Keras' AdamW. Keras' AdamW builds ~50
    graph nodes per variable and re-evaluates the learning-rate schedule for each decayed variable; here the
    schedule is evaluated once per step, and the learning rate, bias corrections and betas are cast once per step
    and dtype (docs/training_performance.md).

    Numbers: the op computes `1 - beta_1` and `1 - beta_2` in the variable dtype, Keras in Python floats; with the
    default beta_2 = 0.999 that is 0.00099998713 against 0.001 in float32, so the second moments differ from Keras'
    by ~1e-5 relative (weights by ~1e-6 of their scale after a few steps). With betas whose `1 - beta` is exact in
    float32 (e.g. 0.875, 1 - 2**-10) the updates equal Keras' to float rounding (tests/training/optimizers_test.py).

    The fused op is used with the TensorFlow backend for a dense gradient of a float32 or float64 `tf.Variable`
    (mixed_float16 / mixed_bfloat16 keep float32 variables, so they are fused). Keras' own update (with the step's
    learning rate for the decay) is used otherwise: another backend, sparse (`IndexedSlices`) gradients,
    `amsgrad=True`, and float16 / bfloat16 variables, for which the op's `1 - beta_2` rounds to 0 (0.999 is 1.0 in
    bfloat16) and which Keras' AdamW does not handle well either.
    """

    _fused_dtypes = _ADAM_FUSED_DTYPES

    def __init__(self, *args, name=None, **kwargs):
        super().__init__(*args, name=name or _keras_default_name("AdamW"), **kwargs)
        self._init_fused()

    def _fused_scalars(self, dtype) -> dict:
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        return {"beta_1": beta_1, "beta_2": beta_2, "beta_1_power": tf.pow(beta_1, step),
                "beta_2_power": tf.pow(beta_2, step), "epsilon": tf.cast(self.epsilon, dtype)}

    def update_step(self, gradient, variable, learning_rate):
        fused = None
        if not self.amsgrad:
            index = self._get_variable_index(variable)
            fused = self._fused_variables(gradient, variable, (self._momentums[index], self._velocities[index]))
        if fused is None:
            self._keras_weight_decay(variable, learning_rate)
            return super().update_step(gradient, variable, learning_rate)
        variable, (m, v) = fused
        s = self._step_scalars(learning_rate, variable.dtype)
        self._fused_weight_decay(variable, s)
        tf.raw_ops.ResourceApplyAdam(var=variable.handle, m=m.handle, v=v.handle, beta1_power=s["beta_1_power"],
                                     beta2_power=s["beta_2_power"], lr=s["lr"], beta1=s["beta_1"],
                                     beta2=s["beta_2"], epsilon=s["epsilon"], grad=tf.cast(gradient, variable.dtype))
        return None


@keras.saving.register_keras_serializable(package="spinenet_tf")
class FusedSGD(_FusedUpdate, keras.optimizers.SGD):
    """`keras.optimizers.SGD` whose per-variable update is one `ResourceApplyKerasMomentum` (Keras' momentum:
    velocity = momentum * velocity - lr * g, then w += velocity, or the Nesterov form), or one
    `ResourceApplyGradientDescent` without momentum.

    Same arguments, slot variables (`momentum`, same paths), checkpoints and numbers (bit for bit in our tests) as
    Keras' SGD; the schedule is evaluated once per step and the learning rate cast once per step and dtype. The
    fused op is used with the TensorFlow backend for a dense gradient of a float16, bfloat16, float32 or float64
    `tf.Variable`; Keras' own update otherwise (another backend, sparse gradients, other dtypes). A `weight_decay`,
    if given, is decoupled as in `FusedAdamW` (our models put SGD's weight decay in their loss instead).
    """

    _fused_dtypes = _SGD_FUSED_DTYPES

    def __init__(self, *args, name=None, **kwargs):
        super().__init__(*args, name=name or _keras_default_name("SGD"), **kwargs)
        self._init_fused()

    def _fused_scalars(self, dtype) -> dict:
        return {"momentum": tf.cast(self.momentum, dtype)} if self.momentum else {}

    def update_step(self, gradient, variable, learning_rate):
        slots = (self.momentums[self._get_variable_index(variable)],) if self.momentum else ()
        fused = self._fused_variables(gradient, variable, slots)
        if fused is None:
            self._keras_weight_decay(variable, learning_rate)
            return super().update_step(gradient, variable, learning_rate)
        variable, slots = fused
        s = self._step_scalars(learning_rate, variable.dtype)
        self._fused_weight_decay(variable, s)
        gradient = tf.cast(gradient, variable.dtype)
        if slots:
            tf.raw_ops.ResourceApplyKerasMomentum(var=variable.handle, accum=slots[0].handle, lr=s["lr"],
                                                  grad=gradient, momentum=s["momentum"],
                                                  use_nesterov=bool(self.nesterov))
        else:
            tf.raw_ops.ResourceApplyGradientDescent(var=variable.handle, alpha=s["lr"], delta=gradient)
        return None


def build_optimizer(config, train_steps: int, mixed_precision: str = "none") -> keras.optimizers.Optimizer:
    """The optimizer of a `training.config.OptimizerConfig`.

    `FusedSGD` (momentum; Nesterov if the config has a true `nesterov`) or `FusedAdamW`: Keras' optimizers with one
    fused TensorFlow op per variable update (see their docstrings for when Keras' own update is used instead).
    SGD gets no weight decay here: the models add it as an L2 term to their loss (`weight_decay` of the model).
    Float16 mixed precision wraps the optimizer in a `LossScaleOptimizer`.
    """
    schedule = WarmupSchedule(config.learning_rate, train_steps, config.schedule, config.warmup_steps,
                              config.warmup_learning_rate,
                              [round(b * train_steps) for b in config.decay_boundaries], config.decay_factor,
                              config.cosine_alpha)
    clip = {"global_clipnorm": config.gradient_clip_norm} if config.gradient_clip_norm else {}
    if config.optimizer == "sgd":
        optimizer = FusedSGD(schedule, momentum=config.momentum, nesterov=bool(getattr(config, "nesterov", False)),
                             **clip)
    elif config.optimizer == "adamw":
        optimizer = FusedAdamW(schedule, weight_decay=config.weight_decay, **clip)
        optimizer.exclude_from_weight_decay(var_names=list(NO_WEIGHT_DECAY))
    else:
        raise ValueError(f"--optimizer={config.optimizer!r}: must be sgd or adamw")
    if mixed_precision == "float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
