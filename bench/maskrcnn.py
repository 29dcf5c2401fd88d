"""Mask R-CNN SpineNet-49 at 640x640: inference latency and training step time, ours beside Model Garden's, one run.

    python bench/maskrcnn.py                              # batch 1 and 2, 1 warm-up + 3 timed calls of each
    python bench/maskrcnn.py --batches=1 --iters=5 --no-train

How it is measured, the same way for both models:
- Model Garden's `MaskRCNNModel` (tf-models-official, `official.vision.modeling.factory.build_maskrcnn`, tf_keras)
  is built by tests/oracle.py, as in the parity tests, with the `maskrcnn-spinenet-49` registry row (SpineNet-49
  P3-P7, identity decoder, 1 x 256 RPN conv, 4 x 256 box convs + FC 1024, 4 x 256 mask convs, swish, 91 classes,
  anchor size 3, MG's default proposal and sampling settings, which ours share). Its batch-norm statistics and its
  small-initialised predictor kernels and class biases are redrawn, so scores are spread and boxes pass the score
  threshold as in a trained model, written as a checkpoint and loaded into ours with
  `spinenet_tf.convert.load_model_garden_checkpoint`, as in tests/detection/maskrcnn/model_test.py. Before timing,
  the RPN scores of every anchor must agree within 1e-4 relative, and the detection counts are printed.
- Inference: each model in `tf.function(jit_compile=False)` with a fixed `[B, 640, 640, 3]` signature,
  `training=False`, the whole inference path (proposals, box head, NMS, mask head); the call plus fetching
  `num_detections` is timed.
- Training: one SGD (momentum 0.9) step under `tf.function`: forward with `training=True`, the five Mask R-CNN
  losses + L2 (4e-5, MG's `l2(wd / 2)` regularizers), gradients, update. The same built-in-shapes images and ground
  truth (boxes, classes, 112x112 box-aligned masks from `DetectionInput.instance_train_fn`, no augmentation) go to
  both. Both input pipelines build the RPN targets per example (ours `instance_train_fn`, Model Garden's parser
  its `RpnAnchorLabeler`), so both are made before timing.
- `--warmup` untimed calls of each (after the first, tracing call: the agreement check for inference, one more
  for training), then `--iters` timed calls of each, alternating (ours, MG, MG, ours, ...), so
  both see the same background load. Reported: median wall ms and median CPU ms (`time.process_time`, all
  threads of this process) per call, and median(ours) / median(MG) (goal: ratio <= 1.0).

The machine is shared and a step takes seconds: the load-average line says how noisy the run was.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from backbone_latency import _load, machine_line, percentile_ms  # noqa: E402 (also puts tests/ on sys.path)

MODEL = "maskrcnn-spinenet-49"
SIZE = 640
NUM_CLASSES = 91
MAX_INSTANCES = 100  # MG's maskrcnn parser default
RTOL = 1e-4
CLASS_BIAS_STD = 3.0


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="1,2", help="comma-separated batch sizes (default 1,2)")
    parser.add_argument("--iters", type=int, default=3, help="timed calls per model and mode (default 3)")
    parser.add_argument("--warmup", type=int, default=0,
                        help="untimed calls per model after the tracing one (default 0)")
    parser.add_argument("--no-train", dest="train", action="store_false", help="inference only")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the inference images")
    args = parser.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    if args.iters < 1 or args.warmup < 0 or not args.batches or min(args.batches) < 1:
        parser.error("--iters must be >= 1, --warmup >= 0, --batches positive integers")
    return args


# --- the two models ------------------------------------------------------------------------------------------
def _spread_predictors(model, seed: int) -> None:
    """Redraws the small-initialised kernels (MG's heads: RPN conv 0.01 and predictors 1e-5, class 0.01, box 0.001)
    at unit output variance, and the class biases at std CLASS_BIAS_STD, so that boxes pass the 0.05 score threshold
    and class-wise NMS and the mask head see a detector's workload (without the biases every class scores ~1/91:
    zero detections, measured; with them, 100 per image)."""
    import numpy as np

    rng = np.random.default_rng(seed + 7)
    for variable in model.trainable_weights:
        shape = tuple(variable.shape)
        if len(shape) >= 2 and np.std(variable.numpy()) < 0.02:
            variable.assign(rng.normal(0.0, 1.0 / np.sqrt(np.prod(shape[:-1])), shape).astype(np.float32))
        elif "detection-scores/bias" in variable.name:
            variable.assign(rng.normal(0.0, CLASS_BIAS_STD, shape).astype(np.float32))


def build_pair(seed: int, checkpoint_dir: str):
    """(ours, MG, MG's task for its losses), same weights."""
    import tensorflow as tf
    import tf_keras
    from official.vision.configs import maskrcnn as maskrcnn_config
    from official.vision.tasks import maskrcnn as maskrcnn_task

    import oracle  # tests/oracle.py: Model Garden's Mask R-CNN of a registry row, as in the parity tests
    import spinenet_tf
    from spinenet_tf import convert, registry

    weight_decay = registry.MASKRCNN_DETECTORS[MODEL].weight_decay
    config = oracle.maskrcnn_config(MODEL, NUM_CLASSES, SIZE)
    mg = oracle.maskrcnn(MODEL, NUM_CLASSES, SIZE, l2_regularizer=tf_keras.regularizers.l2(weight_decay / 2))
    oracle.randomize_batch_norm(mg, seed)
    _spread_predictors(mg, seed)
    path = tf.train.Checkpoint(model=mg).write(os.path.join(checkpoint_dir, "mg"))
    ours = spinenet_tf.build_detector(MODEL, num_classes=NUM_CLASSES, input_shape=(SIZE, SIZE))
    copied = convert.load_model_garden_checkpoint(path, ours)
    if copied != len(ours.weights):
        raise AssertionError(f"{MODEL}: copied {copied} of {len(ours.weights)} variables")
    task = maskrcnn_task.MaskRCNNTask(maskrcnn_config.MaskRCNNTask(model=config))
    return ours, mg, task


def check_agreement(ours_fn, mg_fn, images) -> tuple[float, list, list]:
    """(max relative RPN score difference over all anchors, ours' and MG's detection counts); raises above RTOL."""
    import numpy as np
    import tensorflow as tf

    ours, mg = ours_fn(images), mg_fn(images)
    batch = images.shape[0]
    expected = tf.concat([tf.reshape(mg["rpn_scores"][str(level)], [batch, -1]) for level in range(3, 8)], 1).numpy()
    error = float(np.max(np.abs(ours["rpn_scores"].numpy()[..., 0] - expected)) / np.max(np.abs(expected)))
    if error >= RTOL:
        raise AssertionError(f"ours and Model Garden disagree: RPN scores relative error {error:.1e}")
    return error, ours["num_detections"].numpy().tolist(), mg["num_detections"].numpy().tolist()


def inference_functions(ours, mg, batch: int):
    import tensorflow as tf

    spec = [tf.TensorSpec([batch, SIZE, SIZE, 3], tf.float32)]
    image_shape = tf.constant([[SIZE, SIZE]] * batch, tf.float32)

    @tf.function(jit_compile=False, input_signature=spec)
    def ours_infer(images):
        return ours(images, training=False)

    @tf.function(jit_compile=False, input_signature=spec)
    def mg_infer(images):
        return mg(images, image_shape, training=False)

    return ours_infer, mg_infer


# --- training ------------------------------------------------------------------------------------------------
def training_batch(batch: int, anchors):
    """(images, our labels, MG's labels): built-in shapes at 640 through `instance_train_fn` (with our RPN
    targets of `anchors`), no augmentation; MG's RPN targets from its `RpnAnchorLabeler`."""
    import tensorflow as tf
    from official.vision.ops import anchor

    from spinenet_tf.data import builtin_shapes_dataset, detection_input

    config = detection_input.DetectionInputConfig((SIZE, SIZE), max_instances=MAX_INSTANCES, aug_scale_min=1.0,
                                                  aug_scale_max=1.0, horizontal_flip=False, include_masks=True,
                                                  label_offset=1)
    parser = detection_input.DetectionInput(config, anchors)  # builds our RPN targets, per example
    examples = builtin_shapes_dataset.as_dataset("train", batch, image_size=(SIZE, SIZE), with_masks=True)
    images, labels = next(iter(examples.map(parser.instance_train_fn).batch(batch)))
    anchor_boxes = anchor.build_anchor_generator(min_level=3, max_level=7, num_scales=3, aspect_ratios=[0.5, 1.0, 2.0],
                                                 anchor_size=3.0)(image_size=(SIZE, SIZE))
    labeler = anchor.RpnAnchorLabeler(0.7, 0.3, 256, 0.5)  # MG's maskrcnn parser defaults
    score_targets, box_targets = [], []
    for b in range(batch):
        real = labels["gt_classes"][b] >= 0
        scores, boxes = labeler.label_anchors(anchor_boxes, tf.boolean_mask(labels["gt_boxes"][b], real),
                                              tf.cast(tf.boolean_mask(labels["gt_classes"][b], real)[:, None],
                                                      tf.float32))
        score_targets.append(scores)
        box_targets.append(boxes)
    stack = lambda dicts: {key: tf.stack([d[key] for d in dicts]) for key in dicts[0]}  # noqa: E731
    mg_labels = {"image_info": labels["image_info"], "gt_boxes": labels["gt_boxes"],
                 "gt_classes": labels["gt_classes"], "gt_masks": labels["gt_masks"],
                 "anchor_boxes": {key: tf.stack([value] * batch) for key, value in anchor_boxes.items()},
                 "rpn_score_targets": stack(score_targets), "rpn_box_targets": stack(box_targets)}
    return images, labels, mg_labels


def training_functions(ours, mg, task):
    """(ours_step, mg_step): one SGD step each, returning the total loss."""
    import keras
    import tensorflow as tf
    import tf_keras

    from spinenet_tf.detection.maskrcnn import training as maskrcnn_training

    ours_optimizer = keras.optimizers.SGD(1e-4, momentum=0.9)
    mg_optimizer = tf_keras.optimizers.SGD(1e-4, momentum=0.9)
    ours_optimizer.build(ours.trainable_variables)

    @tf.function(jit_compile=False)
    def ours_step(images, labels):
        with tf.GradientTape() as tape:
            loss = maskrcnn_training.compute_losses(ours, images, labels, training=True)["loss"]
        variables = ours.trainable_variables
        ours_optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    @tf.function(jit_compile=False)
    def mg_step(images, labels):
        with tf.GradientTape() as tape:
            outputs = mg(images, image_shape=labels["image_info"][:, 1, :], anchor_boxes=labels["anchor_boxes"],
                         gt_boxes=labels["gt_boxes"], gt_classes=labels["gt_classes"], gt_masks=labels["gt_masks"],
                         training=True)
            outputs = tf.nest.map_structure(lambda x: tf.cast(x, tf.float32), outputs)
            loss = task.build_losses(outputs=outputs, labels=labels, aux_losses=mg.losses)["total_loss"]
        variables = mg.trainable_variables
        mg_optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    return ours_step, mg_step


# --- timing --------------------------------------------------------------------------------------------------
def _timed(call) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads) of `call()`, which must block until done."""
    start, cpu_start = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - start, time.process_time() - cpu_start


def time_alternating(ours_call, mg_call, iters: int, warmup: int):
    """Warm-up calls of each, then `iters` of each alternating (order flipped every pair); lists of (wall, CPU)."""
    for _ in range(warmup):
        _timed(ours_call)
        _timed(mg_call)
    ours_times, mg_times = [], []
    for i in range(iters):
        pair = [(ours_call, ours_times), (mg_call, mg_times)]
        for call, times in pair if i % 2 == 0 else pair[::-1]:
            times.append(_timed(call))
    return ours_times, mg_times


def _row(mode: str, batch: int, ours_times, mg_times) -> tuple[str, float]:
    ours_wall, ours_cpu = zip(*ours_times)
    mg_wall, mg_cpu = zip(*mg_times)
    ours_ms, mg_ms = percentile_ms(ours_wall, 50), percentile_ms(mg_wall, 50)
    ours_cpu_ms, mg_cpu_ms = percentile_ms(ours_cpu, 50), percentile_ms(mg_cpu, 50)
    ratio = ours_ms / mg_ms
    return (f"| {mode} | {batch} | {ours_ms:.0f} | {mg_ms:.0f} | {ratio:.2f} | {ours_cpu_ms:.0f} | {mg_cpu_ms:.0f} | "
            f"{ours_cpu_ms / mg_cpu_ms:.2f} |"), ratio


def _report(lines: list, mode: str, batch: int, times) -> list[str]:
    """Appends and prints the row; returns [its name] when the goal (ratio <= 1.0) is missed."""
    line, ratio = _row(mode, batch, *times)
    lines.append(line)
    print(line, flush=True)
    print(f"{mode} batch {batch} done; load {_load():.1f}", file=sys.stderr, flush=True)
    return [f"{mode} batch {batch}"] if ratio > 1.0 else []


def main(argv=None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    import tempfile

    import numpy as np
    import tensorflow as tf

    load_before = _load()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_maskrcnn_") as checkpoint_dir:
        ours, mg, task = build_pair(args.seed, checkpoint_dir)
    print(f"built and converted in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    lines = [f"| {MODEL} at {SIZE}x{SIZE} | batch | ours median ms | MG median ms | ratio (ours/MG) | ours CPU ms | "
             "MG CPU ms | CPU ratio |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    missed = []
    print("\n".join(lines), flush=True)
    # Every inference row first: the training steps change the weights, each model's differently (its own RPN and
    # RoI samples), after which the two no longer agree.
    for batch in args.batches:
        images = tf.constant(np.random.default_rng(args.seed + batch).normal(size=(batch, SIZE, SIZE, 3)), tf.float32)
        ours_infer, mg_infer = inference_functions(ours, mg, batch)
        error, ours_count, mg_count = check_agreement(ours_infer, mg_infer, images)
        print(f"batch {batch}: RPN scores max relative difference {error:.1e}; detections ours {ours_count}, "
              f"MG {mg_count}; load {_load():.1f}", file=sys.stderr, flush=True)
        times = time_alternating(lambda: ours_infer(images)["num_detections"].numpy(),
                                 lambda: mg_infer(images)["num_detections"].numpy(), args.iters, args.warmup)
        missed += _report(lines, "inference", batch, times)
        gc.collect()
    if args.train:
        ours_step, mg_step = training_functions(ours, mg, task)
        for batch in args.batches:
            train_images, ours_labels, mg_labels = training_batch(batch, ours.anchor_boxes)
            times = time_alternating(lambda: ours_step(train_images, ours_labels).numpy(),
                                     lambda: mg_step(train_images, mg_labels).numpy(), args.iters, args.warmup + 1)
            missed += _report(lines, "train step", batch, times)
            gc.collect()
    print()
    print("\n".join(lines))
    print()
    print(machine_line(None))
    print(f"float32; 1 tracing + {args.warmup} warm-up + {args.iters} timed calls per model and mode, alternating; "
          f"median wall and CPU ms. 1-minute load average {load_before:.1f} before, {_load():.1f} after (on "
          f"{os.cpu_count()} cores: above that, other processes shared the CPU). Both input pipelines build the RPN "
          "targets, before timing.")
    if missed:
        print(f"Ratio > 1.0 (goal missed): {', '.join(missed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
