"""Detection post-processing: hand-built NMS cases, thresholds, clipping, tf.function, Model Garden v2 parity."""

import math

import numpy as np
import pytest
import tensorflow as tf

from spinenet_tf.detection import anchors as anchors_lib
from spinenet_tf.detection import postprocess

# Zero box codes decode to the anchors themselves, so the anchors are the candidate boxes.
ANCHORS = tf.constant([[0, 0, 10, 10],  # B0
                       [0, 0, 10, 5],  # B1: IoU(B0) = 50 / 100 = 0.5 exactly -> suppressed by B0 (MG: IoU >= 0.5)
                       [0, 20, 10, 30]], tf.float32)  # B2: disjoint from both
OFF = -10.0  # sigmoid(-10) = 4.5e-5, below the 0.05 score threshold


def _logit(p):
    return math.log(p / (1 - p))


def _run(logits, **kwargs):
    cls_outputs = tf.constant([logits], tf.float32)
    return postprocess.generate_detections(cls_outputs, tf.zeros([1, 3, 4]), ANCHORS, **kwargs)


def test_two_overlapping_boxes_of_one_class():
    out = _run([[2.0, OFF], [1.0, OFF], [OFF, 0.0]])
    assert out["num_detections"].numpy().tolist() == [2]
    # B1 (score sigmoid(1)) is gone: same class as B0 and IoU 0.5. Sorted by score: B0 (sigmoid(2)), B2 (0.5).
    np.testing.assert_allclose(out["boxes"].numpy()[0, :2], [[0, 0, 10, 10], [0, 20, 10, 30]])
    np.testing.assert_allclose(out["scores"].numpy()[0, :2], [1 / (1 + math.exp(-2)), 0.5], rtol=1e-6)
    np.testing.assert_array_equal(out["classes"].numpy()[0, :2], [0, 1])
    # Rows past num_detections are zeros; shapes are padded to max_detections.
    assert out["boxes"].shape == (1, 100, 4) and out["classes"].dtype == tf.int32
    assert not out["boxes"].numpy()[0, 2:].any() and not out["scores"].numpy()[0, 2:].any()


def test_per_class_versus_class_agnostic():
    logits = [[2.0, OFF], [OFF, 1.0], [OFF, OFF]]  # B0 class 0, B1 class 1: they overlap with IoU 0.5
    assert _run(logits)["num_detections"].numpy().tolist() == [2]  # different classes: both kept
    agnostic = _run(logits, class_agnostic=True)
    assert agnostic["num_detections"].numpy().tolist() == [1]
    np.testing.assert_array_equal(agnostic["classes"].numpy()[0, :1], [0])


def test_iou_below_threshold_keeps_both():
    # At iou_threshold 0.6, IoU 0.5 no longer suppresses.
    assert _run([[2.0, OFF], [1.0, OFF], [OFF, OFF]], iou_threshold=0.6)["num_detections"].numpy().tolist() == [2]


def test_score_threshold_and_max_detections():
    out = _run([[_logit(0.04), OFF], [OFF, _logit(0.06)], [OFF, OFF]])
    np.testing.assert_allclose(out["scores"].numpy()[0, :2], [0.06, 0.0], rtol=1e-5)
    out = _run([[2.0, OFF], [OFF, 1.0], [OFF, 0.5]], max_detections=2)
    assert out["num_detections"].numpy().tolist() == [2] and out["scores"].shape == (1, 2)


def test_boxes_are_clipped_to_the_image():
    anchors = tf.constant([[-5.0, -5.0, 5.0, 5.0], [15.0, 10.0, 30.0, 40.0]])
    out = postprocess.generate_detections(tf.constant([[[3.0], [2.0]]]), tf.zeros([1, 2, 4]), anchors,
                                          image_shape=(20, 32))
    np.testing.assert_allclose(out["boxes"].numpy()[0, :2], [[0, 0, 5, 5], [15, 10, 20, 32]])


def test_skip_class_zero_reports_channel_indices():
    # Channel 0 (COCO's unused background slot in MG) is ignored even with the highest scores.
    out = _run([[5.0, 2.0], [5.0, OFF], [5.0, OFF]], skip_class_zero=True)
    assert out["num_detections"].numpy().tolist() == [1]
    np.testing.assert_array_equal(out["classes"].numpy()[0, :2], [1, 0])


def test_runs_under_tf_function_with_fixed_batch():
    image_size, num_anchors, num_classes = (64, 64), 9, 3
    anchors = anchors_lib.generate_anchors(3, 5, 3, [0.5, 1.0, 2.0], 3.0, image_size)
    sizes = anchors_lib.feature_sizes(3, 5, image_size)
    specs = ({level: tf.TensorSpec([2, h, w, num_anchors * num_classes]) for level, (h, w) in sizes.items()},
             {level: tf.TensorSpec([2, h, w, num_anchors * 4]) for level, (h, w) in sizes.items()})

    @tf.function(input_signature=specs)
    def detect(cls_outputs, box_outputs):
        return postprocess.generate_detections(cls_outputs, box_outputs, anchors, image_size, max_detections=20)

    inputs = [{level: tf.random.normal(spec.shape) for level, spec in group.items()} for group in specs]
    out = detect(*inputs)
    assert out["boxes"].shape == (2, 20, 4) and out["num_detections"].shape == (2,)
    for agnostic in (False, True):
        concrete = tf.function(lambda c, b, agnostic=agnostic: postprocess.generate_detections(
            c, b, anchors, image_size, class_agnostic=agnostic)).get_concrete_function(*specs)
        assert concrete.structured_outputs["scores"].shape == (2, 100)


@pytest.mark.oracle
@pytest.mark.parametrize("class_agnostic", [False, True])
@pytest.mark.parametrize("pre_nms_top_k,logit_mean", [(5000, -4.0), (300, -4.0), (5000, -9.0)])
def test_matches_model_garden_v2(class_agnostic, pre_nms_top_k, logit_mean):
    from official.vision.modeling.layers import detection_generator
    image_size, num_anchors, num_classes, batch = (128, 160), 9, 5, 2
    anchors = anchors_lib.generate_anchors(3, 7, 3, [0.5, 1.0, 2.0], 3, image_size)
    sizes = anchors_lib.feature_sizes(3, 7, image_size)
    rng = np.random.default_rng(0)
    # logit_mean -9 leaves fewer than 100 boxes above 0.05, so padding is compared too.
    cls_outputs = {level: tf.constant(rng.normal(logit_mean, 2, (batch, h, w, num_anchors * num_classes)),
                                      tf.float32) for level, (h, w) in sizes.items()}
    box_outputs = {level: tf.constant(rng.normal(0, 0.3, (batch, h, w, num_anchors * 4)), tf.float32)
                   for level, (h, w) in sizes.items()}
    generator = detection_generator.MultilevelDetectionGenerator(
        nms_version="v2", pre_nms_top_k=pre_nms_top_k, use_class_agnostic_nms=class_agnostic)
    mg_anchors = {str(level): tf.tile(tf.reshape(anchors[level], [1, h, w, num_anchors * 4]), [batch, 1, 1, 1])
                  for level, (h, w) in sizes.items()}
    expected = generator({str(k): v for k, v in box_outputs.items()}, {str(k): v for k, v in cls_outputs.items()},
                         mg_anchors, tf.constant([image_size] * batch, tf.float32))

    # MG drops score channel 0 and adds 1 to the class ids: skip_class_zero does the same.
    ours = postprocess.generate_detections(cls_outputs, box_outputs, anchors,
                                           tf.constant([image_size] * batch), pre_nms_top_k=pre_nms_top_k,
                                           class_agnostic=class_agnostic, skip_class_zero=True)
    num = expected["num_detections"].numpy()
    np.testing.assert_array_equal(ours["num_detections"].numpy(), num)
    assert 0 < num.min()
    for i, n in enumerate(num):
        np.testing.assert_allclose(ours["scores"].numpy()[i, :n], expected["detection_scores"].numpy()[i, :n],
                                   rtol=1e-6)
        np.testing.assert_allclose(ours["boxes"].numpy()[i, :n], expected["detection_boxes"].numpy()[i, :n],
                                   rtol=1e-6, atol=1e-4)
        np.testing.assert_array_equal(ours["classes"].numpy()[i, :n], expected["detection_classes"].numpy()[i, :n])


def test_decoding_and_class_agnostic_nms_convert_to_tflite_builtins():
    # The per-class path uses tf.image.combined_non_max_suppression, which TFLite only runs through Select TF ops;
    # on-device per-class NMS goes through the TFLite_Detection_PostProcess op instead
    # (Model Garden's `official/vision/modeling/layers/detection_generator.py`, nms_version='tflite').
    image_size = (32, 32)
    anchors = anchors_lib.concat_anchors(anchors_lib.generate_anchors(3, 4, 1, [1.0], 4.0, image_size))
    specs = [tf.TensorSpec([1, anchors.shape[0], 2]), tf.TensorSpec([1, anchors.shape[0], 4])]

    @tf.function(input_signature=specs)
    def detect(cls_outputs, box_outputs):
        return postprocess.generate_detections(cls_outputs, box_outputs, anchors, image_size, class_agnostic=True,
                                               max_detections=10)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([detect.get_concrete_function()], detect)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    assert converter.convert()
