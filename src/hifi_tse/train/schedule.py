"""Learning-rate schedule (a pure function of the optimiser step) and the time budget.

Linear warm-up from ``lr / warmup_steps`` to ``lr`` over ``warmup_steps`` optimiser steps, then
half-cosine decay to ``min_lr`` at ``steps``. Being pure, the LR after a resume (with or without
``--reset-optimizer``) equals the uninterrupted run's LR at that step.
"""

from __future__ import annotations

import math
import time

from hifi_tse.config import TrainConfig


def lr_at(step: int, train_cfg: TrainConfig) -> float:
    """Learning rate for optimiser step ``step`` (0-based, counted in optimiser steps)."""
    peak, floor = train_cfg.lr, train_cfg.min_lr
    warmup = train_cfg.warmup_steps
    if step < warmup:
        # (step + 1) so the very first update is not taken with lr = 0.
        return peak * (step + 1) / warmup
    decay_steps = max(train_cfg.steps - warmup, 1)
    progress = min(max(step - warmup, 0) / decay_steps, 1.0)
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))


class TimeBudget:
    """``train.budget_minutes``: the schedule position follows wall-clock time.

    With a budget, ``train.steps`` is the length of a nominal schedule and every step-valued
    key (warm-up, phase boundaries, data curricula, validation and save intervals) a position
    in it; the position at a moment is ``floor(progress * train.steps)`` with ``progress``
    the share of the budget spent. A run on a machine that slows down or speeds up still
    ends its learning-rate cycle and its phases on time and trains through its whole budget;
    the price is that the schedule, hence the run, is no longer a pure function of the step.

    Args:
        minutes: the budget, min (> 0).
        nominal_steps: ``train.steps``.
        spent_seconds: budget already used by earlier legs of the run (resume), s.
    """

    def __init__(self, minutes: float, nominal_steps: int, spent_seconds: float = 0.0) -> None:
        self.seconds = 60.0 * float(minutes)
        self.nominal_steps = int(nominal_steps)
        self.spent_before = float(spent_seconds)
        self._started = time.monotonic()

    def spent(self) -> float:
        """Budget used so far (this leg and earlier ones), s."""
        return self.spent_before + time.monotonic() - self._started

    def progress(self) -> float:
        """Share of the budget spent, in [0, 1]."""
        return min(self.spent() / self.seconds, 1.0)

    def position(self, progress: float) -> int:
        """Nominal-schedule step at ``progress`` (``train.steps`` once the budget is spent)."""
        return min(int(progress * self.nominal_steps), self.nominal_steps)


def crossed(before: int, after: int, interval: int) -> bool:
    """True when a multiple of ``interval`` lies in ``(before, after]``: the schedule moved
    past a validation or save point between two steps."""
    return after // interval > before // interval
