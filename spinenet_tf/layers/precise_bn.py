"""Precise batch norm: re-estimates every batch-norm layer's moving statistics for the final weights.

A batch-norm layer's moving mean and variance are an exponential average of batch statistics taken while the
weights were still changing. In a long run at a small learning rate the lag does not matter; in a short run with a
high rate (the CPU demo: a few hundred AdamW steps) the averages describe weights the model no longer has, and
inference is much worse than training-mode outputs. Re-estimating them on a few training batches with the weights
frozen fixes that (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021, §3: "precise BN"; fvcore's
`update_bn_stats`).

Each layer's new moving mean is the plain average of its batch means over the batches, and the moving variance the
average of its batch variances (biased, as the layer's own update). The forward passes run with momentum 0, so each
leaves its batch's statistics in the moving variables, which are summed on the side: one traced function for all
batches. Only the moving statistics of trainable batch-norm layers change (a frozen layer keeps its own).

The forward pass is the model's training-mode call by default; a model whose training path needs more than the
images passes its own (Mask R-CNN: the loss computation with labels, so that the heads see the sampled RoIs they
were trained on, not the inference proposals). Used by the training loop (`--precise_bn_batches`) and by the tests'
briefly trained models.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import keras
import tensorflow as tf


def batch_norm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """The trainable BatchNormalization layers nested in `model` (frozen ones keep their statistics).

    Uses Keras' `Layer._flatten_layers` (Keras 3 has no public recursive iterator; `Model.layers` stops at the top
    level).
    """
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]


def reestimate(model: keras.Model, batches: Iterable, num_batches: int, forward: Callable | None = None) -> int:
    """Replaces the moving statistics of every batch-norm layer with their average over `num_batches` batches.

    Runs the forward pass in training mode (one `tf.function`); no gradients, no other variable changes. One device:
    the training loop runs it only under single-replica strategies.

    Args:
        model: A built Keras model.
        batches: An iterable of what `forward` takes: by default input batches (the model's first call argument).
        num_batches: How many batches to average over (>= 1).
        forward: One training-mode forward pass of `model` on an item of `batches` (a nest of tensors or numbers);
            default `model(batch, training=True)`.

    Returns:
        The number of batches used (fewer than `num_batches` if `batches` ran out).

    Raises:
        ValueError: `num_batches` < 1, the model has no trainable batch-norm layer, or `batches` is empty.
    """
    if num_batches < 1:
        raise ValueError(f"precise batch norm: num_batches={num_batches}, must be >= 1")
    layers = batch_norm_layers(model)
    if not layers:
        raise ValueError(f"precise batch norm: {model.name} has no trainable BatchNormalization layer")
    momenta = [layer.momentum for layer in layers]
    sums = [[tf.zeros_like(layer.moving_mean, tf.float64), tf.zeros_like(layer.moving_variance, tf.float64)]
            for layer in layers]
    used = 0
    try:
        for layer in layers:
            layer.momentum = 0.0  # each forward pass leaves exactly this batch's statistics in the moving ones
        traced = tf.function(forward or (lambda batch: model(batch, training=True)))
        for batch in batches:
            if used == num_batches:
                break
            traced(tf.nest.map_structure(tf.convert_to_tensor, batch))
            used += 1
            for layer, total in zip(layers, sums):
                total[0] += tf.cast(layer.moving_mean, tf.float64)
                total[1] += tf.cast(layer.moving_variance, tf.float64)
        if used:
            for layer, (mean, variance) in zip(layers, sums):
                layer.moving_mean.assign(tf.cast(mean / used, layer.moving_mean.dtype))
                layer.moving_variance.assign(tf.cast(variance / used, layer.moving_variance.dtype))
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    if not used:
        raise ValueError("precise batch norm: no input batch")
    return used
