"""Every schedule of a run: phases, data curricula, the learning rate, the stage of one
step, and the time budget that can drive them.

Phases: 1 = target present only, 2 = target present and absent, 3 = GAN fine-tuning
(phase 2 data plus adversarial terms). Each schedule is a pure function of the schedule
position, so it gives the same answer in every DataLoader worker, every DDP rank and after a
resume. The position is the optimiser step, or under ``train.budget_minutes`` the share of
the budget spent (:class:`TimeBudget`).

Learning rate: linear warm-up from ``lr / warmup_steps`` to ``lr`` over ``warmup_steps``, then
half-cosine decay to ``min_lr`` at ``steps``; the LR after a resume (with or without
``--reset-optimizer``) equals the uninterrupted run's LR at that position.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from hifi_tse.config import Config, MixingConfig, TrainConfig

PHASE_TP = 1
PHASE_TP_TA = 2
PHASE_GAN = 3


def phase_at(step: int, cfg: Config) -> int:
    """Curriculum phase at optimiser step ``step`` (0-based)."""
    if step < cfg.train.phase1_steps:
        return PHASE_TP
    if cfg.gan.enabled and step >= max(cfg.gan.start_step, cfg.train.phase1_steps):
        return PHASE_GAN
    return PHASE_TP_TA


def _ramp(step: int, start: int, end: int) -> float:
    """0 before ``start``, 1 from ``end`` on, linear in between."""
    if step >= end:
        return 1.0
    if step <= start:
        return 0.0
    return (step - start) / (end - start)


def noisy_ref_prob_at(step: int, mixing: MixingConfig) -> float:
    """Probability that the enrollment is reverberated and noised: ramps 0 → noisy_ref_prob."""
    start, end = mixing.noisy_ref_ramp
    return mixing.noisy_ref_prob * _ramp(step, start, end)


def difficulty_at(step: int, mixing: MixingConfig) -> float:
    """Easy-to-hard data curriculum position: 0 = easiest recipe, 1 = the full recipe."""
    if mixing.easy_steps <= 0:
        return 1.0
    return _ramp(step, 0, mixing.easy_steps)


def adv_scale_at(step: int, cfg: Config) -> float:
    """GAN-phase adversarial weight multiplier: 0 in discriminator warm-up, then a ramp."""
    if phase_at(step, cfg) != PHASE_GAN:
        return 0.0
    start = max(cfg.gan.start_step, cfg.train.phase1_steps) + cfg.gan.disc_warmup_steps
    return _ramp(step, start, start + cfg.gan.ramp_steps) if step >= start else 0.0


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


@dataclass(frozen=True)
class Stage:
    """The curriculum at one step.

    ``train_discriminator``: the discriminator gets a step (whole GAN phase).
    ``adv_scale``: multiplier of the generator's adversarial + feature-matching terms; 0 during
    the discriminator-only warm-up, ramping to 1.
    """

    step: int
    phase: int
    train_discriminator: bool
    adv_scale: float
    noisy_ref_prob: float

    @property
    def generator_adversarial(self) -> bool:
        return self.train_discriminator and self.adv_scale > 0.0


def stage_at(step: int, cfg: Config) -> Stage:
    phase = phase_at(step, cfg)
    return Stage(
        step=step,
        phase=phase,
        train_discriminator=phase == PHASE_GAN,
        adv_scale=adv_scale_at(step, cfg),
        noisy_ref_prob=noisy_ref_prob_at(step, cfg.mixing),
    )
