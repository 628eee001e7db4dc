"""Per-example metrics on NumPy arrays: SI-SDR(i), PESQ-WB, STOI, levels, summaries.

Everything here takes ``(L,)`` float arrays at a stated sample rate and returns plain
floats (dB where the name says so), so the same code scores PyTorch, ONNX and file outputs.
Names follow ARCHITECTURE.md §5: SI-SDRi is TP only, TA energy and TA suppression are TA only.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from hifi_tse.audio.io import resample
from hifi_tse.audio.signal import active_frames
from hifi_tse.losses.separation import LOSS_EPS
from hifi_tse.losses.separation import si_sdr as loss_si_sdr

# Energy floor of float32 audio: keeps log10 finite for digital silence without biasing any
# audible level (far below 1 LSB of 24-bit audio, ~-145 dBFS).
EPS = float(np.finfo(np.float32).tiny)
SI_SDR_EPS = LOSS_EPS  # the training objective's floor
PESQ_RATE = 16000  # PESQ wide-band is defined at 16 kHz only (ITU-T P.862.2)
STOI_RATE = 10000  # STOI's internal rate; pystoi resamples itself, we do it once with soxr


def _check_pair(estimate: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    estimate = np.asarray(estimate, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if estimate.ndim != 1 or estimate.shape != target.shape:
        raise ValueError(
            f"expected two (L,) arrays of equal length, got {estimate.shape} and {target.shape}"
        )
    return estimate, target


def si_sdr(estimate: np.ndarray, target: np.ndarray) -> float:
    """Scale-invariant SDR in dB of ``estimate (L,)`` against ``target (L,)``.

    The training and validation definition (:func:`hifi_tse.losses.separation.si_sdr`), in
    float64, with the same floor (``LOSS_EPS``): one rule for silent estimates everywhere
    — a digital-silence estimate scores ``10 log10(eps)`` (-80 dB), the worst value, so
    silence never looks like a neutral 0 dB.
    """
    s, t = _check_pair(estimate, target)
    value = loss_si_sdr(torch.from_numpy(s)[None], torch.from_numpy(t)[None], SI_SDR_EPS)
    return float(value[0])


def energy_db(wav: np.ndarray) -> float:
    """Mean power of ``wav (L,)`` in dB (full-scale sine ≈ -3 dB): ``10 log10(mean(x^2))``."""
    wav = np.asarray(wav, dtype=np.float64)
    return float(10.0 * np.log10(np.mean(wav**2) + EPS)) if wav.size else float("nan")


def rms(wav: np.ndarray) -> float:
    """Root mean square of ``wav (L,)`` (linear, full scale = 1)."""
    wav = np.asarray(wav, dtype=np.float64)
    return float(np.sqrt(np.mean(wav**2))) if wav.size else float("nan")


def pesq_wb(estimate: np.ndarray, target: np.ndarray, sample_rate: int) -> float | None:
    """PESQ wide-band (MOS-LQO) after resampling to 16 kHz; ``None`` when PESQ cannot score.

    PESQ refuses clips without detectable speech (``NoUtterancesError``) and very short
    clips; those are recorded as missing rather than aborting an evaluation.
    """
    from pesq import pesq

    s, t = _check_pair(estimate, target)
    if not np.any(t) or not np.any(s):
        return None  # PESQ cannot score digital silence (NoUtterancesError)
    s16 = resample(s.astype(np.float32), sample_rate, PESQ_RATE)
    t16 = resample(t.astype(np.float32), sample_rate, PESQ_RATE)
    try:
        return float(pesq(PESQ_RATE, t16, s16, "wb"))
    except Exception:  # pesq raises several private exception types (NoUtterancesError, ...)
        return None


def stoi(estimate: np.ndarray, target: np.ndarray, sample_rate: int) -> float | None:
    """Short-time objective intelligibility (0..1); ``None`` when the clip is too short."""
    from pystoi import stoi as _stoi

    s, t = _check_pair(estimate, target)
    s10 = resample(s.astype(np.float32), sample_rate, STOI_RATE)
    t10 = resample(t.astype(np.float32), sample_rate, STOI_RATE)
    try:
        with warnings.catch_warnings():
            # pystoi warns (and returns 1e-5) when fewer than 30 speech frames remain
            warnings.simplefilter("ignore")
            value = float(_stoi(t10, s10, STOI_RATE, extended=False))
    except Exception:
        return None
    return value if math.isfinite(value) else None


def target_activity(target: np.ndarray, sample_rate: int) -> float | None:
    """Share in [0, 1] of the target's frames (32 ms, no overlap) within 30 dB of its
    loudest frame (:func:`hifi_tse.audio.signal.active_frames`);
    ``None`` when shorter than one frame or silent. ``target``: ``(L,)`` float audio at
    ``sample_rate`` Hz."""
    active = active_frames(target, sample_rate)
    return float(active.mean()) if active.any() else None


def score_example(
    estimate: np.ndarray,
    mixture: np.ndarray,
    target: np.ndarray,
    target_present: bool,
    sample_rate: int,
    perceptual: bool = True,
) -> dict[str, float | None]:
    """All metrics of one example; keys absent from the other scene are ``None``.

    TP: si_sdr, si_sdr_mix, si_sdri (dB), pesq, stoi, rms_ratio (est RMS / target RMS),
    rms_est, rms_target, target_activity (:func:`target_activity`). TA: output_db (estimate
    energy, dB), mixture_db, suppression_db (mixture_db - output_db). ``perceptual=False``
    skips PESQ/STOI (fast paths).
    """
    out: dict[str, float | None] = {
        "si_sdr": None,
        "si_sdr_mix": None,
        "si_sdri": None,
        "pesq": None,
        "stoi": None,
        "rms_ratio": None,
        "rms_est": rms(estimate),
        "rms_target": None,
        "output_db": energy_db(estimate),
        "mixture_db": energy_db(mixture),
        "suppression_db": None,
        "target_activity": None,
    }
    if target_present:
        out["si_sdr"] = si_sdr(estimate, target)
        out["si_sdr_mix"] = si_sdr(mixture, target)
        out["si_sdri"] = out["si_sdr"] - out["si_sdr_mix"]
        out["rms_target"] = rms(target)
        out["rms_ratio"] = out["rms_est"] / max(out["rms_target"], EPS)
        out["target_activity"] = target_activity(target, sample_rate)
        if perceptual:
            out["pesq"] = pesq_wb(estimate, target, sample_rate)
            out["stoi"] = stoi(estimate, target, sample_rate)
    else:
        out["suppression_db"] = out["mixture_db"] - out["output_db"]
    return out


def summarize(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """Mean, standard error of the mean, median and counts of a list with missing entries."""
    finite = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = int(finite.size)
    missing = len(values) - n
    if n == 0:
        return {"mean": None, "sem": None, "median": None, "n": 0, "missing": missing}
    sem = float(finite.std(ddof=1) / math.sqrt(n)) if n > 1 else None
    return {
        "mean": float(finite.mean()),
        "sem": sem,
        "median": float(np.median(finite)),
        "n": n,
        "missing": missing,
    }


def region_energy_db(wav: np.ndarray, start: int, stop: int) -> float:
    """Energy in dB of ``wav[start:stop]`` (``nan`` for an empty region)."""
    return energy_db(np.asarray(wav)[start:stop])
