"""Where the enrolled talker speaks, read from one extraction pass.

A TSE model that works returns the target where it talks and near silence elsewhere, so the
estimate's short-time level *against the mixture's* says when the target is on:

1. 20 ms frames (:data:`FRAME_SECONDS`); a frame's **score** is the estimate's level minus the
   mixture's, dB (0 dB: the frame is all target; a suppressed interferer scores −20 dB or
   lower). Frames whose estimate is :data:`FLOOR_DB` below the mixture's loud level (its
   95th-percentile frame) score :data:`MIN_SCORE_DB`: silence is never the target.
2. Hysteresis: a frame turns on above :data:`ON_DB` and stays on down to :data:`OFF_DB`.
3. Smoothing: gaps under :data:`BRIDGE_SECONDS` are filled (pauses between words), segments
   under :data:`MIN_SECONDS` dropped (clicks, leaks), and each segment held on for
   :data:`HANGOVER_SECONDS` after its end (the decaying tail of the last word).
4. Optional speaker check (``speaker_threshold``): a frame counts only where the 1.6 s of the
   *mixture* around it sounds like the enrollment (GE2E cosine, :mod:`hifi_tse.speaker.ge2e`).
   It is for models that leak other talkers on real recordings, where the level alone cannot
   tell who talks; it costs recall on voices the encoder knows badly (espeak, game actors).

The thresholds were chosen by measurement on mixtures with a known on/off pattern, espeak and
Fish Fillets voices and the pyannote two-talker call (:mod:`hifi_tse.eval.activity_eval`;
figures in the README, "Long recordings: where the target speaks"). The mixture's windows
beat the estimate's for the speaker check on the call (the small model distorts real voices).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np

from hifi_tse.audio.signal import frame_power
from hifi_tse.errors import UserError
from hifi_tse.utils import atomic_write_text

if TYPE_CHECKING:
    from hifi_tse.api import Enrollment, Extractor

FRAME_SECONDS = 0.02  # analysis frame and hop, s
ON_DB = -8.0  # a frame turns on when the estimate keeps more than this of the mixture, dB
OFF_DB = -12.0  # ... and stays on until it keeps less than this, dB
FLOOR_DB = 30.0  # frames whose estimate lies this far below the mixture's loud level are off
LOUD_PERCENTILE = 95.0  # the mixture's loud level: this percentile of its frame levels
BRIDGE_SECONDS = 0.3  # shorter gaps between on-frames are filled, s
MIN_SECONDS = 0.3  # shorter segments are dropped, s
HANGOVER_SECONDS = 0.1  # each segment is held on this long after its end, s
MIN_SCORE_DB = -60.0  # the score of silent frames (and the lowest score), dB
FADE_SECONDS = 0.01  # gating: raised-cosine fade at each segment edge, s
SPEAKER_THRESHOLD = 0.76  # speaker check: the GE2E cosine a frame's window must reach
SPEAKER_WINDOW_SECONDS = 1.6  # speaker check: mixture window around a frame (GE2E's own), s
SPEAKER_HOP_SECONDS = 0.1  # speaker check: one window per this much, s
SPEAKER_BATCH = 64  # speaker check: windows per encoder call (bounds memory)
_POWER_EPS = 1e-12  # keeps log10 finite on digital silence
ACTIVITY_SUFFIXES = (".csv", ".rttm")


@dataclass(frozen=True)
class ActivitySettings:
    """How activity is read from an extraction (defaults: the module constants)."""

    on_db: float = ON_DB
    off_db: float = OFF_DB
    floor_db: float = FLOOR_DB
    bridge_seconds: float = BRIDGE_SECONDS
    min_seconds: float = MIN_SECONDS
    hangover_seconds: float = HANGOVER_SECONDS
    speaker_threshold: float | None = None  # None: level only; else GE2E cosine >= this
    frame_seconds: float = FRAME_SECONDS

    def checked(self) -> ActivitySettings:
        """Self, or UserError naming the flag that is out of range."""
        if self.off_db > self.on_db:
            raise UserError(
                f"--activity-off-db: expected <= --activity-on-db ({self.on_db}), got {self.off_db}"
            )
        for name, value in (
            ("--activity-floor-db", self.floor_db),
            ("--activity-min-seconds", self.min_seconds),
            ("--activity-hangover-seconds", self.hangover_seconds),
            ("bridge_seconds", self.bridge_seconds),
        ):
            if value < 0:
                raise UserError(f"{name}: expected >= 0, got {value}")
        if self.frame_seconds <= 0:
            raise UserError(f"frame_seconds: expected > 0, got {self.frame_seconds}")
        if self.speaker_threshold is not None and not -1.0 <= self.speaker_threshold <= 1.0:
            raise UserError(
                f"--speaker-check: expected a cosine in [-1, 1], got {self.speaker_threshold}"
            )
        return self


DEFAULTS = ActivitySettings()


@dataclass(frozen=True)
class Segment:
    """The target talks from ``start`` to ``end`` (s); ``score``: the estimate's level
    against the mixture's over the segment (energy ratio, dB)."""

    start: float
    end: float
    score: float


@dataclass(frozen=True)
class Activity:
    """Target activity of one recording.

    ``scores (T,) float32`` dB per frame of ``frame_seconds`` (frame ``t`` covers
    ``[t, t + 1) * frame_seconds``), ``active (T,) bool`` after smoothing, ``segments`` the
    runs of active frames in seconds, ``similarity (T,) float32`` the speaker check's GE2E
    cosine (NaN where not computed) or None without it.
    """

    frame_seconds: float
    scores: np.ndarray
    active: np.ndarray
    segments: tuple[Segment, ...]
    similarity: np.ndarray | None = None

    @property
    def active_seconds(self) -> float:
        """Total length of the segments, s."""
        return float(sum(s.end - s.start for s in self.segments))

    def gain(self, length: int, sample_rate: int, fade_seconds: float = FADE_SECONDS) -> np.ndarray:
        """``(length,)`` float32: 1 inside the segments, exactly 0 outside, raised-cosine
        fades of ``fade_seconds`` just inside each segment edge."""
        if fade_seconds < 0:
            raise UserError(f"--gate-fade-seconds: expected >= 0, got {fade_seconds}")
        g = np.zeros(length, dtype=np.float32)
        for seg in self.segments:
            a = min(length, int(round(seg.start * sample_rate)))
            b = min(length, int(round(seg.end * sample_rate)))
            if b <= a:
                continue
            g[a:b] = 1.0
            n = min(int(round(fade_seconds * sample_rate)), (b - a) // 2)
            if n > 0:
                ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)
                g[a : a + n] = ramp
                g[b - n : b] = ramp[::-1]
        return g

    def gate(
        self, audio: np.ndarray, sample_rate: int, fade_seconds: float = FADE_SECONDS
    ) -> np.ndarray:
        """``audio (L,)`` with silence (exact zeros) outside the segments: ``(L,)`` float32."""
        audio = np.asarray(audio, dtype=np.float32)
        return audio * self.gain(audio.size, sample_rate, fade_seconds)

    def to_csv(self) -> str:
        """``start,end,score`` rows (s, s, dB) under a header."""
        rows = ["start,end,score"]
        rows += [f"{s.start:.3f},{s.end:.3f},{s.score:.2f}" for s in self.segments]
        return "\n".join(rows) + "\n"

    def to_rttm(self, file_id: str, speaker: str) -> str:
        """NIST RTTM ``SPEAKER`` lines (onset, duration in s; the score as confidence)."""
        file_id, speaker = _rttm_token(file_id), _rttm_token(speaker)
        return "".join(
            f"SPEAKER {file_id} 1 {s.start:.3f} {s.end - s.start:.3f} <NA> <NA> {speaker} "
            f"{s.score:.2f} <NA>\n"
            for s in self.segments
        )

    def write(self, path: str | Path, *, file_id: str = "", speaker: str = "target") -> None:
        """Write ``path`` atomically, ``.csv`` or ``.rttm`` by its suffix (RTTM file id:
        ``file_id``, default the path's stem)."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".csv":
            atomic_write_text(path, self.to_csv())
        elif suffix == ".rttm":
            atomic_write_text(path, self.to_rttm(file_id or path.stem, speaker))
        else:
            raise UserError(f"{path}: activity file must end in .csv or .rttm")


def _rttm_token(text: str) -> str:
    """RTTM fields are whitespace-separated: spaces in names become underscores."""
    return "_".join(text.split()) or "<NA>"


def read_activity(path: str | Path) -> list[Segment]:
    """Segments from a ``.csv`` (start,end,score) or ``.rttm`` file written by
    :meth:`Activity.write` (RTTM: every ``SPEAKER`` line)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: activity file not found")
    lines = path.read_text().splitlines()
    out = []
    if path.suffix.lower() == ".rttm":
        for line in lines:
            f = line.split()
            if len(f) >= 9 and f[0] == "SPEAKER":
                score = float(f[8]) if f[8] != "<NA>" else float("nan")
                out.append(Segment(float(f[3]), float(f[3]) + float(f[4]), score))
        return out
    for lineno, line in enumerate(lines[1:], start=2):
        try:
            start, end, score = (float(x) for x in line.split(","))
        except ValueError:
            raise UserError(f"{path}:{lineno}: expected start,end,score, got {line!r}") from None
        out.append(Segment(start, end, score))
    return out


# --------------------------------------------------------------------------- detection


def _db(power: np.ndarray) -> np.ndarray:
    return 10.0 * np.log10(power + _POWER_EPS)


def frame_scores(
    mixture: np.ndarray, estimate: np.ndarray, frame: int, floor_db: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(scores dB, mixture power, estimate power)``, each ``(T,)``: the estimate's level
    minus the mixture's per frame, :data:`MIN_SCORE_DB` where the estimate lies ``floor_db``
    below the mixture's loud level."""
    mix_p = frame_power(mixture, frame)
    est_p = frame_power(estimate, frame)[: mix_p.size]
    mix_db, est_db = _db(mix_p), _db(est_p)
    loud = np.percentile(mix_db, LOUD_PERCENTILE) if mix_db.size else 0.0
    scores = np.maximum(est_db - mix_db, MIN_SCORE_DB)
    scores[(est_db <= loud - floor_db) | (est_p <= _POWER_EPS)] = MIN_SCORE_DB
    return scores.astype(np.float32), mix_p, est_p


def hysteresis(scores: np.ndarray, on: float, off: float, state: bool = False) -> np.ndarray:
    """``(T,)`` bool: on once a score exceeds ``on``, off again once it falls to ``off``;
    ``state``: whether the frame before the first was on."""
    out = np.zeros(scores.size, dtype=bool)
    for t, s in enumerate(scores.tolist()):
        state = s > (off if state else on)
        out[t] = state
    return out


def _runs(active: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` frame index pairs of the runs of True."""
    edges = np.diff(np.concatenate([[0], active.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def smooth(active: np.ndarray, settings: ActivitySettings) -> np.ndarray:
    """Bridge short gaps, drop short segments, then add the hangover: ``(T,)`` bool."""
    per = settings.frame_seconds
    bridge = int(round(settings.bridge_seconds / per))
    shortest = int(round(settings.min_seconds / per))
    hang = int(round(settings.hangover_seconds / per))
    out = active.copy()
    runs = _runs(out)
    for (_, stop), (start, _) in zip(runs, runs[1:]):
        if start - stop <= bridge:
            out[stop:start] = True
    for start, stop in _runs(out):
        if stop - start < shortest:
            out[start:stop] = False
    for _, stop in _runs(out):
        out[stop : stop + hang] = True
    return out


def segments_of(
    active: np.ndarray, mix_p: np.ndarray, est_p: np.ndarray, frame_seconds: float
) -> tuple[Segment, ...]:
    """The runs of ``active`` in seconds, each scored by its energy ratio (dB)."""
    return tuple(
        Segment(
            start=a * frame_seconds,
            end=b * frame_seconds,
            score=float(max(_db(est_p[a:b].sum()) - _db(mix_p[a:b].sum()), MIN_SCORE_DB)),
        )
        for a, b in _runs(active)
    )


SimilarityFn = Callable[[np.ndarray], np.ndarray]
"""``candidate frames (T,) bool -> GE2E cosine (T,) float32`` (NaN where not computed)."""


def detect_activity(
    mixture: np.ndarray,
    estimate: np.ndarray,
    sample_rate: int,
    settings: ActivitySettings = DEFAULTS,
    similarity_fn: SimilarityFn | None = None,
) -> Activity:
    """Activity of the target from ``mixture (L,)`` and its extraction ``estimate (L,)``
    (float32, ``sample_rate`` Hz). With ``settings.speaker_threshold`` set,
    ``similarity_fn`` gives the speaker check's cosines of the frames the level passed."""
    settings = settings.checked()
    frame = max(1, int(round(settings.frame_seconds * sample_rate)))
    per = frame / sample_rate
    settings = replace(settings, frame_seconds=per)
    scores, mix_p, est_p = frame_scores(mixture, estimate, frame, settings.floor_db)
    raw = hysteresis(scores, settings.on_db, settings.off_db)
    similarity = None
    if settings.speaker_threshold is not None:
        if similarity_fn is None:
            raise UserError("speaker check: no speaker encoder given (similarity_fn)")
        similarity = similarity_fn(raw)
        raw &= np.nan_to_num(similarity, nan=-1.0) >= settings.speaker_threshold
    active = smooth(raw, settings)
    return Activity(per, scores, active, segments_of(active, mix_p, est_p, per), similarity)


def window_similarity(
    encoder: object,
    audio: np.ndarray,
    enrollment: np.ndarray,
    sample_rate: int,
    candidates: np.ndarray,
    frame_seconds: float,
) -> np.ndarray:
    """Speaker check: GE2E cosine of the :data:`SPEAKER_WINDOW_SECONDS` of ``audio`` around
    each candidate frame with the enrollment's embedding: ``(T,)`` float32, NaN elsewhere.

    One window per :data:`SPEAKER_HOP_SECONDS` (a frame takes its nearest window's value),
    and only where a candidate lies, so silence and suppressed stretches cost nothing.
    ``encoder``: a :class:`hifi_tse.speaker.ge2e.GE2EEncoder`.
    """
    out = np.full(candidates.size, np.nan, dtype=np.float32)
    if not candidates.any():
        return out
    ref = encoder.embed_utterance(enrollment, sample_rate)  # type: ignore[attr-defined]
    step = max(1, int(round(SPEAKER_HOP_SECONDS / frame_seconds)))
    frames = np.flatnonzero(candidates)
    centres = np.unique(np.round(frames / step).astype(np.int64) * step)
    width = min(audio.size, int(round(SPEAKER_WINDOW_SECONDS * sample_rate)))
    starts = ((centres + 0.5) * frame_seconds * sample_rate - width / 2).astype(np.int64)
    starts = np.clip(starts, 0, audio.size - width)
    cosines = []
    for k in range(0, starts.size, SPEAKER_BATCH):
        clips = [audio[s : s + width] for s in starts[k : k + SPEAKER_BATCH]]
        emb = encoder.embed_batch(clips, sample_rate)  # type: ignore[attr-defined]
        cosines.append(emb @ ref)
    by_centre = dict(zip(centres.tolist(), np.concatenate(cosines).tolist()))
    for f in frames.tolist():
        out[f] = by_centre[int(round(f / step)) * step]
    return out


# --------------------------------------------------------------------------- streaming


class StreamingActivity:
    """Causal activity for ``hifi-tse stream``: input and output blocks in, one line per
    output block out (``start-end s, score dB, on/off``).

    The same frame scores and hysteresis as :func:`detect_activity`, but causal: the loud
    level is the loudest mixture frame so far, and there is no bridging or minimum length
    (they need the future); the hangover holds a frame on after the score drops.
    """

    def __init__(
        self, sample_rate: int, settings: ActivitySettings = DEFAULTS, out: TextIO | None = None
    ) -> None:
        self.settings = settings.checked()
        self.rate = sample_rate
        self.frame = max(1, int(round(settings.frame_seconds * sample_rate)))
        self.hang = int(round(settings.hangover_seconds * sample_rate / self.frame))
        self.out = out if out is not None else sys.stderr
        self._mix = np.zeros(0, dtype=np.float32)  # input not yet matched by output
        self._pair = np.zeros((2, 0), dtype=np.float32)  # matched, not yet a whole frame
        self._loud_db = -np.inf
        self._on = False
        self._held = 0
        self._score = MIN_SCORE_DB
        self.emitted = 0

    def push(self, mixture: np.ndarray, estimate: np.ndarray) -> None:
        """``mixture``: new input samples; ``estimate``: new output samples (the model's
        output lags its input; sample ``k`` of each belong together). Prints one line when
        ``estimate`` is not empty."""
        self._mix = np.concatenate([self._mix, np.asarray(mixture, dtype=np.float32)])
        est = np.asarray(estimate, dtype=np.float32)
        if est.size == 0:
            return
        n = min(est.size, self._mix.size)
        pair = np.stack([self._mix[:n], est[:n]])
        self._mix = self._mix[n:]
        self._pair = np.concatenate([self._pair, pair], axis=1)
        whole = self._pair.shape[1] // self.frame * self.frame
        if whole:
            self._frames(self._pair[:, :whole])
            self._pair = self._pair[:, whole:]
        start = self.emitted / self.rate
        self.emitted += est.size
        state = "on" if self._on else "off"
        print(
            f"activity {start:.3f}-{self.emitted / self.rate:.3f} s {self._score:.1f} dB {state}",
            file=self.out,
        )

    def _frames(self, pair: np.ndarray) -> None:
        est_p = frame_power(pair[1], self.frame)
        mix_db, est_db = _db(frame_power(pair[0], self.frame)), _db(est_p)
        s = self.settings
        for m, e, p in zip(mix_db.tolist(), est_db.tolist(), est_p.tolist()):
            self._loud_db = max(self._loud_db, m)
            heard = e > self._loud_db - s.floor_db and p > _POWER_EPS  # digital silence: off
            score = max(e - m, MIN_SCORE_DB) if heard else MIN_SCORE_DB
            self._score = score
            level_on = score > (s.off_db if self._on else s.on_db)
            self._held = self.hang if level_on else max(0, self._held - 1)
            self._on = level_on or self._held > 0


# --------------------------------------------------------------------------- CLI flags


def add_activity_arguments(p: argparse.ArgumentParser) -> None:
    """The thresholds as flags (``hifi-tse separate``; defaults: the module constants)."""
    g = p.add_argument_group("target activity (--activity / --gate)")
    g.add_argument("--activity-on-db", type=float, default=ON_DB, help="frame on above, dB")
    g.add_argument("--activity-off-db", type=float, default=OFF_DB, help="on until below, dB")
    g.add_argument(
        "--activity-floor-db",
        type=float,
        default=FLOOR_DB,
        help="frames this far below the mixture's loud level are off, dB",
    )
    g.add_argument("--activity-min-seconds", type=float, default=MIN_SECONDS)
    g.add_argument("--activity-hangover-seconds", type=float, default=HANGOVER_SECONDS)
    g.add_argument(
        "--speaker-check",
        type=float,
        nargs="?",
        const=SPEAKER_THRESHOLD,
        default=None,
        metavar="COSINE",
        help=f"also require the enrolled voice (GE2E cosine of the mixture's "
        f"{SPEAKER_WINDOW_SECONDS:g} s around a frame, default {SPEAKER_THRESHOLD}; needs "
        "resemblyzer's weights)",
    )
    g.add_argument(
        "--gate-fade-seconds", type=float, default=FADE_SECONDS, help="--gate edge fades, s"
    )


def settings_from_args(args: argparse.Namespace) -> ActivitySettings:
    return ActivitySettings(
        on_db=args.activity_on_db,
        off_db=args.activity_off_db,
        floor_db=args.activity_floor_db,
        min_seconds=args.activity_min_seconds,
        hangover_seconds=args.activity_hangover_seconds,
        speaker_threshold=args.speaker_check,
    ).checked()


@dataclass(frozen=True)
class FileActivity:
    """What ``hifi-tse separate --activity / --gate`` asked for."""

    target: str | None  # --activity: a .csv/.rttm path (one file) or a suffix (beside each)
    gate: bool  # --gate: silence outside the segments in the written estimate
    settings: ActivitySettings
    fade_seconds: float

    def path_for(self, out: Path, single: bool) -> Path | None:
        """Where the activity of the output ``out`` goes (None: not asked for)."""
        if self.target is None:
            return None
        suffix = "." + self.target.lower().lstrip(".")
        if suffix in ACTIVITY_SUFFIXES:
            return out.with_suffix(suffix)
        if not single:
            raise UserError(
                f"--activity {self.target}: with --list / --mix-dir give the suffix only "
                "(.csv or .rttm), written beside each output"
            )
        if Path(self.target).suffix.lower() not in ACTIVITY_SUFFIXES:
            raise UserError(f"--activity {self.target}: expected a .csv or .rttm file")
        return Path(self.target)


def file_activity_from_args(args: argparse.Namespace) -> FileActivity | None:
    """The ``--activity`` / ``--gate`` request (None when neither was given); checks it."""
    if args.activity is None and not args.gate:
        return None
    request = FileActivity(
        args.activity, args.gate, settings_from_args(args), args.gate_fade_seconds
    )
    if args.gate_fade_seconds < 0:
        raise UserError(f"--gate-fade-seconds: expected >= 0, got {args.gate_fade_seconds}")
    single = args.mix is not None
    request.path_for(args.out or Path("out.wav"), single)  # a bad value fails before any work
    return request


def extract_file_with_activity(
    extractor: Extractor,
    enrollment: Enrollment,
    mix_path: Path,
    out_path: Path,
    request: FileActivity,
    single: bool,
) -> Activity:
    """Extract ``mix_path`` into ``out_path`` (gated when asked) and write its activity.

    Unlike the streaming ``separate`` path, the recording is held in memory (an hour at
    16 kHz is 230 MB of float32): gating needs the segments before the first sample is
    written. The output has the input's rate and length, mono; both files appear atomically.
    """
    from hifi_tse.audio.io import read_audio, save_audio

    mix, rate = read_audio(mix_path)
    est, activity = extractor.extract_with_activity(
        mix, rate, enrollment, settings=request.settings, name=str(mix_path)
    )
    if request.gate:
        est = activity.gate(est, rate, request.fade_seconds)
    save_audio(out_path, est, rate)
    target = request.path_for(out_path, single)
    if target is not None:
        activity.write(target, file_id=Path(mix_path).stem)
    return activity
