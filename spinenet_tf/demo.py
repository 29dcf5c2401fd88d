"""`make demo`: RetinaNet SpineNet-Mobile-49XS trained from scratch on the built-in shapes data, on CPU.

    python -m spinenet_tf.demo --flagfile=configs/detection_retinanet_spinenet_mobile_49xs_shapes128.flags \
        --model_dir=runs/demo

The training flags are `spinenet_tf.train`'s and the recipe is the flagfile's. Generates the data (no download),
trains with a progress bar (`spinenet_tf.training.loop`, so a killed demo resumes from its last checkpoint), evaluates
COCO AP on the validation split, writes `predictions.png` (validation images, enlarged, with the detections scoring at
least --picture_score_threshold and the ground truth in thin white), exports the int8 TFLite detector and evaluates
it with LiteRT, then prints a summary table and writes it to `demo_summary.json` in --model_dir.

Summary rows. Every AP is COCO AP of the final checkpoint's weights on the same validation images (`eval_images`):
- `keras_float_AP`, `_AP50`: the float Keras model as training evaluates it (per-class NMS; `eval_metrics.json`),
  the number the recipe's AP goal is about.
- `keras_float_fast_nms_AP`, `_AP50`: the same model with class-agnostic NMS over each box's best class, which is
  what the exported detector's NMS op computes (the export's default `--nms=fast`). Per-class NMS scores higher,
  by 0.03 AP on export/README.md's model, so this, not `keras_float_AP`, is the float twin of the .tflite.
- `tflite_int8_AP`, `_AP50`: the int8 .tflite run by LiteRT; `int8_minus_float_AP`, `_AP50` = tflite_int8 minus
  keras_float_fast_nms: what int8 quantization costs, nothing else.
`train_seconds` is training alone (`loop.TrainTimes`: no evaluation, no export), `total_seconds` this command's wall
time (training included when it trained).
"""

from __future__ import annotations

import json
import os
import time

from absl import flags

from spinenet_tf import checkpoints, cli, train
from spinenet_tf.training import loop
from spinenet_tf.training.config import TrainConfig

_PICTURE_IMAGES = flags.DEFINE_integer("picture_images", 8, "Validation images drawn into predictions.png.")
_PICTURE_SCORE_THRESHOLD = flags.DEFINE_float("picture_score_threshold", 0.5,
                                              "predictions.png draws the detections scoring at least this.")
_EXPORT_TFLITE = flags.DEFINE_bool("export_tflite", True, "Export the int8 TFLite detector and evaluate it.")

SUMMARY_FILE = "demo_summary.json"
TFLITE_FILE = "detector_int8.tflite"


def _write_predictions(task, model, path: str, count: int, score_threshold: float) -> None:
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
        valid = labels["gt_classes"].numpy() >= 0
        pictures.append(draw_detections(example["image"].numpy(), boxes, detections["classes"][:n],
                                        detections["scores"][:n], loaded.info.class_names,
                                        score_threshold=score_threshold, ground_truth=labels["gt_boxes"].numpy()[valid],
                                        ground_truth_classes=labels["gt_classes"].numpy()[valid]))
    image_grid(pictures, columns=min(4, len(pictures)), spacing=8).save(path)


def _evaluate_fast_nms(task, model) -> dict:
    """COCO metrics of the Keras model decoding as the TFLite NMS op's fast NMS (class-agnostic over each box's best
    class), on `task.eval_dataset()`."""
    per_class = model.decode_config
    model.decode_config = {**per_class, "class_agnostic": True}
    try:
        return task.evaluate(model, task.eval_dataset())
    finally:
        model.decode_config = per_class


def _export_and_evaluate(task, config: TrainConfig, checkpoint: str, num_calibration_images: int = 200) -> dict:
    """The int8 TFLite detector (fast NMS op, metadata) of `checkpoint`, calibrated on the training data, scored by
    LiteRT on the validation images the Keras model was scored on (`task.eval_dataset()`, one image at a time)."""
    from spinenet_tf.litert import evaluate, interpreter
    from spinenet_tf.serving import exporter

    path = exporter.export(exporter.ExportConfig(
        output=os.path.join(config.model_dir, TFLITE_FILE), checkpoint=checkpoint, format="tflite",
        quantization="int8", nms="fast", representative_data=config.input.train_data,
        num_calibration_images=num_calibration_images))
    eval_dataset = task.eval_dataset().unbatch().batch(1)
    # XNNPACK and two threads, as on a phone: the export's own int8 ranges keep XNNPACK's int8 kernels working, and
    # the default class-agnostic NMS is exact with any thread count (tflite/README.md, "Known problems").
    model = interpreter.TFLiteModel(path, num_threads=2)
    metrics = evaluate.evaluate(model, eval_dataset.as_numpy_iterator())
    return {**metrics, "MB": os.path.getsize(path) / 2**20}


def run(config: TrainConfig, picture_images: int, export_tflite: bool, picture_score_threshold: float = 0.5) -> dict:
    """Trains (or resumes) and evaluates, draws, exports; returns the summary (see the module docstring)."""
    start = time.time()
    metrics = loop.run(config)  # the final evaluation, of the final checkpoint
    config = TrainConfig.load(config.model_dir)  # num_classes resolved by the run
    task, model = loop.trained_model(config)
    checkpoint = checkpoints.latest_checkpoint(config.model_dir)
    step = int(checkpoint.rsplit("-", 1)[1])
    if metrics["step"] != step:
        raise RuntimeError(f"the final evaluation is of step {metrics['step']}, the latest checkpoint {checkpoint}")
    train_seconds = {record["step"]: record["train_seconds"] for record in loop.read_train_times(config.model_dir)}
    summary = {"model": config.model, "image_size": "x".join(map(str, config.image_size)),
               "train_data": config.input.train_data, "train_steps": step, "batch_size": config.batch_size,
               "train_seconds": train_seconds.get(step), "eval_data": config.input.eval_data,
               "eval_images": metrics["num_images"]}
    _write_predictions(task, model, os.path.join(config.model_dir, "predictions.png"), picture_images,
                       picture_score_threshold)
    summary.update({f"keras_float_{name}": round(metrics[name], 4) for name in ("AP", "AP50")})
    if export_tflite:
        fast_nms = _evaluate_fast_nms(task, model)
        int8 = _export_and_evaluate(task, config, checkpoint)
        if not int8["num_images"] == fast_nms["num_images"] == metrics["num_images"]:
            raise RuntimeError(f"images scored: LiteRT {int8['num_images']}, Keras {fast_nms['num_images']} (fast NMS) "
                               f"and {metrics['num_images']} (training's evaluation); they must be the same")
        for prefix, values in (("keras_float_fast_nms", fast_nms), ("tflite_int8", int8)):
            summary.update({f"{prefix}_{name}": round(values[name], 4) for name in ("AP", "AP50")})
        summary.update({f"int8_minus_float_{name}": round(int8[name] - fast_nms[name], 4) for name in ("AP", "AP50")})
        summary["tflite_int8_MB"] = round(int8["MB"], 2)
    summary["total_seconds"] = round(time.time() - start, 1)
    with open(os.path.join(config.model_dir, SUMMARY_FILE), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def _format(key: str, value) -> str:
    """A summary value as the table shows it: APs to 4 decimals, the int8 - float gaps signed."""
    if key.startswith("int8_minus_float_"):
        return f"{value:+.4f}"
    if "_AP" in key:
        return f"{value:.4f}"
    return str(value)


def main() -> None:
    config = train.config_from_flags().validate()
    if config.task != "detection" or config.mode != "train_and_eval":
        cli.fail("the demo trains and evaluates a detector: --task=detection --mode=train_and_eval")
    summary = run(config, _PICTURE_IMAGES.value, _EXPORT_TFLITE.value, _PICTURE_SCORE_THRESHOLD.value)
    print("\n| | |\n| --- | --- |")
    for key, value in summary.items():
        print(f"| {key} | {_format(key, value)} |")
    tflite = f", {TFLITE_FILE}" if _EXPORT_TFLITE.value else ""
    print(f"\nwrote {config.model_dir}/{SUMMARY_FILE}, predictions.png{tflite}, checkpoints/; every COCO metric of "
          f"the float model: {loop.EVAL_METRICS_FILE}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["task", "model", "model_dir"])
    cli.run(main, train.ERRORS)
