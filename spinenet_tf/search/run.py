"""The search loop: PyGlove proposes points of a space, a reward function scores them, every trial is kept on disk.

The algorithms are PyGlove's own DNA generators: "evolution" is regularized evolution (Real et al., AAAI 2019;
`pg.evolution.regularized_evolution`, uniform mutation), "random" is uniform sampling (`pg.geno.Random`). The paper
trained an RNN controller with reinforcement learning (arXiv:1912.05027 §5.1); open-source PyGlove has none, and
regularized evolution is the usual stand-in at equal budget.

`search_dir` holds:
    search.json     the settings (space, algorithm, seed, population, the reward's own settings: the proxy's
                    training run); a resumed search must use the same ones.
    trials.jsonl    one line per finished trial, appended as it ends (in the order trials end): trial number, DNA,
                    status ("ok", "failed" or "rejected"), reward, FLOPs (multiply-adds of the scored model, when
                    the reward function measures them), seconds, the architecture (a block-spec file's object:
                    family, stem, rows), further metrics, and for a failed or rejected trial the reason.
    best.json       the best architecture so far: a block-spec file (`backbones.block_spec_file`) with its trial
                    and reward, which `build_backbone(name, block_specs=...)`, `train`, `summary`, `draw` take.
    trials/NNNN.log the output of trial NNNN's process (with `num_workers` >= 1).

Resuming: the generator is rebuilt with the same seed and the finished trials are replayed in order (each proposal
is checked against the recorded DNA, each reward fed back), so no finished trial is run again and a resumed search
proposes exactly what an uninterrupted one would; a trial that was running when the search was killed runs again.
A trial whose architecture or reward fails (an exception, a non-finite reward, a dead trial process) is recorded
as failed, one whose reward function raises `Rejected` (a constraint such as --max_flops) as rejected; neither gets
feedback, and the search goes on.

The reward is any `RewardFn`: `(Architecture, trial number) -> TrialResult`. `table_agreement` is a cheap synthetic
one (for tests and for checking the plumbing); `spinenet_tf.search.proxy.ProxyTask` trains each table briefly.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence

import pyglove as pg

from spinenet_tf import atomic_files
from spinenet_tf.backbones.block_specs import BlockSpec, parse_block_specs
from spinenet_tf.search.spaces import Architecture, SearchSpace

ALGORITHMS = ("evolution", "random")
SETTINGS_FILE, TRIALS_FILE, BEST_FILE = "search.json", "trials.jsonl", "best.json"
TRIAL_LOGS_DIR = "trials"  # NNNN.log: the output of trial NNNN's process
_PR_SET_PDEATHSIG = 1      # prctl(2): the signal a process gets when its parent dies


@dataclasses.dataclass(frozen=True)
class TrialResult:
    """What a reward function reports: the reward (higher is better), if measured the model's FLOPs, and any
    further metrics to keep in the trial's record."""

    reward: float
    flops: float | None = None
    metrics: Mapping | None = None


class Rejected(Exception):
    """Raised by a reward function for a table that breaks a constraint (e.g. `--max_flops`): the trial is recorded
    as "rejected" (with its FLOPs), gets no feedback, and the search goes on."""

    def __init__(self, message: str, flops: float | None = None):
        super().__init__(message)
        self.flops = flops


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


@dataclasses.dataclass(frozen=True)
class TableAgreement:
    """A synthetic reward: how much of `target` a table repeats, row by row: the level, the block type and each
    parent that is one of the target row's, averaged (1.0 for `target` itself). Costs nothing; a search that climbs
    it finds a needle in its space. A picklable callable, so it runs in trial processes too."""

    target: tuple[BlockSpec, ...]

    def __call__(self, architecture: Architecture, trial: int) -> TrialResult:
        del trial
        score = 0.0
        for row, goal in zip(architecture.block_specs, self.target):
            parents = sum(parent in goal.input_offsets for parent in row.input_offsets) / len(goal.input_offsets)
            score += ((row.level == goal.level) + (row.block_fn == goal.block_fn) + parents) / 3
        return TrialResult(score / len(self.target))


def table_agreement(target: Sequence) -> TableAgreement:
    """`TableAgreement` with `target` (rows as `parse_block_specs` takes them)."""
    return TableAgreement(parse_block_specs(target))


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
           seed: int = 0, population_size: int = 20, tournament_size: int = 5, num_workers: int = 0,
           log: Callable[[str], None] | None = print) -> list[dict]:
    """Runs (or resumes) a search until `search_dir` holds `num_trials` finished trials; returns their records in
    trial order.

    Args:
        num_workers: 0 runs every trial in this process, one after the other. N >= 1 runs each trial in a process
            of its own (multiprocessing "spawn"; its output goes to `search_dir/trials/NNNN.log`), up to N at
            once; `reward_fn` must then pickle. Only this process appends to trials.jsonl.

    The schedule does not depend on timing: the generator gets the results in trial order, and trial t is
    proposed right after trials 0..t-N have been fed back (N = max(1, num_workers)), before any later one. So a search proposes the same
    trials however fast they finish, and a resumed one replays exactly; regularized evolution's proposals depend
    on N, which is part of its settings when above 1.

    Raises:
        ValueError: `search_dir` holds a search with other settings, or trials this generator does not propose.
    """
    in_flight = max(1, num_workers)
    settings = {"space": space.name, "algorithm": algorithm, "seed": seed}
    if algorithm == "evolution":
        settings.update(population_size=population_size, tournament_size=tournament_size)
        if in_flight > 1:
            settings["num_workers"] = in_flight
    if callable(getattr(reward_fn, "settings", None)):  # what a reward means (the proxy's training run)
        settings["reward"] = reward_fn.settings()
    generator = make_algorithm(algorithm, seed, population_size, tournament_size)
    os.makedirs(search_dir, exist_ok=True)
    _check_settings(search_dir, settings)
    generator.setup(space.dna_spec())

    records = read_trials(search_dir)
    _rewrite_trials(search_dir, records)  # drops a torn last line
    done = {record["trial"]: record for record in records}
    best = best_trial(records)
    dnas: dict[int, pg.DNA] = {}        # proposed, not yet fed back
    running: dict[int, _TrialProcess] = {}
    proposed = fed = 0

    def finish(record: dict) -> None:
        nonlocal best
        _append_trial(search_dir, record)
        done[record["trial"]] = record
        if record["status"] == "ok" and (best is None or record["reward"] > best["reward"]):
            best = record
            atomic_files.write_text(os.path.join(search_dir, BEST_FILE), json.dumps(
                {**record["architecture"], "trial": record["trial"], "reward": record["reward"]}, indent=1) + "\n")
        if log:
            log(_progress_line(record, best, num_trials))

    while True:
        # Trial t is proposed right after trials 0..t-N are fed back (in trial order), and no later ones: the
        # generator sees the same sequence however the trials' ends interleave.
        while fed <= proposed - in_flight and fed in done:
            dna = dnas.pop(fed)
            if done[fed]["status"] == "ok":
                generator.feedback(dna, done[fed]["reward"])
            fed += 1
        if proposed < num_trials and fed > proposed - in_flight:
            trial, dna = proposed, generator.propose()
            dnas[trial] = dna
            proposed += 1
            if trial in done:  # replay of a finished trial
                if dna.to_numbers() != done[trial]["dna"]:
                    raise ValueError(f"{search_dir}: trial {trial} is not what {settings} proposes; "
                                     "the trials come from another search")
            elif num_workers:
                running[trial] = _TrialProcess(space, reward_fn, dna, trial, search_dir)
            else:
                finish(_run_trial(space, reward_fn, dna, trial))
            continue
        if not running:
            break
        finish(_TrialProcess.wait_any(running))
    return [done[trial] for trial in sorted(done)]


def _run_trial(space: SearchSpace, reward_fn: RewardFn, dna: pg.DNA, trial: int) -> dict:
    start = time.monotonic()
    record: dict = {"trial": trial, "dna": dna.to_numbers()}
    try:
        architecture = space.materialize(dna)
        record["architecture"] = architecture.to_json_dict()
        result = reward_fn(architecture, trial)
        if not math.isfinite(result.reward):
            raise ValueError(f"reward {result.reward} is not finite")
    except Rejected as rejection:
        record.update(status="rejected", flops=rejection.flops, error=str(rejection))
    except Exception as error:  # noqa: BLE001 - a failed trial is recorded, the search goes on
        record.update(status="failed", error=f"{type(error).__name__}: {error}")
    else:
        record.update(status="ok", reward=float(result.reward), flops=result.flops)
        if result.metrics:
            record["metrics"] = dict(result.metrics)
    record["seconds"] = round(time.monotonic() - start, 3)
    return record


class _TrialProcess:
    """One trial in a spawned process of its own; its record comes back through a pipe. The child dies with this
    process (Linux `PR_SET_PDEATHSIG`), so a killed search leaves no trial running on."""

    def __init__(self, space: SearchSpace, reward_fn: RewardFn, dna: pg.DNA, trial: int, search_dir: str):
        context = multiprocessing.get_context("spawn")
        self.trial, self.start = trial, time.monotonic()
        self.dna = dna.to_numbers()
        log_path = os.path.join(search_dir, TRIAL_LOGS_DIR, f"{trial:04d}.log")
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        self.receiver, sender = context.Pipe(duplex=False)
        self.process = context.Process(target=_trial_process_main, name=f"trial-{trial}", args=(
            space, reward_fn, self.dna, trial, sender, log_path, os.getpid()))
        self.process.start()
        sender.close()

    @staticmethod
    def wait_any(running: dict[int, _TrialProcess]) -> dict:
        """Waits for one of `running` to end, removes it and returns its record (a failed one if it died)."""
        by_receiver = {worker.receiver: worker for worker in running.values()}
        worker = by_receiver[multiprocessing.connection.wait(list(by_receiver))[0]]
        del running[worker.trial]
        try:
            record = worker.receiver.recv()
        except EOFError:
            worker.process.join()
            record = {"trial": worker.trial, "dna": worker.dna, "status": "failed",
                      "error": f"the trial's process ended with exit code {worker.process.exitcode}"}
        worker.process.join()
        worker.receiver.close()
        record["seconds"] = round(time.monotonic() - worker.start, 3)  # the process's whole life
        return record


def _trial_process_main(space: SearchSpace, reward_fn: RewardFn, dna_numbers: list, trial: int, sender,
                        log_path: str, parent_pid: int) -> None:
    try:  # die with the parent (Linux); elsewhere a killed search's trials run to their end, unrecorded
        ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError, TypeError):
        pass
    if os.getppid() != parent_pid:
        os._exit(1)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    sys.stdout.flush(), sys.stderr.flush()
    os.dup2(log_fd, 1), os.dup2(log_fd, 2)
    sender.send(_run_trial(space, reward_fn, pg.DNA.from_numbers(dna_numbers, space.dna_spec()), trial))
    sender.close()


def _progress_line(record: Mapping, best: Mapping | None, num_trials: int) -> str:
    head = f"trial {record['trial'] + 1}/{num_trials}"
    if record["status"] == "ok":
        flops = "" if record["flops"] is None else f", {record['flops'] / 1e9:.3f} B multiply-adds"
        head += f": reward {record['reward']:.4f}{flops}, {record['seconds']:.1f} s"
    elif record["status"] == "rejected":
        head += f": rejected ({record['error']}), {record['seconds']:.1f} s"
    else:
        head += f": failed ({record['error']}), {record['seconds']:.1f} s"
    best_text = "none yet" if best is None else f"{best['reward']:.4f} (trial {best['trial'] + 1})"
    return f"{head}; best {best_text}"


def _check_settings(search_dir: str, settings: dict) -> None:
    """Writes a new search's settings; for a resumed one, raises ValueError naming every setting that differs."""
    path = os.path.join(search_dir, SETTINGS_FILE)
    settings = json.loads(json.dumps(settings))  # as it reads back (tuples as lists)
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        if saved != settings:
            if "reward" in settings and "reward" not in saved:  # written before rewards recorded their settings
                saved = {**saved, "reward": "not recorded"}
                settings = {**settings, "reward": "recorded now"}
            saved_flat, new_flat = _flatten(saved), _flatten(settings)
            changes = [f"{key}: {saved_flat.get(key)!r} -> {new_flat.get(key)!r}"
                       for key in sorted(saved_flat.keys() | new_flat.keys())
                       if saved_flat.get(key) != new_flat.get(key)]
            raise ValueError(f"{path}: {search_dir} holds a search with other settings ({'; '.join(changes)}); resume "
                             f"it with its own settings or use another --search_dir")
    else:
        atomic_files.write_text(path, json.dumps(settings, indent=1) + "\n")


def _flatten(settings: Mapping, prefix: str = "") -> dict:
    flat = {}
    for key, value in settings.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _rewrite_trials(search_dir: str, records: Sequence[Mapping]) -> None:
    atomic_files.write_text(os.path.join(search_dir, TRIALS_FILE),
                            "".join(json.dumps(record) + "\n" for record in records))


def _append_trial(search_dir: str, record: Mapping) -> None:
    with open(os.path.join(search_dir, TRIALS_FILE), "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())
