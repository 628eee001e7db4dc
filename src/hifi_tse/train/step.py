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
from hifi_tse.schedules import Stage
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


# Batch entries that stay on the host: the objective splits the batch by this mask on the
# host, so that no device value is read back before the step's one transfer.
HOST_KEYS = ("target_present",)


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    nb = device.type == "cuda"
    return {
        k: (
            v.to(device, non_blocking=nb)
            if isinstance(v, torch.Tensor) and k not in HOST_KEYS
            else v
        )
        for k, v in batch.items()
    }


class _DeviceTotals:
    """What a step's micro-batches report, summed on the device in float64 (as the host's
    Python floats would be), and brought to the host once per optimiser step."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.finite = torch.ones((), dtype=torch.bool, device=device)
        self.est_rms = torch.zeros((), dtype=torch.float64, device=device)
        self.tgt_rms = torch.zeros((), dtype=torch.float64, device=device)

    def add(self, terms: dict[str, torch.Tensor]) -> None:
        # Diagnostics (e.g. ta_energy_db) exist only in micro-batches that have TA examples.
        for key, value in terms.items():
            name = f"loss/{key}"
            self.sums[name] = self.sums.get(name, 0.0) + value.detach().double()
            self.counts[name] = self.counts.get(name, 0) + 1

    def check(self, value: torch.Tensor) -> None:
        self.finite = self.finite & torch.isfinite(value).all()

    def add_levels(self, est: torch.Tensor, target: torch.Tensor, present: torch.Tensor) -> None:
        """Sum of TP output and target RMS (the step's rms_ratio)."""
        with torch.no_grad():
            keep = present.to(est.device, torch.float64, non_blocking=True)
            self.est_rms += (est.pow(2).mean(-1).sqrt().double() * keep).sum()
            self.tgt_rms += (target.pow(2).mean(-1).sqrt().double() * keep).sum()

    def to_host(self, extra: dict[str, torch.Tensor]) -> dict[str, float]:
        """Every sum and ``extra`` (grad norms) as floats: the step's one host transfer."""
        names = [*self.sums, "est_rms", "tgt_rms", "finite", *extra]
        values = [*self.sums.values(), self.est_rms, self.tgt_rms, self.finite, *extra.values()]
        stacked = torch.stack([torch.as_tensor(v, device=self.device).double() for v in values])
        return dict(zip(names, stacked.tolist()))


def _generate(mods: StepModules, batch: dict[str, Any], update_gen: bool) -> torch.Tensor:
    """The generator's estimate ``(B, L)`` float32 (with gradient when it is updated)."""
    with contextlib.nullcontext() if update_gen else torch.no_grad():
        with torch.autocast(
            device_type=mods.device.type, dtype=torch.bfloat16, enabled=mods.autocast
        ):
            est = mods.generator(batch["mix"], batch["ref"])
        return est.float()  # losses in fp32


def discriminator_micro_step(
    mods: StepModules, batch: dict[str, Any], est: torch.Tensor, n_micro: int, acc: _DeviceTotals
) -> None:
    """LS-GAN loss of the discriminator on the target and the detached estimate, backward."""
    disc = mods.discriminator
    d_loss, d_terms = mods.gan_loss.discriminator_loss(disc(batch["target"]), disc(est.detach()))
    acc.check(d_loss)
    (d_loss / n_micro).backward()
    acc.add(d_terms)


def generator_micro_step(
    mods: StepModules,
    batch: dict[str, Any],
    est: torch.Tensor,
    stage: Stage,
    update_gen: bool,
    n_micro: int,
    acc: _DeviceTotals,
) -> None:
    """The objective (with the adversarial terms once they ramp in), backward into G only."""
    from hifi_tse.losses.adversarial import AdversarialInputs

    disc, target = mods.discriminator, batch["target"]
    present = batch["target_present"].bool()
    adv = None
    if stage.generator_adversarial and disc is not None:
        with frozen(disc):
            with torch.no_grad():
                real_feats = disc(target)
            adv = AdversarialInputs(real_feats, disc(est), stage.adv_scale)
    with contextlib.nullcontext() if update_gen else torch.no_grad():
        total, terms = mods.objective(est, target, present, stage.phase, adv)
        acc.check(total)
        if update_gen:
            (total / n_micro).backward()
    acc.add(terms)
    acc.add_levels(est, target, present)


def _clipped_norms(mods: StepModules, update_gen: bool, use_disc: bool) -> dict[str, Any]:
    """Clip both networks' gradients; their norms before (and G's after) clipping, as
    tensors (no host transfer)."""
    limit = mods.cfg.train.grad_clip if mods.cfg.train.grad_clip > 0 else math.inf
    norms: dict[str, Any] = {}
    if update_gen:
        params = [p for p in unwrap(mods.generator).parameters() if p.requires_grad]
        norms["gen_before"] = torch.nn.utils.clip_grad_norm_(params, limit)
        norms["gen_after"] = _grad_norm(params)
    if use_disc:
        _all_reduce_grads(mods.discriminator)
        norms["disc_before"] = torch.nn.utils.clip_grad_norm_(
            list(mods.discriminator.parameters()), limit
        )
    return norms


def train_step(mods: StepModules, micro_batches: list[dict[str, Any]], stage: Stage) -> StepResult:
    """Run one optimiser step over ``micro_batches`` (``grad_accum_steps`` batch dicts)."""
    gen, disc = mods.generator, mods.discriminator
    use_disc = stage.train_discriminator and disc is not None
    update_gen = not (use_disc and stage.adv_scale <= 0.0)  # D-only warm-up: G stays put
    gen.train()
    if disc is not None:
        disc.train()
    mods.optimizer.zero_grad(set_to_none=True)
    if use_disc:
        mods.disc_optimizer.zero_grad(set_to_none=True)
    acc = _DeviceTotals(mods.device)
    n_micro = len(micro_batches)
    for i, raw in enumerate(micro_batches):
        batch = _to_device(raw, mods.device)
        with maybe_no_sync(gen, skip_sync=i < n_micro - 1):
            est = _generate(mods, batch, update_gen)
            if use_disc:
                discriminator_micro_step(mods, batch, est, n_micro, acc)
            generator_micro_step(mods, batch, est, stage, update_gen, n_micro, acc)
    norms = _clipped_norms(mods, update_gen, use_disc)
    for norm in norms.values():
        acc.check(norm)
    host = acc.to_host(norms)
    result = _result(acc, host, micro_batches)
    # Every rank must take the same branch, or DDP ranks drift apart.
    if any_rank(not host["finite"], mods.device):
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


def _result(
    acc: _DeviceTotals, host: dict[str, float], micro_batches: list[dict[str, Any]]
) -> StepResult:
    """The step's :class:`StepResult` from the host copy of its totals."""
    present = torch.cat([b["target_present"].bool() for b in micro_batches])
    tp = int(present.sum())  # host tensors: no device transfer
    terms = {k: host[k] / acc.counts[k] for k in acc.sums}
    if "disc_before" in host:
        terms["grad_norm/disc"] = host["disc_before"]
    return StepResult(
        applied=False,
        terms=terms,
        grad_norm_before=host.get("gen_before", math.nan),
        grad_norm_after=host.get("gen_after", math.nan),
        rms_ratio=host["est_rms"] / host["tgt_rms"] if host["tgt_rms"] > 0 else math.nan,
        tp_count=tp,
        ta_count=len(present) - tp,
        examples=len(present),
    )
