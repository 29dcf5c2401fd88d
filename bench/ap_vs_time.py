"""Validation AP and AP50 of the demo recipe against training wall-clock seconds, one point per checkpoint.

    .venv/bin/python bench/ap_vs_time.py --model_dir=runs/ap_vs_time --checkpoint_steps=100 [training flags ...]

Run from the repo root (the flagfile and the default paths are relative to it).

1. Trains `--flagfile` (the demo's recipe by default) with `python -m spinenet_tf.train --mode=train`, a checkpoint
   every `--checkpoint_steps` and every checkpoint kept; any other flag goes to the training command after the
   flagfile, so it overrides the recipe (`--train_steps=300`, `--image_size=256`). Run again on the same --model_dir,
   it resumes an unfinished run or, when the run is complete, only evaluates and draws again.
2. Reads each checkpoint's training seconds from `model_dir/train_times.json` (`spinenet_tf.training.loop.TrainTimes`:
   from the start of training, resumed runs added up; no evaluation, no process start-up or model building).
3. After training, scores every checkpoint with COCO AP / AP50 on the run's --eval_data (the demo's: the 200
   validation images), with the training loop's evaluation (`task.evaluate`, per-class NMS).
4. Draws AP and AP50 against the seconds into `--out` (docs/demo_ap_vs_time.png by default, matplotlib), and
   writes beside it the table as `.csv` and as `.md` (with the command, the machine and its load), then prints the
   table and the command that made it.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import shlex
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DEMO_FLAGFILE = "configs/detection_retinanet_spinenet_mobile_49xs_shapes128.flags"
_KEEP_ALL = 1_000_000  # --keep_checkpoints: every checkpoint is evaluated afterwards


def train(flagfile: str, model_dir: str, checkpoint_steps: int, extra_flags: list[str]) -> list[str]:
    """Runs the training command to completion (its log goes to this process's stderr); returns the command."""
    command = [sys.executable, "-m", "spinenet_tf.train", f"--flagfile={flagfile}", *extra_flags,
               f"--model_dir={model_dir}", "--mode=train", f"--checkpoint_steps={checkpoint_steps}",
               f"--keep_checkpoints={_KEEP_ALL}"]
    print("training:", shlex.join(command), file=sys.stderr, flush=True)
    subprocess.run(command, check=True)
    return command


def evaluate_checkpoints(model_dir: str) -> list[dict]:
    """One row per `train_times.json` record whose checkpoint exists: step, train_seconds, AP, AP50, num_images."""
    from spinenet_tf import checkpoints
    from spinenet_tf.training import loop, tasks
    from spinenet_tf.training.config import TrainConfig

    config = TrainConfig.load(model_dir)
    task = tasks.make_task(config)
    model = task.build_model(config.num_classes)
    dataset = task.eval_dataset().cache()  # the same images for every checkpoint, preprocessed once
    rows = []
    for record in loop.read_train_times(model_dir):
        path = os.path.join(checkpoints.checkpoint_dir(model_dir), f"ckpt-{record['step']}")
        if not os.path.exists(path + ".index"):
            print(f"{path}: deleted (--keep_checkpoints), not evaluated", file=sys.stderr)
            continue
        checkpoints.restore_model(model, checkpoint=path)
        metrics = task.evaluate(model, dataset)
        rows.append({"step": record["step"], "train_seconds": record["train_seconds"],
                     "AP": round(metrics["AP"], 4), "AP50": round(metrics["AP50"], 4),
                     "num_images": metrics["num_images"]})
    if not rows:
        raise SystemExit(f"error: {model_dir}: no checkpoint with a train_times.json record to evaluate")
    return rows


def draw(rows: list[dict], title: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    timed = [row for row in rows if row["train_seconds"] is not None]
    figure, axes = pyplot.subplots(figsize=(7, 4.2), dpi=120)
    for metric, marker in (("AP50", "s"), ("AP", "o")):
        axes.plot([row["train_seconds"] for row in timed], [row[metric] for row in timed], marker=marker,
                  label=f"val {metric}")
    axes.set_xlabel("training wall-clock seconds (no evaluation)")
    axes.set_ylabel("COCO box AP")
    axes.set_xlim(0, max([row["train_seconds"] for row in timed], default=1.0) * 1.04)
    axes.set_ylim(0, max(0.1, max(row["AP50"] for row in rows) * 1.1))
    axes.grid(alpha=0.3)
    axes.legend(loc="best")
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)


def markdown_table(rows: list[dict]) -> str:
    lines = ["| step | train_seconds | AP | AP50 |", "| ---: | ---: | ---: | ---: |"]
    for row in rows:
        seconds = "unknown" if row["train_seconds"] is None else f"{row['train_seconds']:.1f}"
        lines.append(f"| {row['step']} | {seconds} | {row['AP']:.4f} | {row['AP50']:.4f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="Other flags go to training.")
    parser.add_argument("--flagfile", default=DEMO_FLAGFILE, help="the recipe (repo-root path)")
    parser.add_argument("--model_dir", default="runs/ap_vs_time", help="the run's model_dir (resumed if it exists)")
    parser.add_argument("--checkpoint_steps", type=int, default=100, help="a checkpoint (a point) every N steps")
    parser.add_argument("--out", default="docs/demo_ap_vs_time.png", help="the picture; .csv and .md go beside it")
    args, extra_flags = parser.parse_known_args(argv)
    if args.checkpoint_steps < 1:
        parser.error(f"--checkpoint_steps={args.checkpoint_steps}: must be >= 1")
    command = shlex.join(["python", "bench/ap_vs_time.py", *(sys.argv[1:] if argv is None else argv)])

    load_before = os.getloadavg()[0]
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    train_command = train(args.flagfile, args.model_dir, args.checkpoint_steps, extra_flags)
    rows = evaluate_checkpoints(args.model_dir)
    load_after = os.getloadavg()[0]

    from spinenet_tf.training.config import TrainConfig

    config = TrainConfig.load(args.model_dir)
    run = (f"{config.model} {'x'.join(map(str, config.image_size))}, {config.input.train_data}, batch "
           f"{config.batch_size}")
    evaluated = f"val AP on {rows[0]['num_images']} images of {config.input.eval_data}"
    base = os.path.splitext(args.out)[0]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    draw(rows, f"{run}\n{evaluated}", args.out)
    with open(base + ".csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    machine = (f"started {started}, {os.cpu_count()} CPUs, load average {load_before:.1f} at the start and "
               f"{load_after:.1f} at the end (the seconds are wall-clock: compare runs at similar load)")
    table = markdown_table(rows)
    with open(base + ".md", "w") as f:
        f.write(f"# Validation AP against training seconds\n\n{run}: {evaluated}.\n\nMade with\n\n    {command}\n\n"
                f"which trained with\n\n    {shlex.join(['python', *train_command[1:]])}\n\n{machine}. Training "
                f"seconds: `train_times.json` (training only). AP: COCO box AP of each checkpoint, per-class NMS.\n\n"
                f"![AP against seconds]({os.path.basename(args.out)})\n\n{table}\n")
    print(f"\n{run}: {evaluated}\n{machine}\n\n{table}\n")
    print(f"wrote {args.out}, {base}.csv, {base}.md")
    print(f"made with: {command}")

if __name__ == "__main__":
    main()
