"""The factories every SpineNet layer builds from: `conv2d`, `batch_norm` and `activation_layer`, and the mixin
`NormActivationMixin` that makes a layer's batch norms and activations from its own settings.

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
    """Keras BatchNormalization computed by one fused op (`FusedBatchNormV3`) in training and in inference.

    Inference: Keras 3 normalises with separate Rsqrt/Sub/Mul/Add ops, which TensorFlow's graph optimiser cannot
    fold into the convolution before it; with the fused op, conv + batch norm + activation become one oneDNN kernel,
    as for Model Garden's tf_keras layers (`bench/backbone_latency.py` measures the gain; bench/README.md).

    Training: Keras 3 builds moments, normalisation and their gradients from ~20 small ops per layer; the fused op
    and its fused gradient make the train graph smaller and the step faster (docs/training_performance.md). The
    moving statistics follow Keras 3, not tf_keras: Keras 3 averages the *biased* batch variance, while
    `FusedBatchNormV3` returns the Bessel-corrected one (n / (n - 1), n = B*H*W), which tf_keras' fused layer
    (Model Garden's) averages as is. The correction is undone here, so the layer gives the same numbers on both
    paths and with `synchronized=True` (whose cross-replica moments are biased too).

    Masks, non-NHWC or non-4D inputs, renorm, `center=False` / `scale=False`, and synchronized training take Keras'
    own path. Same variables, same results.
    """

    def _fusable(self, inputs, mask) -> bool:
        return (mask is None and len(inputs.shape) == 4 and self.axis in (3, -1) and self.center and self.scale
                and not self.renorm and keras.backend.backend() == "tensorflow"
                and inputs.dtype in (tf.float32, tf.float16, tf.bfloat16))

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        gamma, beta = tf.cast(self.gamma, tf.float32), tf.cast(self.beta, tf.float32)
        if not (training and self.trainable):
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs, gamma, beta, mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon, is_training=False)
            return tf.cast(outputs, self.compute_dtype)
        if self.synchronized:  # cross-replica moments need Keras' all-reduce
            return super().call(inputs, training=training, mask=mask)
        # The op averages the moving statistics itself (exponential_avg_factor) but with the Bessel-corrected
        # variance: dividing the moving variance by c = (n - 1) / n going in and multiplying by c coming out gives
        # Keras 3's momentum * moving + (1 - momentum) * biased variance.
        unbessel = _unbessel_factor(inputs)
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, gamma, beta, mean=self.moving_mean, variance=self.moving_variance / unbessel,
            epsilon=self.epsilon, is_training=True, exponential_avg_factor=1.0 - self.momentum)
        self.moving_mean.assign(mean)
        self.moving_variance.assign(variance * unbessel)
        return tf.cast(outputs, self.compute_dtype)


def _unbessel_factor(inputs: tf.Tensor):
    """(n - 1) / n for the n = B*H*W values per channel, with TensorFlow's kernel's guard n - 1 >= 1."""
    if inputs.shape[:-1].is_fully_defined():
        count = inputs.shape[:-1].num_elements()
        return max(count - 1, 1) / count
    count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), tf.float32)
    return tf.maximum(count - 1.0, 1.0) / count


def batch_norm(*, momentum: float = 0.99, epsilon: float = 1e-3, synchronized: bool = False,
               name: str) -> keras.layers.BatchNormalization:
    """BatchNormalization; `synchronized=True` averages statistics across replicas under a tf.distribute strategy."""
    return BatchNormalization(momentum=momentum, epsilon=epsilon, synchronized=synchronized, name=name)


def check_activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r} is not one of {', '.join(ACTIVATIONS)}")
    return name


@keras.saving.register_keras_serializable(package="spinenet_tf")
def swish(x):
    """x * sigmoid(x), Keras' silu, differentiated by autodiff.

    Keras' silu is `tf.nn.silu`, whose custom gradient recomputes the sigmoid and builds the gradient of its `beta`
    too (~8 more graph nodes per activation in a train step): the Mobile-49XS demo's train graph has 12,519 nodes with
    this, 15,265 with silu, and its first step costs ~18% less CPU. The forward values are silu's, bit for bit.
    """
    return x * tf.sigmoid(x)


def activation_layer(name: str, *, layer_name: str | None = None) -> keras.layers.Activation:
    """An Activation layer; "swish" is x * sigmoid(x) (`swish`), "hard_swish" x * relu6(x + 3) / 6."""
    check_activation(name)
    return keras.layers.Activation(swish if name == "swish" else name, name=layer_name)


class NormActivationMixin:
    """`_bn(name)` and `_act(name)` for a layer or model that stores its `activation`, `norm_momentum`,
    `norm_epsilon` and `use_sync_bn` with `_set_norm_activation`: the blocks, the resampling connections, the
    backbones and the heads all make their batch norms and activations here, from their own settings. Only the
    sublayer is made; its name is the caller's."""

    def _set_norm_activation(self, activation: str, norm_momentum: float, norm_epsilon: float,
                             use_sync_bn: bool) -> None:
        """Stores the settings `_bn` and `_act` read (and `get_config` reports); checks the activation's name."""
        self.activation = check_activation(activation)
        self.norm_momentum = norm_momentum
        self.norm_epsilon = norm_epsilon
        self.use_sync_bn = use_sync_bn

    def _bn(self, name: str) -> keras.layers.BatchNormalization:
        return batch_norm(momentum=self.norm_momentum, epsilon=self.norm_epsilon, synchronized=self.use_sync_bn,
                          name=name)

    def _act(self, name: str) -> keras.layers.Activation:
        return activation_layer(self.activation, layer_name=name)
