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

On a corpus with real and synthetic voices, TP SI-SDRi, rms_ratio and the TA output level
are also reported per kind of enrolled voice (``real/tp_si_sdri``, ``synthetic/rms_ratio``,
...), and on a corpus of several speech sources per source of the enrolled target
(``source/<name>/rms_ratio``, ...): a validation set that is mostly synthetic voices can hide
what happens on the real ones, and a model turns down the voices it is unsure of (a source
never trained on) while the whole set's level looks right. They are reported only; the
best-model rule stays on the whole set's TP SI-SDR and rms_ratio.
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

from hifi_tse.audio.signal import ACTIVITY_RANGE_DB, CONTINUOUS_ACTIVITY, activity_frame
from hifi_tse.checkpoints import TrainState, capture_rng_state, restore_rng_state
from hifi_tse.config import Config
from hifi_tse.data.store import VOICE_KINDS
from hifi_tse.errors import UserError
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


# Statistics kept per group of enrolled voices, each as a _Moments vector: TP SI-SDRi (dB),
# TP RMS (estimate as x, target as y, so that rms_ratio is their ratio of means), TA output
# energy (dB).
_GROUP_STATS = ("tp_si_sdri", "rms_ratio", "ta_energy_db")
_MOMENTS_LEN = 6  # len(_Moments.vector())
_GROUP_LEN = _MOMENTS_LEN * len(_GROUP_STATS)
SOURCE_PREFIX = "source/"
CONTINUOUS_GROUP = "continuous"  # TP examples whose target speaks throughout (see below)


def _moment_terms(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """``(N, 6)`` float64 per-example terms whose column sums are the :class:`_Moments`
    vector of ``x (N,)`` (and ``y (N,)``, the denominator of a ratio of means)."""
    x = x.detach().double()
    ones = torch.ones_like(x)
    if y is None:
        zeros = torch.zeros_like(x)
        return torch.stack((ones, x, x * x, zeros, zeros, zeros), dim=-1)
    y = y.detach().double()
    return torch.stack((ones, x, x * x, y, y * y, x * y), dim=-1)


def continuous_targets(target: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """``(B,)`` bool: which targets of ``target (B, L)`` (at ``sample_rate`` Hz) are continuous
    speech, active (:func:`hifi_tse.audio.signal.active_frames`) in at least
    ``CONTINUOUS_ACTIVITY`` of their frames; silent targets (TA) are not."""
    frame = activity_frame(sample_rate)
    n = target.shape[-1] // frame
    if n == 0:
        return torch.zeros(target.shape[0], dtype=torch.bool, device=target.device)
    frames = target[:, : n * frame].detach().double().reshape(target.shape[0], n, frame)
    power = frames.pow(2).mean(dim=-1)  # (B, n)
    loudest = power.amax(dim=-1, keepdim=True)
    active = power >= loudest * 10.0 ** (-ACTIVITY_RANGE_DB / 10.0)
    return (active.double().mean(dim=-1) >= CONTINUOUS_ACTIVITY) & (loudest.squeeze(-1) > 0)


class _VoiceGroupMoments:
    """TP SI-SDRi, rms_ratio and TA output level (dB) per group of enrolled voices.

    ``kind_of_source`` maps a speech source name to its kind (the prepare report's tag,
    :data:`VOICE_KINDS`). An example belongs to the groups of its target speaker
    (``meta["target_speaker"]``, ``"source/speaker"``: the enrolled voice, present or not):
    its kind (``real``, ``synthetic``; only when the map holds both, else they repeat the
    totals) and its source (``source/<name>``; only when the map names two or more). A TP
    example whose target is continuous speech (:func:`continuous_targets`) is also in
    ``continuous`` and, with both kinds, ``<kind>/continuous``: where a voice speaks
    throughout, the pauses that suppression fills cannot hide a level turned down.
    Sums live on the device in one ``(G, 18)`` tensor, filled by one mask row per group.
    """

    def __init__(self, kind_of_source: dict[str, str], device: torch.device) -> None:
        sources = sorted(kind_of_source)
        kinds = list(VOICE_KINDS) if len(set(kind_of_source.values())) > 1 else []
        by_source = [SOURCE_PREFIX + s for s in sources] if len(sources) > 1 else []
        if not (kinds or by_source):
            sources = []  # one source, one kind: no group asks where a target comes from
        self.index_of_source = {name: i for i, name in enumerate(sources)}
        continuous = [CONTINUOUS_GROUP] + [f"{k}/{CONTINUOUS_GROUP}" for k in kinds]
        self.groups = kinds + by_source + continuous
        # (G, S) bool: group g holds the examples whose target comes from source s (S may
        # be 0: no source map, one group of every example).
        of_kind = [[kind_of_source[s] == k for s in sources] for k in kinds]
        of_source = [[s == t for s in sources] for t in sources] if by_source else []
        membership = of_kind + of_source + [[True] * len(sources)] + of_kind
        self.membership = torch.tensor(membership, dtype=torch.bool, device=device)
        # (G,) bool: group g holds continuous-speech targets only
        needs = [False] * (len(kinds) + len(by_source)) + [True] * len(continuous)
        self.needs_continuous = torch.tensor(needs, dtype=torch.bool, device=device)
        self.sums = torch.zeros(len(self.groups), _GROUP_LEN, dtype=torch.float64, device=device)

    def _source_indices(self, metas: list[dict[str, Any]]) -> torch.Tensor:
        """``(B,)`` long: the index of each example's target source."""
        indices = []
        for meta in metas:
            source = str(meta["target_speaker"]).split("/", 1)[0]
            if source not in self.index_of_source:
                raise UserError(
                    f"validation example of speech source {source!r}, which the prepare "
                    f"report does not name (it names {', '.join(self.index_of_source)}): "
                    f"re-run prepare"
                )
            indices.append(self.index_of_source[source])
        return torch.tensor(indices, dtype=torch.long, device=self.membership.device)

    def add(
        self,
        metas: list[dict[str, Any]] | None,
        present: torch.Tensor,
        continuous: torch.Tensor,
        sdri: torch.Tensor,
        rms_est: torch.Tensor,
        rms_tgt: torch.Tensor,
        ta_db: torch.Tensor,
    ) -> None:
        """``present``, ``continuous`` ``(B,)`` bool; ``sdri``, ``rms_est``, ``rms_tgt``
        ``(P,)`` the TP examples' values, ``ta_db (B - P,)`` the TA ones'. ``metas`` (each
        with ``target_speaker``) are read only when a group is of a kind or a source."""
        if self.index_of_source:
            if metas is None:
                raise ValueError("validation batches carry no meta, the voice groups need it")
            mask = self.membership[:, self._source_indices(metas)]  # (G, B)
        else:
            mask = self.membership.new_ones(len(self.groups), present.shape[0])
        mask = (mask & (continuous[None, :] | ~self.needs_continuous[:, None])).double()
        tp_terms = torch.cat((_moment_terms(sdri), _moment_terms(rms_est, rms_tgt)), dim=-1)
        tp_sums = mask[:, present] @ tp_terms  # (G, 12)
        ta_sums = mask[:, ~present] @ _moment_terms(ta_db)  # (G, 6)
        self.sums += torch.cat((tp_sums, ta_sums), dim=-1)

    def vector(self) -> list[float]:
        return self.sums.flatten().tolist()

    def metrics(self, reduced: list[float]) -> dict[str, float]:
        """``<group>/tp_si_sdri``, ``<group>/rms_ratio``, ``<group>/ta_energy_db`` (each with
        ``_se``), ``<group>/tp_count`` and ``<group>/ta_count`` from the reduced
        :meth:`vector`, for ``<group>`` a kind or ``source/<name>``; a group without examples
        in the set reports nothing, one without examples of one sort none of that sort."""
        out: dict[str, float] = {}
        for g, group in enumerate(self.groups):
            row = reduced[g * _GROUP_LEN : (g + 1) * _GROUP_LEN]
            sdri, level, ta = (
                _Moments.from_vector(row[i * _MOMENTS_LEN : (i + 1) * _MOMENTS_LEN])
                for i in range(len(_GROUP_STATS))
            )
            if sdri.n + ta.n == 0:
                continue
            for name, moments, (mean, se) in (
                ("tp_si_sdri", sdri, sdri.mean_se()),
                ("rms_ratio", level, level.ratio_se()),
                ("ta_energy_db", ta, ta.mean_se()),
            ):
                if moments.n > 0:
                    out[f"{group}/{name}"], out[f"{group}/{name}_se"] = mean, se
            out[f"{group}/tp_count"], out[f"{group}/ta_count"] = sdri.n, ta.n
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


def _reduced_metrics(
    moments: dict[str, _Moments],
    term_sums: dict[str, float],
    by_voice: _VoiceGroupMoments,
    device: torch.device,
) -> dict[str, float]:
    """This rank's sums, all-reduced over ranks (one vector of the same length on every rank),
    as :func:`validate`'s metrics; ``moments`` maps each whole-set metric name to its sums
    (``loss`` counted per batch, ``rms_ratio`` a ratio of means)."""
    flat = [x for m in moments.values() for x in m.vector()] + list(term_sums.values())
    reduced = all_reduce_sum(
        torch.tensor(flat + by_voice.vector(), dtype=torch.float64, device=device)
    ).tolist()
    metrics: dict[str, float] = {}
    counts: dict[str, float] = {}
    for i, key in enumerate(moments):
        m = _Moments.from_vector(reduced[_MOMENTS_LEN * i : _MOMENTS_LEN * (i + 1)])
        metrics[key], metrics[f"{key}_se"] = m.ratio_se() if key == "rms_ratio" else m.mean_se()
        counts[key] = m.n
    at = _MOMENTS_LEN * len(moments)
    for i, name in enumerate(term_sums):
        metrics[f"loss_{name}"] = reduced[at + i] / max(counts["loss"], 1.0)
    metrics["tp_count"], metrics["ta_count"] = counts["tp_si_sdr"], counts["ta_energy_db"]
    metrics.update(by_voice.metrics(reduced[at + len(term_sums) :]))
    return metrics


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
    ``kind_of_source`` (speech source -> ``"real"`` / ``"synthetic"``), the per-kind (both
    kinds in it) and per-source (two or more sources) metrics of :class:`_VoiceGroupMoments`
    too (batches must carry ``meta``).
    """
    from hifi_tse.losses.separation import LOSS_EPS, energy_db, rms, si_sdr

    eps = LOSS_EPS
    was_training = model.training
    model.eval()
    loss_m, sdr_m, sdri_m, rms_m, ta_m = (_Moments() for _ in range(5))
    by_voice = _VoiceGroupMoments(kind_of_source or {}, device)
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
        sdri, rms_e, rms_t, ta_db = (est.new_zeros(0) for _ in range(4))
        if present.any():
            e, t, m = est[present], target[present], mix[present]
            sdr = si_sdr(e, t, eps)
            sdri = sdr - si_sdr(m, t, eps)
            rms_e, rms_t = rms(e, eps), rms(t, eps)
            sdr_m.add(sdr)
            sdri_m.add(sdri)
            rms_m.add(rms_e, rms_t)
        if (~present).any():
            ta_db = energy_db(est[~present], eps)
            ta_m.add(ta_db)
        continuous = continuous_targets(target, cfg.audio.sample_rate)
        by_voice.add(batch.get("meta"), present, continuous, sdri, rms_e, rms_t, ta_db)
        audio += _audio_examples(mix, ref, est, audio_examples - len(audio))
    model.train(was_training)
    moments = {"loss": loss_m, "tp_si_sdr": sdr_m, "tp_si_sdri": sdri_m, "rms_ratio": rms_m}
    moments["ta_energy_db"] = ta_m
    metrics = _reduced_metrics(moments, term_sums, by_voice, device)
    return ValidationResult(metrics=metrics, audio=audio)


# Fewest TP examples for a group's rms_ratio to be judged against the band (the best-model
# rule, the health monitor). The shipped demo model's per-example rms_ratio on real test voices
# spreads with SD 0.22, so ten examples leave a standard error near 0.07: a group of fewer is
# too noisy to judge.
GROUP_MIN_TP_EXAMPLES = 10


def levels_in_band(metrics: dict[str, float], band: tuple[float, float]) -> bool:
    """True when the whole set's ``rms_ratio`` and each voice kind's (``real/``,
    ``synthetic/``, judged with at least :data:`GROUP_MIN_TP_EXAMPLES` TP examples) lie in
    ``band``. A level that was not measured (NaN, absent) does not count against it.

    Per kind, not only overall: a model turns down the voices it is unsure of, and a mostly
    familiar validation set can sit inside the band while its real voices leave it. Sources
    are too small to decide the rule; the monitor names them instead."""
    keys = ["rms_ratio"] + [
        f"{kind}/rms_ratio"
        for kind in VOICE_KINDS
        if metrics.get(f"{kind}/tp_count", 0.0) >= GROUP_MIN_TP_EXAMPLES
    ]
    levels = [metrics.get(key, math.nan) for key in keys]
    return all(band[0] <= level <= band[1] for level in levels if math.isfinite(level))


def update_best(
    state: TrainState,
    metrics: dict[str, float],
    count_patience: bool,
    healthy_band: tuple[float, float] | None = None,
) -> bool:
    """Record a validation in ``state``; True when it becomes the new best model.

    Only ``tp_si_sdr`` scores: a lower composite loss without a higher TP SI-SDR is not an
    improvement. With ``healthy_band = (low, high)`` a validation whose ``rms_ratio`` (the
    whole set's or a voice kind's: :func:`levels_in_band`) lies outside it can be best only
    while no healthy validation has been (a provisional best), and the first healthy one
    replaces such a best whatever its score. ``count_patience``
    (phase 2 onwards) lets a non-improvement count towards early stopping.
    """
    state.val_history.append({k: float(v) for k, v in metrics.items()})
    score = metrics.get("tp_si_sdr", math.nan)
    healthy = healthy_band is None or levels_in_band(metrics, healthy_band)
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
