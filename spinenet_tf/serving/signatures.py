"""Serving modules: the `tf.function`s a SavedModel exposes for a `RetinaNet` or a `Classifier`.

Follows Model Garden's `official/vision/serving/export_base.py` split (tf-models-official 2.20.0): one function
from decoded image tensors, one from encoded image bytes, both running the training-time preprocessing inside the
graph (`detection_input.resize_and_pad` without jitter, then `normalize_image`), so callers send raw pixels.

Detection signatures (`serving_default` takes uint8 `[B, H, W, 3]` of any size; `serve_image_bytes` takes a string
`[B]` of JPEG or PNG files) return:
    detection_boxes    float32 [B, K, 4]  ymin, xmin, ymax, xmax in ORIGINAL image pixels, clipped to the image
    detection_scores   float32 [B, K]     sigmoid probabilities, descending; rows past num_detections are 0
    detection_classes  int32   [B, K]     the head's class channel (dataset label + label_offset)
    num_detections     int32   [B]
    image_info         float32 [B, 4, 2]  original (h, w), scaled (h, w), (y, x) scale, (y, x) offset (MG layout)
Classification signatures return `logits` and `probabilities` (softmax), float32 `[B, num_classes]`.

TensorFlow only (the modules are `tf.Module`s for `tf.saved_model.save`).
"""

from __future__ import annotations

import tensorflow as tf

from spinenet_tf.data import classification_input, detection_input


def image_size_of(model) -> tuple[int, int]:
    """(H, W) of a Keras model's fixed image input."""
    height, width = model.input_shape[1:3]
    return int(height), int(width)


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
    """One JPEG / PNG / BMP / GIF (first frame) string -> uint8 [H, W, 3] RGB."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def hold_model(module: tf.Module, model) -> None:
    """Keeps `model` on `module` without `tf.Module` tracking it, and tracks its variables instead.

    Tracked as an attribute, the Keras 3 model would be saved with all its layers' traced call functions (slow, and
    their int-keyed level dicts cannot be encoded); its variables must be tracked explicitly, as
    `keras.export.ExportArchive` does.
    """
    object.__setattr__(module, "_model", model)
    module.model_variables = [v.value for v in model.variables]


class _ServingModule(tf.Module):
    """Holds the Keras model (untracked) and its variables (tracked) for `tf.saved_model.save`."""

    def __init__(self, model, name: str | None = None):
        super().__init__(name=name)
        hold_model(self, model)
        self.image_size = image_size_of(model)

    def preprocess(self, image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """uint8 [H, W, 3] -> (normalised model input, image_info [4, 2]) as the evaluation pipeline."""
        raise NotImplementedError

    def _map(self, fn, elements: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        height, width = self.image_size
        return tf.map_fn(fn, elements, fn_output_signature=(
            tf.TensorSpec([height, width, 3], tf.float32), tf.TensorSpec([4, 2], tf.float32)))

    def _preprocess_batch(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return self._map(self.preprocess, images)

    def _decode_batch(self, encoded: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return self._map(lambda data: self.preprocess(decode_image(data)), encoded)

    def signatures(self) -> dict:
        """{"serving_default": uint8 images, "serve_image_bytes": encoded strings} concrete functions."""
        images = tf.function(self.serve_images, input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
        encoded = tf.function(self.serve_image_bytes, input_signature=[
            tf.TensorSpec([None], tf.string, name="image_bytes")])
        return {"serving_default": images.get_concrete_function(),
                "serve_image_bytes": encoded.get_concrete_function()}


class DetectionModule(_ServingModule):
    """Serving functions of a `RetinaNet` (see the module docstring for the outputs).

    Example:
        module = DetectionModule(model)
        tf.saved_model.save(module, path, signatures=module.signatures())
    """

    def preprocess(self, image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Resize keeping the aspect ratio, pad bottom/right, normalise (`DetectionInput.eval_fn`)."""
        resized, info = detection_input.resize_and_pad(image, self.image_size)
        return detection_input.normalize_image(resized), info

    def detect(self, inputs: tf.Tensor, image_info: tf.Tensor) -> dict[str, tf.Tensor]:
        """Normalised, padded model inputs `[B, H, W, 3]` and their `image_info` -> outputs in original pixels."""
        detections = self._model.detect(inputs)
        # Inverse of `transform_boxes` (as `detection_input.to_original_pixels`), in TF for the graph.
        scale = tf.tile(image_info[:, 2], [1, 2])[:, None, :]
        offset = tf.tile(image_info[:, 3], [1, 2])[:, None, :]
        boxes = (detections["boxes"] + offset) / scale
        original = tf.tile(image_info[:, 0], [1, 2])[:, None, :]
        boxes = tf.clip_by_value(boxes, 0.0, original)
        valid = tf.range(tf.shape(boxes)[1])[None, :] < detections["num_detections"][:, None]
        return {"detection_boxes": tf.where(valid[..., None], boxes, 0.0),
                "detection_scores": detections["scores"],
                "detection_classes": tf.cast(detections["classes"], tf.int32),
                "num_detections": tf.cast(detections["num_detections"], tf.int32),
                "image_info": image_info}

    def serve_images(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return self.detect(*self._preprocess_batch(images))

    def serve_image_bytes(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        return self.detect(*self._decode_batch(image_bytes))


class ClassificationModule(_ServingModule):
    """Serving functions of a `Classifier`: `logits` and `probabilities`.

    Images are preprocessed as `ClassificationInput.eval_fn`: centre crop of 87.5% of the shorter side, bilinear
    resize to the model input, normalise.
    """

    def preprocess(self, image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        height, width = self.image_size
        inputs, _ = classification_input.ClassificationInput((height, width)).eval_fn({"image": image, "label": 0})
        return inputs, tf.zeros([4, 2])   # no boxes to map back

    def classify(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        logits = tf.cast(self._model(inputs, training=False), tf.float32)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1)}

    def serve_images(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return self.classify(self._preprocess_batch(images)[0])

    def serve_image_bytes(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        return self.classify(self._decode_batch(image_bytes)[0])


def serving_module(model) -> _ServingModule:
    """The serving module for a `RetinaNet` or a `Classifier`.

    Raises:
        TypeError: For any other model.
    """
    from spinenet_tf.classification import Classifier
    from spinenet_tf.detection.retinanet import RetinaNet

    if isinstance(model, RetinaNet):
        return DetectionModule(model)
    if isinstance(model, Classifier):
        return ClassificationModule(model)
    raise TypeError(f"cannot export a {type(model).__name__}: expected a RetinaNet or a Classifier")
