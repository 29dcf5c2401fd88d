"""`RetinaNet` on a SpineNet backbone (Lin et al., arXiv:1708.02002; SpineNet, arXiv:1912.05027 §5.1), or on a
ResNet with an FPN decoder (the paper's R50-FPN baseline, Table 3), as Model Garden's `retinanet_model.py` composes
backbone -> decoder -> head (SpineNet's decoder is the identity, so it has none here).

The model's call returns raw head outputs flattened to the anchor layout: `cls_outputs` `[B, N, num_classes]`
logits and `box_outputs` `[B, N, 4]` box codes, N being all anchors of P3..P7. `fit` trains it on targets from
`spinenet_tf.detection.targets.assign_targets` (the data pipeline computes them, as Model Garden's parser does);
`predict` and `detect` return decoded, padded detections. TensorFlow backend only (the ops are exportable to
SavedModel and TFLite).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from spinenet_tf.detection import anchors as anchors_lib
from spinenet_tf.detection import losses, postprocess
from spinenet_tf.detection.retinanet_head import RetinaNetHead
from spinenet_tf.layers import keras_fit
from spinenet_tf.layers.tracking import CheckpointCollections


@keras.saving.register_keras_serializable(package="spinenet_tf")
class FlattenLevels(keras.layers.Layer):
    """`{level: [B, H, W, A * K]}` -> `[B, N, K]` in the anchor layout (`anchors.flatten_levels`)."""

    def __init__(self, last_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.last_dim = last_dim

    def call(self, outputs):
        return anchors_lib.flatten_levels(outputs, self.last_dim)

    def compute_output_shape(self, input_shape):
        count = 0
        for shape in input_shape.values():
            if None in shape[1:]:
                return (shape[0], None, self.last_dim)
            count += shape[1] * shape[2] * shape[3] // self.last_dim
        return (next(iter(input_shape.values()))[0], count, self.last_dim)

    def get_config(self):
        return {**super().get_config(), "last_dim": self.last_dim}


@keras.saving.register_keras_serializable(package="spinenet_tf")
class RetinaNet(CheckpointCollections, keras.Model):
    """RetinaNet: backbone P3..P7 -> shared class/box subnets -> anchors -> focal/Huber losses or detections.

    Args:
        backbone: A `SpineNet` / `SpineNetMobile` with a fixed input shape (its levels become the head's), or a
            `ResNet` with a `decoder`.
        num_classes: Class channels of the head (91 for Model Garden's COCO heads, whose channel 0 is unused).
        num_convs, num_filters, use_separable_conv, head_activation: Head settings (see `RetinaNetHead`).
        num_scales, aspect_ratios, anchor_size: Anchors per level: num_scales octave scales x aspect ratios, base
            size anchor_size * stride.
        focal_alpha, focal_gamma, huber_delta, box_loss_weight: Loss settings (Model Garden's SpineNet recipe).
        weight_decay: L2 penalty `weight_decay / 2 * sum(kernel**2)` over every conv/dense kernel, added to the loss
            (Model Garden's `l2(weight_decay / 2)` regularizers).
        score_threshold, pre_nms_top_k, iou_threshold, max_detections, class_agnostic_nms, skip_class_zero:
            Decoding settings (see `postprocess.generate_detections`).
        decoder: None (the backbone's endpoints feed the head), or a layer turning the backbone's outputs into the
            pyramid the head reads (an `FPN`; its min_level..max_level become the head's).

    Example:
        >>> model = build_detector("retinanet-spinenet-mobile-49xs", num_classes=3, input_shape=(256, 256, 3))
        >>> model.compile(optimizer="sgd")      # the loss is the model's own
        >>> detections = model.predict(images)  # {"boxes", "scores", "classes", "num_detections"}
    """

    def __init__(self, backbone, num_classes: int, num_convs: int = 4, num_filters: int = 256,
                 use_separable_conv: bool = False, head_activation: str = "swish", num_scales: int = 3,
                 aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0), anchor_size: float = 3.0,
                 focal_alpha: float = 0.25, focal_gamma: float = 1.5, huber_delta: float = 0.1,
                 box_loss_weight: float = 50.0, weight_decay: float = 0.0, score_threshold: float = 0.05,
                 pre_nms_top_k: int = 5000, iou_threshold: float = 0.5, max_detections: int = 100,
                 class_agnostic_nms: bool = False, skip_class_zero: bool = False, decoder=None, **kwargs):
        if num_classes < 1:
            raise ValueError(f"num_classes={num_classes}: must be >= 1")
        height, width = backbone.image_shape[:2]
        if height is None or width is None:
            raise ValueError("RetinaNet needs a backbone with a fixed input size (anchors depend on it)")
        pyramid = backbone if decoder is None else decoder  # what the head's levels are
        for side, size in (("height", height), ("width", width)):
            if size % 2 ** pyramid.max_level:  # a SpineNet backbone checks this itself; a ResNet only for its C5
                raise ValueError(f"input {side} {size} is not divisible by {2 ** pyramid.max_level} (2**max_level, "
                                 f"max_level={pyramid.max_level})")
        # === Layers ===
        self.backbone = backbone
        self.decoder = decoder
        self.anchor_generator = anchors_lib.AnchorGenerator(pyramid.min_level, pyramid.max_level, num_scales,
                                                            aspect_ratios, anchor_size)
        self.head = RetinaNetHead(num_classes, self.anchor_generator.anchors_per_location, pyramid.min_level,
                                  pyramid.max_level, num_convs, num_filters, use_separable_conv, head_activation,
                                  backbone.norm_momentum, backbone.norm_epsilon, backbone.use_sync_bn,
                                  name="retinanet_head")
        # === Functional model ===
        inputs = keras.Input(shape=backbone.image_shape, name="image")
        features = backbone(inputs)
        class_outputs, box_outputs = self.head(features if decoder is None else decoder(features))
        outputs = {"cls_outputs": FlattenLevels(num_classes, name="flatten_cls")(class_outputs),
                   "box_outputs": FlattenLevels(4, name="flatten_box")(box_outputs)}
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        # === Config ===
        self.num_classes = num_classes
        self.num_convs = num_convs
        self.num_filters = num_filters
        self.use_separable_conv = use_separable_conv
        self.head_activation = head_activation
        self.num_scales = num_scales
        self.aspect_ratios = tuple(float(r) for r in aspect_ratios)
        self.anchor_size = float(anchor_size)
        self.loss_config = dict(focal_alpha=focal_alpha, focal_gamma=focal_gamma, huber_delta=huber_delta,
                                box_loss_weight=box_loss_weight)
        self.weight_decay = weight_decay
        self.decode_config = dict(score_threshold=score_threshold, pre_nms_top_k=pre_nms_top_k,
                                  iou_threshold=iou_threshold, max_detections=max_detections,
                                  class_agnostic=class_agnostic_nms, skip_class_zero=skip_class_zero)
        self.image_size = (height, width)
        # Anchors are fixed by the input size: kept as a NumPy constant, not a weight.
        self.anchor_boxes = np.concatenate(
            [a.numpy() for _, a in sorted(self.anchor_generator(self.image_size).items())], axis=0)
        self.loss_trackers = {name: keras.metrics.Mean(name=name) for name in ("cls_loss", "box_loss", "l2_loss")}

    # === Training ===
    def compile(self, optimizer="sgd", loss="auto", **kwargs):
        """The loss is the model's own (focal + Huber + L2); `loss` must stay "auto"."""
        if loss not in ("auto", None):
            raise ValueError("RetinaNet computes its own loss; do not pass `loss` to compile()")
        super().compile(optimizer=optimizer, **kwargs)
        keras_fit.build_slots(self)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Focal + Huber losses on `y` (the dict of `assign_targets`, batched), plus L2 weight decay."""
        if y is None:
            raise ValueError("RetinaNet.fit needs targets: y = assign_targets(anchors, boxes, classes) per batch")
        detection = losses.retinanet_loss(y, tf.cast(y_pred["cls_outputs"], tf.float32),
                                          tf.cast(y_pred["box_outputs"], tf.float32), **self.loss_config)
        l2_loss = self.l2_loss()
        self.loss_trackers["cls_loss"].update_state(detection["cls_loss"])
        self.loss_trackers["box_loss"].update_state(detection["box_loss"])
        self.loss_trackers["l2_loss"].update_state(l2_loss)
        return detection["loss"] + l2_loss

    def l2_loss(self) -> tf.Tensor:
        """weight_decay / 2 * sum of squared conv and dense kernels (not biases, not batch norm)."""
        return keras_fit.l2_loss(self.trainable_weights, self.weight_decay)

    # === Inference ===
    def detect(self, images, training=False) -> dict[str, tf.Tensor]:
        """Images `[B, H, W, 3]` (normalised as in training) -> padded detections (see `decode`)."""
        return self.decode(self(images, training=training))

    def decode(self, outputs) -> dict[str, tf.Tensor]:
        """Raw outputs -> `boxes` `[B, K, 4]` (ymin, xmin, ymax, xmax in input pixels), `scores`, `classes`,
        `num_detections`; K = max_detections."""
        return postprocess.generate_detections(tf.cast(outputs["cls_outputs"], tf.float32),
                                               tf.cast(outputs["box_outputs"], tf.float32),
                                               tf.constant(self.anchor_boxes), self.image_size, **self.decode_config)

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self.detect(x)

    # === Config ===
    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "backbone": keras.saving.serialize_keras_object(self.backbone), "num_classes": self.num_classes,
                "num_convs": self.num_convs, "num_filters": self.num_filters,
                "use_separable_conv": self.use_separable_conv, "head_activation": self.head_activation,
                "num_scales": self.num_scales, "aspect_ratios": list(self.aspect_ratios),
                "anchor_size": self.anchor_size, **self.loss_config, "weight_decay": self.weight_decay,
                **{k: v for k, v in self.decode_config.items() if k != "class_agnostic"},
                "class_agnostic_nms": self.decode_config["class_agnostic"],
                "decoder": None if self.decoder is None else keras.saving.serialize_keras_object(self.decoder)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("backbone", "decoder"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
