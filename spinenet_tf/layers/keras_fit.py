"""What our models' own Keras `compile()` / `fit()` share: the L2 weight-decay term of their loss and the
optimizer slots created at `compile()`.

These live with the models, not in `spinenet_tf.training`: a model's `compute_loss` and `compile` use them, and
the models sit below the training loop.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def l2_loss(weights, weight_decay: float) -> tf.Tensor:
    """weight_decay / 2 * sum of squared kernels among `weights` (conv, depthwise and dense; not biases or batch
    norm): Model Garden's `l2(weight_decay / 2)` kernel regularizers, summed."""
    kernels = [w for w in weights if w.path.endswith("kernel")]
    if not weight_decay or not kernels:
        return tf.constant(0.0)
    # tf.nn.l2_loss (sum / 2, one op, as tf_keras's L2 regularizer): a cheaper loss and gradient than
    # reduce_sum(square) (timing in bench/README.md, Mask R-CNN section).
    return weight_decay * tf.add_n([tf.nn.l2_loss(tf.cast(w, tf.float32)) for w in kernels])


def build_slots(model: keras.Model) -> None:
    """Creates the compiled optimizer's slot variables now.

    Created inside the first traced train step instead, they make Keras trace that step twice, which makes the
    first `fit` step much slower (docs/training_performance.md). `compile()` of our models calls this.
    """
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
