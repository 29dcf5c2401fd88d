"""`make demo`: RetinaNet SpineNet-Mobile-49XS trained from scratch on the built-in shapes data, on CPU.

    python -m spinenet_tf.demo [--model_dir=runs/demo] [--epochs=3] [--train_examples=1000]

Generates the data (no download), trains with a progress bar, evaluates COCO AP on the validation split, prints a
summary table and writes `predictions.png` (validation images with predicted boxes; ground truth in thin white)
and `metrics.json` into --model_dir. A run killed half-way resumes from its last epoch (Keras BackupAndRestore).
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags, logging

_MODEL_DIR = flags.DEFINE_string("model_dir", "runs/demo", "Where checkpoints, metrics.json and predictions.png go.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 256, "Square input size; a multiple of 128.")
_TRAIN_EXAMPLES = flags.DEFINE_integer("train_examples", 1000, "Generated training images.")
_VAL_EXAMPLES = flags.DEFINE_integer("val_examples", 200, "Generated validation images.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Images per step.")
_EPOCHS = flags.DEFINE_integer("epochs", 3, "Passes over the training images (3 x 1000 fits ~10 min on 2 cores).")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 2e-3, "Peak AdamW learning rate (cosine decay after warm-up).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of weights and augmentation.")

MODEL = "retinanet-spinenet-mobile-49xs"


def _datasets(parser, image_size: int):
    import tensorflow as tf

    from spinenet_tf.data import builtin_shapes

    size = (image_size, image_size)
    train = builtin_shapes.as_dataset("train", num_examples=_TRAIN_EXAMPLES.value, image_size=size).cache()
    train = (train.shuffle(512, seed=_SEED.value).map(parser.train_fn, num_parallel_calls=tf.data.AUTOTUNE)
             .batch(_BATCH_SIZE.value, drop_remainder=True).prefetch(tf.data.AUTOTUNE))
    val = builtin_shapes.as_dataset("validation", num_examples=_VAL_EXAMPLES.value, image_size=size).cache()
    val_batches = (val.map(parser.eval_fn, num_parallel_calls=tf.data.AUTOTUNE).batch(_BATCH_SIZE.value)
                   .prefetch(tf.data.AUTOTUNE))
    return train, val, val_batches


def _write_predictions(model, parser, val, class_names, path: str, count: int = 8) -> None:
    from spinenet_tf import visualization
    from spinenet_tf.data import detection_input

    pictures = []
    for example in val.take(count):
        image = example["image"].numpy()
        inputs, labels = parser.eval_fn(example)
        detections = {k: v.numpy()[0] for k, v in model.detect(inputs[None]).items()}
        info = labels["image_info"].numpy()
        boxes = detection_input.to_original_pixels(detections["boxes"], info)
        n = int(detections["num_detections"])
        pictures.append(visualization.draw_detections(image, boxes[:n], detections["classes"][:n],
                                                      detections["scores"][:n], class_names,
                                                      ground_truth=labels["gt_boxes"].numpy()[
                                                          labels["gt_classes"].numpy() >= 0]))
    visualization.image_grid(pictures, columns=4).save(path)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _IMAGE_SIZE.value % 128:
        raise app.UsageError(f"--image_size={_IMAGE_SIZE.value}: must be a multiple of 128 (2**max_level)")
    import keras

    import spinenet_tf
    from spinenet_tf.data import builtin_shapes, detection_input
    from spinenet_tf.evaluation import coco

    start = time.time()
    keras.utils.set_random_seed(_SEED.value)
    os.makedirs(_MODEL_DIR.value, exist_ok=True)
    class_names = builtin_shapes.CLASS_NAMES
    size = _IMAGE_SIZE.value
    model = spinenet_tf.build_detector(MODEL, num_classes=len(class_names), input_shape=(size, size))
    config = detection_input.DetectionInputConfig((size, size), max_instances=16, aug_scale_min=0.8,
                                                  aug_scale_max=1.25)
    parser = detection_input.DetectionInput(config, model.anchor_boxes)
    train, val, val_batches = _datasets(parser, size)

    steps = _EPOCHS.value * (_TRAIN_EXAMPLES.value // _BATCH_SIZE.value)
    schedule = keras.optimizers.schedules.CosineDecay(0.0, steps, warmup_target=_LEARNING_RATE.value,
                                                      warmup_steps=min(200, steps // 10))
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4, clipnorm=10.0))
    logging.info("training %s on %d built-in images for %d epochs (%d steps)", MODEL, _TRAIN_EXAMPLES.value,
                 _EPOCHS.value, steps)
    backup = keras.callbacks.BackupAndRestore(os.path.join(_MODEL_DIR.value, "backup"))
    history = model.fit(train, epochs=_EPOCHS.value, callbacks=[backup], verbose=1)
    train_seconds = time.time() - start

    metrics = coco.evaluate(model, val_batches)
    model.save(os.path.join(_MODEL_DIR.value, "model.keras"))
    _write_predictions(model, parser, val, class_names, os.path.join(_MODEL_DIR.value, "predictions.png"))
    summary = {"model": MODEL, "image_size": size, "train_examples": _TRAIN_EXAMPLES.value,
               "epochs": _EPOCHS.value, "final_loss": float(history.history["loss"][-1]),
               "train_seconds": round(train_seconds, 1), "total_seconds": round(time.time() - start, 1),
               **{name: round(value, 4) for name, value in metrics.items()}}
    with open(os.path.join(_MODEL_DIR.value, "metrics.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print("\n| metric | value |\n| --- | --- |")
    for key in ("model", "image_size", "train_examples", "epochs", "final_loss", "AP", "AP50", "AP75", "APs",
                "APm", "APl", "train_seconds", "total_seconds"):
        print(f"| {key} | {summary[key]} |")
    print(f"\nwrote {_MODEL_DIR.value}/metrics.json, predictions.png, model.keras")


if __name__ == "__main__":
    app.run(main)
