"""`python -m spinenet_tf.search` (spinenet_tf/search/__main__.py), run as a user would, in a subprocess.

Fast tests use `--reward=synthetic` (agreement with a fixed table, no training): the command runs end to end with
trials in their own processes, a search killed mid-way resumes without re-running a finished trial and proposes
what an uninterrupted search would, `--max_flops` rejects tables untrained. The slow test trains two real proxy
trials through the training loop.
"""

import json
import signal
import subprocess
import sys

import pytest

import testing
from spinenet_tf.backbones.block_spec_file import read_block_spec_file
from spinenet_tf.search import get_space, run
from spinenet_tf.search.proxy import ProxyTask, SyntheticReward
from spinenet_tf.training.config import TrainConfig

FLAGFILE = "--flagfile=configs/search_r0_sp53_shapes.flags"


def _command(search_dir, *flags):
    return [sys.executable, "-m", "spinenet_tf.search", FLAGFILE, f"--search_dir={search_dir}", *flags]


def _run(search_dir, *flags, timeout=600):
    result = subprocess.run(_command(search_dir, *flags), cwd=testing.REPO_ROOT, env=testing.train_env(),
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.splitlines()


def _uninterrupted(tmp_path, num_trials):
    """The same synthetic search, in this process: the trials a killed and resumed search must reproduce."""
    space = get_space("r0-sp53")
    reward = SyntheticReward.for_space(space, ProxyTask(TrainConfig("detection", "retinanet-spinenet-49", "")))
    return run.search(space, reward, str(tmp_path / "reference"), num_trials, population_size=8, tournament_size=3,
                      log=None)


def test_a_synthetic_search_runs_end_to_end_in_trial_processes(tmp_path):
    lines = _run(tmp_path / "s", "--reward=synthetic", "--num_trials=3", "--num_workers=1")
    assert [line.split(":")[0] for line in lines[:3]] == ["trial 1/3", "trial 2/3", "trial 3/3"]
    assert all("; best " in line for line in lines[:3])
    records = run.read_trials(str(tmp_path / "s"))
    assert [r["dna"] for r in records] == [r["dna"] for r in _uninterrupted(tmp_path, 3)]
    assert {r["status"] for r in records} == {"ok"} and all(r["flops"] is None for r in records)
    best = run.best_trial(records)
    assert lines[-1] == f"best: trial {best['trial'] + 1}, reward {best['reward']:.4f}: {tmp_path / 's' / 'best.json'}"
    assert read_block_spec_file(tmp_path / "s" / "best.json").to_json_dict() == best["architecture"]
    assert sorted(p.name for p in (tmp_path / "s" / "trials").iterdir()) == ["0000.log", "0001.log", "0002.log"]


def test_a_killed_search_resumes_without_rerunning_finished_trials(tmp_path):
    search_dir = tmp_path / "s"
    flags = ("--reward=synthetic", "--num_trials=4", "--num_workers=1")
    process = subprocess.Popen(_command(search_dir, *flags), cwd=testing.REPO_ROOT, env=testing.train_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trials = search_dir / run.TRIALS_FILE
    # Kill once a trial has finished and the next one's process is running (not in the moment between the two).
    testing.wait_until(lambda: trials.exists() and trials.read_text().count("\n") >= 1
                       and testing.children(process.pid), timeout=300, poll=0.2)
    children = testing.children(process.pid)
    process.send_signal(signal.SIGKILL)  # mid-search: trial 2 is running in its own process
    process.wait()
    # The trial processes end with the search (run_test.py kills one mid-trial).
    assert children and not testing.still_running_after(children, timeout=10)
    before = trials.read_text().splitlines()
    assert 1 <= len(before) < 4
    lines = _run(search_dir, *flags)
    # Only the unfinished trials ran; the finished ones' lines are untouched.
    assert [line.split(":")[0] for line in lines[:-1]] == [f"trial {t}/4" for t in range(len(before) + 1, 5)]
    after = trials.read_text().splitlines()
    assert after[:len(before)] == before
    assert [r["dna"] for r in run.read_trials(str(search_dir))] == [r["dna"] for r in _uninterrupted(tmp_path, 4)]


def test_max_flops_rejects_tables_untrained(tmp_path):
    lines = _run(tmp_path / "s", "--reward=synthetic", "--num_trials=2", "--num_workers=0", "--max_flops=1e6")
    records = run.read_trials(str(tmp_path / "s"))
    assert [r["status"] for r in records] == ["rejected", "rejected"]
    for record, line in zip(records, lines):
        # R0-SP53 tables as the proxy's RetinaNet at 128 px, widths 0.25 / 32: about 0.14 B multiply-adds.
        assert 0.05e9 < record["flops"] < 0.3e9
        assert f"rejected ({record['flops'] / 1e9:.3f} B multiply-adds > --max_flops=1e+06)" in line
        assert not (tmp_path / "s" / "trials" / f"{record['trial']:04d}").exists()  # never trained
    assert lines[-1] == f"no trial succeeded; see {tmp_path / 's' / run.TRIALS_FILE}"
    assert not (tmp_path / "s" / run.BEST_FILE).exists()


def test_a_search_resumed_with_another_proxy_is_refused(tmp_path):
    # The proxy's training run is part of the search's settings: scores of 200 and 400 steps are not mixed.
    search_dir = tmp_path / "s"
    _run(search_dir, "--reward=synthetic", "--num_trials=1", "--num_workers=0")
    result = subprocess.run(_command(search_dir, "--reward=synthetic", "--num_trials=2", "--num_workers=0",
                                     "--train_steps=400"),
                            cwd=testing.REPO_ROOT, env=testing.train_env(), capture_output=True, text=True, timeout=300)
    assert (result.returncode, result.stderr.strip()) == (
        2, f"error: {search_dir / run.SETTINGS_FILE}: {search_dir} holds a search with other settings "
           f"(reward.train.train_steps: 200 -> 400); resume it with its own settings or use another --search_dir")
    assert len(run.read_trials(str(search_dir))) == 1
    # A search.json from before the proxy's settings were recorded is refused too, and says so.
    settings = json.loads((search_dir / run.SETTINGS_FILE).read_text())
    del settings["reward"]
    (search_dir / run.SETTINGS_FILE).write_text(json.dumps(settings))
    result = subprocess.run(_command(search_dir, "--reward=synthetic", "--num_trials=2", "--num_workers=0"),
                            cwd=testing.REPO_ROOT, env=testing.train_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "(reward: 'not recorded' -> 'recorded now')" in result.stderr


@pytest.mark.parametrize("flag, error", [
    ("--num_trials=0", "error: --num_trials=0: must be >= 1"),
    ("--model_overrides=block_specs=x", "error: --model_overrides: block_specs is what the search chooses; it "
                                        "cannot be set"),
    ("--model_overrides=anchor_size", "error: --model_overrides='anchor_size': expected key=value"),
])
def test_bad_flags_are_one_line(tmp_path, flag, error):
    result = subprocess.run(_command(tmp_path / "s", flag), cwd=testing.REPO_ROOT,
                            env=testing.train_env(), capture_output=True, text=True, timeout=300)
    assert (result.returncode, result.stderr.strip()) == (2, error)


@pytest.mark.slow
def test_two_proxy_trials_train_through_the_training_loop(tmp_path):
    # The flagfile's proxy cut to 8 steps of 4 images and 8 evaluation images: the graphs are the flagfile's, the
    # training short (building the graphs takes most of a trial's ~40 s CPU).
    lines = _run(tmp_path / "s", "--num_trials=2", "--train_steps=8", "--warmup_steps=2", "--batch_size=4",
                 "--eval_data=builtin:shapes:validation[:8]", "--model_overrides=anchor_size=1.5", timeout=900)
    records = run.read_trials(str(tmp_path / "s"))
    assert [r["status"] for r in records] == ["ok", "ok"], records
    for record in records:
        assert record["reward"] == record["metrics"]["AP"] and 0 <= record["reward"] <= 1
        assert record["metrics"]["step"] == 8 and record["metrics"]["num_images"] == 8
        assert 0.05e9 < record["flops"] < 0.3e9
        trial_dir = tmp_path / "s" / "trials" / f"{record['trial']:04d}"
        saved = json.loads((trial_dir / "train_config.json").read_text())
        assert saved["model_overrides"]["block_specs"] == record["architecture"]
        assert saved["model_overrides"]["filter_size_scale"] == 0.25
        assert saved["model_overrides"]["anchor_size"] == 1.5  # --model_overrides reach every trial
        assert not (trial_dir / "checkpoints").exists()
    assert lines[-1].startswith("best: trial ")
    assert read_block_spec_file(tmp_path / "s" / "best.json").to_json_dict() == run.best_trial(records)[
        "architecture"]
