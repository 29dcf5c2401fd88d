"""The SpineNet paper's classification head (arXiv:1912.05027 §5.5 and appendix; the authors' tensorflow/tpu
`modeling/architecture/heads.py::ClassificationHead` with `aggregation: 'all'`).

P3..P7 are nearest-up-sampled to P3's size and averaged, then global average pooling, dropout and a linear layer
(kernel N(0, 0.01)) give the logits. NOTE: Model Garden's `ClassificationModel` classifies from the top endpoint
only; we follow the paper.
"""

from __future__ import annotations

import keras
from keras import ops

from spinenet_tf.layers.resample import NearestUpsampling
from spinenet_tf.layers.tracking import CheckpointCollections


@keras.saving.register_keras_serializable(package="spinenet_tf")
class ClassificationHead(CheckpointCollections, keras.layers.Layer):
    """Multi-level fuse -> global average pool -> dropout -> dense logits.

    Args:
        num_classes: Number of output logits.
        min_level, max_level: The feature levels to fuse.
        dropout_rate: Dropout before the linear layer.

    Call:
        features: {level: [B, H_l, W_l, C]} with the same C on every level. Returns logits [B, num_classes].
    """

    def __init__(self, num_classes: int, min_level: int = 3, max_level: int = 7, dropout_rate: float = 0.0,
                 **kwargs):
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes={num_classes}: must be >= 1")
        self.num_classes = num_classes
        self.min_level = min_level
        self.max_level = max_level
        self.dropout_rate = dropout_rate
        self.upsample = [NearestUpsampling(2 ** (level - min_level), name=f"upsample_l{level}")
                         for level in range(min_level + 1, max_level + 1)]
        self.dropout = keras.layers.Dropout(dropout_rate, name="dropout")
        self.dense = keras.layers.Dense(num_classes, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                                        name="logits")

    def build(self, input_shape):
        self.dense.build((None, input_shape[self.min_level][-1]))

    def call(self, features, training=None):
        fused = features[self.min_level]
        for level, upsample in zip(range(self.min_level + 1, self.max_level + 1), self.upsample):
            fused = fused + upsample(features[level])
        fused = fused / float(self.max_level - self.min_level + 1)
        pooled = ops.mean(fused, axis=(1, 2))
        return self.dense(self.dropout(pooled, training=training))

    def compute_output_shape(self, input_shape):
        return (input_shape[self.min_level][0], self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "min_level": self.min_level,
                "max_level": self.max_level, "dropout_rate": self.dropout_rate}
