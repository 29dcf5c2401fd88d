"""The two factories every SpineNet layer builds from: `conv2d` and `batch_norm`, plus `activation`.

Defaults are Model Garden's (`official/vision/modeling/layers/nn_blocks.py`): convolutions without bias,
'same' padding and the Keras `VarianceScaling` initializer (scale 1, fan-in, truncated normal); batch norm with
momentum 0.99 and epsilon 1e-3.
"""

from __future__ import annotations

import keras
import tensorflow as tf

ACTIVATIONS = ("relu", "swish", "hard_swish")


def conv2d(filters: int, kernel_size: int, strides: int = 1, *, name: str, use_bias: bool = False,
           kernel_initializer="variance_scaling", **kwargs) -> keras.layers.Conv2D:
    """A 'same'-padded Conv2D without bias unless asked (Model Garden's convention)."""
    return keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=use_bias,
                               kernel_initializer=kernel_initializer, name=name, **kwargs)


def depthwise_conv2d(kernel_size: int, strides: int = 1, *, name: str) -> keras.layers.DepthwiseConv2D:
    return keras.layers.DepthwiseConv2D(kernel_size, strides=strides, padding="same", use_bias=False,
                                        depthwise_initializer="variance_scaling", name=name)


@keras.saving.register_keras_serializable(package="spinenet_tf")
class BatchNormalization(keras.layers.BatchNormalization):
    """Keras BatchNormalization whose inference path is one fused op (`FusedBatchNormV3`).

    Keras 3 normalises in inference with separate Rsqrt/Sub/Mul/Add ops, which TensorFlow's graph optimiser cannot
    fold into the convolution before it; with the fused op, conv + batch norm + activation become one oneDNN kernel,
    as for Model Garden's tf_keras layers (measured in bench/backbone_latency.py: ~10% of SpineNet-49's CPU time).
    Training, masks and non-NHWC inputs take Keras' own path. Same variables, same results.
    """

    def call(self, inputs, training=None, mask=None):
        inference = not (training and self.trainable)
        if (not inference or mask is not None or len(inputs.shape) != 4 or self.axis not in (3, -1)
                or keras.backend.backend() != "tensorflow"):
            return super().call(inputs, training=training, mask=mask)
        outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
            inputs, tf.cast(self.gamma, tf.float32), tf.cast(self.beta, tf.float32),
            mean=tf.cast(self.moving_mean, tf.float32), variance=tf.cast(self.moving_variance, tf.float32),
            epsilon=self.epsilon, is_training=False)
        return outputs


def batch_norm(*, momentum: float = 0.99, epsilon: float = 1e-3, synchronized: bool = False,
               name: str) -> keras.layers.BatchNormalization:
    """BatchNormalization; `synchronized=True` averages statistics across replicas under a tf.distribute strategy."""
    return BatchNormalization(momentum=momentum, epsilon=epsilon, synchronized=synchronized, name=name)


def check_activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r} is not one of {', '.join(ACTIVATIONS)}")
    return name


def activation_layer(name: str, *, layer_name: str | None = None) -> keras.layers.Activation:
    """An Activation layer; "swish" is x * sigmoid(x) (Keras' silu), "hard_swish" x * relu6(x + 3) / 6."""
    check_activation(name)
    return keras.layers.Activation({"swish": "silu"}.get(name, name), name=layer_name)
