"""Random recording chains: the filters a microphone, a room's furniture, a phone line or a
codec's band limit put on speech before it reaches the model.

Real recordings differ from one another less by their words than by their chain: the held-out
real talkers recorded in another place score far below the one recorded in the training
voices' studio (docs/demo_model.md). A *chain* here is a cascade of second-order sections
drawn at random:

- a high-pass (a small microphone's or a phone's low-frequency roll-off),
- with probability ``LOW_PASS_PROB`` a low-pass (a narrowband line or a codec's band limit),
- ``NUM_PEAKS`` peaking filters (a microphone's presence bumps, a room's or a body's
  resonances, a cheap loudspeaker's dips).

A chain is linear, so filtering the mixture equals filtering each of its parts: the mixer
filters the target with its mixture's chain (the model is asked to keep the chain it hears,
not to undo it) and gives the enrollment a chain of its own, as an enrollment recorded on
another day and device has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.signal

# High-pass cut-off range, Hz (log-uniform): from a studio microphone's rumble filter to a
# phone's band edge.
HIGH_PASS_HZ = (40.0, 400.0)
HIGH_PASS_ORDER = 2
# Low-pass cut-off (log-uniform): from a narrowband telephone line (3.4 kHz) up to just
# below the Nyquist frequency.
LOW_PASS_PROB = 0.5
LOW_PASS_MIN_HZ = 3000.0
LOW_PASS_ORDER = 4
# Peaking filters: centre (log-uniform, Hz), gain (uniform, dB), Q (log-uniform). +-12 dB
# spans consumer microphones' and laptops' measured responses around their speech band.
NUM_PEAKS = 3
PEAK_HZ = (150.0, 7000.0)
PEAK_GAIN_DB = (-12.0, 12.0)
PEAK_Q = (0.5, 2.5)
# Cut-offs and centres stay below this fraction of the sample rate, where a bilinear-transform
# section is still well behaved.
MAX_NYQUIST_FRACTION = 0.45


@dataclass(frozen=True)
class Chain:
    """One drawn recording chain (every frequency in Hz, gains in dB)."""

    high_pass_hz: float
    low_pass_hz: float | None
    peaks: tuple[tuple[float, float, float], ...]  # (centre Hz, gain dB, Q) per filter

    def describe(self) -> dict[str, Any]:
        """The chain as JSON-ready facts for an example's ``meta`` (:meth:`from_facts` inverts
        it exactly)."""
        return {
            "high_pass_hz": self.high_pass_hz,
            "low_pass_hz": self.low_pass_hz,
            "peaks": [list(p) for p in self.peaks],
        }

    @classmethod
    def from_facts(cls, facts: dict[str, Any]) -> Chain:
        """The chain :meth:`describe` wrote."""
        low_pass = facts["low_pass_hz"]
        return cls(
            float(facts["high_pass_hz"]),
            None if low_pass is None else float(low_pass),
            tuple((float(f), float(g), float(q)) for f, g, q in facts["peaks"]),
        )


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def draw_chain(rng: np.random.Generator, sample_rate: int) -> Chain:
    """A random chain for audio at ``sample_rate`` Hz; draws from ``rng`` in a fixed order."""
    top = MAX_NYQUIST_FRACTION * sample_rate
    high_pass = _log_uniform(rng, *HIGH_PASS_HZ)
    low_pass = None
    if rng.random() < LOW_PASS_PROB:
        low_pass = _log_uniform(rng, LOW_PASS_MIN_HZ, top)
    peaks = tuple(
        (
            min(_log_uniform(rng, *PEAK_HZ), top),
            float(rng.uniform(*PEAK_GAIN_DB)),
            _log_uniform(rng, *PEAK_Q),
        )
        for _ in range(NUM_PEAKS)
    )
    return Chain(min(high_pass, top), low_pass, peaks)


def peaking_section(centre_hz: float, gain_db: float, q: float, sample_rate: int) -> np.ndarray:
    """(6,) second-order section [b0 b1 b2 1 a1 a2] of a peaking filter: ``gain_db`` at
    ``centre_hz``, bandwidth ``centre_hz / q``, unity gain far from it (bilinear transform of
    the analogue prototype H(s) = (s^2 + s A/Q + 1) / (s^2 + s / (A Q) + 1), A = 10^(g/40))."""
    amplitude = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * math.pi * centre_hz / sample_rate
    alpha = math.sin(w0) / (2.0 * q)
    cos_w0 = math.cos(w0)
    b = np.array([1.0 + alpha * amplitude, -2.0 * cos_w0, 1.0 - alpha * amplitude])
    a = np.array([1.0 + alpha / amplitude, -2.0 * cos_w0, 1.0 - alpha / amplitude])
    return np.concatenate([b / a[0], a / a[0]])


def chain_sections(chain: Chain, sample_rate: int) -> np.ndarray:
    """(K, 6) second-order sections of ``chain`` for scipy.signal.sosfilt."""
    sections = [
        scipy.signal.butter(
            HIGH_PASS_ORDER, chain.high_pass_hz, btype="highpass", fs=sample_rate, output="sos"
        )
    ]
    if chain.low_pass_hz is not None:
        sections.append(
            scipy.signal.butter(
                LOW_PASS_ORDER, chain.low_pass_hz, btype="lowpass", fs=sample_rate, output="sos"
            )
        )
    sections += [peaking_section(f, g, q, sample_rate)[None] for f, g, q in chain.peaks]
    return np.concatenate(sections, axis=0)


def apply_chain(signals: np.ndarray, chain: Chain, sample_rate: int) -> np.ndarray:
    """``signals`` (..., L) float32 through ``chain``, all rows at once; same shape, float32.

    Every row starts from a silent filter state, so filtering a sum equals the sum of the
    filtered parts (to float rounding)."""
    y = scipy.signal.sosfilt(chain_sections(chain, sample_rate), signals, axis=-1)
    return y.astype(np.float32, copy=False)
