"""Signal operations on ``(L,)`` float32 NumPy waveforms used by the mixer and data prep.

Everything here is deterministic given its inputs; randomness (offsets, factors) is passed in
by the caller, which owns the ``np.random.Generator``.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import soxr

# Speech activity, one definition for the evaluation's breakdown by target activity and the
# mixer's speech-dense crops: a ACTIVITY_FRAME_SECONDS frame is active when its energy is
# within ACTIVITY_RANGE_DB of the signal's loudest frame (speech pauses and the silence
# between joined clips count as inactive; 30 dB down is below the noise of a mixture at
# 20 dB SNR, the cleanest the demo corpus makes).
ACTIVITY_FRAME_SECONDS = 0.032
ACTIVITY_RANGE_DB = 30.0
# A target active in at least this share of its frames is continuous speech: the top bin of
# the evaluation's breakdown by activity and the validation's ``continuous`` groups.
CONTINUOUS_ACTIVITY = 0.9


def power(x: np.ndarray) -> float:
    """Mean square of ``x`` (linear power, not dB)."""
    x = np.asarray(x, dtype=np.float32)
    return float(np.mean(np.square(x, dtype=np.float64))) if x.size else 0.0


def frame_power(x: np.ndarray, frame: int) -> np.ndarray:
    """Mean power of consecutive ``frame``-sample frames of ``x (L,)``: ``(L // frame,)``
    float64 (a last partial frame is dropped)."""
    n = x.size // frame
    return (x[: n * frame].astype(np.float64).reshape(n, frame) ** 2).mean(axis=1)


def activity_frame(sample_rate: int) -> int:
    """Samples in one ``ACTIVITY_FRAME_SECONDS`` frame at ``sample_rate`` Hz (at least 1)."""
    return max(1, int(round(ACTIVITY_FRAME_SECONDS * sample_rate)))


def active_frames(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """``(L // frame,)`` bool: which :func:`activity_frame` frames of ``x (L,)`` lie within
    ``ACTIVITY_RANGE_DB`` of its loudest; all False when ``x`` is silent."""
    p = frame_power(np.asarray(x).reshape(-1), activity_frame(sample_rate))
    if not p.size or p.max() <= 0.0:
        return np.zeros(p.size, dtype=bool)
    return p >= p.max() * 10.0 ** (-ACTIVITY_RANGE_DB / 10.0)


def rms(x: np.ndarray) -> float:
    """Root mean square of ``x`` (linear amplitude)."""
    return float(np.sqrt(power(x)))


def db_to_power(db: float) -> float:
    """Power ratio for a level difference in dB."""
    return float(10.0 ** (db / 10.0))


def peak_normalise(x: np.ndarray, peak: float) -> np.ndarray:
    """Scale ``x`` so that max|x| == ``peak``; an all-zero input is returned unchanged."""
    m = float(np.max(np.abs(x))) if x.size else 0.0
    if m <= 0.0:
        return x.astype(np.float32, copy=True)
    return (x * (peak / m)).astype(np.float32, copy=False)


def gain_for_ratio(
    reference: np.ndarray, other: np.ndarray, ratio_db: float, floor_power: float
) -> float:
    """Gain g such that ``10*log10(P(reference) / P(g*other)) == ratio_db``.

    Power ratio arithmetic: we want P_ref / (g^2 * P_other) = 10^(ratio_db/10), hence
    g = sqrt(P_ref / (P_other * 10^(ratio_db/10))). When either power is below
    ``floor_power`` (silent crop) the ratio is undefined and the gain is 1.
    """
    p_ref, p_other = power(reference), power(other)
    if p_ref < floor_power or p_other < floor_power:
        return 1.0
    return float(np.sqrt(p_ref / (p_other * db_to_power(ratio_db))))


def mix_at_snr(
    signal: np.ndarray, noise: np.ndarray, snr_db: float, floor_power: float
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(signal + g*noise, g*noise)`` with the SNR of the sum exactly ``snr_db``.

    Both inputs are ``(L,)``; see :func:`gain_for_ratio` for the arithmetic.
    """
    g = gain_for_ratio(signal, noise, snr_db, floor_power)
    scaled = (noise * g).astype(np.float32, copy=False)
    return (signal + scaled).astype(np.float32, copy=False), scaled


def fft_convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Full linear convolution ``(len(x) + len(h) - 1,)`` via single-precision real FFTs.

    A direct ``np.convolve`` with a 1 s RIR at 48 kHz costs ~48k MACs per sample; the FFT
    route is O(N log N) and float32 FFTs halve the cost again.
    """
    x = np.asarray(x, dtype=np.float32)
    h = np.asarray(h, dtype=np.float32)
    n_out = len(x) + len(h) - 1
    n_fft = scipy.fft.next_fast_len(n_out, real=True)
    spec = scipy.fft.rfft(x, n_fft) * scipy.fft.rfft(h, n_fft)
    return scipy.fft.irfft(spec, n_fft)[:n_out].astype(np.float32, copy=False)


def convolve_valid(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Samples ``[len(h) - 1, len(x))`` of ``x * h``: those with a full filter history.

    Returns ``(len(x) - len(h) + 1,)`` float32. A circular convolution of size
    ``>= len(x)`` wraps the convolution tail onto the first ``len(h) - 1`` outputs only,
    which are discarded, so the FFT is ``len(h) - 1`` samples shorter than a full linear
    convolution (about 17 % less work for a 4 s segment and a 1 s RIR).
    """
    x = np.asarray(x, dtype=np.float32)
    h = np.asarray(h, dtype=np.float32)
    if len(h) > len(x):
        raise ValueError(f"convolve_valid: filter ({len(h)}) longer than signal ({len(x)})")
    n_fft = scipy.fft.next_fast_len(len(x), real=True)
    spec = scipy.fft.rfft(x, n_fft) * scipy.fft.rfft(h, n_fft)
    return scipy.fft.irfft(spec, n_fft)[len(h) - 1 : len(x)].astype(np.float32, copy=False)


def pad_to(x: np.ndarray, length: int, offset: int) -> np.ndarray:
    """Place ``x`` at ``offset`` inside ``length`` zeros (``x`` must fit)."""
    if offset < 0 or offset + len(x) > length:
        raise ValueError(f"pad_to: {len(x)} samples at {offset} do not fit in {length}")
    out = np.zeros(length, dtype=np.float32)
    out[offset : offset + len(x)] = x
    return out


def crop_or_pad(x: np.ndarray, length: int, offset: int) -> np.ndarray:
    """``x[offset:offset+length]``, zero-padded at the end when ``x`` runs out."""
    out = np.zeros(length, dtype=np.float32)
    piece = x[max(offset, 0) : max(offset, 0) + length]
    out[: len(piece)] = piece
    return out


def loop_to_length(x: np.ndarray, length: int, offset: int) -> np.ndarray:
    """Tile ``x`` cyclically starting at ``offset`` (mod len) to exactly ``length`` samples."""
    if len(x) == 0:
        return np.zeros(length, dtype=np.float32)
    idx = (np.arange(length) + offset) % len(x)
    return x[idx].astype(np.float32, copy=False)


def speed_perturb(x: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
    """Play ``x`` ``factor`` times faster (pitch and tempo), by resampling with soxr.

    Treating the input as if recorded at ``factor * sample_rate`` and resampling to
    ``sample_rate`` gives ``~len(x) / factor`` samples.
    """
    if factor == 1.0 or len(x) == 0:
        return x.astype(np.float32, copy=False)
    y = soxr.resample(x.astype(np.float32, copy=False), factor * sample_rate, sample_rate)
    return np.asarray(y, dtype=np.float32)
