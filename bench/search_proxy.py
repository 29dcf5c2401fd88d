"""Does the search's proxy task see what the paper saw? The connection ablation and the proxy's rank stability.

    .venv/bin/python bench/search_proxy.py [--flagfile=configs/search_proxy_shapes.flags] \
        [--out_dir=runs/bench_search_proxy] [--seeds=3] [--num_workers=2] [--extra_tables=2] [--long_factor=2] \
        [--models=SpineNet-49,R0-SP53] [--damages=remove_short_range,remove_long_range,sequential] \
        [search flags ...]

Run from the repo root. Flags this script does not know go to the search's flag parsing after the flagfile, so they
override the proxy (`--train_steps=100`, `--train_data=...`). Every score is one proxy trial (`spinenet_tf.search.proxy.ProxyTask`, the settings of the
search flagfile: model widths, data, steps, optimizer), its reward the val AP.

1. Ablation (arXiv:1912.05027 §5.5, Table 9): SpineNet-49's table and R0-SP53's (§3.3, Table 1), each as it is and
   with the three connection damages of `spinenet_tf.search.ablation` (remove the short-range input, the long-range
   one, both: sequential), each trained with `--seeds` seeds (weights, data order, augmentation). For every damaged
   table: the mean AP drop and the drop in pooled seed standard deviations, sqrt((sd_intact^2 + sd_damaged^2) / 2).
   The paper's finding holds on the proxy where every drop exceeds 2 pooled standard deviations. Beside it, each
   table's depth: blocks on the longest and the shortest path to each output (`path_lengths`).
2. Rank stability: the same tables (seed 0) plus `--extra_tables` random points of the spinenet space, trained again
   with `--long_factor` times the steps; Spearman's rank correlation of the short against the long scores says how
   far the short proxy's ranking of tables is the longer training's, over all tables and over those that learn
   on the longer proxy (`LEARNS_FRACTION`: tables that do not learn at all are told apart by any proxy).

Each finished score is appended to `out_dir/scores.jsonl` as it ends; run again with the same flags, the script
re-runs no finished score (a killed run resumes). Trials run `--num_workers` at a time, each in a process of its
own. Prints the tables (Markdown) and writes them, with the command, machine and times, to `--out`
(docs/search_proxy.md).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import json
import math
import multiprocessing
import os
import shlex
import sys
import time
from collections.abc import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from spinenet_tf.backbones.block_spec_file import Architecture  # noqa: E402
from spinenet_tf.backbones.spinenet import SpineNet  # noqa: E402
from spinenet_tf.backbones.block_specs import (R0_SP53_BLOCK_SPECS, SPINENET_BLOCK_SPECS,  # noqa: E402
                                               parse_block_specs)
from spinenet_tf.search import ablation  # noqa: E402

FLAGFILE = "configs/search_proxy_shapes.flags"
MODELS = {"SpineNet-49": SPINENET_BLOCK_SPECS, "R0-SP53": R0_SP53_BLOCK_SPECS}
SCORES_FILE = "scores.jsonl"


@dataclasses.dataclass(frozen=True)
class Job:
    table: str             # "SpineNet-49", "R0-SP53/sequential", "random-3"
    seed: int
    steps: int
    block_specs: list      # rows as JSON lists

    @property
    def key(self) -> str:
        return f"{self.table}|seed={self.seed}|steps={self.steps}"


def search_config(flagfile: str, out_dir: str, extra_flags: list[str]) -> tuple[dict, object]:
    """The search command's arguments (`run.search`'s: space, seed, population...) and proxy task from its flagfile
    and `extra_flags` after it, by the search CLI's own flag parsing."""
    from absl import flags

    from spinenet_tf.search import __main__ as search_cli
    flags.FLAGS([sys.argv[0], f"--flagfile={flagfile}", *extra_flags, f"--search_dir={out_dir}"])
    return search_cli.config_from_flags()


def tables(models: list[str], extra_tables: int, space, damages: Sequence[str] = tuple(ablation.ABLATIONS)
           ) -> dict[str, list]:
    """Table name -> rows: each model intact and with each of `damages`, then `extra_tables` random points of
    `space`."""
    out = {}
    for model in models:
        specs = out[model] = MODELS[model]
        for damage in damages:
            out[f"{model}/{damage}"] = ablation.ABLATIONS[damage](specs)
    for index, (_, architecture) in enumerate(space.sample(extra_tables, seed=20200614)):
        out[f"random-{index}"] = architecture.block_specs
    return {name: [spec.to_list() for spec in parse_block_specs(specs)] for name, specs in out.items()}


def run_job(task, job: Job, number: int) -> dict:
    """One proxy trial (in a worker process): the job's table, seed and steps."""
    train = task.train
    runtime = dataclasses.replace(train.runtime, seed=job.seed, checkpoint_steps=job.steps,
                                  log_steps=max(1, job.steps // 10))
    task = dataclasses.replace(task, train=dataclasses.replace(train, train_steps=job.steps, runtime=runtime))
    start = time.monotonic()
    result = task(Architecture("spinenet", parse_block_specs(job.block_specs)), number)
    return {"key": job.key, "table": job.table, "seed": job.seed, "steps": job.steps, "ap": result.reward,
            "flops": result.flops, "ap50": (result.metrics or {}).get("AP50"),
            "seconds": round(time.monotonic() - start, 1)}


def read_scores(out_dir: str) -> dict[str, dict]:
    path = os.path.join(out_dir, SCORES_FILE)
    scores = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    break  # a torn last line: that score did not finish
                scores[record["key"]] = record
    return scores


def run_jobs(task, jobs: list[Job], out_dir: str, num_workers: int) -> dict[str, dict]:
    scores = read_scores(out_dir)
    todo = [job for job in jobs if job.key not in scores]
    print(f"{len(jobs) - len(todo)} of {len(jobs)} scores already in {out_dir}/{SCORES_FILE}; running {len(todo)}",
          file=sys.stderr, flush=True)
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=context, max_tasks_per_child=1) as pool:
        futures = {pool.submit(run_job, task, job, number): job for number, job in enumerate(jobs)
                   if job.key not in scores}
        for future in concurrent.futures.as_completed(futures):
            job = futures[future]
            try:
                record = future.result()
            except Exception as error:  # noqa: BLE001 - reported, the other scores go on
                print(f"{job.key}: failed: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
                continue
            with open(os.path.join(out_dir, SCORES_FILE), "a") as f:
                f.write(json.dumps(record) + "\n")
            scores[job.key] = record
            print(f"{job.key}: AP {record['ap']:.4f} ({record['seconds']:.0f} s)", file=sys.stderr, flush=True)
    return scores


def run_line(minutes: float) -> str:
    """How this report was made: the command, the wall time, the machine and its load."""
    command = shlex.join([sys.executable.replace(os.getcwd() + "/", ""), *sys.argv])
    return (f"Command: `{command}`. This run: {minutes:.1f} minutes of wall time; machine: {os.cpu_count()} cores, "
            f"{datetime.datetime.now():%Y-%m-%d %H:%M}, load average at the end {os.getloadavg()[0]:.1f}.")


def mean_sd(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else float("nan")
    return mean, sd


def ranks(values: list[float]) -> list[float]:
    """1-based ranks, ties averaged."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    norm = math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))
    return cov / norm if norm else float("nan")


def ablation_table(scores: dict, models: list[str], seeds: list[int], steps: int,
                   damages: Sequence[str] = tuple(ablation.ABLATIONS)) -> tuple[list[str], bool]:
    lines = ["| table | AP mean | AP sd | seeds | drop | drop / pooled sd | > 2 sd |", "|---|---|---|---|---|---|---|"]
    holds = True
    for model in models:
        intact = [scores[f"{model}|seed={s}|steps={steps}"]["ap"] for s in seeds
                  if f"{model}|seed={s}|steps={steps}" in scores]
        mean0, sd0 = mean_sd(intact) if intact else (float("nan"), float("nan"))
        lines.append(f"| {model} | {mean0:.4f} | {sd0:.4f} | {len(intact)} | | | |")
        for damage in damages:
            name = f"{model}/{damage}"
            values = [scores[f"{name}|seed={s}|steps={steps}"]["ap"] for s in seeds
                      if f"{name}|seed={s}|steps={steps}" in scores]
            if not values or not intact:
                holds = False
                lines.append(f"| {name} | | | 0 | | | |")
                continue
            mean, sd = mean_sd(values)
            pooled = math.sqrt((sd0 ** 2 + sd ** 2) / 2)
            margin = (mean0 - mean) / pooled if pooled > 0 else float("nan")
            ok = margin > 2
            holds = holds and ok
            lines.append(f"| {name} | {mean:.4f} | {sd:.4f} | {len(values)} | {mean0 - mean:+.4f} | {margin:.2f} | "
                         f"{'yes' if ok else 'no'} |")
    return lines, holds


def path_lengths(rows) -> list[tuple[int, int]]:
    """(longest, shortest) number of blocks on a path from the first stem block to each output P3..P7, through the
    wiring the network builds (`SpineNet.network_plan`: parents, and unconsumed blocks summed into outputs)."""
    longest, shortest = {}, {}
    outputs = {}
    for node in SpineNet.network_plan(parse_block_specs(rows)):
        parents = [*node.inputs, *node.extra_inputs]
        longest[node.index] = 1 + max((longest[p] for p in parents), default=0)
        shortest[node.index] = 1 + min((shortest[p] for p in parents), default=0)
        if node.is_output and node.used:
            outputs[node.level] = node.index
    return [(longest[outputs[level]], shortest[outputs[level]]) for level in sorted(outputs)]


def depth_table(by_name: dict[str, list]) -> list[str]:
    lines = ["| table | blocks on the longest path to P3..P7 | on the shortest |", "|---|---|---|"]
    for name, rows in by_name.items():
        lengths = path_lengths(rows)
        lines.append(f"| {name} | {' '.join(str(a) for a, _ in lengths)} | {' '.join(str(b) for _, b in lengths)} |")
    return lines


# A table "learns" on the longer proxy when its AP there is at least this fraction of the best table's. Tables that
# do not learn at all (the long-range damages) are told apart by any proxy; the ranking that matters to a search is
# among those that do.
LEARNS_FRACTION = 0.1


def correlation_table(scores: dict, names: list[str], short: int, long: int
                      ) -> tuple[list[str], float, float, int]:
    """The table of short and long scores (seed 0), Spearman's rho over all tables, and rho over the tables that
    learn (long AP >= `LEARNS_FRACTION` of the best long AP) with their count."""
    lines = [f"| table | AP, {short} steps | AP, {long} steps | B multiply-adds |", "|---|---|---|---|"]
    pairs = []
    for name in names:
        a, b = scores.get(f"{name}|seed=0|steps={short}"), scores.get(f"{name}|seed=0|steps={long}")
        if a and b:
            pairs.append((a["ap"], b["ap"]))
            lines.append(f"| {name} | {a['ap']:.4f} | {b['ap']:.4f} | {a['flops'] / 1e9:.3f} |")

    def rho(selected: list[tuple[float, float]]) -> float:
        return spearman([p[0] for p in selected], [p[1] for p in selected]) if len(selected) > 2 else float("nan")

    best = max((p[1] for p in pairs), default=0.0)
    learning = [p for p in pairs if best > 0 and p[1] >= LEARNS_FRACTION * best]
    return lines, rho(pairs), rho(learning), len(learning)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flagfile", default=FLAGFILE, help="The search flagfile whose proxy task scores tables.")
    parser.add_argument("--out_dir", default="runs/bench_search_proxy")
    parser.add_argument("--out", default="docs/search_proxy.md", help="Markdown report ('' for none).")
    parser.add_argument("--seeds", type=int, default=3, help="Seeds per table in the ablation (>= 2).")
    parser.add_argument("--num_workers", type=int, default=2, help="Trials at once, a process each.")
    parser.add_argument("--extra_tables", type=int, default=2,
                        help="Random tables of the spinenet space added to the rank correlation.")
    parser.add_argument("--long_factor", type=float, default=2.0, help="The longer proxy's steps / the short one's.")
    parser.add_argument("--skip_correlation", action="store_true", help="Only the ablation.")
    parser.add_argument("--models", default=",".join(MODELS), help="Comma-separated: which of the intact tables "
                        f"({', '.join(MODELS)}) the ablation damages.")
    parser.add_argument("--damages", default=",".join(ablation.ABLATIONS), help="Comma-separated: which damages of "
                        f"`spinenet_tf.search.ablation` ({', '.join(ablation.ABLATIONS)}).")
    args, extra_flags = parser.parse_known_args()
    models = args.models.split(",")
    if not models or any(model not in MODELS for model in models):
        parser.error(f"--models={args.models}: choose from {', '.join(MODELS)}")
    damages = args.damages.split(",")
    if not damages or any(damage not in ablation.ABLATIONS for damage in damages):
        parser.error(f"--damages={args.damages}: choose from {', '.join(ablation.ABLATIONS)}")
    if args.seeds < 2:
        parser.error(f"--seeds={args.seeds}: a standard deviation needs >= 2")
    os.makedirs(args.out_dir, exist_ok=True)
    search_args, task = search_config(args.flagfile, args.out_dir, extra_flags)
    space = search_args["space"]
    short = task.train.train_steps
    long = int(round(short * args.long_factor))
    by_name = tables(models, args.extra_tables, space, damages)
    seeds = list(range(args.seeds))
    ablation_names = [name for name in by_name if not name.startswith("random-")]
    jobs = [Job(name, seed, short, by_name[name]) for seed in seeds for name in ablation_names]
    if not args.skip_correlation:
        jobs += [Job(name, 0, short, by_name[name]) for name in by_name if name.startswith("random-")]
        jobs += [Job(name, 0, long, by_name[name]) for name in by_name]
    start = time.monotonic()
    scores = run_jobs(task, jobs, args.out_dir, args.num_workers)
    minutes = (time.monotonic() - start) / 60

    ablation_lines, holds = ablation_table(scores, models, seeds, short, damages)
    report = ["## Connection ablation (paper §5.5, Table 9) on the proxy", "", *ablation_lines, "",
              f"Every damaged table more than 2 pooled seed standard deviations below its intact one: "
              f"{'yes' if holds else 'no'}.", "", "### How deep each table is", "",
              *depth_table({name: rows for name, rows in by_name.items() if not name.startswith("random-")})]
    if not args.skip_correlation:
        correlation_lines, rho, rho_learning, num_learning = correlation_table(scores, list(by_name), short, long)
        report += ["", f"## Rank stability: {short}-step against {long}-step proxy (seed 0)", "", *correlation_lines, "",
                   f"Spearman rank correlation over {len(correlation_lines) - 2} tables: {rho:.3f}; over the "
                   f"{num_learning} that learn ({long}-step AP at least {LEARNS_FRACTION:g} of the best): "
                   f"{rho_learning:.3f}."]
    trial_seconds = [record["seconds"] for record in scores.values()]
    report += ["", f"Proxy settings: `{args.flagfile}`. {len(scores)} trials, {sum(trial_seconds) / 60:.1f} "
               f"trial-minutes, {args.num_workers} at a time. {run_line(minutes)}"]
    text = "\n".join(report)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write("# The search's proxy task: connection ablation and rank stability (bench/search_proxy.py)\n\n"
                    + text + "\n")


if __name__ == "__main__":
    main()
