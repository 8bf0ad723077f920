"""The time budget ``train.max_minutes``: what is left of it, and whether the next training batch still fits.

Every training module reads the clock as ``budget.clock`` at call time, so that a test can replace it in one place.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

clock = time.monotonic  # the time budget's clock (tests replace it)


@dataclass
class BudgetTimer:
    """What is left of ``train.max_minutes`` and how long the work it must leave room for takes.

    A step is taken only when elapsed + mean step time + reserve <= budget, where the reserve is one validation
    pass, the final test pass and the checkpoint writes: per-batch evaluation time as measured on this run's last
    validation (the mean training step before one has run: a training step does more than an evaluation batch).
    The first step of a command runs whenever the earlier commands left any budget: nothing judges it before, and
    without it there would be no model to validate.
    """

    budget_s: float  # what is left for this command (inf: no budget)
    started: float = field(default_factory=lambda: clock())
    step_s: float = 0.0
    steps: int = 0
    eval_s_per_batch: float | None = None
    save_s: float | None = None

    def elapsed(self) -> float:
        return clock() - self.started

    def record_step(self, seconds: float) -> None:
        self.step_s, self.steps = self.step_s + seconds, self.steps + 1

    def reserve_s(self, eval_batches: int) -> float:
        """Seconds kept for ``eval_batches`` evaluation batches and three checkpoint writes."""
        mean_step = self.step_s / max(self.steps, 1)
        per_batch = mean_step if self.eval_s_per_batch is None else self.eval_s_per_batch
        return eval_batches * per_batch + 3 * (self.save_s if self.save_s is not None else 0.5)

    def next_step_fits(self, eval_batches: int) -> bool:
        if math.isinf(self.budget_s):
            return True
        if self.steps == 0:
            return self.budget_s > 0
        return self.elapsed() + self.step_s / self.steps + self.reserve_s(eval_batches) <= self.budget_s


def batches(dataset: Any, batch_size: int) -> int:
    return math.ceil(len(dataset) / batch_size)
