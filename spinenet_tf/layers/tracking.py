"""Sublayers held in lists and dicts: made visible to `tf.train.Checkpoint`, and built as a chain.

Keras 3 (TensorFlow backend, 3.15 here) wraps a layer's list and dict attributes in its own `TrackedList` /
`TrackedDict`, which TensorFlow's object graph does not follow, and hands them to TensorFlow only when writing a
SavedModel (`TFLayer._trackable_children`, save_type "savedmodel"). So a `tf.train.Checkpoint` of a model whose layers
keep sublayers in a list (a resampling chain, a head's per-level batch norms) silently leaves out every variable
under them: neither saved nor restored, and `assert_existing_objects_matched()` does not notice (the objects are not
in the graph it checks); docs/training_performance.md has the count for RetinaNet SpineNet-Mobile-49XS
(keras-team/keras#18398 is the same bug in Keras 3.0).

`CheckpointCollections` adds, for checkpoints only, every layer found in such a collection as a direct child named
after the attribute and its position or key (`chain_0`, `norms_1_3`): the objects themselves, so restore and the
matching asserts see the same objects every time. SavedModel export is left to Keras.

`build_chain` and `chain_output_shape` build, or follow the shapes through, a list of sublayers applied one after
another (a block's branch, a resampling chain).
"""

from __future__ import annotations

import keras


class CheckpointCollections:
    """Mixin for Keras layers and models (put it first in the bases): sublayers in list / dict / tuple attributes
    become checkpoint dependencies."""

    def _trackable_children(self, save_type="checkpoint", **kwargs):
        children = super()._trackable_children(save_type, **kwargs)
        if save_type != "checkpoint":
            return children
        for name in getattr(self, "_tracked", ()):
            for key, layer in _layers_in(getattr(self, name, None), name):
                children.setdefault(key, layer)
        return children


def build_chain(layers, input_shape) -> tuple:
    """Builds `layers` one after another, each from the previous one's output shape; returns the last output shape."""
    shape = input_shape
    for layer in layers:
        layer.build(shape)
        shape = layer.compute_output_shape(shape)
    return shape


def chain_output_shape(layers, input_shape) -> tuple:
    """The output shape of `layers` applied one after another to `input_shape`."""
    shape = input_shape
    for layer in layers:
        shape = layer.compute_output_shape(shape)
    return shape


def _layers_in(value, prefix: str):
    """(name, layer) for every Keras layer nested in lists, tuples and dicts of `value`, depth first."""
    if isinstance(value, keras.layers.Layer):
        yield prefix, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _layers_in(item, f"{prefix}_{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _layers_in(item, f"{prefix}_{index}")
