"""The search loop: PyGlove proposes points of a space, a reward function scores them, every trial is kept on disk.

The algorithms are PyGlove's own DNA generators: "evolution" is regularized evolution (Real et al., AAAI 2019;
`pg.evolution.regularized_evolution`, uniform mutation), "random" is uniform sampling (`pg.geno.Random`). The paper
trained an RNN controller with reinforcement learning (arXiv:1912.05027 §5.1); open-source PyGlove has none, and
regularized evolution is the usual stand-in at equal budget.

`search_dir` holds:
    search.json     the settings (space, algorithm, seed, population); a resumed search must use the same ones.
    trials.jsonl    one line per finished trial, appended as it ends: trial number, DNA, status ("ok" or "failed"),
                    reward, FLOPs (multiply-adds of the scored model, when the reward function measures them),
                    seconds, the architecture (family, stem, block-spec rows) and, for a failed trial, the error.
    best.json       the best architecture so far (`Architecture.to_json_dict()` plus its trial and reward).

Resuming: the generator is rebuilt with the same seed and the finished trials are replayed in order (each proposal
is checked against the recorded DNA, each reward fed back), so no finished trial is run again and a resumed search
proposes exactly what an uninterrupted one would. A trial whose architecture or reward fails (an exception, a
non-finite reward) is recorded as failed and gets no feedback; the search goes on.

The reward is any `RewardFn`: `(Architecture, trial number) -> TrialResult`. `table_agreement` is a cheap synthetic
one (for tests and for checking the plumbing); a training proxy plugs in the same way.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence

import pyglove as pg

from spinenet_tf import atomic_files
from spinenet_tf.backbones.block_specs import parse_block_specs
from spinenet_tf.search.spaces import Architecture, SearchSpace

ALGORITHMS = ("evolution", "random")
SETTINGS_FILE, TRIALS_FILE, BEST_FILE = "search.json", "trials.jsonl", "best.json"


@dataclasses.dataclass(frozen=True)
class TrialResult:
    """What a reward function reports: the reward (higher is better) and, if measured, the model's FLOPs."""

    reward: float
    flops: float | None = None


RewardFn = Callable[[Architecture, int], TrialResult]


def make_algorithm(name: str, seed: int, population_size: int = 20, tournament_size: int = 5) -> pg.DNAGenerator:
    """PyGlove's generator for `name` ("evolution" or "random"), reproducible from `seed`."""
    if name == "random":
        return pg.geno.Random(seed=seed)
    if name == "evolution":
        return pg.evolution.regularized_evolution(pg.evolution.mutators.Uniform(seed=seed),
                                                  population_size=population_size,
                                                  tournament_size=tournament_size, seed=seed)
    raise ValueError(f"unknown algorithm {name!r}; valid names: {', '.join(ALGORITHMS)}")


def table_agreement(target: Sequence) -> RewardFn:
    """A synthetic reward: how much of `target` a table repeats, row by row: the level, the block type and each
    parent that is one of the target row's, averaged (1.0 for `target` itself). Costs nothing; a search that climbs
    it finds a needle in its space."""
    target = parse_block_specs(target)

    def reward(architecture: Architecture, trial: int) -> TrialResult:
        del trial
        score = 0.0
        for row, goal in zip(architecture.block_specs, target):
            parents = sum(parent in goal.input_offsets for parent in row.input_offsets) / len(goal.input_offsets)
            score += ((row.level == goal.level) + (row.block_fn == goal.block_fn) + parents) / 3
        return TrialResult(score / len(target))

    return reward


def read_trials(search_dir: str) -> list[dict]:
    """The finished trials of `search_dir`, in order ([] for a new search). A torn last line (a kill while
    appending) is dropped: that trial did not finish."""
    path = os.path.join(search_dir, TRIALS_FILE)
    if not os.path.exists(path):
        return []
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return records


def best_trial(records: Sequence[Mapping]) -> Mapping | None:
    """The finished trial with the highest reward (the earliest of equals), or None."""
    ok = [record for record in records if record["status"] == "ok"]
    return max(ok, key=lambda record: record["reward"], default=None)


def search(space: SearchSpace, reward_fn: RewardFn, search_dir: str, num_trials: int, algorithm: str = "evolution",
           seed: int = 0, population_size: int = 20, tournament_size: int = 5,
           log: Callable[[str], None] | None = print) -> list[dict]:
    """Runs (or resumes) a search until `search_dir` holds `num_trials` finished trials; returns their records.

    Raises:
        ValueError: `search_dir` holds a search with other settings, or trials this generator does not propose.
    """
    settings = {"space": space.name, "algorithm": algorithm, "seed": seed}
    if algorithm == "evolution":
        settings.update(population_size=population_size, tournament_size=tournament_size)
    generator = make_algorithm(algorithm, seed, population_size, tournament_size)
    os.makedirs(search_dir, exist_ok=True)
    _check_settings(search_dir, settings)
    generator.setup(space.dna_spec())

    records = read_trials(search_dir)
    for record in records:  # replay: the same proposals, the same feedback
        dna = generator.propose()
        if dna.to_numbers() != record["dna"]:
            raise ValueError(f"{search_dir}: trial {record['trial']} is not what {settings} proposes; "
                             "the trials come from another search")
        if record["status"] == "ok":
            generator.feedback(dna, record["reward"])
    _rewrite_trials(search_dir, records)  # drops a torn last line
    best = best_trial(records)

    for trial in range(len(records), num_trials):
        dna = generator.propose()
        record = _run_trial(space, reward_fn, dna, trial)
        if record["status"] == "ok":
            generator.feedback(dna, record["reward"])
        _append_trial(search_dir, record)
        records.append(record)
        if record["status"] == "ok" and (best is None or record["reward"] > best["reward"]):
            best = record
            atomic_files.write_text(os.path.join(search_dir, BEST_FILE),
                                    json.dumps({**record["architecture"], "trial": trial, "reward": record["reward"]},
                                               indent=1) + "\n")
        if log:
            log(_progress_line(record, best, num_trials))
    return records


def _run_trial(space: SearchSpace, reward_fn: RewardFn, dna: pg.DNA, trial: int) -> dict:
    start = time.monotonic()
    record: dict = {"trial": trial, "dna": dna.to_numbers()}
    try:
        architecture = space.materialize(dna)
        record["architecture"] = architecture.to_json_dict()
        result = reward_fn(architecture, trial)
        if not math.isfinite(result.reward):
            raise ValueError(f"reward {result.reward} is not finite")
    except Exception as error:  # noqa: BLE001 - a failed trial is recorded, the search goes on
        record.update(status="failed", error=f"{type(error).__name__}: {error}")
    else:
        record.update(status="ok", reward=float(result.reward), flops=result.flops)
    record["seconds"] = round(time.monotonic() - start, 3)
    return record


def _progress_line(record: Mapping, best: Mapping | None, num_trials: int) -> str:
    head = f"trial {record['trial'] + 1}/{num_trials}"
    if record["status"] == "ok":
        flops = "" if record["flops"] is None else f", {record['flops'] / 1e9:.3f} B multiply-adds"
        head += f": reward {record['reward']:.4f}{flops}, {record['seconds']:.1f} s"
    else:
        head += f": failed ({record['error']}), {record['seconds']:.1f} s"
    best_text = "none yet" if best is None else f"{best['reward']:.4f} (trial {best['trial'] + 1})"
    return f"{head}; best {best_text}"


def _check_settings(search_dir: str, settings: dict) -> None:
    path = os.path.join(search_dir, SETTINGS_FILE)
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        if saved != settings:
            raise ValueError(f"{search_dir} holds a search with settings {saved}, not {settings}")
    else:
        atomic_files.write_text(path, json.dumps(settings, indent=1) + "\n")


def _rewrite_trials(search_dir: str, records: Sequence[Mapping]) -> None:
    atomic_files.write_text(os.path.join(search_dir, TRIALS_FILE),
                            "".join(json.dumps(record) + "\n" for record in records))


def _append_trial(search_dir: str, record: Mapping) -> None:
    with open(os.path.join(search_dir, TRIALS_FILE), "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())
