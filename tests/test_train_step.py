"""train_step on the real tiny generator/objective with synthetic batches (no corpus)."""

from __future__ import annotations

import math
import types
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from hifi_tse.checkpoints import TrainState
from hifi_tse.config import load_config
from hifi_tse.losses.adversarial import GANLoss
from hifi_tse.losses.objective import Objective
from hifi_tse.models.discriminator import Discriminators
from hifi_tse.models.generator import build_generator
from hifi_tse.schedules import stage_at
from hifi_tse.train.ema import EMA
from hifi_tse.train.logging_utils import RunLogger
from hifi_tse.train.setup import ADAMW_BETAS
from hifi_tse.train.step import StepModules, train_step
from hifi_tse.train.trainer import Trainer, TrainingDiverged

SEG = 4000  # 0.25 s at 16 kHz

TINY = str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(*overrides: str):
    return load_config(
        TINY,
        ["audio.segment_seconds=0.25", "audio.ref_seconds=0.25", *overrides],
    )


def _batch(seed: int, present=(True, True, False)) -> dict:
    g = torch.Generator().manual_seed(seed)
    b = len(present)
    target = 0.1 * torch.randn(b, SEG, generator=g)
    tp = torch.tensor(present)
    target[~tp] = 0.0
    return {
        "mix": target + 0.05 * torch.randn(b, SEG, generator=g),
        "ref": 0.1 * torch.randn(b, SEG, generator=g),
        "target": target,
        "target_present": tp,
    }


def _mods(cfg, gan: bool = False) -> StepModules:
    torch.manual_seed(0)
    gen = build_generator(cfg)
    disc = Discriminators(cfg.gan) if gan else None
    return StepModules(
        cfg=cfg,
        generator=gen,
        optimizer=torch.optim.AdamW(gen.parameters(), lr=1e-3, betas=ADAMW_BETAS),
        objective=Objective(cfg.objective, cfg.audio.sample_rate),
        ema=EMA(gen, cfg.train.ema_decay),
        device=torch.device("cpu"),
        autocast=False,
        discriminator=disc,
        disc_optimizer=torch.optim.AdamW(disc.parameters(), lr=cfg.gan.lr) if gan else None,
        gan_loss=GANLoss() if gan else None,
    )


def _params(module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def test_step_updates_weights_ema_and_reports_terms():
    cfg = _cfg("train.grad_clip=0.001", "train.grad_accum_steps=2")
    mods = _mods(cfg)
    before, ema_before = _params(mods.generator), _params(mods.ema.module)
    res = train_step(mods, [_batch(0), _batch(1)], stage_at(cfg.train.phase1_steps, cfg))
    assert res.applied
    assert res.tp_count == 4 and res.ta_count == 2 and res.examples == 6  # both micro-batches
    for key in ("loss/sep", "loss/phase", "loss/amp", "loss/ta_energy", "loss/total"):
        assert key in res.terms
    # Clipping: the norm before is reported unclipped, the one after is at the clip value.
    assert res.grad_norm_before > 0.001
    assert res.grad_norm_after == pytest.approx(0.001, rel=1e-3)
    assert any(not torch.equal(a, b) for a, b in zip(before, _params(mods.generator)))
    assert any(not torch.equal(a, b) for a, b in zip(ema_before, _params(mods.ema.module)))
    assert 0.0 < res.rms_ratio < 10.0


def test_nonfinite_loss_skips_the_step_and_leaves_state_alone():
    cfg = _cfg()
    mods = _mods(cfg)
    bad = _batch(0)
    bad["mix"][0, 10] = float("nan")
    before, ema_before = _params(mods.generator), _params(mods.ema.module)
    res = train_step(mods, [bad], stage_at(0, cfg))
    assert not res.applied
    assert all(torch.equal(a, b) for a, b in zip(before, _params(mods.generator)))
    assert all(torch.equal(a, b) for a, b in zip(ema_before, _params(mods.ema.module)))
    assert not mods.optimizer.state  # no Adam moments were taken from a NaN gradient
    assert all(p.grad is None for p in mods.generator.parameters())


def test_nonfinite_streak_stops_with_clear_message(tmp_path, monkeypatch):
    import hifi_tse.train.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "MAX_NONFINITE_STEPS", 3)
    cfg = _cfg()
    fake = types.SimpleNamespace(
        state=TrainState(step=7), cfg=cfg, log=RunLogger(tmp_path, active=True, tensorboard=False)
    )
    Trainer._record_nonfinite(fake, None)
    Trainer._record_nonfinite(fake, None)
    with pytest.raises(TrainingDiverged, match="3 consecutive non-finite steps") as info:
        Trainer._record_nonfinite(fake, None)
    assert "\n" not in str(info.value)
    assert fake.state.nonfinite_total == 3
    assert (tmp_path / "metrics.jsonl").read_text().count('"warning"') == 3


def _gan_cfg():
    return _cfg(
        "train.phase1_steps=2",
        "gan.enabled=true",
        "gan.start_step=4",
        "gan.disc_warmup_steps=2",
        "gan.ramp_steps=2",
        "gan.channels=4",
    )


def test_gan_discriminator_steps_before_generator_on_detached_fake():
    cfg = _gan_cfg()
    mods = _mods(cfg, gan=True)
    order: list[str] = []
    mods.disc_optimizer.register_step_post_hook(lambda *a: order.append("disc"))
    mods.optimizer.register_step_post_hook(lambda *a: order.append("gen"))
    # Catch the gradient each network receives from each loss.
    stage = stage_at(8, cfg)  # full adversarial weight
    assert stage.phase == 3 and stage.adv_scale == 1.0
    res = train_step(mods, [_batch(0)], stage)
    assert res.applied and order == ["disc", "gen"]
    assert "loss/disc" in res.terms and res.terms["loss/adv"] > 0 and res.terms["loss/fm"] > 0


def test_gan_generator_loss_sends_no_gradient_to_discriminator():
    # Same start, same data, same RNG: one step with the full adversarial weight and one in
    # the discriminator-only warm-up must hand the discriminator identical gradients.
    cfg = _gan_cfg()
    grads = []
    for stage in (
        replace(stage_at(8, cfg), adv_scale=1.0),
        replace(stage_at(8, cfg), adv_scale=0.0),
    ):
        mods = _mods(cfg, gan=True)
        captured = []
        mods.disc_optimizer.register_step_pre_hook(
            lambda *_, m=mods, c=captured: c.extend(
                p.grad.clone() for p in m.discriminator.parameters()
            )
        )
        torch.manual_seed(1)
        train_step(mods, [_batch(0)], stage)
        grads.append(captured)
    assert grads[0] and len(grads[0]) == len(grads[1])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_gan_warmup_trains_discriminator_only():
    cfg = _gan_cfg()
    mods = _mods(cfg, gan=True)
    stage = stage_at(4, cfg)
    assert stage.phase == 3 and stage.adv_scale == 0.0 and stage.train_discriminator
    g_before, d_before = _params(mods.generator), _params(mods.discriminator)
    res = train_step(mods, [_batch(0)], stage)
    assert res.applied
    assert all(torch.equal(a, b) for a, b in zip(g_before, _params(mods.generator)))
    assert any(not torch.equal(a, b) for a, b in zip(d_before, _params(mods.discriminator)))


def test_train_bf16_autocasts_on_a_cpu_with_native_bf16(tiny_packs, tmp_path, one_thread):
    """``train.bf16`` is honoured on CPU where the CPU runs bf16 natively; the step's losses
    stay float32 and finite."""
    from dataclasses import replace

    from hifi_tse.config import load_config
    from hifi_tse.devices import cpu_has_native_bf16
    from hifi_tse.train.trainer import Trainer, TrainOptions

    sets = ["train.bf16=true", "train.phase1_steps=0", "audio.segment_seconds=0.25"]
    sets += ["audio.ref_seconds=0.25", "train.batch_size=2", "train.val_examples=4"]
    cfg = load_config(TINY, sets)
    opts = TrainOptions(
        cfg=cfg, data_dir=tiny_packs, run_dir=tmp_path / "run", device="cpu", tensorboard=False
    )
    trainer = Trainer(opts)
    assert trainer.autocast == cpu_has_native_bf16()
    result = trainer.run_one_step()
    assert result.applied and math.isfinite(result.terms["loss/total"])
    off = Trainer(replace(opts, cfg=load_config(TINY, sets[1:]), run_dir=tmp_path / "off"))
    assert off.autocast is False  # tiny.yaml keeps fp32
    trainer.log.close()
    off.log.close()
