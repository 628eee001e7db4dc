"""Unit tests of the training parts that need no corpus: schedule, EMA, checkpoint files,
RNG capture, health monitor, best-model selection, validation statistics, loss guard."""

# The legacy global NumPy RNG is a training stream like Python's and torch's (third-party
# code draws from it), so it is seeded, saved and restored on purpose here.
# ruff: noqa: NPY002

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from hifi_tse.checkpoints import (
    TrainState,
    build_checkpoint,
    capture_rng_state,
    load_checkpoint,
    numbered_name,
    phase_boundary_steps,
    resolve_resume,
    restore_rng_state,
    rotate_checkpoints,
    save_checkpoint,
)
from hifi_tse.config import config_from_dict, load_config
from hifi_tse.errors import UserError
from hifi_tse.schedules import lr_at
from hifi_tse.train.ema import EMA
from hifi_tse.train.monitor import HealthMonitor
from hifi_tse.train.trainer import check_loss_safety, merge_architecture
from hifi_tse.train.validation import (
    GROUP_MIN_TP_EXAMPLES,
    _Moments,
    levels_in_band,
    preserved_rng,
    should_stop_early,
    update_best,
)

TINY = str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")

pytestmark = pytest.mark.usefixtures("one_thread")


def test_lr_warmup_then_cosine_to_min_lr():
    cfg = config_from_dict(
        {"train": {"steps": 110, "phase1_steps": 0, "lr": 1e-3, "min_lr": 1e-5, "warmup_steps": 10}}
    ).train
    lrs = [lr_at(s, cfg) for s in range(111)]
    assert lrs[0] == pytest.approx(1e-4)  # first update not at lr 0
    assert all(b > a for a, b in zip(lrs[:10], lrs[1:10]))  # rising warm-up
    assert lrs[10] == pytest.approx(1e-3)  # peak right after warm-up
    assert lrs[60] == pytest.approx((1e-3 + 1e-5) / 2)  # half-way through the cosine
    assert all(b <= a for a, b in zip(lrs[10:], lrs[11:]))  # monotone decay
    assert lrs[110] == pytest.approx(1e-5) and lr_at(10_000, cfg) == pytest.approx(1e-5)


def test_ema_update_is_exponential_average():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.75)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(4.0)
    ema.update(model)
    # shadow = 0.75 * start + 0.25 * (start + 4) = start + 1
    torch.testing.assert_close(ema.module.weight, start + 1.0)
    assert set(ema.state_dict()) == set(model.state_dict())
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_rng_state_round_trip_restores_every_stream():
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    saved = capture_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng_state(saved)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def _toy_checkpoint(cfg, step: int) -> dict:
    model = torch.nn.Linear(4, 4)
    opt = torch.optim.AdamW(model.parameters(), betas=(0.8, 0.99))
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    state = TrainState(step=step, best_si_sdr=3.5, patience_count=2)
    state.val_history.append({"step": 5.0, "tp_si_sdr": 3.5})
    return build_checkpoint(
        cfg,
        state,
        model=model.state_dict(),
        ema=model.state_dict(),
        optimizer=opt.state_dict(),
        examples_per_step=8,
        world_size=1,
    )


def test_checkpoint_loads_weights_only_without_allowlist(tmp_path):
    cfg = config_from_dict({"train": {"steps": 20, "phase1_steps": 10}})
    path = tmp_path / numbered_name(12)
    save_checkpoint(path, _toy_checkpoint(cfg, 12))
    assert path.name == "checkpoint_0000012.pt"
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write left no temporary file
    raw = torch.load(path, map_location="cpu", weights_only=True)  # must not raise
    assert raw["format"] == "hifi-tse-checkpoint" and raw["version"] == 1
    assert raw["step"] == 12 and raw["phase"] == 2
    assert raw["sampler"]["start_index"] == 96
    assert raw["config"]["train"]["phase1_steps"] == 10
    assert set(raw["model"]) == set(raw["ema"])
    payload = load_checkpoint(path)
    st = TrainState.from_dict(payload["train_state"])
    assert (st.step, st.best_si_sdr, st.patience_count) == (12, 3.5, 2)
    restore_rng_state(payload["rng"])  # states survive the weights_only round trip


def test_load_checkpoint_rejects_other_files(tmp_path):
    bad = tmp_path / "x.pt"
    torch.save({"format": "other"}, bad)
    with pytest.raises(UserError, match="not a hifi-tse checkpoint"):
        load_checkpoint(bad)
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_rotation_keeps_last_and_phase_boundaries(tmp_path):
    cfg = config_from_dict({"train": {"steps": 100, "phase1_steps": 30}})
    boundaries = phase_boundary_steps(cfg)
    assert boundaries == {30}
    for step in (10, 20, 30, 40, 50, 60):
        (tmp_path / numbered_name(step)).write_bytes(b"x")
    (tmp_path / "checkpoint_best.pt").write_bytes(b"x")
    rotate_checkpoints(tmp_path, keep_last=2, protected=boundaries)
    left = sorted(p.name for p in tmp_path.glob("checkpoint_*.pt"))
    assert left == [
        "checkpoint_0000030.pt",
        "checkpoint_0000050.pt",
        "checkpoint_0000060.pt",
        "checkpoint_best.pt",
    ]
    assert resolve_resume("latest", tmp_path).name == "checkpoint_0000060.pt"
    with pytest.raises(UserError, match="no checkpoint"):
        resolve_resume("latest", tmp_path / "empty")


def test_gan_phase_boundary_is_protected():
    cfg = config_from_dict(
        {"train": {"steps": 100, "phase1_steps": 30}, "gan": {"enabled": True, "start_step": 70}}
    )
    assert phase_boundary_steps(cfg) == {30, 70}


def _val(step, ratio, ta_db=-30.0, sdr=0.0):
    return {"step": step, "rms_ratio": ratio, "ta_energy_db": ta_db, "tp_si_sdr": sdr}


def test_health_monitor_band_trend_and_ta_energy():
    cfg = config_from_dict({})
    mon = HealthMonitor(cfg.health, cfg.objective)
    assert mon.check([_val(1, 1.0)]) == []
    out = mon.check([_val(1, 0.7)])
    assert len(out) == 1 and "outside the healthy band" in out[0]
    # The seed's table: 1.327 -> 1.038 -> 0.746 (band + trend); here all in-band but falling.
    trend = mon.check([_val(1, 1.2), _val(2, 1.1), _val(3, 1.0)])
    assert len(trend) == 1 and "fell" in trend[0]
    assert mon.check([_val(1, 1.2), _val(2, 1.0), _val(3, 1.1)]) == []
    assert mon.check([_val(1, 1.02), _val(2, 1.01), _val(3, 1.0)]) == []  # noise, no trend
    above = mon.check([_val(1, 2.2), _val(2, 2.0), _val(3, 1.8)])  # recovering from above
    assert len(above) == 1 and "outside" in above[0]
    ta = mon.check([_val(1, 1.0, ta_db=-45.0)])  # target -30, margin 10 -> floor -40
    assert len(ta) == 1 and "TA energy" in ta[0]
    assert mon.check([_val(1, 1.0, ta_db=-39.0)]) == []


def test_best_model_follows_tp_si_sdr_not_loss():
    state = TrainState()
    # Scripted history: the composite loss keeps improving (a suppressing model) while TP
    # SI-SDR gets worse: the best must stay at the first validation.
    history = [
        {"step": 10, "loss": 5.0, "tp_si_sdr": -2.8},
        {"step": 20, "loss": 3.0, "tp_si_sdr": -3.7},
        {"step": 30, "loss": 0.8, "tp_si_sdr": -4.1},
    ]
    improved = [update_best(state, m, count_patience=True) for m in history]
    assert improved == [True, False, False]
    assert state.best_si_sdr == -2.8 and state.best_step == 10
    assert state.patience_count == 2
    assert should_stop_early(state, patience=2) and not should_stop_early(state, patience=3)
    assert update_best(state, {"step": 40, "loss": 9.0, "tp_si_sdr": -1.0}, True)
    assert state.patience_count == 0 and len(state.val_history) == 4


def test_best_model_must_keep_a_healthy_level():
    state = TrainState()
    band = (0.8, 1.25)
    # Early and loud: provisional best; the first healthy validation replaces it even though
    # its SI-SDR is lower; a later over-suppressed one (0.6) never wins, however high its score.
    history = [
        {"step": 10, "tp_si_sdr": -1.0, "rms_ratio": 1.5},
        {"step": 20, "tp_si_sdr": -1.5, "rms_ratio": 1.1},
        {"step": 30, "tp_si_sdr": 2.0, "rms_ratio": 0.6},
        {"step": 40, "tp_si_sdr": -1.2, "rms_ratio": 0.95},
    ]
    improved = [update_best(state, m, True, healthy_band=band) for m in history]
    assert improved == [True, True, False, True]
    assert state.best_step == 40 and state.best_healthy and state.best_si_sdr == -1.2
    assert state.patience_count == 0
    restored = TrainState.from_dict(state.to_dict())
    assert restored.best_healthy and restored.best_step == 40
    old = state.to_dict()
    del old["best_healthy"]  # a checkpoint written before the rule
    assert not TrainState.from_dict(old).best_healthy
    state.reset_patience()
    assert not state.best_healthy


def test_best_model_rule_requires_each_voice_kind_in_the_band():
    """The legacy_db fine-tune of the shipped model, in short: the whole set stays in the band
    while its real voices fall out of it and TP SI-SDR rises; the rule keeps the last
    validation at which every kind with enough TP examples was in the band."""
    state = TrainState()
    band = (0.8, 1.25)
    n = float(GROUP_MIN_TP_EXAMPLES)
    history = [
        {"step": 1, "tp_si_sdr": 1.9, "rms_ratio": 0.91, "real/rms_ratio": 0.88,
         "real/tp_count": 9 * n, "synthetic/rms_ratio": 0.94, "synthetic/tp_count": 7 * n},
        {"step": 2, "tp_si_sdr": 2.0, "rms_ratio": 0.83, "real/rms_ratio": 0.78,
         "real/tp_count": 9 * n, "synthetic/rms_ratio": 0.89, "synthetic/tp_count": 7 * n},
        # A kind with too few TP examples to judge does not decide the rule.
        {"step": 3, "tp_si_sdr": 1.95, "rms_ratio": 0.9, "real/rms_ratio": 0.85,
         "real/tp_count": 9 * n, "synthetic/rms_ratio": 0.5, "synthetic/tp_count": n - 1},
    ]  # fmt: skip
    improved = [update_best(state, m, True, healthy_band=band) for m in history]
    assert improved == [True, False, True]
    assert state.best_step == 3 and state.best_healthy
    assert levels_in_band(history[0], band) and not levels_in_band(history[1], band)
    assert levels_in_band({"step": 4, "tp_si_sdr": 0.0}, band)  # nothing measured: no veto
    assert not levels_in_band({"rms_ratio": 0.7}, band)


def test_patience_not_counted_in_phase_one_and_reset():
    state = TrainState()
    update_best(state, {"step": 1, "tp_si_sdr": 1.0}, count_patience=False)
    update_best(state, {"step": 2, "tp_si_sdr": 0.0}, count_patience=False)
    assert state.patience_count == 0
    update_best(state, {"step": 3, "tp_si_sdr": 0.0}, count_patience=True)
    assert state.patience_count == 1
    state.reset_patience()
    assert state.best_si_sdr == -math.inf and state.patience_count == 0


def test_preserved_rng_leaves_training_streams_untouched():
    random.seed(5)
    np.random.seed(6)
    torch.manual_seed(7)
    before = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    with preserved_rng(123):
        inside = (random.random(), np.random.rand(), torch.rand(1).item())
    with preserved_rng(123):
        again = (random.random(), np.random.rand(), torch.rand(1).item())
    assert inside == again  # same fixed seed each validation
    assert random.getstate() == before[0]
    assert np.array_equal(np.random.get_state()[1], before[1])
    assert torch.equal(torch.get_rng_state(), before[2])


def test_moments_mean_sem_and_ratio():
    rng = np.random.default_rng(0)
    x, y = rng.normal(1.0, 0.3, 50), rng.normal(2.0, 0.2, 50)
    m = _Moments()
    m.add(torch.tensor(x[:20]), torch.tensor(y[:20]))
    m.add(torch.tensor(x[20:]), torch.tensor(y[20:]))
    mean, se = m.mean_se()
    assert mean == pytest.approx(x.mean()) and se == pytest.approx(x.std(ddof=1) / np.sqrt(50))
    ratio, rse = m.ratio_se()
    assert ratio == pytest.approx(x.mean() / y.mean())
    assert 0 < rse < 0.1
    assert math.isnan(_Moments().mean_se()[0])


def test_loss_guard_refuses_rewarding_silence():
    safe = load_config(TINY)  # tiny: the audit's sweep is quick
    assert check_loss_safety(safe, allow_unsafe=False) == []
    legacy = load_config(TINY, ["objective.ta_loss=legacy_db"])
    with pytest.raises(UserError, match="reward silence") as info:
        check_loss_safety(legacy, allow_unsafe=False)
    assert "\n" not in str(info.value)
    warnings = check_loss_safety(legacy, allow_unsafe=True)
    assert any("legacy_db" in w for w in warnings)


def test_resume_takes_architecture_from_checkpoint():
    saved = config_from_dict({"model": {"feature_dim": 16, "num_heads": 2}}).to_dict()
    user = config_from_dict({"model": {"feature_dim": 64, "grad_checkpoint": False}})
    merged, changed = merge_architecture(user, saved)
    assert merged.model.feature_dim == 16 and "model.feature_dim" in changed
    assert merged.model.grad_checkpoint is False  # a training switch stays the user's
