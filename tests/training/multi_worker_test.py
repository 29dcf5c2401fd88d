"""MultiWorkerMirroredStrategy with two real worker processes on 127.0.0.1 (TF_CONFIG), a few steps.

Both workers run the same `python -m spinenet_tf.train` command; the chief (worker 0) writes `model_dir`, worker 1
its own checkpoints under `model_dir/workers/`. Synchronous training must leave both with the same weights and
optimizer state (batch-norm moving statistics stay per worker without use_sync_bn, as in Model Garden).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess

import numpy as np
import pytest
import tensorflow as tf

import testing
from spinenet_tf import checkpoints

pytestmark = [pytest.mark.multiworker, pytest.mark.slow]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_end_with_the_same_weights(tmp_path):
    model_dir = str(tmp_path / "run")
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    flags = (*testing.TINY_DETECTOR_FLAGS, f"--model_dir={model_dir}", "--mode=train", "--train_steps=3",
             "--checkpoint_steps=3", "--strategy=multi_worker", "--batch_size=4")
    processes = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        processes.append(subprocess.Popen(testing.train_command(*flags), cwd=testing.REPO_ROOT,
                                          env=testing.train_env(TF_CONFIG=tf_config), stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for process in processes:
            _, stderr = process.communicate(timeout=900)
            outputs.append(stderr)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for index, (process, stderr) in enumerate(zip(processes, outputs)):
        assert process.returncode == 0, f"worker {index} exited {process.returncode}:\n{stderr[-3000:]}"
        assert "global batch 4 on 2 replica(s)" in stderr, stderr[-2000:]

    chief = tf.train.load_checkpoint(os.path.join(model_dir, checkpoints.CHECKPOINT_DIR, "ckpt-3"))
    worker = tf.train.load_checkpoint(os.path.join(model_dir, "workers", "worker-1", checkpoints.CHECKPOINT_DIR,
                                                   "ckpt-3"))
    names = [n for n in chief.get_variable_to_shape_map() if n.startswith(("model/", "optimizer/"))]
    # Batch-norm moving statistics are each worker's own (its batch) unless use_sync_bn: not compared.
    moving = [n for n in names if "/moving_" in n]
    names = [n for n in names if "/moving_" not in n]
    assert len(names) > 100 and moving
    assert chief.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 3
    for name in names:
        np.testing.assert_allclose(worker.get_tensor(name), chief.get_tensor(name), rtol=1e-6, atol=1e-7,
                                   err_msg=name)
    # And training moved them: batch-norm moving means start at zero and only training steps update them.
    moving_means = [name for name in moving if "moving_mean" in name]
    assert moving_means and all(np.any(chief.get_tensor(name) != 0) for name in moving_means)
