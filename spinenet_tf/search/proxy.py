"""The search's proxy task: each sampled table is trained briefly as a small RetinaNet and scored by its val AP.

The paper's proxy (arXiv:1912.05027 §5.1): SpineNet-49 with every feature dimension scaled by 0.25, resampling
alpha 0.25, a box/class head of feature dimension 64, trained 5 epochs at 512 px on COCO train2017 minus 7,392
held-out images, whose AP is the reward. `ProxyTask` is that recipe with every number a setting: the width
(`filter_size_scale`), alpha, head and endpoint widths go into the `model_overrides` of a `TrainConfig` (RetinaNet on
SpineNet-49's or SpineNet-Mobile-49's registry row, `proxy_model`), with the image size, steps, data and optimizer
of that config. Each trial is one run of the training loop (`training.loop.run`, train then evaluate) in
`search_dir/trials/NNNN/`; its reward is the returned evaluation's `metric` (COCO "AP"), the other COCO numbers go
into the trial's record. Before training, the trial's RetinaNet is built and its multiply-adds counted
(`model_stats.count_flops`, batch 1, no NMS); above `max_flops` the trial is `run.Rejected` without training.
Checkpoints are deleted after a trial (its `train_config.json` and `eval_metrics.json` stay).
"""

from __future__ import annotations

import dataclasses
import os
import shutil

import keras

from spinenet_tf import model_stats, models, registry
from spinenet_tf.backbones.block_spec_file import Architecture
from spinenet_tf.search.run import Rejected, TableAgreement, TrialResult
from spinenet_tf.search.spaces import SearchSpace
from spinenet_tf.training import loop
from spinenet_tf.training.config import TrainConfig

# The RetinaNet each family's tables are trained in (widths and head then set by the proxy's overrides).
PROXY_MODELS = {"spinenet": "retinanet-spinenet-49", "spinenet_mobile": "retinanet-spinenet-mobile-49"}
TRIALS_DIR = "trials"


def proxy_model(family: str) -> str:
    """The registry RetinaNet whose backbone family is `family`."""
    return PROXY_MODELS[family]


def proxy_overrides(family: str, filter_size_scale: float, resample_alpha: float, endpoints_num_filters: int,
                    head_num_filters: int, head_num_convs: int) -> dict:
    """`model_overrides` of the proxy's RetinaNet: backbone width and alpha (SpineNet only; the mobile family has no
    narrowing 1x1 in its resampling), endpoint width, head width and depth."""
    overrides = {"filter_size_scale": filter_size_scale, "endpoints_num_filters": endpoints_num_filters,
                 "num_filters": head_num_filters, "num_convs": head_num_convs}
    if "resample_alpha" in registry.BACKBONE_OVERRIDES[family]:
        overrides["resample_alpha"] = resample_alpha
    return overrides


@dataclasses.dataclass(frozen=True)
class ProxyTask:
    """The reward function of a training proxy (see the module docstring); picklable, so it runs in trial processes.

    Attributes:
        train: The training run of every trial: task "detection", `proxy_model(family)`, its overrides, data,
            schedule, optimizer and runtime; `model_dir` is the search directory (trial N trains in
            `model_dir/trials/NNNN`), `num_classes` resolved (not 0). The trial's table is added as `block_specs`.
        max_flops: Multiply-adds above which a table is rejected untrained; None for no limit.
        metric: The evaluation metric that is the reward.
    """

    train: TrainConfig
    max_flops: float | None = None
    metric: str = "AP"

    def settings(self) -> dict:
        """What a reward of this proxy means, for the search's settings: the trials' training run without its
        directory and the runtime fields that do not change a score (logging, checkpoints), the FLOPs limit and the
        metric. A search resumed with another proxy (e.g. other `--train_steps`) is refused, not mixed."""
        train = dataclasses.asdict(self.train)
        del train["model_dir"]
        train["runtime"] = {key: train["runtime"][key] for key in ("strategy", "mixed_precision", "seed")}
        return {"train": train, "max_flops": self.max_flops, "metric": self.metric}

    def trial_config(self, architecture: Architecture, trial: int) -> TrainConfig:
        """The training run of one trial."""
        return dataclasses.replace(
            self.train, model_dir=os.path.join(self.train.model_dir, TRIALS_DIR, f"{trial:04d}"),
            model_overrides={**self.train.model_overrides, "block_specs": architecture.to_json_dict()})

    def flops(self, architecture: Architecture, trial: int) -> int:
        """Multiply-adds of the trial's RetinaNet at the proxy's image size (batch 1); raises `Rejected` above
        `max_flops`."""
        config = self.trial_config(architecture, trial)
        flops = model_stats.count_flops(models.build_model(config.model_config()), (*config.image_size, 3))
        keras.backend.clear_session()
        if self.max_flops is not None and flops > self.max_flops:
            raise Rejected(f"{flops / 1e9:.3f} B multiply-adds > --max_flops={self.max_flops:g}", flops)
        return flops

    def __call__(self, architecture: Architecture, trial: int) -> TrialResult:
        config = self.trial_config(architecture, trial)
        shutil.rmtree(config.model_dir, ignore_errors=True)  # a trial cut short by a kill starts afresh
        flops = self.flops(architecture, trial)
        metrics = loop.run(config)
        shutil.rmtree(os.path.join(config.model_dir, "checkpoints"), ignore_errors=True)
        if self.metric not in metrics:
            raise ValueError(f"the evaluation gave no {self.metric!r} (metrics: {', '.join(metrics)})")
        kept = {name: value for name, value in metrics.items() if isinstance(value, (int, float))}
        return TrialResult(float(metrics[self.metric]), flops, kept)


@dataclasses.dataclass(frozen=True)
class SyntheticReward:
    """`--reward=synthetic`: agreement with a fixed table of the space (`run.TableAgreement`), no training; for
    tests and for checking a search's plumbing. The proxy's FLOPs are counted (and `max_flops` applied) only when
    the proxy has a `max_flops`."""

    agreement: TableAgreement
    proxy: ProxyTask

    @classmethod
    def for_space(cls, space: SearchSpace, proxy: ProxyTask, seed: int = 987654321) -> SyntheticReward:
        """The agreement with the space's first random point from `seed` (a needle in the space; a seed no search
        is likely to use, so that no search starts on the needle)."""
        [(_, target)] = space.sample(1, seed)
        return cls(TableAgreement(target.block_specs), proxy)

    def settings(self) -> dict:
        """The proxy's settings (its FLOPs count and limit apply) and the table being sought."""
        return {"synthetic": [dataclasses.asdict(row) for row in self.agreement.target], **self.proxy.settings()}

    def __call__(self, architecture: Architecture, trial: int) -> TrialResult:
        flops = self.proxy.flops(architecture, trial) if self.proxy.max_flops is not None else None
        return TrialResult(self.agreement(architecture, trial).reward, flops)
