"""Curriculum: what the trainer does at a given optimiser step.

Re-exports the pure schedules of :mod:`hifi_tse.schedules` and adds :func:`stage_at`, which
resolves, for one step, the phase and the GAN sub-stage (discriminator-only warm-up, adversarial
ramp, full adversarial training).
"""

from __future__ import annotations

from dataclasses import dataclass

from hifi_tse.config import Config
from hifi_tse.schedules import (
    PHASE_GAN,
    PHASE_TP,
    PHASE_TP_TA,
    adv_scale_at,
    difficulty_at,
    noisy_ref_prob_at,
    phase_at,
)

__all__ = [
    "PHASE_GAN",
    "PHASE_TP",
    "PHASE_TP_TA",
    "Stage",
    "adv_scale_at",
    "difficulty_at",
    "noisy_ref_prob_at",
    "phase_at",
    "stage_at",
]


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
        noisy_ref_prob=noisy_ref_prob_at(step, cfg.data),
    )
