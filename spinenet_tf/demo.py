"""`make demo`: RetinaNet SpineNet-Mobile-49XS trained from scratch on the built-in shapes data, on CPU.

    python -m spinenet_tf.demo --flagfile=configs/detection_retinanet_spinenet_mobile_49xs_shapes128.flags \
        --model_dir=runs/demo

The training flags are `spinenet_tf.train`'s and the recipe is the flagfile's. Generates the data (no download),
trains with a progress bar (`spinenet_tf.training.loop`, so a killed demo resumes from its last checkpoint), evaluates
COCO AP on the validation split, writes `predictions.png` (validation images with predicted boxes; ground truth in
thin white), exports the int8 TFLite detector and evaluates it with LiteRT, then prints a summary table and writes
it to `demo_summary.json` in --model_dir.
"""

from __future__ import annotations

import json
import os
import time

from absl import flags

from spinenet_tf import cli, train
from spinenet_tf.training import loop
from spinenet_tf.training.config import TrainConfig

_PICTURE_IMAGES = flags.DEFINE_integer("picture_images", 8, "Validation images drawn into predictions.png.")
_EXPORT_TFLITE = flags.DEFINE_bool("export_tflite", True, "Export the int8 TFLite detector and evaluate it.")

SUMMARY_FILE = "demo_summary.json"


def _write_predictions(task, model, path: str, count: int) -> None:
    from spinenet_tf.data import sources
    from spinenet_tf.detection import box_ops
    from spinenet_tf.visualization.detections import draw_detections, image_grid

    source = sources.parse(task.config.input.eval_data, flag="--eval_data")
    loaded = sources.load(source, "detection", training=False)
    pictures = []
    for example in loaded.dataset.take(count):
        inputs, labels = task.eval_fn(example)
        detections = {k: v.numpy()[0] for k, v in model.detect(inputs[None]).items()}
        info = labels["image_info"].numpy()
        n = int(detections["num_detections"])
        boxes = box_ops.to_original_pixels(detections["boxes"][:n], info)
        truth = labels["gt_boxes"].numpy()[labels["gt_classes"].numpy() >= 0]
        pictures.append(draw_detections(example["image"].numpy(), boxes, detections["classes"][:n],
                                        detections["scores"][:n], loaded.info.class_names, ground_truth=truth))
    image_grid(pictures, columns=min(4, len(pictures))).save(path)


def _export_and_evaluate(task, config: TrainConfig, num_calibration_images: int = 200) -> dict:
    """The int8 TFLite detector (NMS op, metadata), calibrated on the training data, scored by LiteRT on the same
    validation images as the Keras model."""
    from spinenet_tf.litert import evaluate, interpreter
    from spinenet_tf.serving import exporter

    start = time.time()
    path = exporter.export(exporter.ExportConfig(
        output=os.path.join(config.model_dir, "detector_int8.tflite"), model_dir=config.model_dir, format="tflite",
        quantization="int8", representative_data=config.input.train_data,
        num_calibration_images=num_calibration_images))
    export_seconds = time.time() - start
    eval_dataset = task.eval_dataset().unbatch().batch(1)
    # XNNPACK and two threads, as on a phone: the export's own int8 ranges keep XNNPACK's int8 kernels working, and
    # the default class-agnostic NMS is exact with any thread count (tflite/README.md, "Known problems").
    model = interpreter.TFLiteModel(path, num_threads=2)
    metrics = evaluate.evaluate(model, eval_dataset.as_numpy_iterator())
    return {"tflite": os.path.basename(path), "tflite_MB": round(os.path.getsize(path) / 2**20, 2),
            "tflite_int8_AP": round(metrics["AP"], 4), "tflite_int8_AP50": round(metrics["AP50"], 4),
            "export_seconds": round(export_seconds, 1)}


def run(config: TrainConfig, picture_images: int, export_tflite: bool) -> dict:
    """Trains (or resumes) and evaluates, draws, exports; returns the summary."""
    start = time.time()
    metrics = loop.run(config)
    train_seconds = time.time() - start
    config = TrainConfig.load(config.model_dir)  # num_classes resolved by the run
    task, model = loop.trained_model(config)
    summary = {"model": config.model, "image_size": "x".join(map(str, config.image_size)),
               "train_data": config.input.train_data, "train_steps": config.train_steps,
               "batch_size": config.batch_size, "train_and_eval_seconds": round(train_seconds, 1),
               **{name: round(metrics[name], 4) for name in ("AP", "AP50", "AP75", "APs", "APm", "APl")}}
    picture = os.path.join(config.model_dir, "predictions.png")
    _write_predictions(task, model, picture, picture_images)
    if export_tflite:
        summary.update(_export_and_evaluate(task, config))
    summary["total_seconds"] = round(time.time() - start, 1)
    with open(os.path.join(config.model_dir, SUMMARY_FILE), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def main() -> None:
    config = train.config_from_flags().validate()
    if config.task != "detection" or config.mode != "train_and_eval":
        cli.fail("the demo trains and evaluates a detector: --task=detection --mode=train_and_eval")
    summary = run(config, _PICTURE_IMAGES.value, _EXPORT_TFLITE.value)
    print("\n| | |\n| --- | --- |")
    for key, value in summary.items():
        print(f"| {key} | {value} |")
    print(f"\nwrote {config.model_dir}/{SUMMARY_FILE}, predictions.png, checkpoints/")


if __name__ == "__main__":
    flags.mark_flags_as_required(["task", "model", "model_dir"])
    cli.run(main, train.ERRORS)
