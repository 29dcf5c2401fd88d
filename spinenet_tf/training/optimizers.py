"""Optimizers and learning-rate schedules for training (`build_optimizer`, `WarmupSchedule`).

The L2 term SGD adds to the loss is the models' own (`spinenet_tf.layers.keras_fit.l2_loss`).
"""

from __future__ import annotations

import math

import keras


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


def build_optimizer(config, train_steps: int, mixed_precision: str = "none") -> keras.optimizers.Optimizer:
    """The optimizer of a `training.config.OptimizerConfig`.

    SGD gets no weight decay here: the models add it as an L2 term to their loss (`weight_decay` of the model).
    Float16 mixed precision wraps the optimizer in a `LossScaleOptimizer`.
    """
    schedule = WarmupSchedule(config.learning_rate, train_steps, config.schedule, config.warmup_steps,
                              config.warmup_learning_rate,
                              [round(b * train_steps) for b in config.decay_boundaries], config.decay_factor,
                              config.cosine_alpha)
    clip = {"global_clipnorm": config.gradient_clip_norm} if config.gradient_clip_norm else {}
    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(schedule, momentum=config.momentum, **clip)
    elif config.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay, **clip)
        optimizer.exclude_from_weight_decay(var_names=list(NO_WEIGHT_DECAY))
    else:
        raise ValueError(f"--optimizer={config.optimizer!r}: must be sgd or adamw")
    if mixed_precision == "float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
