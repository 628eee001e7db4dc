"""Schedules are pure functions of the step."""

from hifi_tse.config import config_from_dict
from hifi_tse.schedules import adv_scale_at, difficulty_at, noisy_ref_prob_at, phase_at


def test_phase_boundaries_and_gan_phase():
    cfg = config_from_dict({"train": {"steps": 100, "phase1_steps": 40}})
    assert [phase_at(s, cfg) for s in (0, 39, 40, 99)] == [1, 1, 2, 2]
    cfg = config_from_dict(
        {
            "train": {"steps": 100, "phase1_steps": 40},
            "gan": {"enabled": True, "start_step": 60, "disc_warmup_steps": 10, "ramp_steps": 10},
        }
    )
    assert [phase_at(s, cfg) for s in (39, 59, 60)] == [1, 2, 3]
    assert adv_scale_at(65, cfg) == 0.0
    assert adv_scale_at(75, cfg) == 0.5
    assert adv_scale_at(90, cfg) == 1.0


def test_noisy_ref_ramp_and_difficulty():
    cfg = config_from_dict({"mixing": {"noisy_ref_prob": 0.5, "noisy_ref_ramp": [10, 20]}})
    assert noisy_ref_prob_at(0, cfg.mixing) == 0.0
    assert noisy_ref_prob_at(15, cfg.mixing) == 0.25
    assert noisy_ref_prob_at(99, cfg.mixing) == 0.5
    assert difficulty_at(0, cfg.mixing) == 1.0
    cfg = config_from_dict({"mixing": {"easy_steps": 100}})
    assert difficulty_at(0, cfg.mixing) == 0.0 and difficulty_at(50, cfg.mixing) == 0.5
