"""Stochastic depth (drop-path): Huang et al., "Deep Networks with Stochastic Depth", ECCV 2016 (arXiv:1603.09382).

SpineNet's improved protocol (paper §5.1, protocol C) uses it on every residual branch with the linear rule of
Model Garden's `nn_layers.get_stochastic_depth_rate`: block i of n gets `rate * i / n`.
"""

from __future__ import annotations

import keras
from keras import ops


def stochastic_depth_rate_for_block(rate: float, block_number: int, num_blocks: int) -> float:
    """The drop rate of the `block_number`-th block (1-based) of `num_blocks`: rate * block_number / num_blocks."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"stochastic_depth_rate={rate}: must be in [0, 1)")
    return rate * block_number / num_blocks


@keras.saving.register_keras_serializable(package="spinenet_tf")
class StochasticDepth(keras.layers.Layer):
    """Drops the whole residual branch of a sample with probability `rate` and scales survivors by 1 / (1 - rate).

    The identity at inference. Apply it to the residual branch, before the shortcut is added.

    Args:
        rate: Probability of dropping the branch, in [0, 1).
        seed: Optional seed for the per-sample Bernoulli draws.
    """

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"StochasticDepth rate={rate}: must be in [0, 1)")
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if rate > 0 else None

    def call(self, inputs, training=None):
        if not training or self.rate == 0.0:
            return inputs
        keep = 1.0 - self.rate
        shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        mask = ops.floor(keep + keras.random.uniform(shape, dtype=inputs.dtype, seed=self.seed_generator))
        return inputs / ops.cast(keep, inputs.dtype) * mask

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}
