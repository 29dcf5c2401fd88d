"""`Classifier`: a SpineNet backbone with the paper's classification head, trainable with `fit`.

Labels may be integer class ids ([B]) or one-hot / soft targets ([B, num_classes]); the default loss is softmax
cross-entropy with `label_smoothing` (0.1 in the paper's improved protocol, §5.5: stochastic depth, swish and
label smoothing).
"""

from __future__ import annotations

import keras
from keras import ops

from spinenet_tf.classification.head import ClassificationHead
from spinenet_tf.layers import keras_fit
from spinenet_tf.layers.tracking import CheckpointCollections


@keras.saving.register_keras_serializable(package="spinenet_tf")
class Classifier(CheckpointCollections, keras.Model):
    """Backbone -> multi-level head -> logits.

    Args:
        backbone: A built `SpineNet` / `SpineNetMobile` (fixed input shape).
        num_classes: Number of classes.
        dropout_rate: Dropout before the linear layer.
        label_smoothing: Used by the default loss (`compile(loss="auto")`).

    Example:
        >>> model = Classifier(build_backbone("spinenet-mobile-49xs", (128, 128, 3)), num_classes=10)
        >>> model.compile(optimizer="adam")       # softmax cross-entropy with label smoothing by default
    """

    def __init__(self, backbone, num_classes: int, dropout_rate: float = 0.0, label_smoothing: float = 0.0,
                 **kwargs):
        if num_classes < 1:
            raise ValueError(f"num_classes={num_classes}: must be >= 1")
        # === Layers ===
        self.backbone = backbone
        self.head = ClassificationHead(num_classes, backbone.min_level, backbone.max_level, dropout_rate,
                                       name="classification_head")
        # === Functional model ===
        inputs = keras.Input(shape=backbone.image_shape, name="image")
        logits = self.head(backbone(inputs))
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        # === Config ===
        self.num_classes = num_classes
        self.dropout_rate = dropout_rate
        self.label_smoothing = label_smoothing

    def compile(self, optimizer="sgd", loss="auto", metrics="auto", **kwargs):
        """Defaults: softmax cross-entropy with `label_smoothing`, top-1 and top-5 accuracy."""
        if loss == "auto":
            loss = self._cross_entropy
        if metrics == "auto":
            metrics = [_SparseOrDenseAccuracy(1, name="top1"), _SparseOrDenseAccuracy(5, name="top5")]
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)
        keras_fit.build_slots(self)

    def _cross_entropy(self, y_true, y_pred):
        y_true = _as_distribution(y_true, self.num_classes)
        return keras.losses.categorical_crossentropy(y_true, y_pred, from_logits=True,
                                                     label_smoothing=self.label_smoothing)

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "backbone": keras.saving.serialize_keras_object(self.backbone), "num_classes": self.num_classes,
                "dropout_rate": self.dropout_rate, "label_smoothing": self.label_smoothing}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


def _as_distribution(y_true, num_classes):
    """Integer labels ([B] or [B, 1]) to one-hot; distributions pass through."""
    if len(y_true.shape) == 1 or (len(y_true.shape) == 2 and y_true.shape[-1] == 1 and num_classes > 1):
        return ops.one_hot(ops.reshape(ops.cast(y_true, "int32"), (-1,)), num_classes)
    return ops.cast(y_true, "float32")


class _SparseOrDenseAccuracy(keras.metrics.Metric):
    """Top-k accuracy for integer or one-hot labels."""

    def __init__(self, k: int, **kwargs):
        super().__init__(**kwargs)
        self.k = k
        self.hits = self.add_variable((), initializer="zeros", name="hits")
        self.count = self.add_variable((), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = ops.argmax(_as_distribution(y_true, y_pred.shape[-1]), axis=-1)
        hit = keras.metrics.sparse_top_k_categorical_accuracy(labels, y_pred, k=self.k)
        self.hits.assign_add(ops.sum(ops.cast(hit, "float32")))
        self.count.assign_add(ops.cast(ops.shape(hit)[0], "float32"))

    def result(self):
        return self.hits / ops.maximum(self.count, 1.0)

    def reset_state(self):
        self.hits.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "k": self.k}
