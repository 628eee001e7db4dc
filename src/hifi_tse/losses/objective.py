"""The training objective: composes the per-phase total from ``ObjectiveConfig``.

Phase 1 (TP only): ``lambda_sep * mean(-SI-SDR) + lambda_phase * phase + lambda_amp * amp``
on every example.
Phase 2 (TP + TA): ``sep`` becomes the scene-aware loss
``(1 - ta_weight) * mean(-SI-SDR over TP) + ta_weight * mean(TA term over TA)``; the phase,
amplitude terms see TP examples only and are exactly 0 when a
batch has none.
Phase 3 (GAN): phase 2 plus ``scale * (lambda_adv * adv + lambda_fm * fm)``.

Every term is returned detached for logging, with diagnostics that are not part of the
total (``si_sdr_tp``, ``rms_ratio``, ``ta_energy_db``) — the health signals that exposed the
seed's over-suppression.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hifi_tse.config import ObjectiveConfig
from hifi_tse.losses.adversarial import AdversarialInputs, GANLoss
from hifi_tse.losses.separation import (
    LOSS_EPS,
    amplitude_loss,
    check_mask,
    check_pair,
    energy_db,
    rms,
    scene_aware_loss,
    si_sdr,
    split_scene_aware_parts,
    ta_term,
)
from hifi_tse.losses.spectral import PhaseSensitiveLoss
from hifi_tse.schedules import PHASE_GAN, PHASE_TP, PHASE_TP_TA

# Lower clamp of the TP output/target RMS ratio in the amplitude anchor, fixed by
# ARCHITECTURE.md invariant 2: the log-ratio penalty is capped at log(0.05)^2 (a -26 dB
# output), so a silent estimate (log 0) cannot turn it infinite.
AMP_MIN_RATIO = 0.05

LOSS_TERMS = ("sep", "phase", "amp", "ta_energy", "adv", "fm", "total")
"""Names that are losses (lower is better); the rest of ``terms`` are diagnostics."""


def scene_aware_from_config(
    estimate: Tensor, target: Tensor, target_present: Tensor, loss_cfg: ObjectiveConfig
) -> Tensor:
    """``scene_aware_loss`` with every weight taken from ``loss_cfg`` (train = validation)."""
    return scene_aware_loss(
        estimate.float(),
        target.float(),
        target_present,
        ta_weight=loss_cfg.ta_weight,
        ta_target_db=loss_cfg.ta_target_db,
        ta_loss=loss_cfg.ta_loss,
        eps=LOSS_EPS,
    )


class Objective(nn.Module):
    """Per-phase training objective built from the config.

    Args:
        loss_cfg: ``cfg.objective``.
        sample_rate: model sample rate, Hz (scales the STFT resolutions).
    """

    def __init__(self, loss_cfg: ObjectiveConfig, sample_rate: int) -> None:
        super().__init__()
        self.cfg = loss_cfg
        self.sample_rate = int(sample_rate)
        self.phase_loss = PhaseSensitiveLoss(loss_cfg.phase_resolutions, self.sample_rate)
        self.gan = GANLoss()

    def _ta_term(self, estimate: Tensor) -> Tensor:
        c = self.cfg
        return ta_term(
            estimate,
            ta_loss=c.ta_loss,
            ta_target_db=c.ta_target_db,
            eps=LOSS_EPS,
        )

    def forward(
        self,
        estimate: Tensor,
        target: Tensor,
        target_present: Tensor,
        phase: int,
        adv: AdversarialInputs | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Total loss and named terms.

        Args:
            estimate: ``(B, L)`` generator output (any float dtype; computed in fp32).
            target: ``(B, L)`` reference target, zeros for TA examples.
            target_present: ``(B,)`` bool, best on the host: it is read there (a mask on
                the device is copied back, one transfer).
            phase: 1, 2 or 3 (``schedules.phase_at``).
            adv: discriminator outputs and ramp scale; used in phase 3 only.

        Returns:
            ``(total, terms)``: ``total`` is a scalar with gradient; ``terms`` holds detached
            fp32 scalars ``sep, phase, amp, ta_energy, total`` always, ``adv, fm`` in phase 3
            (0 when ``adv`` is None), and the diagnostics ``si_sdr_tp`` (dB), ``rms_ratio``
            (when the batch has TP examples) and ``ta_energy_db`` (dB, when it has TA
            examples).
        """
        if phase not in (PHASE_TP, PHASE_TP_TA, PHASE_GAN):
            raise ValueError(f"phase: expected 1, 2 or 3, got {phase!r}")
        check_pair(estimate, target)
        check_mask(target_present, estimate.shape[0])
        c = self.cfg
        # bf16 autocast in training must not reach the losses: log10 / STFT in fp32
        with torch.autocast(device_type=estimate.device.type, enabled=False):
            est, tgt = estimate.float(), target.float()
            split = _Split(est, tgt, target_present)
            zero = est.new_zeros(())
            if phase == PHASE_TP:
                sep = -si_sdr(est, tgt, LOSS_EPS).mean()
                phase_l = self.phase_loss(est, tgt)
                amp = amplitude_loss(est, tgt, AMP_MIN_RATIO, LOSS_EPS)
                ta_part = self._ta_term(split.est_ta).mean() if split.has_ta else zero
            else:
                tp_part, ta_part = split_scene_aware_parts(
                    split.est_tp,
                    split.tgt_tp,
                    split.est_ta,
                    ta_loss=c.ta_loss,
                    ta_target_db=c.ta_target_db,
                    eps=LOSS_EPS,
                )
                sep = (1.0 - c.ta_weight) * tp_part + c.ta_weight * ta_part
                phase_l = self.phase_loss(split.est_tp, split.tgt_tp) if split.has_tp else zero
                amp = (
                    amplitude_loss(split.est_tp, split.tgt_tp, AMP_MIN_RATIO, LOSS_EPS)
                    if split.has_tp
                    else zero
                )
            total = c.lambda_sep * sep + c.lambda_phase * phase_l + c.lambda_amp * amp
            terms = {"sep": sep, "phase": phase_l, "amp": amp, "ta_energy": ta_part}
            if phase == PHASE_GAN:
                adv_l = fm = zero
                if adv is not None:
                    adv_l, fm = self.gan.generator_terms(adv.real_outputs, adv.fake_outputs)
                    total = total + adv.scale * (c.lambda_adv * adv_l + c.lambda_fm * fm)
                terms["adv"] = adv_l
                terms["fm"] = fm
            terms["total"] = total
            with torch.no_grad():
                terms.update(split.diagnostics())
        return total, {k: v.detach().float() for k, v in terms.items()}


class _Split:
    """A batch split into its TP and TA examples by a *host* mask.

    ``target_present`` is read on the host (a CUDA mask would be copied back: one sync), and
    the rows are picked with ``index_select`` on index tensors sent to the device, so no
    device value is read back (boolean indexing of a device tensor would wait for the count).
    """

    def __init__(self, est: Tensor, tgt: Tensor, target_present: Tensor) -> None:
        present = target_present.detach().to("cpu", torch.bool)
        tp_rows = torch.nonzero(present).squeeze(1)
        ta_rows = torch.nonzero(~present).squeeze(1)
        self.has_tp, self.has_ta = tp_rows.numel() > 0, ta_rows.numel() > 0
        tp_rows = tp_rows.to(est.device, non_blocking=True)
        ta_rows = ta_rows.to(est.device, non_blocking=True)
        self.est_tp, self.tgt_tp = est.index_select(0, tp_rows), tgt.index_select(0, tp_rows)
        self.est_ta = est.index_select(0, ta_rows)

    def diagnostics(self) -> dict[str, Tensor]:
        """``si_sdr_tp`` (dB) and ``rms_ratio`` with TP examples, ``ta_energy_db`` (dB) with
        TA examples."""
        out = {}
        if self.has_tp:
            out["si_sdr_tp"] = si_sdr(self.est_tp, self.tgt_tp, LOSS_EPS).mean()
            out["rms_ratio"] = rms(self.est_tp, LOSS_EPS).mean() / rms(self.tgt_tp, LOSS_EPS).mean()
        if self.has_ta:
            out["ta_energy_db"] = energy_db(self.est_ta, LOSS_EPS).mean()
        return out
