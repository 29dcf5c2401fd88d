"""Training throughput on this machine: our train step beside Model Garden's RetinaNet train step, same weights and
batches, with peak memory and the input pipeline alone.

    python bench/train_throughput.py [--steps 10] [--only mobile49xs|spinenet49|demo] [--no_mg]

Rows: RetinaNet SpineNet-Mobile-49XS as registered (256x256, batch 16, AdamW with cosine decay), RetinaNet
SpineNet-49 at 640x640, batch 2 (SGD momentum 0.9 with cosine decay and the L2 term, the paper recipe's optimizer
kind), and `make demo`'s model and optimizer (Mobile-49XS at 128x128 with its flagfile's head width, anchors,
learning rate and clipping). Each model gets two rows, each timed in its own process (so peak RSS is that model's):
- **ours**: the real `spinenet_tf.training.loop.Trainer` train step (`Trainer.train_function`, its optimizer from
  `training.optimizers.build_optimizer`) on the built-in shapes data through our input pipeline
  (`DetectionTask.train_dataset`). The pipeline is timed on its own for `--steps` batches; the "pipeline / train"
  column is pipeline images/s / step images/s, which must stay above 1 for the model never to wait for data.
- **MG**: Model Garden's (tf-models-official, tf_keras) RetinaNet trained by its own task,
  `official.vision.tasks.retinanet.RetinaNetTask`: the model of `RetinaNetTask.build_model` (`factory.
  build_retinanet` of a `configs.retinanet.RetinaNet` for the same registry row: SpineNet(-Mobile) P3-P7, identity
  decoder, `RetinaNetHead` with the row's convs / filters / separable convs, swish, 3 x 3 anchors, batch norm not
  synchronised; for SGD `l2(weight_decay / 2)` kernel regularizers, as its `l2_weight_decay`), its `train_step`
  (focal + Huber losses of `build_losses`, aux L2 losses, the loss metrics of `build_metrics`) under
  `strategy.run` in a `tf.function`, as Orbit's trainer runs it, and the optimizer of `Task.create_optimizer`
  (`official.modeling.optimization`): `adamw_experimental` (tf_keras AdamW; gamma / beta / bias excluded from the
  decay, as ours) or `sgd` (tf_keras legacy SGD, MG's default for it), same learning rate, momentum, weight decay,
  clip norm (none in these rows) and cosine schedule over the same step count.

Same weights: a first process builds Model Garden's model and writes its (initial) weights as a checkpoint; ours
loads them with `spinenet_tf.convert.load_model_garden_checkpoint` (every variable, or the run stops), MG restores
them. Same batches: our process draws 4 batches from our pipeline (after timing it) and saves them; both train steps
read that same cycle of batches from a `tf.data` iterator inside their `tf.function` (so neither step shares the CPU
with live augmentation). Model Garden's labels are ours re-laid out, not relabelled: `cls_targets` / `box_targets`
split per level (`{"3": [B, H_l, W_l, 9]}`, `[B, H_l, W_l, 36]`), `cls_weights` = not ignored, `box_weights` =
positive, the layout its `AnchorLabeler` gives. So both train on our anchor matching (IoU >= 0.5 positive, < 0.4
negative, the paper's; MG's RetinaNet configs default to 0.5 / 0.5, no ignored band): targets are made in the input
pipeline, outside both train steps. The first step's losses of both (equal weights, equal batch) are printed and
must agree within 1e-3 relative (else the run exits with an error after the table). `--no_mg` times ours alone,
from its own random weights.

Reported per row: the first step (tracing + graph optimisation + one step) on its own, wall and CPU s, then the mean
over `--steps` timed steps, graph nodes of the traced step, peak RSS; on our row, ours / MG step time (goal <= 0.8)
and first-step time. CPU seconds are given beside wall time because the machine may be shared, and the rows run one
after the other, so a changing load shows in the wall ratio (the load line says how busy the machine was).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time

# tests/oracle.py: Model Garden's SpineNet / RetinaNet settings for our registry rows (the parity tests' oracle).
sys.path.insert(1, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

ROWS = {
    "mobile49xs": dict(model="retinanet-spinenet-mobile-49xs", image_size=256, batch_size=16, optimizer="adamw",
                       learning_rate=2e-3, weight_decay=1e-4, gradient_clip_norm=0.0),
    "spinenet49": dict(model="retinanet-spinenet-49", image_size=640, batch_size=2, optimizer="sgd",
                       learning_rate=0.01, weight_decay=1e-4, gradient_clip_norm=0.0),
    # `make demo`'s model and optimizer (configs/detection_retinanet_spinenet_mobile_49xs_shapes128.flags; a test
    # holds the two together): 128 px, a 128-wide head, anchors 1.5 x stride, AdamW 1.2e-2 with clipping.
    "demo": dict(model="retinanet-spinenet-mobile-49xs", image_size=128, batch_size=16, optimizer="adamw",
                 learning_rate=1.2e-2, weight_decay=1e-4, gradient_clip_norm=10.0,
                 overrides=dict(num_filters=128, anchor_size=1.5)),
}
NUM_CLASSES = 6  # the built-in shapes data
DATA_BATCHES = 4  # distinct batches both train steps cycle through
MG_WEIGHTS = "mg_init"  # checkpoint prefix in the row's work directory
BATCHES_FILE = "batches.npz"
LOSS_RTOL = 1e-3  # first-step losses of ours and MG, relative


def _model_text(spec: dict) -> str:
    overrides = spec.get("overrides", {})
    return spec["model"] + (f" ({', '.join(f'{k}={v}' for k, v in overrides.items())})" if overrides else "")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_gb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def _time_train_step(train_step, iterator, steps: int, batch_size: int) -> dict:
    """First call (trace + graph optimisation + one step) and `steps` more, wall and CPU; the first step's losses."""
    start, cpu = time.perf_counter(), _cpu_seconds()
    first_losses = {name: float(value) for name, value in train_step(iterator).items()}
    first_step = (time.perf_counter() - start, _cpu_seconds() - cpu)
    start, cpu = time.perf_counter(), _cpu_seconds()
    for _ in range(steps):
        float(train_step(iterator)["loss"])
    step_seconds = (time.perf_counter() - start, _cpu_seconds() - cpu)
    nodes = len(train_step.get_concrete_function(iterator).graph.as_graph_def().node)
    return {"graph_nodes": nodes, "first_step_s": round(first_step[0], 1), "first_step_cpu_s": round(first_step[1], 1),
            "step_ms": round(1000 * step_seconds[0] / steps, 1),
            "step_cpu_ms": round(1000 * step_seconds[1] / steps, 1),
            "train_images_per_s": round(steps * batch_size / step_seconds[0], 2), "first_losses": first_losses}


def _batches_dataset(images, labels):
    """The saved batches (leading axis: batch index) as an endless dataset of whole batches."""
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((images, labels)).repeat().prefetch(1)


# === Ours ===
def measure_ours(row: str, steps: int, workdir: str) -> dict:
    import numpy as np
    import tensorflow as tf

    from spinenet_tf import convert
    from spinenet_tf.training import config as config_lib
    from spinenet_tf.training import loop

    spec = ROWS[row]
    size = spec["image_size"]
    examples = max(4 * spec["batch_size"], 32)
    config = config_lib.TrainConfig(
        task="detection", model=spec["model"], model_dir=os.path.join(workdir, "model_dir"),
        image_size=(size, size), num_classes=NUM_CLASSES, mode="train", batch_size=spec["batch_size"],
        train_steps=steps + 1, model_overrides=spec.get("overrides", {}),
        input=config_lib.InputConfig(train_data=f"builtin:shapes:train[:{examples}]", cache=True,
                                     shuffle_buffer=examples, aug_scale_min=0.8, aug_scale_max=1.25),
        optimizer=config_lib.OptimizerConfig(optimizer=spec["optimizer"], learning_rate=spec["learning_rate"],
                                             schedule="cosine", weight_decay=spec["weight_decay"],
                                             gradient_clip_norm=spec["gradient_clip_norm"]),
        runtime=config_lib.RuntimeConfig(checkpoint_steps=10**9)).validate()
    trainer = loop.Trainer(config, flags_text=None)
    mg_weights = os.path.join(workdir, MG_WEIGHTS)
    copied = None
    if os.path.exists(mg_weights + ".index"):  # Model Garden's initial weights (not with --no_mg)
        copied = convert.load_model_garden_checkpoint(mg_weights, trainer.model)
        if copied != len(trainer.model.weights):
            raise AssertionError(f"copied {copied} of {len(trainer.model.weights)} variables from Model Garden")
    strategy = trainer.strategy

    # The pipeline alone: warm the cache with one pass, then time `steps` batches.
    iterator = iter(strategy.distribute_datasets_from_function(trainer.task.train_dataset))
    for _ in range(examples // config.batch_size + 1):
        next(iterator)
    start = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    pipeline_seconds = time.perf_counter() - start

    # The batches both train steps read, saved for Model Garden's process.
    drawn = [next(iterator) for _ in range(DATA_BATCHES)]
    del iterator
    images = np.stack([batch[0].numpy() for batch in drawn])
    labels = {key: np.stack([batch[1][key].numpy() for batch in drawn]) for key in drawn[0][1]}
    np.savez(os.path.join(workdir, BATCHES_FILE), images=images, **{f"label_{k}": v for k, v in labels.items()})
    dataset = _batches_dataset(images, labels)
    iterator = iter(strategy.distribute_datasets_from_function(lambda _: dataset))

    timing = _time_train_step(trainer.train_function(), iterator, steps, config.batch_size)
    return {"side": "ours", "row": row, "model": _model_text(spec), "image_size": size, "batch": config.batch_size,
            **timing, "pipeline_images_per_s": round(steps * config.batch_size / pipeline_seconds, 1),
            "peak_rss_gb": _peak_rss_gb(),
            "weights_from_mg": copied, "tf": tf.__version__}


# === Model Garden ===
def mg_task(row: str, steps: int):
    """Model Garden's RetinaNetTask for a row (its model config, losses and L2) and its optimizer config."""
    import oracle
    from official.modeling.optimization.configs import optimization_config
    from official.vision.configs import backbones as backbones_config
    from official.vision.configs import common, decoders
    from official.vision.configs import retinanet as retinanet_config
    from official.vision.tasks import retinanet as retinanet_task

    from spinenet_tf import models, registry

    spec = ROWS[row]
    detector = dataclasses.replace(registry.DETECTORS[spec["model"]], **{
        {"num_filters": "head_num_filters"}.get(key, key): value for key, value in spec.get("overrides", {}).items()})
    if registry.BACKBONES[detector.backbone].family == "spinenet_mobile":
        backbone = backbones_config.Backbone(type="spinenet_mobile", spinenet_mobile=backbones_config.SpineNetMobile(
            model_id=detector.backbone.removeprefix("spinenet-mobile-").upper(), min_level=oracle.MIN_LEVEL,
            max_level=oracle.MAX_LEVEL))
    else:
        backbone = backbones_config.Backbone(type="spinenet", spinenet=backbones_config.SpineNet(
            model_id=detector.backbone.removeprefix("spinenet-").upper(), min_level=oracle.MIN_LEVEL,
            max_level=oracle.MAX_LEVEL))
    size = spec["image_size"]
    model = retinanet_config.RetinaNet(
        num_classes=NUM_CLASSES, input_size=[size, size, 3], min_level=oracle.MIN_LEVEL, max_level=oracle.MAX_LEVEL,
        anchor=retinanet_config.Anchor(num_scales=oracle.NUM_SCALES, aspect_ratios=oracle.ASPECT_RATIOS,
                                       anchor_size=detector.anchor_size),
        backbone=backbone, decoder=decoders.Decoder(type="identity", identity=decoders.Identity()),
        head=retinanet_config.RetinaNetHead(num_convs=detector.head_num_convs, num_filters=detector.head_num_filters,
                                            use_separable_conv=detector.head_separable),
        norm_activation=common.NormActivation(activation="swish", use_sync_bn=False))
    # The L2 term: SGD's weight decay (MG's l2(wd / 2) regularizers); none for AdamW, whose decay is decoupled.
    l2 = models.loss_weight_decay(spec["optimizer"], spec["weight_decay"])
    task = retinanet_task.RetinaNetTask(retinanet_config.RetinaNetTask(
        model=model, losses=retinanet_config.Losses(l2_weight_decay=l2)))
    clip = spec["gradient_clip_norm"] or None
    if spec["optimizer"] == "sgd":
        optimizer = {"type": "sgd", "sgd": {"momentum": 0.9, "global_clipnorm": clip}}
    else:
        optimizer = {"type": "adamw_experimental",
                     "adamw_experimental": {"weight_decay": spec["weight_decay"], "global_clipnorm": clip}}
    optimization = optimization_config.OptimizationConfig({
        "optimizer": optimizer,
        "learning_rate": {"type": "cosine", "cosine": {"initial_learning_rate": spec["learning_rate"],
                                                       "decay_steps": steps + 1}}})
    return task, optimization


def mg_model(task, size: int):
    """`task.build_model()`, called once (the identity decoder leaves the head to build on its first input)."""
    import numpy as np
    import tensorflow as tf

    model = task.build_model()
    model(np.zeros((1, size, size, 3), np.float32), image_shape=tf.constant([[size, size]]), training=False)
    return model


def write_mg_weights(row: str, steps: int, workdir: str) -> dict:
    """Runs first, in its own process: Model Garden's initial weights, for both sides."""
    import tensorflow as tf

    task, _ = mg_task(row, steps)
    model = mg_model(task, ROWS[row]["image_size"])
    tf.train.Checkpoint(model=model).write(os.path.join(workdir, MG_WEIGHTS))
    return {"side": "init", "row": row, "variables": len(model.weights)}


def mg_labels(labels: dict, size: int) -> dict:
    """Our flat targets ([..., A] in the anchor layout) as Model Garden's RetinaNet labels: per-level
    `cls_targets` [..., H_l, W_l, 9] (-1 off the positives, as MG) and `box_targets` [..., H_l, W_l, 36], flat
    `cls_weights` (0 on ignored anchors) and `box_weights` (1 on positives)."""
    import numpy as np
    import oracle

    per_location = oracle.NUM_SCALES * len(oracle.ASPECT_RATIOS)
    cls_targets, box_targets, start = {}, {}, 0
    leading = labels["cls_targets"].shape[:-1]
    for level in range(oracle.MIN_LEVEL, oracle.MAX_LEVEL + 1):
        side = math.ceil(size / 2**level)
        end = start + side * side * per_location
        cls_targets[str(level)] = labels["cls_targets"][..., start:end].reshape(*leading, side, side, per_location)
        box_targets[str(level)] = labels["box_targets"][..., start:end, :].reshape(*leading, side, side,
                                                                                   4 * per_location)
        start = end
    if start != labels["cls_targets"].shape[-1]:
        raise AssertionError(f"{labels['cls_targets'].shape[-1]} anchors in the batches, {start} in P3-P7 at {size}")
    return {"cls_targets": cls_targets, "box_targets": box_targets,
            "cls_weights": (~labels["ignore"]).astype(np.float32), "box_weights": labels["positive"].astype(np.float32)}


def measure_mg(row: str, steps: int, workdir: str) -> dict:
    import numpy as np
    import tensorflow as tf

    from spinenet_tf.training.optimizers import NO_WEIGHT_DECAY

    spec = ROWS[row]
    size = spec["image_size"]
    task, optimization = mg_task(row, steps)
    model = mg_model(task, size)
    tf.train.Checkpoint(model=model).read(os.path.join(workdir, MG_WEIGHTS)).assert_existing_objects_matched()
    optimizer = task.create_optimizer(optimization)
    if spec["optimizer"] == "adamw":
        optimizer.exclude_from_weight_decay(var_names=list(NO_WEIGHT_DECAY))
    metrics = task.build_metrics(training=True)

    saved = np.load(os.path.join(workdir, BATCHES_FILE))
    labels = mg_labels({key.removeprefix("label_"): saved[key] for key in saved.files if key.startswith("label_")},
                       size)
    strategy = tf.distribute.get_strategy()
    dataset = _batches_dataset(saved["images"], labels)
    iterator = iter(strategy.distribute_datasets_from_function(lambda _: dataset))

    @tf.function
    def train_step(iterator):
        logs = strategy.run(task.train_step, args=(next(iterator), model, optimizer, metrics))
        return {name: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None) for name, value in logs.items()}

    timing = _time_train_step(train_step, iterator, steps, spec["batch_size"])
    first = timing["first_losses"]  # MG's names -> ours: loss, cls_loss, box_loss, l2_loss
    timing["first_losses"] = {"loss": first["loss"], "cls_loss": first["cls_loss"], "box_loss": first["box_loss"],
                              "l2_loss": first["total_loss"] - first["model_loss"]}
    return {"side": "MG", "row": row, "model": _model_text(spec), "image_size": size, "batch": spec["batch_size"],
            **timing, "peak_rss_gb": _peak_rss_gb(), "tf": tf.__version__}


# === The parent ===
def _run_child(row: str, side: str, steps: int, workdir: str) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    output = subprocess.run([sys.executable, __file__, "--child", row, "--side", side, "--steps", str(steps),
                             "--workdir", workdir], env=env, capture_output=True, text=True, check=False)
    lines = [line for line in output.stdout.splitlines() if line.startswith("RESULT ")]
    if output.returncode or not lines:
        raise SystemExit(f"{row} ({side}): exited {output.returncode}\n{output.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _losses_text(losses: dict) -> str:
    return (f"{losses['loss']:.4f} (cls {losses['cls_loss']:.4f}, box {losses['box_loss']:.5f}, "
            f"l2 {losses['l2_loss']:.4f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per row")
    parser.add_argument("--only", choices=sorted(ROWS), help="run one model (ours and Model Garden's)")
    parser.add_argument("--no_mg", action="store_true", help="ours only (no Model Garden rows; random weights)")
    parser.add_argument("--child", choices=sorted(ROWS), help=argparse.SUPPRESS)
    parser.add_argument("--side", choices=("ours", "mg", "init"), default="ours", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    if args.child:
        measure = {"ours": measure_ours, "mg": measure_mg, "init": write_mg_weights}[args.side]
        print("RESULT " + json.dumps(measure(args.child, args.steps, args.workdir)))
        return
    results, problems = [], []
    for row in [args.only] if args.only else list(ROWS):
        with tempfile.TemporaryDirectory(prefix="bench_train_") as workdir:
            if not args.no_mg:
                _run_child(row, "init", args.steps, workdir)
            ours = _run_child(row, "ours", args.steps, workdir)
            print(f"{row} ours: step {ours['step_ms']} ms, first-step loss {_losses_text(ours['first_losses'])}",
                  file=sys.stderr, flush=True)
            results.append(ours)
            if not args.no_mg:
                mg = _run_child(row, "mg", args.steps, workdir)
                print(f"{row} MG: step {mg['step_ms']} ms, first-step loss {_losses_text(mg['first_losses'])}",
                      file=sys.stderr, flush=True)
                ours["vs_mg"] = mg
                results.append(mg)
                a, b = ours["first_losses"]["loss"], mg["first_losses"]["loss"]
                if not (math.isfinite(a) and math.isfinite(b)) or abs(a - b) > LOSS_RTOL * max(abs(a), abs(b)):
                    problems.append(f"{row}: first-step losses differ, ours {a:.6g} vs MG {b:.6g}")
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPU cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}, "
          f"TensorFlow {results[0]['tf']}, {args.steps} timed steps per row after the first")
    print("| model | step | input | batch | graph nodes | first step s (CPU s) | step ms (CPU ms) | train img/s | "
          "pipeline img/s | pipeline / train | peak RSS GB | first-step loss | ours / MG step (CPU) | "
          "ours / MG first step (CPU) |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        pipeline = (f"{r['pipeline_images_per_s']} | {r['pipeline_images_per_s'] / r['train_images_per_s']:.1f}"
                    if "pipeline_images_per_s" in r else "- | -")
        ratios = "- | -"
        if "vs_mg" in r:
            mg = r["vs_mg"]
            ratios = (f"{r['step_ms'] / mg['step_ms']:.2f} ({r['step_cpu_ms'] / mg['step_cpu_ms']:.2f}) | "
                      f"{r['first_step_s'] / mg['first_step_s']:.2f} "
                      f"({r['first_step_cpu_s'] / mg['first_step_cpu_s']:.2f})")
        print(f"| {r['model']} | {r['side']} | {r['image_size']} | {r['batch']} | {r['graph_nodes']:,} | "
              f"{r['first_step_s']} ({r['first_step_cpu_s']}) | {r['step_ms']} ({r['step_cpu_ms']}) | "
              f"{r['train_images_per_s']} | {pipeline} | {r['peak_rss_gb']} | {r['first_losses']['loss']:.4f} | "
              f"{ratios} |")
    if any("vs_mg" in r for r in results):
        print("Goal: ours / MG step time <= 0.8. First-step losses (same weights, same batch):")
        for r in results:
            line = f"- {r['model']} {r['side']}: {_losses_text(r['first_losses'])}"
            if "vs_mg" in r:
                a, b = r["first_losses"]["loss"], r["vs_mg"]["first_losses"]["loss"]
                line += f"; relative difference to MG {abs(a - b) / max(abs(a), abs(b), 1e-12):.1e}"
            print(line)
    if problems:
        raise SystemExit("\n".join(problems))


if __name__ == "__main__":
    main()
