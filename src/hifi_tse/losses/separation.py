"""Waveform losses: SI-SDR, the target-absent energy term, the amplitude anchor, scene-aware.

All functions take batches shaped ``(B, L)`` (B examples of L samples) and raise
``TypeError`` for any other shape, so a transposed or channel-first tensor fails loudly
instead of being averaged into a meaningless number.

Invariant (see the seed's over-suppression post-mortem): no term here may reward silence.
``energy_loss`` is ``relu(energy_db - target_db)``: >= 0, and flat (zero gradient) once the
output is below ``target_db``. The seed's raw-dB term survives only as ``legacy_energy_db``
so that the audit can show it failing.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import Tensor

TaLoss = Literal["relu", "legacy_db"]

# Numerical floor of every loss and of the SI-SDR, energy and RMS measures: keeps ratios and
# logs finite for a silent signal without moving any audible level (an all-zero estimate
# scores 10 log10(LOSS_EPS) = -80 dB SI-SDR). Callers pass it explicitly.
LOSS_EPS = 1e-8


class SilenceRewardWarning(UserWarning):
    """A loss term in use is known to reward silent output (the seed's legacy_db term)."""


def check_pair(estimate: Tensor, target: Tensor) -> None:
    """Raise ``TypeError`` unless both are 2-D ``(B, L)`` tensors of the same shape."""
    if not isinstance(estimate, Tensor) or not isinstance(target, Tensor):
        raise TypeError("losses expect torch tensors shaped (batch, time)")
    if estimate.ndim != 2 or target.ndim != 2:
        raise TypeError(
            f"losses expect (batch, time) tensors, got estimate {tuple(estimate.shape)} "
            f"and target {tuple(target.shape)}"
        )
    if estimate.shape != target.shape:
        raise TypeError(
            f"estimate {tuple(estimate.shape)} and target {tuple(target.shape)} differ in shape"
        )


def check_batch(estimate: Tensor) -> None:
    """Raise ``TypeError`` unless ``estimate`` is a 2-D ``(B, L)`` tensor."""
    if not isinstance(estimate, Tensor) or estimate.ndim != 2:
        shape = tuple(estimate.shape) if isinstance(estimate, Tensor) else type(estimate)
        raise TypeError(f"losses expect a (batch, time) tensor, got {shape}")


def check_mask(mask: Tensor, batch: int) -> None:
    """Raise ``TypeError`` unless ``mask`` is a ``(B,)`` bool tensor."""
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.shape != (batch,):
        shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask)
        raise TypeError(f"target_present/mask must be a ({batch},) bool tensor, got {shape}")


def si_sdr(estimate: Tensor, target: Tensor, eps: float) -> Tensor:
    """Scale-invariant SDR per example.

    Both signals are made zero-mean and scaled to unit norm first; SI-SDR is then
    ``10 log10(|s|^2 / (|e - s|^2 + eps) + eps)`` with ``s`` the projection of the estimate
    on the target. The normalisation makes the value exactly independent of the estimate's
    scale (also for a perfect estimate, where the ratio hits its ``1/eps`` cap), and an
    all-zero estimate scores ``10 log10(eps)`` (the worst value), so silence is never
    rewarded.

    Args:
        estimate: ``(B, L)`` float, any scale.
        target: ``(B, L)`` float.
        eps: numerical floor (``LOSS_EPS``).

    Returns:
        ``(B,)`` SI-SDR in dB (higher is better).
    """
    check_pair(estimate, target)
    est = estimate - estimate.mean(dim=-1, keepdim=True)
    tgt = target - target.mean(dim=-1, keepdim=True)
    est = est / torch.sqrt(est.pow(2).sum(dim=-1, keepdim=True) + eps)
    tgt = tgt / torch.sqrt(tgt.pow(2).sum(dim=-1, keepdim=True) + eps)
    scale = (est * tgt).sum(dim=-1, keepdim=True) / (tgt.pow(2).sum(dim=-1, keepdim=True) + eps)
    proj = scale * tgt  # (B, L)
    noise = est - proj  # (B, L)
    ratio = proj.pow(2).sum(dim=-1) / (noise.pow(2).sum(dim=-1) + eps)
    return 10.0 * torch.log10(ratio + eps)


def energy_db(estimate: Tensor, eps: float) -> Tensor:
    """Mean-square energy per example, ``10 log10(mean(x^2) + eps)``: ``(B,)`` dB."""
    check_batch(estimate)
    return 10.0 * torch.log10(estimate.pow(2).mean(dim=-1) + eps)


def energy_loss(estimate: Tensor, target_db: float, eps: float) -> Tensor:
    """Target-absent term ``relu(energy_db - target_db)`` per example: ``(B,)``, >= 0.

    The output is pushed down to ``target_db`` and no further: below it the loss is 0 with
    zero gradient, so suppressing beyond the target earns nothing.
    """
    return torch.relu(energy_db(estimate, eps) - target_db)


# The seed's clamp on its raw-dB TA term, dB: how far down it rewarded silence.
LEGACY_FLOOR_DB = -40.0


def legacy_energy_db(estimate: Tensor, eps: float) -> Tensor:
    """The seed's buggy target-absent term: raw dB clamped at ``LEGACY_FLOOR_DB``, ``(B,)``.

    Kept only to reproduce the over-suppression failure (``objective.ta_loss:
    legacy_db``). It is negative for quiet outputs, so adding it to a loss rewards
    silence down to ``LEGACY_FLOOR_DB``.
    """
    warnings.warn(
        "objective.ta_loss=legacy_db: the target-absent term is a raw dB value that "
        "rewards silent output (the seed's over-suppression bug); use 'relu'",
        SilenceRewardWarning,
        stacklevel=2,
    )
    return energy_db(estimate, eps).clamp(min=LEGACY_FLOOR_DB)


def rms(x: Tensor, eps: float) -> Tensor:
    """Root mean square per example, ``(B,)``; ``eps**2`` under the root keeps the gradient
    finite at an all-zero signal."""
    check_batch(x)
    return torch.sqrt(x.pow(2).mean(dim=-1) + eps * eps)


def amplitude_loss(estimate: Tensor, target: Tensor, min_ratio: float, eps: float) -> Tensor:
    """Amplitude anchor ``mean(log(clamp(rms_est / rms_tgt, min=min_ratio))^2)``: scalar.

    Symmetric in log space (0.5x and 2x cost the same), zero with zero gradient at the
    right level. SI-SDR is blind to scale; this term is what holds the TP level.
    """
    check_pair(estimate, target)
    ratio = rms(estimate, eps) / rms(target, eps).clamp(min=eps)
    return torch.log(ratio.clamp(min=min_ratio)).pow(2).mean()


def ta_term(estimate: Tensor, *, ta_loss: TaLoss, ta_target_db: float, eps: float) -> Tensor:
    """The configured target-absent term per example, ``(B,)``."""
    if ta_loss == "relu":
        return energy_loss(estimate, ta_target_db, eps)
    if ta_loss == "legacy_db":
        return legacy_energy_db(estimate, eps)
    raise ValueError(f"ta_loss: expected 'relu' or 'legacy_db', got {ta_loss!r}")


def scene_aware_parts(
    estimate: Tensor,
    target: Tensor,
    target_present: Tensor,
    *,
    ta_loss: TaLoss,
    ta_target_db: float,
    eps: float,
) -> tuple[Tensor, Tensor]:
    """The two unweighted parts of the scene-aware loss.

    Returns:
        ``(tp_part, ta_part)`` scalars: mean -SI-SDR over TP examples and mean TA term
        over TA examples; each is exactly 0 when its subset is empty.
    """
    check_pair(estimate, target)
    check_mask(target_present, estimate.shape[0])
    tp, ta = target_present, ~target_present
    return split_scene_aware_parts(
        estimate[tp], target[tp], estimate[ta], ta_loss=ta_loss, ta_target_db=ta_target_db, eps=eps
    )


def split_scene_aware_parts(
    estimate_tp: Tensor,
    target_tp: Tensor,
    estimate_ta: Tensor,
    *,
    ta_loss: TaLoss,
    ta_target_db: float,
    eps: float,
) -> tuple[Tensor, Tensor]:
    """:func:`scene_aware_parts` of a batch already split into its TP ``(N_tp, L)`` pairs and
    TA ``(N_ta, L)`` estimates (either may have no rows)."""
    zero = estimate_tp.new_zeros(())
    tp_part = -si_sdr(estimate_tp, target_tp, eps).mean() if estimate_tp.shape[0] else zero
    ta_part = zero
    if estimate_ta.shape[0]:
        ta_part = ta_term(estimate_ta, ta_loss=ta_loss, ta_target_db=ta_target_db, eps=eps).mean()
    return tp_part, ta_part


def scene_aware_loss(
    estimate: Tensor,
    target: Tensor,
    target_present: Tensor,
    *,
    ta_weight: float,
    ta_target_db: float,
    ta_loss: TaLoss,
    eps: float,
) -> Tensor:
    """``(1 - ta_weight) * mean(-SI-SDR over TP) + ta_weight * mean(TA term over TA)``.

    Every weight is passed explicitly (no defaults): the seed's validation silently used a
    function default ``ta_weight`` that differed from the config.

    Args:
        estimate, target: ``(B, L)`` float; TA targets are all zeros (unused).
        target_present: ``(B,)`` bool.

    Returns:
        scalar; a part whose subset is empty is skipped (contributes 0).
    """
    tp_part, ta_part = scene_aware_parts(
        estimate,
        target,
        target_present,
        ta_loss=ta_loss,
        ta_target_db=ta_target_db,
        eps=eps,
    )
    return (1.0 - ta_weight) * tp_part + ta_weight * ta_part
