"""New voices from few real talkers: independent pitch and formant (vocal-tract) shifts.

A *voice variant* of a training speaker is that speaker's recordings with the fundamental
frequency scaled by ``pitch_ratio`` and every formant by ``formant_ratio`` (Praat's
"Change gender" manipulation through ``praat-parselmouth``: PSOLA for the pitch, resampling
for the formants, duration kept). Each variant is a new speaker of the training split, so the
enrollment, another utterance of the same variant, always carries its target's transform;
validation and test speakers are never transformed.

The transform costs about 30 ms per 4 s utterance on one core, which would keep on-the-fly
mixing far below its 30 mixtures/s/core, so variants are rendered once when the corpus is
packed (``prepare --voice-variants``) and read from the packs like any other speech.

Parameters are drawn per (seed, speaker) as a Latin hypercube over the two log-ratio ranges:
the ``count`` variants of a speaker cover the pitch range and the formant range evenly and
independently, instead of clustering by chance.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from hifi_tse.errors import UserError

# Praat's pitch analysis range for speech (its documented defaults for voices), Hz.
PITCH_FLOOR_HZ = 75.0
PITCH_CEILING_HZ = 600.0
VARIANT_MARK = "~v"  # speaker id of variant k of S: f"{S}~v{k:02d}"


@dataclass(frozen=True)
class VoiceVariant:
    """One voice transform: F0 × ``pitch_ratio``, formants × ``formant_ratio``."""

    pitch_ratio: float
    formant_ratio: float

    def as_dict(self) -> dict[str, float]:
        return {"pitch_ratio": self.pitch_ratio, "formant_ratio": self.formant_ratio}


def variant_speaker(speaker: str, index: int) -> str:
    """Speaker id of variant ``index`` of ``speaker``."""
    return f"{speaker}{VARIANT_MARK}{index:02d}"


def draw_variants(
    seed: int,
    speaker: str,
    count: int,
    pitch_range: tuple[float, float],
    formant_range: tuple[float, float],
) -> list[VoiceVariant]:
    """``count`` transforms for ``speaker``: a Latin hypercube in (log pitch, log formant).

    A pure function of ``(seed, speaker, count, ranges)``: the same corpus gives the same
    voices on any machine.
    """
    key = int.from_bytes(hashlib.sha1(speaker.encode()).digest()[:8], "little")
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(key,)))
    out = []
    pitch_bins, formant_bins = rng.permutation(count), rng.permutation(count)
    for k in range(count):
        u_pitch = (pitch_bins[k] + rng.random()) / count
        u_formant = (formant_bins[k] + rng.random()) / count
        out.append(
            VoiceVariant(
                pitch_ratio=round(_log_lerp(pitch_range, u_pitch), 4),
                formant_ratio=round(_log_lerp(formant_range, u_formant), 4),
            )
        )
    return out


def _log_lerp(bounds: tuple[float, float], u: float) -> float:
    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    return float(np.exp(lo + (hi - lo) * u))


def apply_variant(wav: np.ndarray, sample_rate: int, variant: VoiceVariant) -> np.ndarray:
    """``(L,)`` float32 speech at ``sample_rate`` Hz → the same utterance in the variant voice.

    Length and peak level are kept. A recording without a measurable pitch (whisper, noise)
    gets the formant shift alone.
    """
    try:
        import parselmouth
        from parselmouth.praat import call
    except ImportError as exc:  # an optional dependency: say which package brings it
        raise UserError(
            "voice variants need praat-parselmouth (pip install praat-parselmouth)"
        ) from exc
    sound = parselmouth.Sound(wav.astype(np.float64), sampling_frequency=float(sample_rate))
    pitch = sound.to_pitch(pitch_floor=PITCH_FLOOR_HZ, pitch_ceiling=PITCH_CEILING_HZ)
    median = call(pitch, "Get quantile", 0.0, 0.0, 0.5, "Hertz")
    new_median = float(median) * variant.pitch_ratio if np.isfinite(median) else 0.0
    shifted = call(
        sound,
        "Change gender",
        PITCH_FLOOR_HZ,
        PITCH_CEILING_HZ,
        variant.formant_ratio,
        new_median,
        1.0,  # pitch range factor: intonation kept
        1.0,  # duration factor: timing kept
    )
    y = np.asarray(shifted.values[0], dtype=np.float32)
    y = y[: len(wav)] if len(y) >= len(wav) else np.pad(y, (0, len(wav) - len(y)))
    peak_in, peak_out = float(np.max(np.abs(wav))), float(np.max(np.abs(y)))
    if peak_out > 0:
        y = y * (peak_in / peak_out)
    return np.ascontiguousarray(y, dtype=np.float32)
