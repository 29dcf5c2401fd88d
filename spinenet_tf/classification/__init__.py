"""Image classification on SpineNet: the paper's multi-level head and the `Classifier` model."""

from spinenet_tf.classification.classifier import Classifier
from spinenet_tf.classification.head import ClassificationHead

__all__ = ["ClassificationHead", "Classifier"]
