"""Validation on a fixed example set, best-model selection and early stopping.

Invariants from the seed (over-suppression post-mortem):

* the set is the same every time (``FixedExampleSet``: item i depends on (VAL_SEED, i) only),
  and validation leaves every training RNG stream exactly as it found it;
* the scene-aware loss is computed by the same :class:`Objective` as training (phase 2), so the
  TA weight is ``objective.ta_weight`` and nothing else;
* the best model is the one with the highest **TP SI-SDR** — never the composite loss, which a
  suppressing model can lower — among validations whose ``rms_ratio`` is inside the healthy
  band: SI-SDR is blind to level, so without the band an over-suppressing model could still
  be chosen.

Under DDP each rank scores a strided shard of the set and sums of per-example statistics are
all-reduced, so every rank ends with the same metrics.

On a corpus with real and synthetic voices, TP SI-SDRi and the TA output level are also
reported per kind of enrolled voice (``real/tp_si_sdri``, ``synthetic/ta_energy_db``, ...):
a validation set that is mostly synthetic voices can hide what happens on the real ones.
They are reported only; the best-model rule stays on the whole set's TP SI-SDR.
"""

# The legacy global NumPy RNG is a training stream like Python's and torch's (third-party
# code draws from it), so it is seeded, saved and restored on purpose here.
# ruff: noqa: NPY002

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from hifi_tse.checkpoints import TrainState, capture_rng_state, restore_rng_state
from hifi_tse.config import Config
from hifi_tse.data.store import VOICE_KINDS
from hifi_tse.schedules import PHASE_TP_TA
from hifi_tse.train.distributed import all_reduce_sum


@contextlib.contextmanager
def preserved_rng(seed: int) -> Iterator[None]:
    """Run the body with Python/NumPy/torch RNGs seeded to ``seed``, then restore them."""
    saved = capture_rng_state()
    try:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        yield
    finally:
        restore_rng_state(saved)


@dataclass
class _Moments:
    """Running sums of x, x^2 (and y, y^2, xy for a ratio of means) over examples."""

    n: float = 0.0
    sx: float = 0.0
    sxx: float = 0.0
    sy: float = 0.0
    syy: float = 0.0
    sxy: float = 0.0

    def add(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        x = x.detach().double()
        self.n += float(x.numel())
        self.sx += float(x.sum())
        self.sxx += float((x * x).sum())
        if y is not None:
            y = y.detach().double()
            self.sy += float(y.sum())
            self.syy += float((y * y).sum())
            self.sxy += float((x * y).sum())

    def vector(self) -> list[float]:
        return [self.n, self.sx, self.sxx, self.sy, self.syy, self.sxy]

    @classmethod
    def from_vector(cls, v: list[float]) -> _Moments:
        return cls(*v)

    def mean_se(self) -> tuple[float, float]:
        """Mean of x and its standard error (NaN when undefined)."""
        if self.n < 1:
            return math.nan, math.nan
        mean = self.sx / self.n
        if self.n < 2:
            return mean, math.nan
        var = max(self.sxx - self.n * mean * mean, 0.0) / (self.n - 1)
        return mean, math.sqrt(var / self.n)

    def ratio_se(self) -> tuple[float, float]:
        """mean(x) / mean(y) and its delta-method standard error."""
        if self.n < 1 or self.sy <= 0:
            return math.nan, math.nan
        mx, my = self.sx / self.n, self.sy / self.n
        ratio = mx / my
        if self.n < 2:
            return ratio, math.nan
        vx = max(self.sxx - self.n * mx * mx, 0.0) / (self.n - 1)
        vy = max(self.syy - self.n * my * my, 0.0) / (self.n - 1)
        cxy = (self.sxy - self.n * mx * my) / (self.n - 1)
        rel = vx / mx**2 + vy / my**2 - 2 * cxy / (mx * my) if mx > 0 else math.nan
        return ratio, math.sqrt(max(rel, 0.0) / self.n) * abs(ratio)


class _VoiceKindMoments:
    """TP SI-SDRi and TA output level (dB) per kind of enrolled voice (:data:`VOICE_KINDS`).

    ``kind_of_source`` maps a speech source name to its kind (the prepare report's tag);
    an example's kind is its target speaker's (``meta["target_speaker"]``,
    ``"source/speaker"``), the enrolled voice, present or not.
    """

    def __init__(self, kind_of_source: dict[str, str]) -> None:
        self.kind_of_source = kind_of_source
        # Reported only when the corpus holds both kinds; otherwise they repeat the totals.
        self.active = len(set(kind_of_source.values())) > 1
        self.sdri = {kind: _Moments() for kind in VOICE_KINDS}
        self.ta = {kind: _Moments() for kind in VOICE_KINDS}

    def add(
        self,
        metas: list[dict[str, Any]],
        present: torch.Tensor,
        sdri: torch.Tensor,
        ta_db: torch.Tensor,
    ) -> None:
        """``present (B,)`` bool; ``sdri`` the TP examples' values, ``ta_db`` the TA ones'."""
        kinds = [self.kind_of_source[str(m["target_speaker"]).split("/", 1)[0]] for m in metas]
        present = present.cpu()
        for kind in VOICE_KINDS:
            of_kind = torch.tensor([k == kind for k in kinds], dtype=torch.bool)
            self.sdri[kind].add(sdri.cpu()[of_kind[present]])
            self.ta[kind].add(ta_db.cpu()[of_kind[~present]])

    def vector(self) -> list[float]:
        return [
            x for kind in VOICE_KINDS for x in self.sdri[kind].vector() + self.ta[kind].vector()
        ]

    def metrics(self, reduced: list[float]) -> dict[str, float]:
        """``<kind>/tp_si_sdri``, ``<kind>/ta_energy_db`` (each with ``_se``) and
        ``<kind>/tp_count``, ``<kind>/ta_count`` from the reduced :meth:`vector`; a kind
        without examples of one sort reports none of that sort."""
        out: dict[str, float] = {}
        if not self.active:
            return out
        for i, kind in enumerate(VOICE_KINDS):
            sdri = _Moments.from_vector(reduced[12 * i : 12 * i + 6])
            ta = _Moments.from_vector(reduced[12 * i + 6 : 12 * i + 12])
            for name, moments in (("tp_si_sdri", sdri), ("ta_energy_db", ta)):
                if moments.n > 0:
                    mean, se = moments.mean_se()
                    out[f"{kind}/{name}"], out[f"{kind}/{name}_se"] = mean, se
            out[f"{kind}/tp_count"], out[f"{kind}/ta_count"] = sdri.n, ta.n
        return out


@dataclass
class ValidationResult:
    metrics: dict[str, float]
    audio: list[dict[str, np.ndarray]] = field(default_factory=list)


def _audio_examples(
    mix: torch.Tensor, ref: torch.Tensor, est: torch.Tensor, room: int
) -> list[dict[str, np.ndarray]]:
    """The batch's first ``room`` examples as ``{"mix", "ref", "estimate"}`` ``(L,)`` arrays."""
    return [
        {
            "mix": mix[i].float().cpu().numpy(),
            "ref": ref[i].float().cpu().numpy(),
            "estimate": est[i].cpu().numpy(),
        }
        for i in range(min(room, mix.shape[0]))
    ]


@torch.no_grad()
def validate(
    model: nn.Module,
    batches: Iterable[dict[str, Any]],
    objective: nn.Module,
    cfg: Config,
    device: torch.device,
    autocast: bool,
    audio_examples: int,
    kind_of_source: dict[str, str] | None = None,
) -> ValidationResult:
    """Score ``model`` (the EMA generator) on this rank's shard; metrics reduced over ranks.

    Metrics (each with ``<name>_se``, its standard error): ``loss`` (phase-2 objective,
    per-batch), ``tp_si_sdr`` / ``tp_si_sdri`` (dB, TP examples), ``rms_ratio`` (mean TP output
    RMS / mean TP target RMS), ``ta_energy_db`` (dB, TA examples); plus ``loss_<term>`` means,
    ``tp_count`` and ``ta_count``. ``audio`` holds the first ``audio_examples`` examples of the
    shard as ``{"mix", "ref", "estimate"}`` ``(L,)`` float32 arrays. With
    ``kind_of_source`` (speech source -> ``"real"`` / ``"synthetic"``) and both kinds in it,
    the per-kind metrics of :class:`_VoiceKindMoments` too (batches must carry ``meta``).
    """
    from hifi_tse.losses.separation import LOSS_EPS, energy_db, rms, si_sdr

    eps = LOSS_EPS
    was_training = model.training
    model.eval()
    loss_m, sdr_m, sdri_m, rms_m, ta_m = (_Moments() for _ in range(5))
    by_kind = _VoiceKindMoments(kind_of_source or {})
    # Fixed list (depends on config only) so every rank reduces the same vector.
    names = ["sep", "phase", "amp", "ta_energy"]
    term_sums = dict.fromkeys(names, 0.0)
    audio: list[dict[str, np.ndarray]] = []
    for batch in batches:
        mix, ref, target, present = (
            batch[k].to(device) for k in ("mix", "ref", "target", "target_present")
        )
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
            est = model(mix, ref)
        est = est.float()
        total, terms = objective(est, target, present, PHASE_TP_TA)
        loss_m.add(total.reshape(1))
        for name in names:
            term_sums[name] += float(terms[name])
        sdri, ta_db = est.new_zeros(0), est.new_zeros(0)
        if present.any():
            e, t, m = est[present], target[present], mix[present]
            sdr = si_sdr(e, t, eps)
            sdri = sdr - si_sdr(m, t, eps)
            sdr_m.add(sdr)
            sdri_m.add(sdri)
            rms_m.add(rms(e, eps), rms(t, eps))
        if (~present).any():
            ta_db = energy_db(est[~present], eps)
            ta_m.add(ta_db)
        if by_kind.active:
            by_kind.add(batch["meta"], present, sdri, ta_db)
        audio += _audio_examples(mix, ref, est, audio_examples - len(audio))
    model.train(was_training)

    flat = loss_m.vector() + sdr_m.vector() + sdri_m.vector() + rms_m.vector() + ta_m.vector()
    flat += [term_sums[k] for k in names] + by_kind.vector()
    reduced = all_reduce_sum(torch.tensor(flat, dtype=torch.float64, device=device)).tolist()
    loss_m, sdr_m, sdri_m, rms_m, ta_m = (
        _Moments.from_vector(reduced[6 * i : 6 * i + 6]) for i in range(5)
    )
    metrics: dict[str, float] = {}
    for key, (mean, se) in {
        "loss": loss_m.mean_se(),
        "tp_si_sdr": sdr_m.mean_se(),
        "tp_si_sdri": sdri_m.mean_se(),
        "rms_ratio": rms_m.ratio_se(),
        "ta_energy_db": ta_m.mean_se(),
    }.items():
        metrics[key], metrics[f"{key}_se"] = mean, se
    n_batches = max(loss_m.n, 1.0)
    for i, name in enumerate(names):
        metrics[f"loss_{name}"] = reduced[30 + i] / n_batches
    metrics["tp_count"] = sdr_m.n
    metrics["ta_count"] = ta_m.n
    metrics.update(by_kind.metrics(reduced[30 + len(names) :]))
    return ValidationResult(metrics=metrics, audio=audio)


def update_best(
    state: TrainState,
    metrics: dict[str, float],
    count_patience: bool,
    healthy_band: tuple[float, float] | None = None,
) -> bool:
    """Record a validation in ``state``; True when it becomes the new best model.

    Only ``tp_si_sdr`` scores: a lower composite loss without a higher TP SI-SDR is not an
    improvement. With ``healthy_band = (low, high)`` a validation whose ``rms_ratio`` lies
    outside it can be best only while no healthy validation has been (a provisional best), and
    the first healthy one replaces such a best whatever its score. ``count_patience``
    (phase 2 onwards) lets a non-improvement count towards early stopping.
    """
    state.val_history.append({k: float(v) for k, v in metrics.items()})
    score = metrics.get("tp_si_sdr", math.nan)
    level = metrics.get("rms_ratio", math.nan)
    healthy = (
        healthy_band is None
        or not math.isfinite(level)
        or healthy_band[0] <= level <= healthy_band[1]
    )
    beats = score > state.best_si_sdr
    if healthy:
        improved = not state.best_healthy or beats
    else:
        improved = not state.best_healthy and beats
    if math.isfinite(score) and improved:
        state.best_si_sdr = float(score)
        state.best_step = int(metrics.get("step", state.step))
        state.best_healthy = healthy
        state.patience_count = 0
        return True
    if count_patience:
        state.patience_count += 1
    return False


def should_stop_early(state: TrainState, patience: int) -> bool:
    return state.patience_count >= patience
