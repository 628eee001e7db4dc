"""One optimiser step: micro-batch accumulation, autocast, clipping, GAN order, EMA.

Order inside a step (GAN phase): for each micro-batch the generator runs once; the
discriminator's loss is taken on ``estimate.detach()`` (so it never sends gradient into the
generator) and accumulated; the generator's adversarial/feature-matching terms go through the
discriminator with its parameters frozen (so they never send gradient into the discriminator).
Then the discriminator optimiser steps, and only after it the generator optimiser. During the
discriminator-only warm-up the generator is not updated at all.

A non-finite loss or gradient norm skips the whole optimiser step (both networks), which the
caller counts; weights and optimiser moments are untouched.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from hifi_tse.config import Config
from hifi_tse.train.curriculum import Stage
from hifi_tse.train.distributed import any_rank, maybe_no_sync, unwrap
from hifi_tse.train.ema import EMA


@dataclass
class StepModules:
    """Everything :func:`train_step` touches. ``generator`` may be DDP-wrapped."""

    cfg: Config
    generator: nn.Module
    optimizer: torch.optim.Optimizer
    objective: nn.Module
    ema: EMA
    device: torch.device
    autocast: bool
    discriminator: nn.Module | None = None
    disc_optimizer: torch.optim.Optimizer | None = None
    gan_loss: Any = None


@dataclass
class StepResult:
    """What one optimiser step did. ``terms``: mean over micro-batches, keyed ``loss/<name>``."""

    applied: bool
    terms: dict[str, float] = field(default_factory=dict)
    grad_norm_before: float = math.nan
    grad_norm_after: float = math.nan
    rms_ratio: float = math.nan
    tp_count: int = 0
    ta_count: int = 0
    examples: int = 0


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _grad_norm(params: list[nn.Parameter]) -> torch.Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def clip_gradients(params: list[nn.Parameter], max_norm: float) -> tuple[float, float]:
    """Clip to ``max_norm`` (0 = off); returns the total grad norm before and after."""
    before = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else math.inf)
    after = _grad_norm(params)
    return float(before), float(after)


def _all_reduce_grads(module: nn.Module) -> None:
    """Average gradients over ranks (the discriminator is not DDP-wrapped, see module doc)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    world = dist.get_world_size()
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world)


@contextlib.contextmanager
def frozen(module: nn.Module | None):
    """Parameters of ``module`` do not collect gradient inside the block."""
    if module is None:
        yield
        return
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    nb = device.type == "cuda"
    return {
        k: (v.to(device, non_blocking=nb) if isinstance(v, torch.Tensor) else v)
        for k, v in batch.items()
    }


def train_step(mods: StepModules, micro_batches: list[dict[str, Any]], stage: Stage) -> StepResult:
    """Run one optimiser step over ``micro_batches`` (``grad_accum_steps`` batch dicts)."""
    from hifi_tse.losses.adversarial import AdversarialInputs

    cfg = mods.cfg
    gen, disc = mods.generator, mods.discriminator
    use_disc = stage.train_discriminator and disc is not None
    update_gen = not (use_disc and stage.adv_scale <= 0.0)  # D-only warm-up: G stays put
    n_micro = len(micro_batches)
    gen.train()
    if disc is not None:
        disc.train()
    mods.optimizer.zero_grad(set_to_none=True)
    if use_disc:
        mods.disc_optimizer.zero_grad(set_to_none=True)

    sums: dict[str, float] = {}
    counts: dict[str, int] = {}

    def add(key: str, value: float) -> None:
        # Diagnostics (e.g. ta_energy_db) exist only in micro-batches that have TA examples.
        sums[key] = sums.get(key, 0.0) + value
        counts[key] = counts.get(key, 0) + 1

    finite = True
    est_rms = tgt_rms = 0.0
    tp = ta = 0
    for i, raw in enumerate(micro_batches):
        batch = _to_device(raw, mods.device)
        mix, ref, target = batch["mix"], batch["ref"], batch["target"]
        present = batch["target_present"].bool()
        last = i == n_micro - 1
        with maybe_no_sync(gen, skip_sync=not last):
            grad_ctx = contextlib.nullcontext() if update_gen else torch.no_grad()
            with grad_ctx:
                with torch.autocast(
                    device_type=mods.device.type, dtype=torch.bfloat16, enabled=mods.autocast
                ):
                    est = gen(mix, ref)
                est = est.float()  # losses in fp32

            if use_disc:
                real_out = disc(target)
                fake_out = disc(est.detach())
                d_loss, d_terms = mods.gan_loss.discriminator_loss(real_out, fake_out)
                finite &= bool(torch.isfinite(d_loss))
                (d_loss / n_micro).backward()
                for k, v in d_terms.items():
                    add(f"loss/{k}", float(v))

            adv = None
            if use_disc and stage.adv_scale > 0.0:
                with frozen(disc):
                    with torch.no_grad():
                        real_feats = disc(target)
                    adv = AdversarialInputs(real_feats, disc(est), stage.adv_scale)
            with grad_ctx:
                total, terms = mods.objective(est, target, present, stage.phase, adv)
                finite &= bool(torch.isfinite(total))
                if update_gen:
                    (total / n_micro).backward()
        for k, v in terms.items():
            add(f"loss/{k}", float(v))
        with torch.no_grad():
            if present.any():
                est_rms += float(est[present].pow(2).mean(-1).sqrt().sum())
                tgt_rms += float(target[present].pow(2).mean(-1).sqrt().sum())
        tp += int(present.sum())
        ta += int((~present).sum())

    result = StepResult(
        applied=False,
        terms={k: v / counts[k] for k, v in sums.items()},
        rms_ratio=est_rms / tgt_rms if tgt_rms > 0 else math.nan,
        tp_count=tp,
        ta_count=ta,
        examples=tp + ta,
    )
    gen_params = [p for p in unwrap(gen).parameters() if p.requires_grad]
    if update_gen:
        before, after = clip_gradients(gen_params, cfg.train.grad_clip)
        result.grad_norm_before, result.grad_norm_after = before, after
        finite &= math.isfinite(before)
    if use_disc:
        _all_reduce_grads(disc)
        d_before, _ = clip_gradients(list(disc.parameters()), cfg.train.grad_clip)
        result.terms["grad_norm/disc"] = d_before
        finite &= math.isfinite(d_before)

    # Every rank must take the same branch, or DDP ranks drift apart.
    if any_rank(not finite, mods.device):
        mods.optimizer.zero_grad(set_to_none=True)
        if use_disc:
            mods.disc_optimizer.zero_grad(set_to_none=True)
        return result

    if use_disc:
        mods.disc_optimizer.step()  # discriminator first ...
    if update_gen:
        mods.optimizer.step()  # ... then the generator
        mods.ema.update(unwrap(gen))
    result.applied = True
    return result
