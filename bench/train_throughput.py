"""Training throughput on this machine: images/s and peak memory of the train step, beside the input pipeline alone.

    python bench/train_throughput.py [--steps 10] [--only mobile49xs]

Rows: the demo model (RetinaNet SpineNet-Mobile-49XS, 256x256, batch 16, the demo flagfile's optimizer) and
RetinaNet SpineNet-49 at 640x640, batch 2 (SGD, the paper recipe's optimizer). Each row runs in its own process
(so peak RSS is that model's), through the real `spinenet_tf.training.loop.Trainer` train step on the built-in
data: the first step (tracing + graph optimisation) is reported on its own, then `--steps` timed steps. The input
pipeline is timed on its own for the same batches; the last column is pipeline images/s / step images/s, which
must stay above 1 for the model never to wait for data. CPU seconds are given beside wall time because the machine
may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROWS = {
    "mobile49xs": dict(model="retinanet-spinenet-mobile-49xs", image_size=256, batch_size=16, optimizer="adamw",
                       learning_rate=2e-3),
    "spinenet49": dict(model="retinanet-spinenet-49", image_size=640, batch_size=2, optimizer="sgd",
                       learning_rate=0.01),
}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(row: str, steps: int) -> dict:
    """Runs in the child process: one row's numbers."""
    import tensorflow as tf

    from spinenet_tf.training import config as config_lib
    from spinenet_tf.training import loop

    spec = ROWS[row]
    size = spec["image_size"]
    examples = max(4 * spec["batch_size"], 32)
    config = config_lib.TrainConfig(
        task="detection", model=spec["model"], model_dir=tempfile.mkdtemp(prefix="bench_train_"),
        image_size=(size, size), num_classes=6, mode="train", batch_size=spec["batch_size"], train_steps=steps + 1,
        input=config_lib.InputConfig(train_data=f"builtin:shapes:train[:{examples}]", cache=True,
                                     shuffle_buffer=examples, aug_scale_min=0.8, aug_scale_max=1.25),
        optimizer=config_lib.OptimizerConfig(optimizer=spec["optimizer"], learning_rate=spec["learning_rate"],
                                             schedule="cosine", weight_decay=1e-4),
        runtime=config_lib.RuntimeConfig(checkpoint_steps=10**9)).validate()
    trainer = loop.Trainer(config, flags_text=None)
    dataset = trainer.strategy.distribute_datasets_from_function(trainer.task.train_dataset)

    # The pipeline alone: warm the cache with one pass, then time `steps` batches.
    iterator = iter(dataset)
    for _ in range(examples // config.batch_size + 1):
        next(iterator)
    start = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    pipeline_seconds = time.perf_counter() - start

    train_step = trainer.train_function()
    start, cpu = time.perf_counter(), _cpu_seconds()
    float(train_step(iterator)["loss"])
    first_step = (time.perf_counter() - start, _cpu_seconds() - cpu)
    start, cpu = time.perf_counter(), _cpu_seconds()
    for _ in range(steps):
        float(train_step(iterator)["loss"])
    step_seconds = (time.perf_counter() - start, _cpu_seconds() - cpu)
    nodes = len(train_step.get_concrete_function(iterator).graph.as_graph_def().node)
    images = steps * config.batch_size
    return {"row": row, "model": spec["model"], "image_size": size, "batch": config.batch_size,
            "graph_nodes": nodes, "first_step_s": round(first_step[0], 1), "first_step_cpu_s": round(first_step[1], 1),
            "step_ms": round(1000 * step_seconds[0] / steps, 1),
            "step_cpu_ms": round(1000 * step_seconds[1] / steps, 1),
            "train_images_per_s": round(images / step_seconds[0], 2),
            "pipeline_images_per_s": round(images / pipeline_seconds, 1),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "tf": tf.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per row")
    parser.add_argument("--only", choices=sorted(ROWS), help="run one row")
    parser.add_argument("--child", choices=sorted(ROWS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(measure(args.child, args.steps)))
        return
    results = []
    for row in [args.only] if args.only else list(ROWS):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        output = subprocess.run([sys.executable, __file__, "--child", row, "--steps", str(args.steps)], env=env,
                                capture_output=True, text=True, check=False)
        lines = [line for line in output.stdout.splitlines() if line.startswith("RESULT ")]
        if output.returncode or not lines:
            raise SystemExit(f"{row}: exited {output.returncode}\n{output.stderr[-3000:]}")
        results.append(json.loads(lines[-1][len("RESULT "):]))
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPU cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}, "
          f"TensorFlow {results[0]['tf']}")
    print("| model | input | batch | graph nodes | first step s (CPU s) | step ms (CPU ms) | train img/s | "
          "pipeline img/s | pipeline / train | peak RSS GB |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['model']} | {r['image_size']} | {r['batch']} | {r['graph_nodes']:,} | {r['first_step_s']} "
              f"({r['first_step_cpu_s']}) | {r['step_ms']} ({r['step_cpu_ms']}) | {r['train_images_per_s']} | "
              f"{r['pipeline_images_per_s']} | {r['pipeline_images_per_s'] / r['train_images_per_s']:.1f} | "
              f"{r['peak_rss_gb']} |")


if __name__ == "__main__":
    main()
