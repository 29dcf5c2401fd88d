"""The `tf.distribute` strategy of a run (`--strategy`) and this process's role in it (chief or worker)."""

from __future__ import annotations

import os

import tensorflow as tf


def make_strategy(runtime) -> tf.distribute.Strategy:
    """The strategy of `runtime.strategy` (a `RuntimeConfig`): default, mirrored, multi_worker (reads TF_CONFIG)
    or tpu (connects to `runtime.tpu`)."""
    if runtime.strategy == "default":
        return tf.distribute.get_strategy()
    if runtime.strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    if runtime.strategy == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError("--strategy=multi_worker: set TF_CONFIG (cluster and task) for every worker")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if runtime.strategy == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=runtime.tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"--strategy={runtime.strategy!r}: unknown")


def worker_role(strategy: tf.distribute.Strategy) -> tuple[bool, int]:
    """(is_chief, task_id) of this process: the chief writes the `model_dir`; outside multi-worker runs (True, 0).

    The chief is the task of type "chief", or worker 0 when the cluster has no chief.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return True, 0
    task_type, task_id = resolver.task_type, resolver.task_id or 0
    return task_type in (None, "chief") or (task_type == "worker" and task_id == 0
                                            and "chief" not in resolver.cluster_spec().as_dict()), task_id
