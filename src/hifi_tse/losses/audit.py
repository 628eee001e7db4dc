"""Loss audit: sweep the output gain and check that no loss term rewards silence.

The seed's over-suppression came from a target-absent term that kept falling as the output
got quieter. The audit reproduces that situation directly: for a batch of target-present
(TP) examples the "model output" is ``g * target`` and for a batch of target-absent (TA)
examples it is ``g * mixture``, with g swept from ~0 to 2. Each named term of the configured
objective (phase 1 on the TP batch, phase 2 on both) is recorded against g.

A term FAILS (rewards silence) when some gain below the right level scores lower than the
right level itself by more than ``AUDIT_TOLERANCE`` (``--tolerance``). The right level is
g = 1 for TP examples, and for TA examples the gain at which the output reaches
``ta_target_db`` (quieter than that must earn nothing more). g = 0 itself is replaced by
``AUDIT_MIN_GAIN`` (``--min-gain``): SI-SDR of an all-zero output is degenerate.

A third, mixed sweep models a network that cannot yet tell TP from TA mixtures and so applies
one common gain g to both (estimate ``g * target`` on TP rows, ``g * mixture`` on TA rows).
SI-SDR is blind to that gain, the TA term pulls it down and the amplitude anchor holds it up;
the total's minimiser — the *blind gain* — is where an undecided model's TP level settles.
The mixed sweep FAILS when the blind gain lies outside the healthy ``rms_ratio`` band
(``health.rms_ratio_low`` .. ``health.rms_ratio_high``): such weights make the TP level
drift down as TA suppression grows (the demo runs drifted to rms_ratio 0.75 with
``lambda_amp = 1``, whose blind gain is ~0.65).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from hifi_tse.config import Config
from hifi_tse.losses.objective import LOSS_TERMS, Objective
from hifi_tse.losses.separation import LOSS_EPS, SilenceRewardWarning, energy_db
from hifi_tse.schedules import PHASE_TP, PHASE_TP_TA

AUDIT_MIN_GAIN = 1e-3  # x: stands in for g = 0
AUDIT_TOLERANCE = 1e-3  # loss units: float32 round-off of the terms stays far below it
AUDIT_EXAMPLES = 32  # fixed validation examples scanned by audit-loss --data

# Generated audit signals: a deterministic stand-in for speech. These shape test signals,
# they are not tunables of the toolkit, hence constants here rather than config keys.
AUDIT_SECONDS = 1.0  # s
AUDIT_SEED = 0
AUDIT_F0_HZ = (110.0, 165.0, 220.0, 290.0)  # fundamentals of the generated talkers, Hz
AUDIT_HARMONICS = 8  # partials per talker, amplitude 1/k
AUDIT_SYLLABLE_HZ = 4.0  # amplitude-modulation rate (speech-like syllable rhythm), Hz
AUDIT_TALKER_RMS = 0.1  # about -20 dBFS per talker
AUDIT_NOISE_RMS = 0.01  # white noise about -40 dBFS


def _talker(t: np.ndarray, f0: float, phase: float, sample_rate: int) -> np.ndarray:
    """Harmonic tone (partials below Nyquist, 1/k amplitudes), syllable-modulated, at
    ``AUDIT_TALKER_RMS``."""
    k = np.arange(1, AUDIT_HARMONICS + 1)[:, None]
    k = k[(k[:, 0] * f0) < sample_rate / 2]
    sig = (np.sin(2 * np.pi * f0 * k * t[None] + phase * k) / k).sum(axis=0)
    envelope = 0.5 * (1.0 - np.cos(2 * np.pi * AUDIT_SYLLABLE_HZ * t + phase))
    sig = sig * envelope
    return sig * (AUDIT_TALKER_RMS / np.sqrt(np.mean(sig**2)))


def make_audit_signals(sample_rate: int) -> dict[str, Tensor]:
    """Two TP and two TA examples of ``AUDIT_SECONDS`` at ``sample_rate``, deterministic.

    Returns:
        ``mix (4, L)``, ``target (4, L)`` (zeros for TA) float32 and ``target_present (4,)``
        bool = [True, True, False, False].
    """
    rng = np.random.default_rng(AUDIT_SEED)
    n = int(round(AUDIT_SECONDS * sample_rate))
    t = np.arange(n) / sample_rate
    mixes, targets = [], []
    for i, present in enumerate((True, True, False, False)):
        target = _talker(t, AUDIT_F0_HZ[i], rng.uniform(0, 2 * np.pi), sample_rate)
        interferer = _talker(
            t, AUDIT_F0_HZ[(i + 1) % len(AUDIT_F0_HZ)], rng.uniform(0, 2 * np.pi), sample_rate
        )
        noise = AUDIT_NOISE_RMS * rng.standard_normal(n)
        target = target if present else np.zeros(n)
        mixes.append(target + interferer + noise)
        targets.append(target)
    return {
        "mix": torch.tensor(np.stack(mixes), dtype=torch.float32),
        "target": torch.tensor(np.stack(targets), dtype=torch.float32),
        "target_present": torch.tensor([True, True, False, False]),
    }


@dataclass
class Sweep:
    """One gain sweep: a phase's objective on a TP or a TA batch.

    Attributes:
        phase: objective phase (1 or 2).
        batch: ``"tp"`` (estimate = g * target), ``"ta"`` (estimate = g * mixture) or
            ``"mixed"`` (both kinds in one batch, one common gain).
        ref_gain: the right level (1 for TP; TA: output at ``ta_target_db``).
        values: term name -> ``(G,)`` values at ``AuditResult.gains``.
        ref_values: term name -> value at ``ref_gain``.
        failures: loss terms that reward silence in this sweep.
    """

    phase: int
    batch: str
    ref_gain: float
    values: dict[str, np.ndarray]
    ref_values: dict[str, float]
    failures: list[str] = field(default_factory=list)
    blind_gain: float | None = None

    @property
    def label(self) -> str:
        return f"phase{self.phase}/{self.batch}"


@dataclass
class AuditResult:
    """Outcome of :func:`audit_objective`.

    Attributes:
        gains: ``(G,)`` swept gains (ascending, all > 0).
        sweeps: one :class:`Sweep` per (phase, batch).
        tolerance: loss units a term may drop below its right-level value.
        ta_target_db: the configured TA target level, dB.
        healthy_band: ``(low, high)`` rms_ratio band the blind gain must fall in.
    """

    gains: np.ndarray
    sweeps: list[Sweep]
    tolerance: float
    ta_target_db: float
    healthy_band: tuple[float, float] = (0.0, math.inf)

    @property
    def blind_gain(self) -> float:
        """Common gain minimising the phase-2 total on the mixed TP + TA batch."""
        for s in self.sweeps:
            if s.blind_gain is not None:
                return s.blind_gain
        raise KeyError("no mixed sweep")

    @property
    def failures(self) -> list[str]:
        """Failing terms as ``phase{p}/{tp|ta}/{term}``."""
        return [f"{s.label}/{name}" for s in self.sweeps for name in s.failures]

    @property
    def ok(self) -> bool:
        return not self.failures

    def tp_argmin(self, phase: int) -> float:
        """Gain that minimises the total on the TP batch of ``phase``."""
        for s in self.sweeps:
            if s.phase == phase and s.batch == "tp":
                return float(self.gains[int(np.argmin(s.values["total"]))])
        raise KeyError(f"no TP sweep for phase {phase}")

    def table(self) -> str:
        """Human-readable table of every term against the gain, one block per sweep."""
        lines: list[str] = []
        for s in self.sweeps:
            what = {"tp": "g * target", "ta": "g * mixture", "mixed": "one g for TP and TA"}
            right = (
                f"{self.ta_target_db:g} dB output (g = {s.ref_gain:.4g})"
                if s.batch == "ta"
                else "g = 1"
            )
            lines.append(
                f"== phase {s.phase}, {s.batch.upper()} batch: estimate = {what[s.batch]}; "
                f"right level {right}"
            )
            names = list(s.values)
            lines.append(f"{'gain':>8} " + " ".join(f"{n:>12}" for n in names))
            for i, g in enumerate(self.gains):
                row = " ".join(f"{s.values[n][i]:>12.4f}" for n in names)
                lines.append(f"{g:>8.4g} {row}")
            row = " ".join(f"{s.ref_values[n]:>12.4f}" for n in names)
            lines.append(f"{'right':>8} {row}")
            if s.blind_gain is not None:
                low, high = self.healthy_band
                verdict = (
                    f"{'OK' if not s.failures else 'FAIL'}: blind gain {s.blind_gain:.3f} "
                    f"({'inside' if not s.failures else 'outside'} the healthy rms_ratio band "
                    f"{low:g}..{high:g})"
                )
            elif not s.failures:
                verdict = "OK: no term rewards silence"
            else:
                verdict = "FAIL: rewards silence: " + ", ".join(s.failures)
            lines.append(verdict)
            lines.append("")
        return "\n".join(lines)


def _as_tensor(x: object, name: str, dtype: torch.dtype) -> Tensor:
    t = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    if name == "target_present":
        if t.ndim != 1:
            raise TypeError(f"signals[{name!r}]: expected (B,), got {tuple(t.shape)}")
        return t.to(torch.bool)
    if t.ndim != 2:
        raise TypeError(f"signals[{name!r}]: expected (B, L), got {tuple(t.shape)}")
    return t.to(dtype)


def _evaluate(
    objective: Objective, estimate: Tensor, target: Tensor, present: Tensor, phase: int
) -> dict[str, float]:
    with torch.no_grad():
        _, terms = objective(estimate, target, present, phase)
    return {k: float(v) for k, v in terms.items() if k in LOSS_TERMS}


def _sweep(
    objective: Objective,
    gains: np.ndarray,
    base: Tensor,
    target: Tensor,
    present: Tensor,
    phase: int,
    batch: str,
    ref_gain: float,
    tolerance: float,
) -> Sweep:
    rows = [_evaluate(objective, float(g) * base, target, present, phase) for g in gains]
    ref = _evaluate(objective, ref_gain * base, target, present, phase)
    values = {name: np.array([r[name] for r in rows]) for name in ref}
    below = gains <= ref_gain
    failures = [
        name
        for name, v in values.items()
        if below.any() and float(v[below].min()) < ref[name] - tolerance
    ]
    return Sweep(phase, batch, ref_gain, values, ref, failures)


def _blind_gain_sweep(
    objective: Objective,
    gains: np.ndarray,
    mix: Tensor,
    target: Tensor,
    present: Tensor,
    band: tuple[float, float],
) -> Sweep:
    """Phase-2 objective on the mixed batch under one common gain; fails when its minimiser
    (refined to 1/20 of the grid spacing around the grid minimum) leaves ``band``."""
    base = torch.where(present[:, None], target, mix)

    def total(g: float) -> float:
        return _evaluate(objective, g * base, target, present, PHASE_TP_TA)["total"]

    sweep = _sweep(objective, gains, base, target, present, PHASE_TP_TA, "mixed", 1.0, math.inf)
    i = int(np.argmin(sweep.values["total"]))
    fine = np.linspace(gains[max(i - 1, 0)], gains[min(i + 1, len(gains) - 1)], 41)
    blind = float(fine[int(np.argmin([total(float(g)) for g in fine]))])
    sweep.blind_gain = blind
    sweep.failures = [] if band[0] <= blind <= band[1] else ["total"]
    return sweep


def audit_objective(
    cfg: Config,
    signals: dict[str, object] | None = None,
    gains: np.ndarray | None = None,
    min_gain: float = AUDIT_MIN_GAIN,
    tolerance: float = AUDIT_TOLERANCE,
) -> AuditResult:
    """Sweep the output gain through the configured objective and flag silence rewards.

    Args:
        cfg: the full config (``objective``, ``health`` and ``audio.sample_rate`` are used).
        signals: ``mix (B, L)``, ``target (B, L)``, ``target_present (B,)`` with at least one
            TP and one TA example; generated (:func:`make_audit_signals`) when None.
        gains: output gains to sweep; default ``np.linspace(0, 2, 41)``. Gains <= 0 are
            replaced by ``min_gain`` (SI-SDR of an all-zero output is degenerate).
        tolerance: how far below its right-level value a term may fall before it counts
            as rewarding silence, loss units.

    Returns:
        an :class:`AuditResult`; ``result.failures`` names every term that rewards silence.
    """
    lc = cfg.objective
    if gains is None:
        gains = np.linspace(0.0, 2.0, 41)
    gains = np.asarray(gains, dtype=np.float64)
    gains = np.unique(np.where(gains <= 0.0, min_gain, gains))
    if signals is None:
        signals = make_audit_signals(cfg.audio.sample_rate)
    mix = _as_tensor(signals["mix"], "mix", torch.float32)
    target = _as_tensor(signals["target"], "target", torch.float32)
    present = _as_tensor(signals["target_present"], "target_present", torch.bool)
    if mix.shape != target.shape or present.shape[0] != mix.shape[0]:
        raise TypeError(
            f"signals: mix {tuple(mix.shape)}, target {tuple(target.shape)} and "
            f"target_present {tuple(present.shape)} do not match"
        )
    if not bool(present.any()) or bool(present.all()):
        raise ValueError("signals: need at least one target-present and one target-absent example")

    objective = Objective(lc, cfg.audio.sample_rate)
    tp_tgt = target[present]
    ta_mix = mix[~present]
    ta_zero = torch.zeros_like(ta_mix)
    all_tp = torch.ones(tp_tgt.shape[0], dtype=torch.bool)
    all_ta = torch.zeros(ta_mix.shape[0], dtype=torch.bool)
    # TA right level: the gain at which the loudest TA output reaches ta_target_db
    loudest_db = float(energy_db(ta_mix, LOSS_EPS).max())
    ta_ref = math.pow(10.0, (lc.ta_target_db - loudest_db) / 20.0)

    tol = tolerance
    band = (cfg.health.rms_ratio_low, cfg.health.rms_ratio_high)
    with warnings.catch_warnings():
        # the audit reports a legacy_db term itself; no need for the runtime warning
        warnings.simplefilter("ignore", SilenceRewardWarning)
        sweeps = [
            _sweep(objective, gains, tp_tgt, tp_tgt, all_tp, PHASE_TP, "tp", 1.0, tol),
            _sweep(objective, gains, tp_tgt, tp_tgt, all_tp, PHASE_TP_TA, "tp", 1.0, tol),
            _sweep(objective, gains, ta_mix, ta_zero, all_ta, PHASE_TP_TA, "ta", ta_ref, tol),
            _blind_gain_sweep(objective, gains, mix, target, present, band),
        ]
    return AuditResult(
        gains=gains, sweeps=sweeps, tolerance=tol, ta_target_db=lc.ta_target_db, healthy_band=band
    )


def check_objective_safe(cfg: Config, gains: np.ndarray | None = None) -> list[str]:
    """Names of the objective's terms that reward silence (empty = safe), on generated
    signals; for training to call at start-up (a coarser ``gains`` grid makes it cheaper)."""
    return audit_objective(cfg, gains=gains).failures
