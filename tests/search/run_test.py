"""spinenet_tf.search.run: the search loop on a cheap synthetic reward (no training).

- Regularized evolution beats random sampling at an equal budget on the synthetic objective (agreement with
  R0-SP53's table, a needle in the R0-SP53 space), with fixed seeds.
- A killed search resumes with the same call, re-runs no finished trial and proposes what an uninterrupted search
  would; another search's directory is refused.
- A failing trial is recorded as failed and the search goes on; best.json is the best architecture.
"""

import json
import os
import signal
import subprocess
import sys

import pyglove as pg
import pytest

import search_testing
import testing

from spinenet_tf.backbones import R0_SP53_BLOCK_SPECS
from spinenet_tf.search import Architecture, get_space
from spinenet_tf.search import run

SPACE = get_space("r0-sp53")
REWARD = run.table_agreement(R0_SP53_BLOCK_SPECS)


def _search(tmp_path, name, num_trials, algorithm="evolution", seed=0, reward=REWARD):
    return run.search(SPACE, reward, str(tmp_path / name), num_trials, algorithm=algorithm, seed=seed,
                      population_size=10, tournament_size=3, log=None)


def test_agreement_is_one_on_the_target_only():
    target = Architecture("spinenet", R0_SP53_BLOCK_SPECS)
    assert REWARD(target, 0).reward == 1.0
    [(_, other)] = SPACE.sample(1, seed=0)
    assert 0.0 <= REWARD(other, 0).reward < 1.0


def test_evolution_beats_random_at_equal_budget(tmp_path):
    # 100 trials each (evolution: population 10, tournament 3), 2 seeds: evolution's best and the mean of its last
    # 25 trials exceed random's. (Random's mean stays near 0.56 here: every block is a bottleneck, a free third.)
    for seed in (0, 1):
        best, late = {}, {}
        for algorithm in run.ALGORITHMS:
            rewards = [r["reward"] for r in _search(tmp_path, f"{algorithm}{seed}", 100, algorithm, seed)]
            best[algorithm], late[algorithm] = max(rewards), sum(rewards[-25:]) / 25
        assert best["evolution"] > best["random"], (seed, best)
        assert late["evolution"] > late["random"] + 0.05, (seed, late)


def test_a_resumed_search_reruns_nothing_and_proposes_the_same(tmp_path):
    calls = []

    def counting(architecture, trial):
        calls.append(trial)
        return REWARD(architecture, trial)

    whole = _search(tmp_path, "whole", 16)
    _search(tmp_path, "parts", 9, reward=counting)
    resumed = _search(tmp_path, "parts", 16, reward=counting)
    assert calls == list(range(16))  # each trial scored once
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in resumed]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in whole]
    assert run.read_trials(str(tmp_path / "parts")) == resumed
    # A torn last line (killed while appending) is a trial that did not finish: it runs again.
    path = tmp_path / "parts" / run.TRIALS_FILE
    path.write_text(path.read_text() + '{"trial": 16, "dn')
    assert len(_search(tmp_path, "parts", 17, reward=counting)) == 17 and calls[-1] == 16


def test_another_searchs_directory_is_refused(tmp_path):
    _search(tmp_path, "dir", 2)
    with pytest.raises(ValueError, match=r"holds a search with other settings \(algorithm: 'evolution' -> 'random'; "
                                         r"population_size: 10 -> None; tournament_size: 3 -> None\)"):
        _search(tmp_path, "dir", 4, algorithm="random")


def test_failed_trials_are_recorded_and_best_json_is_the_best(tmp_path):
    def flaky(architecture, trial):
        if trial == 1:
            raise RuntimeError("loss is NaN")
        if trial == 2:
            return run.TrialResult(float("nan"))
        return run.TrialResult(REWARD(architecture, trial).reward, flops=1e9 * trial)

    lines = []
    records = run.search(SPACE, flaky, str(tmp_path / "s"), 6, algorithm="random", log=lines.append)
    assert [r["status"] for r in records] == ["ok", "failed", "failed", "ok", "ok", "ok"]
    assert records[1]["error"] == "RuntimeError: loss is NaN"
    assert records[2]["error"] == "ValueError: reward nan is not finite"
    assert "trial 2/6: failed (RuntimeError: loss is NaN)" in lines[1]
    best = max((r for r in records if r["status"] == "ok"), key=lambda r: r["reward"])
    saved = json.loads((tmp_path / "s" / run.BEST_FILE).read_text())
    assert (saved["trial"], saved["reward"]) == (best["trial"], best["reward"])
    architecture = Architecture.from_json_dict(saved)
    assert architecture == SPACE.materialize(pg.DNA.from_numbers(best["dna"], SPACE.dna_spec()))
    assert f"best {best['reward']:.4f} (trial {best['trial'] + 1})" in lines[-1]


def test_unknown_algorithm_is_named():
    with pytest.raises(ValueError, match=r"unknown algorithm 'rl'; valid names: evolution, random"):
        run.make_algorithm("rl", 0)


def test_trials_in_their_own_processes_record_failures_and_dead_processes(tmp_path):
    # Spawned trial processes: trial 1's reward raises, trial 2's process exits without a result; both are recorded
    # as failed, the others score as they would in this process, and each process's output has its own log.
    reward = search_testing.Flaky(REWARD, raise_on=1, exit_on=2)
    lines = []
    records = run.search(SPACE, reward, str(tmp_path / "s"), 4, algorithm="random", num_workers=1,
                         log=lines.append)
    assert [r["status"] for r in records] == ["ok", "failed", "failed", "ok"]
    assert records[1]["error"] == "RuntimeError: loss is NaN"
    assert records[2]["error"] == "the trial's process ended with exit code 3"
    in_process = _search(tmp_path, "reference", 4, algorithm="random")
    assert [r["reward"] for r in records if r["status"] == "ok"] == [in_process[0]["reward"], in_process[3]["reward"]]
    assert "trial 3/4: failed (the trial's process ended with exit code 3)" in lines[2]
    assert sorted(p.name for p in (tmp_path / "s" / run.TRIAL_LOGS_DIR).iterdir()) == [
        f"{trial:04d}.log" for trial in range(4)]


_HANGING_SEARCH = """
import sys
sys.path.insert(0, sys.argv[2])
import search_testing
from spinenet_tf.backbones import R0_SP53_BLOCK_SPECS
from spinenet_tf.search import get_space, run
run.search(get_space("r0-sp53"), search_testing.Flaky(run.table_agreement(R0_SP53_BLOCK_SPECS), hang_on=0),
           sys.argv[1], 1, algorithm="random", num_workers=1, log=None)
"""


def test_a_killed_search_takes_its_running_trial_with_it(tmp_path):
    # The trial hangs; once its log exists it is past setting PR_SET_PDEATHSIG, so killing the search must end it.
    process = subprocess.Popen([sys.executable, "-c", _HANGING_SEARCH, str(tmp_path / "s"), str(testing.TESTS_DIR)],
                               cwd=testing.REPO_ROOT, env=testing.train_env())
    log = tmp_path / "s" / run.TRIAL_LOGS_DIR / "0000.log"
    testing.wait_until(lambda: log.exists() or process.poll() is not None, timeout=300, poll=0.2)
    trial_processes = testing.children(process.pid)  # the trial and multiprocessing's resource tracker
    process.kill()
    process.wait()
    left_running = testing.still_running_after(trial_processes, timeout=10)
    for pid in left_running:  # not to leave an hour-long sleeper behind when the test fails
        os.kill(pid, signal.SIGKILL)
    assert log.exists() and trial_processes
    assert not left_running


def test_evolution_with_parallel_trials_keeps_its_worker_count(tmp_path):
    # Trial t is proposed once trials 0..t-N are fed back, so evolution's proposals depend on N: a directory
    # refuses another N.
    records = _search(tmp_path, "s", 3)
    assert len(records) == 3
    with pytest.raises(ValueError, match=r"\(num_workers: None -> 2\)"):
        run.search(SPACE, REWARD, str(tmp_path / "s"), 4, population_size=10, tournament_size=3, num_workers=2,
                   log=None)


def _fake_processes(monkeypatch, last_first: bool):
    """Trial "processes" that score in this process and end newest first (or oldest first)."""

    class Fake:
        def __init__(self, space, reward_fn, dna, trial, search_dir):
            self.trial, self.record = trial, run._run_trial(space, reward_fn, dna, trial)

        @staticmethod
        def wait_any(running):
            return running.pop((max if last_first else min)(running)).record

    monkeypatch.setattr(run, "_TrialProcess", Fake)


def test_parallel_trials_give_the_same_search_whatever_order_they_end_in(tmp_path, monkeypatch):
    def searched(name, num_trials, last_first):
        _fake_processes(monkeypatch, last_first)
        return run.search(SPACE, REWARD, str(tmp_path / name), num_trials, population_size=4, tournament_size=2,
                          num_workers=3, log=None)

    in_order = searched("in_order", 12, last_first=False)
    newest_first = searched("newest_first", 12, last_first=True)
    assert [r["dna"] for r in newest_first] == [r["dna"] for r in in_order]
    # trials.jsonl is in the order trials ended; a search resumed from part of it (a kill) goes on identically.
    ended = [r["trial"] for r in run.read_trials(str(tmp_path / "newest_first"))]
    assert ended != sorted(ended)
    path = tmp_path / "newest_first" / run.TRIALS_FILE
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:5]))
    assert [r["dna"] for r in searched("newest_first", 12, last_first=True)] == [r["dna"] for r in in_order]
