"""What a real-voice source provides, and the staging every source shares.

A source module (one per corpus or package, ``hifi_tse.data.sources.<name>``) knows where its
files are installed, how to read them (including archive formats) and which talker said each
clip, and states its licence. It exposes one :class:`VoiceSource`. The staging here is the
same for all of them:

1. every clip is read at its own rate and judged by measured rules (:class:`ClipRules`):
   *clipped* (too many samples at full scale), *near-silent* (too little active signal) and
   *non-speech* (too few voiced frames among the active ones: effects, music, noise);
2. kept clips are resampled, trimmed to their active part (with a short pad) and brought to
   one active level, so clips recorded at different levels join without jumps;
3. the clips of one talker are joined, in order, with short silent gaps, into utterances of
   at least ``join_seconds`` (sources whose clips are single words or syllables are unusable
   one by one: a 1 s enrollment or target says little about a voice);
4. each utterance is written to ``out/<source>-<talker>/<n>.wav`` (a ``folder`` layout that
   ``prepare`` reads), and ``out/stage_report.json`` lists talkers, minutes per talker and the
   dropped clips by reason.

Staging is resumable: a finished source writes a marker with its rules and is skipped next
time unless the rules changed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hifi_tse.audio.io import resample, save_audio
from hifi_tse.errors import UserError
from hifi_tse.utils import atomic_write_text

# Where packages install data, tried in order: the system root, then a folder per Debian
# package extracted by `make real-voices` (no root needed: `apt-get download` + `dpkg-deb -x`).
SYSTEM_PREFIX = Path("/")
DEFAULT_EXTRACT_ROOT = Path("data/real-voices")

STAGE_REPORT = "stage_report.json"
_MARKER = ".staged.json"
_STAGE_VERSION = 1  # bump when staging changes, so old markers are not trusted
_SAFE_ID = re.compile(r"[^A-Za-z0-9_.]+")


@dataclass(frozen=True)
class ClipRules:
    """Measured rules that drop unusable clips, and how kept clips are joined.

    Levels are dB relative to full scale (dBFS) unless said otherwise; frames are
    ``frame_seconds`` long, without overlap.
    """

    frame_seconds: float = 0.02
    clip_level: float = 0.99  # |sample| at or above this share of full scale is saturated
    max_clipped_share: float = 0.001  # more saturated pairs than this share: clipped
    active_db: float = -35.0  # a frame is active within this many dB of the loudest frame
    silence_dbfs: float = -60.0  # ... and above this absolute level
    min_active_seconds: float = 0.25  # less active signal: near-silent
    voicing_threshold: float = 0.45  # normalised autocorrelation peak of a voiced frame
    pitch_range_hz: tuple[float, float] = (60.0, 500.0)
    min_voiced_share: float = 0.2  # fewer voiced among active frames: non-speech
    pad_seconds: float = 0.05  # kept around the active part when trimming
    level_dbfs: float = -23.0  # active-frame RMS every clip is brought to
    peak_limit: float = 0.9  # an utterance's peak is kept at or below this
    join_seconds: float = 4.0  # a talker's clips are joined up to at least this length
    gap_seconds: float = 0.2  # silence between joined clips
    max_clip_seconds: float = 30.0  # longer clips are cut into pieces of about join_seconds


@dataclass(frozen=True)
class Clip:
    """One clip of one talker as a source lists it.

    ``read`` returns ``((L,) float32 mono, rate Hz)``; it must be picklable (a module-level
    function or a ``functools.partial`` of one), so clips can be read in worker processes.
    ``talker`` is the source's own id (made file-safe and prefixed with the source's name on
    staging); ``name`` is unique within the source.
    """

    talker: str
    name: str
    read: Callable[[], tuple[np.ndarray, int]]


@dataclass(frozen=True)
class VoiceSource:
    """A source of real recorded voices.

    ``find(prefixes)`` returns the source's data root below one of ``prefixes`` (None when
    not installed); ``clips(root)`` lists its clips in a stable order. ``package`` is how to
    install it (a Debian package name), ``licence`` its terms as the package states them.
    ``join`` is False for sources whose clips are already sentence-length. ``talker_map``,
    for a source without (trustworthy) talker labels, is the default of
    :func:`stage_source`'s argument of that name.
    """

    name: str
    package: str
    licence: str
    description: str
    find: Callable[[Sequence[Path]], Path | None]
    clips: Callable[[Path], Iterable[Clip]]
    join: bool = True
    rules: ClipRules = field(default_factory=ClipRules)
    talker_map: Callable[[list[tuple[str, str, np.ndarray]]], list[str | None]] | None = None


def search_prefixes(extract_root: Path | None = None) -> list[Path]:
    """The system root, then every package folder below ``extract_root`` (sorted)."""
    root = DEFAULT_EXTRACT_ROOT if extract_root is None else Path(extract_root)
    packages = sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []
    return [SYSTEM_PREFIX, *packages]


def locate(relative: str, prefixes: Sequence[Path]) -> Path | None:
    """The first ``prefix / relative`` that exists (``relative`` without a leading ``/``)."""
    for prefix in prefixes:
        candidate = Path(prefix) / relative.lstrip("/")
        if candidate.exists():
            return candidate
    return None


def safe_id(text: str) -> str:
    """``text`` with every run of characters outside ``[A-Za-z0-9_.]`` replaced by ``_``."""
    return _SAFE_ID.sub("_", text).strip("_") or "x"


def distinct_by_digest(
    pairs: Sequence[tuple[Any, str]], digests: Sequence[str | bytes]
) -> list[tuple[Any, str]]:
    """``(item, talker)`` pairs, in order, without repeated recordings (``digests[i]`` is the
    content digest of ``pairs[i]``): a recording that occurs again under the same talker is
    kept once (its first occurrence); one that occurs under two or more talkers is left out,
    as it cannot be attributed to one."""
    talkers: dict[str | bytes, set[str]] = {}
    for (_, talker), digest in zip(pairs, digests):
        talkers.setdefault(digest, set()).add(talker)
    seen: set[str | bytes] = set()
    out = []
    for pair, digest in zip(pairs, digests):
        if len(talkers[digest]) == 1 and digest not in seen:
            seen.add(digest)
            out.append(pair)
    return out


# --- clip measurements (native rate) -------------------------------------------------------


def frame_levels_db(wav: np.ndarray, frame: int) -> np.ndarray:
    """``(F,)`` RMS level of non-overlapping frames of ``(L,)`` audio, dBFS (last frame padded)."""
    count = max(1, -(-len(wav) // frame))
    padded = np.zeros(count * frame, dtype=np.float64)
    padded[: len(wav)] = wav
    power = np.mean(padded.reshape(count, frame) ** 2, axis=1)
    return 10.0 * np.log10(np.maximum(power, 1e-12))


def active_frames(levels_db: np.ndarray, rules: ClipRules) -> np.ndarray:
    """``(F,)`` bool: frames within ``active_db`` of the loudest and above ``silence_dbfs``."""
    return (levels_db >= levels_db.max() + rules.active_db) & (levels_db >= rules.silence_dbfs)


def voiced_frames(wav: np.ndarray, rate: int, frame: int, rules: ClipRules) -> np.ndarray:
    """``(F,)`` bool: frames whose normalised autocorrelation peaks above the voicing threshold
    at a lag within ``pitch_range_hz``. A frame shorter than two pitch periods of the lowest
    pitch is widened to that (centred), so a low voice is not missed."""
    lo_lag = max(1, int(rate / rules.pitch_range_hz[1]))
    hi_lag = int(np.ceil(rate / rules.pitch_range_hz[0]))
    width = max(frame, 2 * hi_lag)
    count = max(1, -(-len(wav) // frame))
    centres = np.arange(count) * frame + frame // 2
    padded = np.pad(wav.astype(np.float64), (width, width))
    idx = centres[:, None] + width - width // 2 + np.arange(width)[None, :]
    windows = padded[idx]  # (F, width)
    windows -= windows.mean(axis=1, keepdims=True)
    spectrum = np.fft.rfft(windows, n=2 * width, axis=1)
    acf = np.fft.irfft(np.abs(spectrum) ** 2, axis=1)[:, : hi_lag + 1]  # (F, hi_lag + 1)
    # Unbiased: a lag-k product sums width - k terms, so long (low-pitch) lags are not penalised.
    lags = np.arange(lo_lag, hi_lag + 1)
    peak = (acf[:, lo_lag : hi_lag + 1] * (width / (width - lags))[None, :]).max(axis=1)
    return peak > rules.voicing_threshold * np.maximum(acf[:, 0], 1e-12)


def clipped_share(wav: np.ndarray, level: float) -> float:
    """Share of adjacent sample pairs of ``(L,)`` audio both at or above ``level`` (a flat,
    saturated top; a peak-normalised clip's single full-scale sample does not count)."""
    if len(wav) < 2:
        return 0.0
    high = np.abs(wav) >= level
    return float(np.mean(high[1:] & high[:-1]))


@dataclass(frozen=True)
class ClipVerdict:
    """What the rules found in one clip: the reason it is dropped (None: kept) and figures."""

    reason: str | None
    clipped_share: float
    active_seconds: float
    voiced_share: float


def judge_clip(wav: np.ndarray, rate: int, rules: ClipRules) -> ClipVerdict:
    """Apply the clipped / near-silent / non-speech rules to ``(L,)`` audio at ``rate`` Hz."""
    frame = max(1, int(round(rules.frame_seconds * rate)))
    clipped = clipped_share(wav, rules.clip_level)
    levels = frame_levels_db(wav, frame)
    active = active_frames(levels, rules)
    active_seconds = float(active.sum() * frame / rate)
    voiced = voiced_frames(wav, rate, frame, rules)
    voiced_share = float((voiced & active).sum() / max(1, active.sum()))
    reason = None
    if clipped > rules.max_clipped_share:
        reason = "clipped"
    elif active_seconds < rules.min_active_seconds:
        reason = "near_silent"
    elif voiced_share < rules.min_voiced_share:
        reason = "non_speech"
    return ClipVerdict(reason, clipped, active_seconds, voiced_share)


def trim_and_level(wav: np.ndarray, rate: int, rules: ClipRules) -> np.ndarray:
    """The active part of ``(L,)`` audio (± ``pad_seconds``), scaled so its active frames'
    RMS is ``level_dbfs``."""
    frame = max(1, int(round(rules.frame_seconds * rate)))
    levels = frame_levels_db(wav, frame)
    active = np.flatnonzero(active_frames(levels, rules))
    pad = int(round(rules.pad_seconds * rate))
    start = max(0, active[0] * frame - pad)
    stop = min(len(wav), (active[-1] + 1) * frame + pad)
    active_power = np.mean(10.0 ** (levels[active] / 10.0))
    gain = 10.0 ** ((rules.level_dbfs - 10.0 * np.log10(active_power)) / 20.0)
    return (wav[start:stop] * gain).astype(np.float32)


# --- staging -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ClipResult:
    talker: str
    name: str
    reason: str | None
    audio: np.ndarray | None  # trimmed, levelled, at the corpus rate (None when dropped)
    error: str | None = None


def _process_clip(clip: Clip, sample_rate: int, rules: ClipRules) -> _ClipResult:
    try:
        wav, rate = clip.read()
    except (UserError, OSError, ValueError, RuntimeError) as exc:
        return _ClipResult(clip.talker, clip.name, "unreadable", None, str(exc))
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1 or not len(wav) or not np.all(np.isfinite(wav)):
        return _ClipResult(clip.talker, clip.name, "unreadable", None, "empty or not finite")
    verdict = judge_clip(wav, rate, rules)
    if verdict.reason is not None:
        return _ClipResult(clip.talker, clip.name, verdict.reason, None)
    audio = resample(trim_and_level(wav, rate, rules), rate, sample_rate)
    return _ClipResult(clip.talker, clip.name, None, audio)


def join_clips(
    clips: Sequence[np.ndarray], sample_rate: int, rules: ClipRules, join: bool
) -> list[np.ndarray]:
    """One talker's ``(L_i,)`` clips, in order, as utterances of at least ``join_seconds``
    (gaps of ``gap_seconds``; a short remainder joins the last utterance), each peak-limited
    to ``peak_limit``. Without ``join`` every clip is its own utterance (long clips are still
    cut into pieces of about ``join_seconds``)."""
    target = int(rules.join_seconds * sample_rate)
    longest = int(rules.max_clip_seconds * sample_rate)
    pieces: list[np.ndarray] = []
    for clip in clips:
        if len(clip) > longest:
            count = len(clip) // target
            pieces += list(np.array_split(clip, count))
        else:
            pieces.append(clip)
    if not join:
        groups = [[p] for p in pieces]
    else:
        groups, current, length = [], [], 0
        for piece in pieces:
            current.append(piece)
            length += len(piece)
            if length >= target:
                groups.append(current)
                current, length = [], 0
        if current:
            if groups:
                groups[-1] += current
            else:
                groups.append(current)
    gap = np.zeros(int(round(rules.gap_seconds * sample_rate)), dtype=np.float32)
    out = []
    for group in groups:
        parts = [x for p in group for x in (p, gap)][:-1]
        utt = np.concatenate(parts).astype(np.float32)
        peak = float(np.max(np.abs(utt))) if len(utt) else 0.0
        out.append(utt * (rules.peak_limit / peak) if peak > rules.peak_limit else utt)
    return out


def _marker_payload(source: VoiceSource, sample_rate: int, clips: list[Clip]) -> dict[str, Any]:
    # The listing's digest covers the source's talker tables: a changed mapping restages.
    listing = "\n".join(f"{c.talker}\t{c.name}" for c in clips)
    return {
        "version": _STAGE_VERSION,
        "source": source.name,
        "sample_rate": sample_rate,
        "clips": len(clips),
        "listing_sha1": hashlib.sha1(listing.encode()).hexdigest(),
        "join": source.join,
        "rules": asdict(source.rules),
    }


def stage_source(
    source: VoiceSource,
    root: Path,
    out: Path,
    sample_rate: int,
    *,
    workers: int = 1,
    talker_map: Callable[[list[tuple[str, str, np.ndarray]]], list[str | None]] | None = None,
) -> dict[str, Any]:
    """Stage ``source`` (installed at ``root``) into ``out``; returns the stage report.

    ``out`` gets one folder per talker, ``<source>-<talker>``, of WAV utterances at
    ``sample_rate``. ``talker_map``, for sources without (trustworthy) talker labels, receives
    the kept clips as ``(talker, name, audio)`` and returns each clip's talker id (e.g. from
    speaker-embedding clusters; None leaves a clip out). A finished staging with the same
    rules is reused.
    """
    out = Path(out)
    clips = list(source.clips(root))
    # Through JSON once, as the marker stores it (tuples come back as lists).
    payload = json.loads(json.dumps(_marker_payload(source, sample_rate, clips)))
    marker = out / _MARKER
    if marker.is_file() and (out / STAGE_REPORT).is_file():
        if json.loads(marker.read_text()) == payload:
            return json.loads((out / STAGE_REPORT).read_text())
    results = _read_all(clips, sample_rate, source.rules, workers)
    kept = [(r.talker, r.name, r.audio) for r in results if r.audio is not None]
    talker_map = talker_map if talker_map is not None else source.talker_map
    talkers = talker_map(kept) if talker_map is not None else [t for t, _, _ in kept]
    by_talker: dict[str, list[np.ndarray]] = defaultdict(list)
    unassigned = 0
    for talker, (_, _, audio) in zip(talkers, kept):
        if talker is None:  # the talker map could not place it: left out, not guessed
            unassigned += 1
            continue
        by_talker[f"{source.name}-{safe_id(talker)}"].append(audio)
    seconds = {}
    for speaker, audios in sorted(by_talker.items()):
        utterances = join_clips(audios, sample_rate, source.rules, source.join)
        for k, utt in enumerate(utterances):
            save_audio(out / speaker / f"{k:04d}.wav", utt, sample_rate)
        seconds[speaker] = round(sum(len(u) for u in utterances) / sample_rate, 2)
    report = _stage_report(source, root, results, by_talker, seconds)
    report["unassigned"] = unassigned
    atomic_write_text(out / STAGE_REPORT, json.dumps(report, indent=1))
    atomic_write_text(marker, json.dumps(payload))
    return report


def _read_all(
    clips: list[Clip], sample_rate: int, rules: ClipRules, workers: int
) -> list[_ClipResult]:
    if workers <= 1 or len(clips) < 2:
        return [_process_clip(c, sample_rate, rules) for c in clips]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(
            pool.map(
                _process_clip,
                clips,
                [sample_rate] * len(clips),
                [rules] * len(clips),
                chunksize=16,
            )
        )


def _stage_report(
    source: VoiceSource,
    root: Path,
    results: list[_ClipResult],
    by_talker: dict[str, list[np.ndarray]],
    seconds: dict[str, float],
) -> dict[str, Any]:
    dropped: dict[str, int] = defaultdict(int)
    for r in results:
        if r.reason is not None:
            dropped[r.reason] += 1
    return {
        "source": source.name,
        "package": source.package,
        "licence": source.licence,
        "root": str(root),
        "clips": len(results),
        "kept": sum(r.reason is None for r in results),
        "dropped": dict(sorted(dropped.items())),
        "talkers": len(by_talker),
        "minutes": round(sum(seconds.values()) / 60.0, 2),
        "seconds_by_talker": seconds,
        "clips_by_talker": {spk: len(a) for spk, a in sorted(by_talker.items())},
    }
