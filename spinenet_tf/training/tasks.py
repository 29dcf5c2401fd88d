"""Tasks: what differs between training a detector and a classifier (model, input pipelines, loss, metrics).

`loop.run` drives either through the same four calls: `build_model`, `train_dataset(input_context)`,
`losses(model, images, labels)` and `evaluate(model)`. Detection follows Model Garden's RetinaNet task
(`official/vision/tasks/retinanet.py`: focal + Huber + L2, COCO metrics); instance segmentation its Mask R-CNN task
(`official/vision/tasks/maskrcnn.py`: RPN + Fast R-CNN + mask losses + L2, COCO box and mask AP); classification
its image classification task (softmax cross-entropy with label smoothing, top-1 / top-5).
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from spinenet_tf import models
from spinenet_tf.data import detection_input, sources
from spinenet_tf.detection import losses as detection_losses
from spinenet_tf.detection.maskrcnn import training as maskrcnn_training
from spinenet_tf.layers import keras_fit
from spinenet_tf.training.config import TrainConfig


class Task:
    """Shared parts: the data sources (parsed once, so bad flags fail before any work) and dataset plumbing."""

    kind = ""

    def __init__(self, config: TrainConfig):
        self.config = config
        data_dir = config.input.tfds_data_dir
        self.train_source = (sources.parse(config.input.train_data, flag="--train_data", data_dir=data_dir)
                             if config.input.train_data else None)
        self.eval_source = (sources.parse(config.input.eval_data, flag="--eval_data", data_dir=data_dir)
                            if config.input.eval_data else None)
        self.train_stats = None
        self.eval_stats = None
        self.class_names: tuple[str, ...] = ()

    def _load(self, source, training: bool, input_context=None):
        return sources.load(source, self.kind, training=training, seed=self.config.runtime.seed,
                            input_context=input_context, num_classes=self.config.num_classes or None)

    def num_classes(self) -> int:
        """--num_classes, or the class count of the training (else eval) data."""
        if self.config.num_classes:
            return self.config.num_classes
        source = self.train_source or self.eval_source
        info = self._load(source, training=False).info
        if not info.num_classes:
            raise ValueError(f"--num_classes: {source.spec} does not say how many classes it has; set the flag")
        return info.num_classes

    def model_weight_decay(self) -> float:
        """The L2 term the model adds to its loss: the optimizer's weight decay for SGD (MG's l2 regularizers);
        none for AdamW, whose decay is decoupled (`models.loss_weight_decay`)."""
        return self.config.model_config().weight_decay

    def _build_model(self, num_classes: int) -> keras.Model:
        """The model of the config's model fields (`models.build_model`) with `num_classes` head classes."""
        return models.build_model(dataclasses.replace(self.config.model_config(), num_classes=num_classes))

    def train_dataset(self, input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
        """Endless, shuffled, augmented batches of (images, labels) for one replica (or the whole batch)."""
        config = self.config
        batch_size = (input_context.get_per_replica_batch_size(config.batch_size) if input_context
                      else config.batch_size)
        loaded = self._load(self.train_source, training=True, input_context=input_context)
        self.train_stats = loaded.stats
        dataset = loaded.dataset
        if config.input.cache:
            dataset = dataset.cache()
        dataset = dataset.repeat().shuffle(config.input.shuffle_buffer, seed=config.runtime.seed)
        dataset = dataset.map(self.train_fn, num_parallel_calls=tf.data.AUTOTUNE)
        return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

    def eval_dataset(self) -> tf.data.Dataset:
        loaded = self._load(self.eval_source, training=False)
        self.eval_stats = loaded.stats
        self.class_names = loaded.info.class_names
        dataset = loaded.dataset
        if self.config.input.num_eval_examples:
            dataset = dataset.take(self.config.input.num_eval_examples)
        dataset = dataset.map(self.eval_fn, num_parallel_calls=tf.data.AUTOTUNE)
        return dataset.batch(self.config.eval_batch_size).prefetch(tf.data.AUTOTUNE)


class DetectionTask(Task):
    """RetinaNet: anchor targets from the input pipeline, focal + Huber + L2 loss, COCO box metrics."""

    kind = "detection"

    def build_model(self, num_classes: int):
        self._build_detector(num_classes)
        self.train_fn, self.eval_fn = self.parser.train_fn, self.parser.eval_fn
        return self.model

    def _build_detector(self, num_classes: int, **input_settings) -> None:
        """The registry detector (SGD's L2 in the model) and its `DetectionInput` parser, from the flags."""
        config = self.config
        self.model = self._build_model(num_classes)
        input_config = detection_input.DetectionInputConfig(
            config.image_size, max_instances=config.input.max_instances, aug_scale_min=config.input.aug_scale_min,
            aug_scale_max=config.input.aug_scale_max, horizontal_flip=config.input.horizontal_flip,
            **input_settings)
        self.parser = detection_input.DetectionInput(input_config, self.model.anchor_boxes)

    def losses(self, model, images, labels, training: bool = True) -> dict[str, tf.Tensor]:
        outputs = model(images, training=training)
        terms = detection_losses.retinanet_loss(labels, tf.cast(outputs["cls_outputs"], tf.float32),
                                                tf.cast(outputs["box_outputs"], tf.float32), **model.loss_config)
        l2 = model.l2_loss()
        return {"loss": terms["loss"] + l2, "cls_loss": terms["cls_loss"], "box_loss": terms["box_loss"],
                "l2_loss": l2}

    def evaluate(self, model, dataset) -> dict[str, float]:
        from spinenet_tf.evaluation import coco  # pycocotools only when evaluating

        evaluator = coco.COCOEvaluator()
        # One trace for every batch, the last (smaller) one included: the batch dimension is left unknown.
        images_spec = dataset.element_spec[0]
        detect = tf.function(model.detect, input_signature=[
            tf.TensorSpec((None, *images_spec.shape[1:]), images_spec.dtype)])
        count = 0
        for images, labels in dataset:
            evaluator.update(detect(images), labels)
            count += int(images.shape[0])
        metrics = evaluator.result()
        logging.info("evaluated %d images: AP %.4f, AP50 %.4f, AP75 %.4f", count, metrics["AP"], metrics["AP50"],
                     metrics["AP75"])
        return {**metrics, "num_images": count}


class InstanceSegmentationTask(DetectionTask):
    """Mask R-CNN: ground-truth boxes, classes, box-aligned masks and RPN targets from the input pipeline (the
    RoI samples are built in the step, from the proposals), the two-stage + mask loss, COCO box and mask AP.

    Class 0 is the background: dataset labels are shifted by one (`label_offset=1`), so the head has the data's
    classes + 1 (`--num_classes` counts the background too, e.g. 81 for COCO's 80 categories).
    """

    kind = "instance_segmentation"

    def _load(self, source, training: bool, input_context=None):
        # Labels must fit the head after the shift by one.
        data_classes = self.config.num_classes - 1 if self.config.num_classes else None
        loaded = sources.load(source, self.kind, training=training, seed=self.config.runtime.seed,
                              input_context=input_context, num_classes=data_classes)
        # A label past the head would fail deep inside the mask head's gather (builtin:shapes keeps every label).
        known = loaded.info.num_classes
        if data_classes is not None and known and known > data_classes:
            raise ValueError(f"--num_classes={self.config.num_classes}: {source.flag}={source.spec} has {known} "
                             f"classes; the Mask R-CNN head needs {known + 1} (the data's classes + the background 0)")
        return loaded

    def num_classes(self) -> int:
        """--num_classes, or the data's class count + 1 (the background)."""
        if self.config.num_classes:
            return self.config.num_classes
        return super().num_classes() + 1

    def build_model(self, num_classes: int):
        self._build_detector(num_classes, label_offset=1, include_masks=True)
        self.train_fn, self.eval_fn = self.parser.instance_train_fn, self.parser.eval_fn
        return self.model

    def losses(self, model, images, labels, training: bool = True) -> dict[str, tf.Tensor]:
        return maskrcnn_training.compute_losses(model, images, labels, training=training)

    def evaluate(self, model, dataset) -> dict[str, float]:
        from spinenet_tf.evaluation import coco  # pycocotools only when evaluating

        evaluator = coco.COCOEvaluator(include_masks=True)
        predict = tf.function(lambda images: model(images, training=False))
        count = 0
        for images, labels in dataset:
            outputs = predict(images)
            evaluator.update({key: outputs[key] for key in ("boxes", "scores", "classes", "num_detections",
                                                            "masks")}, labels)
            count += int(images.shape[0])
        metrics = evaluator.result()
        logging.info("evaluated %d images: box AP %.4f, mask AP %.4f, mask AP50 %.4f", count, metrics["AP"],
                     metrics["mask_AP"], metrics["mask_AP50"])
        return {**metrics, "num_images": count}


class ClassificationTask(Task):
    """Classifier: softmax cross-entropy with label smoothing (+ L2 for SGD), top-1 / top-5 accuracy."""

    kind = "classification"

    def build_model(self, num_classes: int):
        from spinenet_tf.data import classification_input

        config = self.config
        self.model = self._build_model(num_classes)
        parser = classification_input.ClassificationInput(config.image_size,
                                                          horizontal_flip=config.input.horizontal_flip)
        self.train_fn, self.eval_fn = parser.train_fn, parser.eval_fn
        return self.model

    def losses(self, model, images, labels, training: bool = True) -> dict[str, tf.Tensor]:
        logits = tf.cast(model(images, training=training), tf.float32)
        one_hot = tf.one_hot(tf.cast(labels, tf.int32), model.num_classes)
        cross_entropy = tf.reduce_mean(keras.losses.categorical_crossentropy(
            one_hot, logits, from_logits=True, label_smoothing=model.label_smoothing))
        l2 = keras_fit.l2_loss(model.trainable_weights, self.model_weight_decay())
        return {"loss": cross_entropy + l2, "cross_entropy": cross_entropy, "l2_loss": l2}

    def evaluate(self, model, dataset) -> dict[str, float]:
        predict = tf.function(lambda images: model(images, training=False))
        hits1 = hits5 = count = 0
        for images, labels in dataset:
            logits = predict(images).numpy()
            labels = labels.numpy().reshape(-1)
            top5 = np.argsort(-logits, axis=-1)[:, :5]
            hits1 += int(np.sum(top5[:, 0] == labels))
            hits5 += int(np.sum(np.any(top5 == labels[:, None], axis=-1)))
            count += len(labels)
        if not count:
            raise ValueError(f"--eval_data={self.eval_source.spec}: no examples to evaluate")
        metrics = {"top1": hits1 / count, "top5": hits5 / count, "num_images": count}
        logging.info("evaluated %d images: top-1 %.4f, top-5 %.4f", count, metrics["top1"], metrics["top5"])
        return metrics


def make_task(config: TrainConfig) -> Task:
    return {"detection": DetectionTask, "instance_segmentation": InstanceSegmentationTask,
            "classification": ClassificationTask}[config.task](config)
