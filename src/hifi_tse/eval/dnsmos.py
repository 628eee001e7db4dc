"""No-reference speech quality: DNSMOS P.835, personalised DNSMOS P.835 and DNSMOS P.808.

Microsoft's DNSMOS networks predict the mean opinion score listeners would give a clip,
without a clean reference, so they score real recordings that have no target:

- **P.835** (``sig``, ``bak``, ``ovrl``): speech quality, background noise (high = quiet)
  and overall quality, each on the 1-5 MOS scale;
- **personalised P.835** (``psig``, ``pbak``, ``povrl``): the same three, from the model of
  the DNS Challenge's personalised track, whose BAK counts every talker but the main one as
  background, so interfering speech lowers it. It takes the waveform alone: **no
  enrollment**. "The main talker" is whichever one the model judges dominant, not the
  enrolled one; for target speaker extraction it measures how clean of other talkers an
  estimate is, not whether it holds the right talker (speaker similarity answers that);
- **P.808** (``p808``): one overall MOS from a 120-band log-mel spectrogram.

Only the ONNX files are taken from the ``speechmos`` wheel (MIT licence; install it with
``pip install --no-deps speechmos==0.0.1.1``); this module is our own implementation of
what the wheel's ``speechmos.dnsmos`` computes and never imports its Python code (nor
librosa). For a clip of 16 kHz mono audio (full scale ±1):

1. a clip shorter than one window (9.01 s) is repeated, doubling it until it is long enough;
2. windows of 9.01 s start every 1 s while they fit (the reference's floating-point window
   ends drop windows 7-23 of long clips; so do we, see :func:`windows`);
3. P.835 models take each window's waveform ``(N, 144160)``; P.808 takes, per window less its
   last 10 ms, the power mel spectrogram (periodic-Hann 321-point frames, 160-sample hop,
   centred zero padding, 120 Slaney bands over 0-8 kHz) in dB relative to the window's peak,
   floored 80 dB below it, mapped by ``(dB + 40) / 40``: ``(N, 900, 120)``;
4. P.835 outputs are mapped through the package's calibration polynomials per window; the
   clip's score is the mean over its windows.

Audio of any other rate is resampled to 16 kHz first (soxr, :func:`hifi_tse.audio.io.resample`).
Cost: each window is a forward pass of ~0.38 s of one CPU core per P.835 model (P.808:
~0.02 s), with 34 windows in a minute, so a long recording costs about 13 s of CPU per
minute of audio per P.835 model and 27 s for all three (``benchmarks/bench_dnsmos.py``).
A short clip, once repeated, has few distinct windows (a 2 s clip two, a 1 s clip one),
and each distinct window is scored once.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hifi_tse.audio.io import resample, to_mono
from hifi_tse.errors import UserError
from hifi_tse.speaker.frontend import mel_filterbank
from hifi_tse.utils import installed_data_file

DIST = "speechmos"
INSTALL_HINT = "pip install --no-deps speechmos==0.0.1.1"
SAMPLE_RATE = 16000
# Framing of ``speechmos.dnsmos`` (INPUT_LENGTH, a hop of one second).
WINDOW_SECONDS = 9.01
HOP_SECONDS = 1.0
WINDOW_SAMPLES = int(WINDOW_SECONDS * SAMPLE_RATE)  # 144160, the P.835 models' input length
# P.808 features: the window less its last 10 ms, librosa's melspectrogram defaults otherwise.
P808_TRIM = 160
P808_N_FFT = 321
P808_HOP = 160
P808_N_MELS = 120
P808_AMIN = 1e-10  # power floor before the log (librosa power_to_db)
P808_TOP_DB = 80.0  # dB below the window's peak where the spectrogram is floored
P808_DB_OFFSET = 40.0  # dB; features are (dB + offset) / scale
P808_DB_SCALE = 40.0
# Windows per ONNX Runtime call: a batch costs the same CPU per window as single runs
# (benchmarks/bench_dnsmos.py), so batches stay small to bound memory.
BATCH_WINDOWS = 8
WINDOW_DIGEST_BYTES = 16  # 128-bit hashes tell copies of a window apart from distinct ones

# Calibration polynomials of the package (``get_polyfit_val``), highest power first.
_P835_POLYS = (
    (-0.08397278, 1.22083953, 0.0052439),  # SIG
    (-0.13166888, 1.60915514, -0.39604546),  # BAK
    (-0.06766283, 1.11546468, 0.04602535),  # OVRL
)
_P835_PERSONAL_POLYS = (
    (-0.01019296, 0.02751166, 1.19576786, -0.24348726),  # SIG
    (-0.04976499, 0.44276479, -0.1644611, 0.96883132),  # BAK
    (-0.00533021, 0.005101, 1.18058466, -0.11236046),  # OVRL
)


@dataclass(frozen=True)
class DnsmosModel:
    """One ONNX model of the wheel: its file, the scores it gives, their calibration."""

    file: str  # path inside the distribution
    scores: tuple[str, ...]  # names of its outputs, in order
    polys: tuple[tuple[float, ...], ...] | None  # per output; None = used as it is
    mel_input: bool  # P.808's log-mel features instead of the waveform


MODELS = {
    "p835": DnsmosModel("speechmos/dnsmos_models/sig_bak_ovr.onnx", ("sig", "bak", "ovrl"),
                        _P835_POLYS, False),
    "p835_personal": DnsmosModel("speechmos/pdnsmos_models/sig_bak_ovr.onnx",
                                 ("psig", "pbak", "povrl"), _P835_PERSONAL_POLYS, False),
    "p808": DnsmosModel("speechmos/dnsmos_models/model_v8.onnx", ("p808",), None, True),
}  # fmt: skip
DEFAULT_MODELS = ("p835", "p835_personal", "p808")
SCORES = tuple(s for name in DEFAULT_MODELS for s in MODELS[name].scores)
LABELS = {
    "sig": "SIG",
    "bak": "BAK",
    "ovrl": "OVRL",
    "psig": "pSIG",
    "pbak": "pBAK",
    "povrl": "pOVRL",
    "p808": "P.808",
}
# Record keys: ``dnsmos_<score>`` of the estimate and ``dnsmos_<score>_mix`` of the mixture.
PREFIX = "dnsmos_"
MIX_SUFFIX = "_mix"
COLUMNS = tuple(f"{PREFIX}{s}{tail}" for s in SCORES for tail in ("", MIX_SUFFIX))


def model_path(name: str, dist: str = DIST) -> Path:
    """Path of model ``name``'s ONNX file inside the installed ``dist`` distribution.

    Found through the distribution's metadata, so the package's own imports (librosa) never
    run. Raises UserError with the install command when the package or the file is missing.
    """
    if name not in MODELS:
        raise UserError(f"DNSMOS: unknown model {name!r}; expected one of {', '.join(MODELS)}")
    return installed_data_file(dist, MODELS[name].file, "DNSMOS model", INSTALL_HINT)


def prepare(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """``(L,)`` or ``(L, C)`` float audio at ``sample_rate`` -> ``(L16,)`` float32 at 16 kHz.

    Channels are averaged; samples beyond full scale (a float estimate can have them) are
    clipped to ±1, as writing the audio to a 16-bit file would (the package refuses them).
    Raises UserError on empty, NaN or Inf audio or a non-positive rate.
    """
    wav = np.asarray(wav)
    if wav.ndim not in (1, 2) or not np.issubdtype(wav.dtype, np.floating):
        raise UserError(f"DNSMOS: expected (L,) or (L, C) float audio, got {wav.dtype} {wav.shape}")
    if sample_rate <= 0:
        raise UserError(f"DNSMOS: sample rate must be positive, got {sample_rate}")
    wav = to_mono(wav)
    if wav.size == 0:
        raise UserError("DNSMOS: audio is empty (zero samples)")
    if not np.isfinite(wav).all():
        raise UserError("DNSMOS: audio contains NaN or Inf samples")
    return np.clip(resample(wav, sample_rate, SAMPLE_RATE), -1.0, 1.0).astype(np.float32)


def windows(wav16: np.ndarray) -> np.ndarray:
    """The analysis windows of a 16 kHz clip ``(L,)``: ``(N, WINDOW_SAMPLES)`` float32, N >= 1."""
    while wav16.size < WINDOW_SAMPLES:
        wav16 = np.concatenate([wav16, wav16])
    n_hops = int(math.floor(wav16.size / SAMPLE_RATE) - WINDOW_SECONDS) + 1
    hop = int(HOP_SECONDS * SAMPLE_RATE)
    out = []
    for idx in range(n_hops):
        start = idx * hop
        # The window's end is computed in floating point, as the reference code does: for
        # some hops (7-23) it falls one sample short, and the reference then skips that
        # window. Doing the same keeps our scores equal to published DNSMOS figures.
        stop = min(int((idx + WINDOW_SECONDS) * SAMPLE_RATE), wav16.size)
        if stop - start >= WINDOW_SAMPLES:
            out.append(wav16[start : start + WINDOW_SAMPLES])
    return np.stack(out).astype(np.float32, copy=False)


def distinct_windows(wins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(U, W)`` distinct rows of windows ``(N, W)`` and ``(N,)`` int64 indices into them.

    A short clip is repeated to fill a window, so most of its windows are copies (a 2 s clip
    gives 7 windows, 2 of them distinct): each distinct window is scored once.
    """
    slot: dict[bytes, int] = {}
    first: list[int] = []
    index = np.empty(len(wins), dtype=np.int64)
    for i, w in enumerate(wins):
        key = hashlib.blake2b(w.tobytes(), digest_size=WINDOW_DIGEST_BYTES).digest()
        if key not in slot:
            slot[key] = len(first)
            first.append(i)
        index[i] = slot[key]
    return wins[first], index


def p808_features(wins: np.ndarray) -> np.ndarray:
    """P.808 input of windows ``(N, WINDOW_SAMPLES)``: scaled log-mel ``(N, 900, 120)`` float32."""
    x = np.asarray(wins, dtype=np.float64)[:, :-P808_TRIM]
    pad = P808_N_FFT // 2
    x = np.pad(x, ((0, 0), (pad, pad)))
    n_frames = 1 + (x.shape[1] - P808_N_FFT) // P808_HOP
    idx = np.arange(n_frames)[:, None] * P808_HOP + np.arange(P808_N_FFT)[None, :]
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(P808_N_FFT) / P808_N_FFT)  # periodic
    power = np.abs(np.fft.rfft(x[:, idx] * window, axis=-1)) ** 2  # (N, T, F)
    mel = power @ mel_filterbank(SAMPLE_RATE, P808_N_FFT, P808_N_MELS).T  # (N, T, M)
    peak = mel.max(axis=(1, 2), keepdims=True)
    db = 10.0 * np.log10(np.maximum(mel, P808_AMIN)) - 10.0 * np.log10(np.maximum(peak, P808_AMIN))
    db = np.maximum(db, db.max(axis=(1, 2), keepdims=True) - P808_TOP_DB)
    return ((db + P808_DB_OFFSET) / P808_DB_SCALE).astype(np.float32)


def calibrate(raw: np.ndarray, polys: tuple[tuple[float, ...], ...] | None) -> np.ndarray:
    """Map raw outputs ``(N, S)`` through one polynomial per column (None: unchanged)."""
    raw = np.asarray(raw, dtype=np.float64)
    if polys is None:
        return raw
    return np.stack([np.polyval(p, raw[:, j]) for j, p in enumerate(polys)], axis=1)


class DnsmosScorer:
    """DNSMOS scores with one ONNX Runtime session per model, created on first use.

    ``models``: names from :data:`MODELS` (default all three); ``threads``: ONNX Runtime's
    intra-op threads (None: its default, every core); ``batch_windows``: windows per model
    call. The model files are located at once, so a missing wheel fails here with the
    install command.
    """

    def __init__(
        self,
        models: Sequence[str] = DEFAULT_MODELS,
        threads: int | None = None,
        dist: str = DIST,
        batch_windows: int = BATCH_WINDOWS,
    ) -> None:
        if not models:
            raise UserError("DNSMOS: no model selected")
        if batch_windows < 1:
            raise UserError(f"DNSMOS: batch_windows must be >= 1, got {batch_windows}")
        self.paths = {name: model_path(name, dist) for name in models}
        self.threads = threads
        self.batch_windows = batch_windows
        self._sessions: dict[str, Any] = {}

    @classmethod
    def try_load(cls, threads: int | None = None) -> DnsmosScorer | None:
        """The scorer, or None (with one warning line) when the wheel is missing."""
        from hifi_tse.eval.similarity import LOG

        try:
            return cls(threads=threads)
        except UserError as exc:
            LOG.warning("DNSMOS skipped: %s", exc)
            return None

    def _session(self, name: str) -> Any:
        if name not in self._sessions:
            try:
                import onnxruntime as ort
            except ImportError:
                raise UserError("DNSMOS needs onnxruntime (pip install onnxruntime)") from None
            opts = ort.SessionOptions()
            if self.threads is not None:
                opts.intra_op_num_threads = self.threads
                opts.inter_op_num_threads = 1
            self._sessions[name] = ort.InferenceSession(
                str(self.paths[name]), opts, providers=["CPUExecutionProvider"]
            )
        return self._sessions[name]

    def _run(self, name: str, wins: np.ndarray) -> np.ndarray:
        """Calibrated scores of windows ``(N, WINDOW_SAMPLES)`` by one model: ``(N, S)``."""
        model, session = MODELS[name], self._session(name)
        input_name = session.get_inputs()[0].name
        out = []
        for i in range(0, len(wins), self.batch_windows):
            chunk = wins[i : i + self.batch_windows]
            feats = p808_features(chunk) if model.mel_input else chunk
            out.append(session.run(None, {input_name: feats})[0])
        return calibrate(np.concatenate(out), model.polys)

    def score_batch(self, clips: Sequence[np.ndarray], sample_rate: int) -> list[dict[str, float]]:
        """Scores of each ``(L,)`` clip at ``sample_rate`` Hz (resampled to 16 kHz): dicts
        of every selected model's scores (``sig``, ``bak``, ... on the MOS scale, 1-5).
        The windows of all clips go through each model together."""
        per_clip = [windows(prepare(c, sample_rate)) for c in clips]
        if not per_clip:
            return []
        bounds = np.cumsum([0] + [len(w) for w in per_clip])
        unique, index = distinct_windows(np.concatenate(per_clip))
        results: list[dict[str, float]] = [{} for _ in per_clip]
        for name in self.paths:
            scores = self._run(name, unique)[index]
            for k, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
                means = scores[lo:hi].mean(axis=0)
                results[k].update(zip(MODELS[name].scores, (float(v) for v in means)))
        return results

    def score(self, wav: np.ndarray, sample_rate: int) -> dict[str, float]:
        """Scores of one clip ``(L,)`` or ``(L, C)`` at ``sample_rate`` Hz (see score_batch)."""
        return self.score_batch([wav], sample_rate)[0]

    def compare(
        self, mixtures: Sequence[np.ndarray], estimates: Sequence[np.ndarray], sample_rate: int
    ) -> list[dict[str, float]]:
        """Record fields of mixture/estimate pairs: ``dnsmos_<score>`` of each estimate and
        ``dnsmos_<score>_mix`` of its mixture (all ``(L,)`` at ``sample_rate`` Hz)."""
        scores = self.score_batch([*estimates, *mixtures], sample_rate)
        n = len(estimates)
        return [
            {
                **{f"{PREFIX}{k}": v for k, v in est.items()},
                **{f"{PREFIX}{k}{MIX_SUFFIX}": v for k, v in mix.items()},
            }
            for est, mix in zip(scores[:n], scores[n:])
        ]


# --------------------------------------------------------------------------- reporting


def summary(records: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """``{column: summarize(...)}`` over the records that carry DNSMOS fields (None if none)."""
    from hifi_tse.eval.metrics import summarize

    scored = [r for r in records if _any(r)]
    if not scored:
        return None
    block: dict[str, Any] = {"count": len(scored)}
    for key in COLUMNS:
        block[key] = summarize([r.get(key) for r in scored])
    return block


def _any(record: dict[str, Any]) -> bool:
    return any(record.get(key) is not None for key in COLUMNS)


def markdown_table(rows: Sequence[tuple[str, dict[str, Any] | None]]) -> list[str]:
    """Markdown lines: per group, each score as ``mixture → estimate`` (means); groups with
    no DNSMOS block are left out; no lines at all when none has one."""
    rows = [(name, block) for name, block in rows if block]
    present = [s for s in SCORES if any(_mean(b, f"{PREFIX}{s}") is not None for _, b in rows)]
    if not rows or not present:
        return []
    lines = [
        "| group | n | " + " | ".join(LABELS[s] for s in present) + " |",
        "|---|---|" + "---|" * len(present),
    ]
    for name, block in rows:
        cells = [
            f"{_fmt(_mean(block, f'{PREFIX}{s}{MIX_SUFFIX}'))} → {_fmt(_mean(block, PREFIX + s))}"
            for s in present
        ]
        lines.append(f"| {name} | {block['count']} | " + " | ".join(cells) + " |")
    return lines


def markdown_section(rows: Sequence[tuple[str, dict[str, Any] | None]]) -> list[str]:
    """The report's DNSMOS section (title, one explaining line, the table) or nothing."""
    table = markdown_table(rows)
    if not table:
        return []
    return [
        "",
        "## No-reference quality (DNSMOS)",
        "",
        "Mean opinion scores (1-5) predicted without a reference, mixture → estimate: DNSMOS "
        "P.835 (SIG speech, BAK background, OVRL overall), personalised P.835 (pBAK also counts "
        "interfering talkers as background; no enrollment is used) and P.808; at 16 kHz.",
        "",
        *table,
    ]


def format_line(record: dict[str, Any]) -> str:
    """One line of a record's DNSMOS fields: ``OVRL 2.10 → 2.85, ...`` (mixture → estimate)."""
    parts = [
        f"{LABELS[s]} {_fmt(record.get(PREFIX + s + MIX_SUFFIX))} → {_fmt(record.get(PREFIX + s))}"
        for s in SCORES
        if record.get(PREFIX + s) is not None
    ]
    return "DNSMOS (mixture → estimate): " + ", ".join(parts)


def _mean(block: dict[str, Any] | None, key: str) -> float | None:
    value = (block or {}).get(key)
    return value.get("mean") if isinstance(value, dict) else None


def _fmt(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.2f}"
