"""GE2E front end in NumPy only (no torch): mel filters, volume floor, decimation, mels.

Shared by :mod:`hifi_tse.speaker.ge2e` (the encoder), the generator's GE2E conditioning and
the torch-free ONNX runner, which computes the enrollment's mels itself.
"""

from __future__ import annotations

import numpy as np

# Front end, from resemblyzer 0.1.4 ``hparams.py`` (mel_window_length 25 ms, mel_window_step
# 10 ms, mel_n_channels). The remaining mel settings (power 2, Hann, centred zero padding,
# Slaney scale and area norm, 0 Hz to Nyquist) are the defaults of librosa's
# ``feature.melspectrogram`` (>= 0.10), which the package calls.
SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms; the FFT size equals the window length, no zero padding inside a frame
HOP = 160  # 10 ms
N_MELS = 40
FMIN_HZ = 0.0
FMAX_HZ = SAMPLE_RATE / 2
# ``hparams.audio_norm_target_dBFS``; ``preprocess_wav`` applies it increase-only.
TARGET_DBFS = -30.0
# Decimation to 16 kHz for models at a multiple of 16 kHz: a Hann-windowed sinc with its
# cutoff just under 8 kHz (the mel bands end at 8 kHz).
DECIMATION_TAPS_PER_FACTOR = 32
DECIMATION_CUTOFF = 0.95  # of the 16 kHz Nyquist frequency

# Slaney's Auditory Toolbox mel scale (librosa's htk=False): linear below 1 kHz, logarithmic above.
_SLANEY_HZ_PER_MEL = 200.0 / 3.0
_SLANEY_BREAK_HZ = 1000.0
_SLANEY_BREAK_MEL = _SLANEY_BREAK_HZ / _SLANEY_HZ_PER_MEL  # 15 mel
_SLANEY_LOG_STEP = np.log(6.4) / 27.0  # 27 mel per factor 6.4 in frequency above the break


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Frequencies in Hz → Slaney mel, any shape, float64."""
    hz = np.asarray(hz, dtype=np.float64)
    # np.maximum keeps log() away from the linear region, whose values np.where discards.
    log_part = (
        _SLANEY_BREAK_MEL
        + np.log(np.maximum(hz, _SLANEY_BREAK_HZ) / _SLANEY_BREAK_HZ) / _SLANEY_LOG_STEP
    )
    return np.where(hz >= _SLANEY_BREAK_HZ, log_part, hz / _SLANEY_HZ_PER_MEL)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Slaney mel → Hz, any shape, float64 (inverse of :func:`hz_to_mel`)."""
    mel = np.asarray(mel, dtype=np.float64)
    log_part = _SLANEY_BREAK_HZ * np.exp(
        _SLANEY_LOG_STEP * (np.maximum(mel, _SLANEY_BREAK_MEL) - _SLANEY_BREAK_MEL)
    )
    return np.where(mel >= _SLANEY_BREAK_MEL, log_part, mel * _SLANEY_HZ_PER_MEL)


def mel_filterbank(
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = N_FFT,
    n_mels: int = N_MELS,
    fmin_hz: float = FMIN_HZ,
    fmax_hz: float | None = None,
) -> np.ndarray:
    """Triangular Slaney-normalised mel filters: ``(n_mels, n_fft // 2 + 1)`` float64.

    Band ``m`` rises linearly from edge ``m`` to edge ``m + 1`` and falls to edge ``m + 2``, with
    ``n_mels + 2`` edges equally spaced on the Slaney mel scale from ``fmin_hz`` to ``fmax_hz``
    (default Nyquist). Each triangle is scaled by ``2 / (upper - lower edge in Hz)`` so that every
    band has unit area over frequency. Multiply a power spectrum ``(n_fft // 2 + 1, T)`` by it.
    """
    fmax_hz = sample_rate / 2 if fmax_hz is None else fmax_hz
    bin_hz = np.arange(n_fft // 2 + 1) * (sample_rate / n_fft)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin_hz), hz_to_mel(fmax_hz), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bin_hz - lower) / (centre - lower)
    falling = (upper - bin_hz) / (upper - centre)
    triangles = np.maximum(0.0, np.minimum(rising, falling))
    return triangles * (2.0 / (upper - lower))


def normalize_volume(wav: np.ndarray, target_dbfs: float = TARGET_DBFS) -> np.ndarray:
    """Scale ``(L,)`` float audio (full scale ±1) up so its RMS is ``target_dbfs`` dBFS.

    Audio already at or above the target, and all-zero audio, is returned unchanged: turning
    loud audio down would not change the embedding much, and silence has no level to match.
    """
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64))))
    if rms == 0.0:
        return wav
    gain_db = target_dbfs - 20.0 * np.log10(rms)
    if gain_db <= 0.0:
        return wav
    return (wav * np.float32(10.0 ** (gain_db / 20.0))).astype(np.float32, copy=False)


def decimation_filter(factor: int) -> np.ndarray:
    """``(taps,)`` float32 low-pass FIR for decimating by ``factor`` (unit DC gain)."""
    taps = DECIMATION_TAPS_PER_FACTOR * factor + 1
    n = np.arange(taps) - (taps - 1) / 2
    cutoff = DECIMATION_CUTOFF / factor  # relative to the input's Nyquist frequency
    h = cutoff * np.sinc(cutoff * n) * np.hanning(taps)
    return (h / h.sum()).astype(np.float32)


def enrollment_mels(ref: np.ndarray, sample_rate: int) -> np.ndarray:
    """``(L,)`` enrollment at ``sample_rate`` (a multiple of 16 kHz) -> power mels ``(T, 40)``.

    The NumPy twin of ``GE2EConditioning.mels``: decimation (zero-padded, centred filter),
    the -30 dBFS volume floor, a periodic-Hann STFT of 400 / 160 samples with centred zero
    padding, and the mel filters.
    """
    x = np.asarray(ref, dtype=np.float64)
    factor = sample_rate // SAMPLE_RATE
    if factor > 1:
        h = decimation_filter(factor).astype(np.float64)
        pad = len(h) // 2
        full = np.convolve(np.pad(x, (pad, pad)), h[::-1], mode="valid")
        x = full[::factor]
    rms = float(np.sqrt(np.mean(x**2))) if x.size else 0.0
    target = 10.0 ** (TARGET_DBFS / 20.0)
    x = x * max(1.0, target / max(rms, 1e-6))
    pad = N_FFT // 2
    x = np.pad(x, (pad, pad))
    frames = 1 + (x.size - N_FFT) // HOP
    idx = np.arange(frames)[:, None] * HOP + np.arange(N_FFT)[None, :]
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic
    power = np.abs(np.fft.rfft(x[idx] * window, axis=-1)) ** 2  # (T, F)
    return (power @ mel_filterbank().T).astype(np.float32)
