"""Schedules as pure functions of the optimiser step (shared by data and training).

Phases: 1 = target present only, 2 = target present and absent, 3 = GAN fine-tuning
(phase 2 data plus adversarial terms). Being pure functions of the step, they give the same
answer in every DataLoader worker, every DDP rank and after a resume.
"""

from __future__ import annotations

from hifi_tse.config import Config, DataConfig

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


def noisy_ref_prob_at(step: int, data_cfg: DataConfig) -> float:
    """Probability that the enrollment is reverberated and noised: ramps 0 → noisy_ref_prob."""
    start, end = data_cfg.noisy_ref_ramp
    return data_cfg.noisy_ref_prob * _ramp(step, start, end)


def difficulty_at(step: int, data_cfg: DataConfig) -> float:
    """Easy-to-hard data curriculum position: 0 = easiest recipe, 1 = the full recipe."""
    if data_cfg.easy_steps <= 0:
        return 1.0
    return _ramp(step, 0, data_cfg.easy_steps)


def adv_scale_at(step: int, cfg: Config) -> float:
    """GAN-phase adversarial weight multiplier: 0 in discriminator warm-up, then a ramp."""
    if phase_at(step, cfg) != PHASE_GAN:
        return 0.0
    start = max(cfg.gan.start_step, cfg.train.phase1_steps) + cfg.gan.disc_warmup_steps
    return _ramp(step, start, start + cfg.gan.ramp_steps) if step >= start else 0.0
