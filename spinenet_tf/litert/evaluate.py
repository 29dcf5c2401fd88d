"""COCO box metrics of a .tflite detector on a data source, with the evaluator training uses.

    python tflite/evaluate.py --model detector.tflite --data builtin:shapes:validation [--num_images 200]

Images go through the evaluation pipeline (`DetectionInput.eval_fn`: resize keeping the aspect ratio, pad,
normalise), the model's RATIO boxes are scaled to model-input pixels, and `coco.COCOEvaluator` maps them back to the
original image with `image_info`, exactly as `RetinaNet.detect` outputs are scored during training.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from spinenet_tf.litert import interpreter as interpreter_lib
from spinenet_tf.serving import tflite_input


def evaluate(model: interpreter_lib.TFLiteModel, dataset: Iterable, class_offset: int = 0,
             max_images: int | None = None) -> dict[str, float]:
    """COCO metrics of a detector .tflite with the NMS op.

    Args:
        model: The loaded model.
        dataset: (image [H, W, 3] or [1, H, W, 3] normalised, labels) pairs of `DetectionInput.eval_fn`, unbatched
            or batched by 1, at the model's input size.
        class_offset: Added to the model's class indices to give the labels' classes (1 for models exported from
            a head whose channel 0 is skipped, as Model Garden's COCO heads; else 0).
        max_images: Stop after this many images.

    Returns:
        {"AP", "AP50", ..., "num_images"}.
    """
    from spinenet_tf.evaluation import coco  # pycocotools only when evaluating

    if "detection_boxes" not in model.outputs:
        raise ValueError("evaluate needs a detector .tflite with the NMS op (outputs detection_boxes, ...)")
    evaluator = coco.COCOEvaluator()
    count = 0
    for image, labels in dataset:
        image = np.asarray(image)
        labels = {key: np.asarray(value) for key, value in labels.items()}
        if image.ndim == 3:
            labels = {key: value[None] for key, value in labels.items()}
        outputs = model(tflite_input.tflite_input_from_normalized(image))
        num_detections = outputs["num_detections"].astype(np.int64)
        # Rows past num_detections are not written by the NMS op (they hold stale or non-finite values).
        valid = np.arange(outputs["detection_scores"].shape[-1])[None] < num_detections[:, None]
        detections = {"boxes": interpreter_lib.ratio_to_pixels(np.where(valid[..., None], outputs["detection_boxes"],
                                                                        0.0), model.image_size),
                      "scores": np.where(valid, outputs["detection_scores"], 0.0),
                      "classes": np.where(valid, outputs["detection_classes"], 0.0).astype(np.int64) + class_offset,
                      "num_detections": num_detections}
        evaluator.update(detections, labels)
        count += 1
        if max_images and count >= max_images:
            break
    return {**evaluator.result(), "num_images": count}


def main() -> None:
    """`tflite/evaluate.py`: defines its flags only when run, so importing this module adds none."""
    from absl import flags

    from spinenet_tf import cli

    model_flag = flags.DEFINE_string("model", None, "The detector .tflite file (with the NMS op).")
    data_flag = flags.DEFINE_string("data", "builtin:shapes:validation", "Data source (spinenet_tf.data.sources).")
    num_images = flags.DEFINE_integer("num_images", 0, "Evaluate this many images (0 = all).")
    class_offset = flags.DEFINE_integer("class_offset", 0, "Added to the model's class indices (see evaluate()).")
    num_threads = flags.DEFINE_integer("num_threads", 2, "Interpreter threads.")
    flags.mark_flag_as_required("model")

    def run() -> None:
        model = interpreter_lib.TFLiteModel(model_flag.value, num_threads=num_threads.value)
        dataset = eval_dataset(data_flag.value, model.image_size)
        metrics = evaluate(model, dataset, class_offset.value, num_images.value or None)
        print("| metric | value |\n| --- | --- |")
        for name, value in metrics.items():
            print(f"| {name} | {value:.4f} |" if isinstance(value, float) else f"| {name} | {value} |")

    cli.run(run)  # a bad file or flag: one line `error: ...`, exit code 2


def eval_dataset(spec: str, image_size, flag: str = "--data"):
    """(normalised image, labels) pairs of a data source's examples at `image_size`, one image per element."""
    from spinenet_tf.data import detection_input, sources
    from spinenet_tf.serving import representative_data

    examples = sources.load(sources.parse(spec, flag=flag), "detection", training=False).dataset
    representative_data.check_examples(examples, "detection", flag, spec)
    parser = detection_input.DetectionInput(detection_input.DetectionInputConfig(tuple(image_size)),
                                            np.zeros([1, 4], np.float32))
    return examples.map(parser.eval_fn).as_numpy_iterator()
