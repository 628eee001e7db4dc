"""Learning-rate schedule: a pure function of the optimiser step.

Linear warm-up from ``lr / warmup_steps`` to ``lr`` over ``warmup_steps`` optimiser steps, then
half-cosine decay to ``min_lr`` at ``steps``. Being pure, the LR after a resume (with or without
``--reset-optimizer``) equals the uninterrupted run's LR at that step.
"""

from __future__ import annotations

import math

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
