"""Serving modules: the `tf.function`s a SavedModel exposes for a `RetinaNet`, a `MaskRCNN` or a `Classifier`.

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
Mask R-CNN signatures add (Model Garden's `detection_masks`, official/vision/serving/detection.py):
    detection_masks    float32 [B, K, M, M]  mask probabilities of each detection's class in its box's frame (M x M
                                             cells tiling `detection_boxes`; M = 28); rows past num_detections are 0
Classification signatures return `logits` and `probabilities` (softmax), float32 `[B, num_classes]`.

TensorFlow only (the modules are `tf.Module`s for `tf.saved_model.save`).
"""

from __future__ import annotations

import tensorflow as tf

from spinenet_tf.data import classification_input, detection_input
from spinenet_tf.detection import box_ops, mask_ops


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
        return self.box_outputs(self._model.detect(inputs), image_info)[0]

    @staticmethod
    def box_outputs(detections: dict, image_info: tf.Tensor) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
        """(the detection outputs with boxes in original pixels, clipped; the same boxes unclipped)."""
        unclipped = box_ops.original_pixels(detections["boxes"], image_info)
        original = tf.tile(image_info[:, 0], [1, 2])[:, None, :]
        boxes = tf.clip_by_value(unclipped, 0.0, original)
        valid = tf.range(tf.shape(boxes)[1])[None, :] < detections["num_detections"][:, None]
        return {"detection_boxes": tf.where(valid[..., None], boxes, 0.0),
                "detection_scores": tf.cast(detections["scores"], tf.float32),
                "detection_classes": tf.cast(detections["classes"], tf.int32),
                "num_detections": tf.cast(detections["num_detections"], tf.int32),
                "image_info": image_info}, unclipped

    def serve_images(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return self.detect(*self._preprocess_batch(images))

    def serve_image_bytes(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        return self.detect(*self._decode_batch(image_bytes))


class InstanceSegmentationModule(DetectionModule):
    """Serving functions of a `MaskRCNN`: the detection outputs plus `detection_masks` (module docstring).

    The model clips its boxes to the padded input, Model Garden's to the scaled image; boxes that reach into the
    padding are clipped to the original image here, and their masks resampled into the clipped box's frame
    (`reframe_masks`), so a mask pasted at its `detection_boxes` covers the same pixels as the model's mask pasted
    at the model's box. Masks of boxes inside the image are the model's, unchanged.
    """

    def detect(self, inputs: tf.Tensor, image_info: tf.Tensor) -> dict[str, tf.Tensor]:
        model_outputs = self._model(inputs, training=False)
        outputs, unclipped = self.box_outputs(model_outputs, image_info)
        masks = reframe_masks(tf.cast(model_outputs["masks"], tf.float32), unclipped, outputs["detection_boxes"])
        valid = tf.range(tf.shape(masks)[1])[None, :] < outputs["num_detections"][:, None]
        return {**outputs, "detection_masks": tf.where(valid[..., None, None], masks, 0.0)}


def reframe_masks(masks: tf.Tensor, boxes: tf.Tensor, frames: tf.Tensor) -> tf.Tensor:
    """Box-frame masks resampled into other boxes: bilinear samples at the frames' cell centres.

    A mask's `M x M` cells tile its box (cell (i, j) centred at `ymin + (i + 0.5) * h / M`, ...), as the mask head
    and `mask_ops.paste_masks` place them; sample positions outside the box are clamped to its edge cells (the
    sampler is `mask_ops.bilinear_sample`, as `paste_masks`'s). When a frame equals its box the mask comes back
    unchanged.

    Args:
        masks: float32 `[B, D, M, M]` in the frames of `boxes`.
        boxes: `[B, D, 4]` ymin, xmin, ymax, xmax of the masks' frames.
        frames: `[B, D, 4]` the new frames (any pixels, same units as `boxes`).

    Returns:
        float32 `[B, D, M, M]`.
    """
    size = masks.shape[-1]
    masks = tf.cast(masks, tf.float32)
    boxes, frames = tf.cast(boxes, tf.float32), tf.cast(frames, tf.float32)

    def cells(start, stop, new_start, new_stop):   # the frames' cell centres in the boxes' cell index coordinates
        centres = mask_ops.cell_centres(new_start, new_stop - new_start, size)   # [B, D, M]
        length = tf.maximum(stop - start, 1e-6)[..., None]
        return tf.reshape((centres - start[..., None]) / length * size - 0.5, [-1, size])

    rows = cells(boxes[..., 0], boxes[..., 2], frames[..., 0], frames[..., 2])
    cols = cells(boxes[..., 1], boxes[..., 3], frames[..., 1], frames[..., 3])
    sampled = mask_ops.bilinear_sample(tf.reshape(masks, [-1, size, size]), rows, cols)
    return tf.reshape(sampled, tf.shape(masks))


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
    """The serving module for a `RetinaNet`, a `MaskRCNN` or a `Classifier`.

    Raises:
        TypeError: For any other model.
    """
    from spinenet_tf.classification import Classifier
    from spinenet_tf.detection.maskrcnn.model import MaskRCNN
    from spinenet_tf.detection.retinanet import RetinaNet

    if isinstance(model, RetinaNet):
        return DetectionModule(model)
    if isinstance(model, MaskRCNN):
        return InstanceSegmentationModule(model)
    if isinstance(model, Classifier):
        return ClassificationModule(model)
    raise TypeError(f"cannot export a {type(model).__name__}: expected a RetinaNet, a MaskRCNN or a Classifier")
