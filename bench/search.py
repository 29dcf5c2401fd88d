"""Regularized evolution against random search at an equal budget, on the search's proxy task.

    .venv/bin/python bench/search.py [--flagfile=configs/search_proxy_shapes.flags] [--out_dir=runs/bench_search] \
        [--num_trials=16] [--num_workers=2] [--reward=proxy|synthetic] [search flags ...]

Run from the repo root; flags this script does not know go to the search's flag parsing after the flagfile. Runs the search of `--flagfile` (space, proxy task, population and tournament sizes, seed)
twice through `spinenet_tf.search.run.search`, once per algorithm, `--num_trials` trials each, into
`out_dir/evolution` and `out_dir/random`; both are ordinary search directories, so a killed run resumes and
`best.json` of each is a block-spec file. Then draws the best reward so far against the trial count of both into
`--out` (docs/search_evolution_vs_random.png, matplotlib) and writes beside it a Markdown table (.md): per trial
the reward and the best so far of each, and at the end each algorithm's best, its mean reward over the second half
of its trials (where evolution's proposals are mutations of good tables, random's are still random) and the
trial-minutes spent. `--reward=synthetic` scores tables by agreement with a fixed table (no training): the loop
and the algorithms alone, in seconds.

One search per algorithm is one sample: a difference smaller than the spread of the proxy's rewards between seeds
(bench/search_proxy.py measures it) is no difference.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from search_proxy import FLAGFILE, run_line, search_config  # noqa: E402  (bench/search_proxy.py)

ALGORITHMS = ("evolution", "random")


def best_so_far(records: list[dict]) -> list[float | None]:
    """The running best reward over trials in trial order (None before the first successful one)."""
    out, best = [], None
    for record in records:
        if record["status"] == "ok" and (best is None or record["reward"] > best):
            best = record["reward"]
        out.append(best)
    return out


def summary(records: list[dict]) -> dict:
    ok = [record["reward"] for record in records if record["status"] == "ok"]
    second_half = [record["reward"] for record in records[len(records) // 2:] if record["status"] == "ok"]
    return {"best": max(ok, default=float("nan")), "ok": len(ok), "trials": len(records),
            "second_half_mean": sum(second_half) / len(second_half) if second_half else float("nan"),
            "minutes": sum(record["seconds"] for record in records) / 60}


def draw(curves: dict[str, list], path: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for (name, curve), style in zip(curves.items(), ("o-", "s--")):
        points = [(trial + 1, value) for trial, value in enumerate(curve) if value is not None]
        axis.plot([p[0] for p in points], [p[1] for p in points], style, label=name, markersize=4)
    axis.set_xlabel("trials")
    axis.set_ylabel("best reward so far")
    axis.set_title(title, fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flagfile", default=FLAGFILE, help="The search flagfile (space, proxy, population).")
    parser.add_argument("--out_dir", default="runs/bench_search")
    parser.add_argument("--out", default="docs/search_evolution_vs_random.png",
                        help="The picture; the table goes beside it as .md ('' for neither).")
    parser.add_argument("--num_trials", type=int, default=16, help="Trials per algorithm.")
    parser.add_argument("--num_workers", type=int, default=2, help="Trials at once, a process each.")
    parser.add_argument("--reward", choices=("proxy", "synthetic"), default="proxy")
    args, extra_flags = parser.parse_known_args()

    from spinenet_tf.search import proxy, run

    out_dir = os.path.join(args.out_dir, args.reward)
    search_args, task = search_config(args.flagfile, out_dir, extra_flags)
    space = search_args["space"]
    reward = task if args.reward == "proxy" else proxy.SyntheticReward.for_space(space, task)
    records, start = {}, time.monotonic()
    for algorithm in ALGORITHMS:
        search_dir = os.path.join(out_dir, algorithm)
        print(f"== {algorithm}: {search_dir}", file=sys.stderr, flush=True)
        records[algorithm] = run.search(
            space, reward, search_dir, args.num_trials, algorithm=algorithm, seed=search_args["seed"],
            population_size=search_args["population_size"], tournament_size=search_args["tournament_size"],
            num_workers=args.num_workers, log=lambda line: print(line, file=sys.stderr, flush=True)
        )[:args.num_trials]  # a directory with more finished trials (a longer run) is compared at this budget
    minutes = (time.monotonic() - start) / 60

    curves = {algorithm: best_so_far(records[algorithm]) for algorithm in ALGORITHMS}
    lines = ["| trial | " + " | ".join(f"{a} reward | {a} best so far" for a in ALGORITHMS) + " |",
             "|---" * (1 + 2 * len(ALGORITHMS)) + "|"]
    for trial in range(args.num_trials):
        cells = []
        for algorithm in ALGORITHMS:
            record = records[algorithm][trial]
            cells.append(f"{record['reward']:.4f}" if record["status"] == "ok" else record["status"])
            cells.append(f"{curves[algorithm][trial]:.4f}" if curves[algorithm][trial] is not None else "")
        lines.append(f"| {trial + 1} | " + " | ".join(cells) + " |")
    lines += ["", "| algorithm | best | mean reward, second half | ok trials | trial-minutes |", "|---|---|---|---|---|"]
    for algorithm in ALGORITHMS:
        s = summary(records[algorithm])
        lines.append(f"| {algorithm} | {s['best']:.4f} | {s['second_half_mean']:.4f} | {s['ok']}/{s['trials']} | "
                     f"{s['minutes']:.1f} |")
    lines += ["", f"Space `{space.name}`, reward `{args.reward}` (`{args.flagfile}`), population "
              f"{search_args['population_size']}, tournament {search_args['tournament_size']}, seed "
              f"{search_args['seed']}, {max(1, args.num_workers)} trial(s) at a time. {run_line(minutes)}"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        draw(curves, args.out, f"{space.name}, {args.reward} reward: best so far, {args.num_trials} trials each")
        with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
            f.write(f"# Regularized evolution against random search (bench/search.py)\n\n![best so far]"
                    f"({os.path.basename(args.out)})\n\n{text}\n")


if __name__ == "__main__":
    main()
