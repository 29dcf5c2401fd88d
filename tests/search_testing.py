"""Reward functions for search tests that run in trial processes: picklable by module name (this module is on the
`sys.path` that spawned processes inherit), unlike functions defined in test files."""

import dataclasses
import os
import time

from spinenet_tf.search import run


@dataclasses.dataclass(frozen=True)
class Flaky:
    """Agreement with `target`, but trial `raise_on` raises, trial `exit_on` ends its process abruptly and trial
    `hang_on` never ends (it sleeps for an hour)."""

    target: run.TableAgreement
    raise_on: int = -1
    exit_on: int = -1
    hang_on: int = -1

    def __call__(self, architecture, trial):
        if trial == self.raise_on:
            raise RuntimeError("loss is NaN")
        if trial == self.exit_on:
            os._exit(3)
        if trial == self.hang_on:
            time.sleep(3600)
        return self.target(architecture, trial)
