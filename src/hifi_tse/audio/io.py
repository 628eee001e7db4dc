"""Audio file I/O: load any rate and channel count as mono float32; save atomically.

All loaders raise :class:`hifi_tse.errors.UserError` with a one-line message naming the file
and the problem; nothing here prints.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from hifi_tse.errors import UserError
from hifi_tse.utils import atomic_path

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3")


def resample(wav: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample ``(L,)`` or ``(L, C)`` float audio from ``sr_in`` to ``sr_out`` Hz with soxr."""
    if sr_in == sr_out:
        return wav.astype(np.float32, copy=False)
    return soxr.resample(wav.astype(np.float32, copy=False), sr_in, sr_out, quality="HQ").astype(
        np.float32, copy=False
    )


def to_mono(wav: np.ndarray) -> np.ndarray:
    """``(L,)`` or ``(L, C)`` → ``(L,)`` by averaging channels."""
    return wav if wav.ndim == 1 else wav.mean(axis=1)


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a file as float32 ``(L,)`` mono at its own rate. Raises UserError on bad input."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, expected an audio file")
    try:
        wav, sr = sf.read(str(path), dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: not a readable audio file ({reason})") from None
    wav = to_mono(np.asarray(wav, dtype=np.float32))
    if wav.size == 0:
        raise UserError(f"{path}: audio is empty (zero samples)")
    if not np.isfinite(wav).all():
        raise UserError(f"{path}: audio contains NaN or Inf samples")
    return wav, int(sr)


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Read ``path``, downmix to mono and resample to ``sample_rate``: ``(L,)`` float32."""
    wav, sr = read_audio(path)
    return resample(wav, sr, sample_rate)


def save_audio(path: str | Path, wav: np.ndarray, sample_rate: int, subtype: str = "FLOAT") -> None:
    """Write ``(L,)`` audio atomically (temporary file, then rename). Format from the suffix."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"save_audio expects (L,) audio, got shape {wav.shape}")
    path = Path(path)
    fmt = path.suffix.lstrip(".").upper() or "WAV"
    if fmt == "FLAC" and subtype == "FLOAT":
        subtype = "PCM_24"
    with atomic_path(path) as tmp:
        sf.write(str(tmp), wav, sample_rate, subtype=subtype, format=fmt)
