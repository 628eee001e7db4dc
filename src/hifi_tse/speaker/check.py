"""Speaker-label check: which speaker ids of a corpus may be one person, by GE2E centroids.

A target speaker extraction corpus trusts its speaker ids: a target-absent example enrols a
talker said not to be in the mixture. When one person is filed under two ids (a voice actor
playing two characters, a naming scheme that splits a talker), some of those examples ask
the model to remove the very voice it was enrolled on; when one id holds several people,
enrollment and target differ. Neither shows in the losses. This check embeds up to
``utterances`` clips per speaker with the frozen GE2E encoder (trained on thousands of real
talkers), averages them into a unit centroid, and reports for every speaker

* its ``consistency``: the mean cosine of its clips to its centroid (low: mixed clips, or
  clips that are not speech);
* its nearest other speaker and their centroids' cosine;

and lists every pair at or above ``threshold``. On the demo corpus's real voices, the same
actor under two names scored 0.94-0.98 and different actors 0.54-0.92 (``docs/demo_model.md``,
"More real talkers"), so pairs above 0.9 deserve a listen. Pairs across splits are marked:
a held-out talker who is also a training talker would make test figures optimistic. The
encoder knows real voices: formant-synthesised ones (espeak) that differ mostly in pitch
score 0.9 and above among themselves, so a corpus's synthetic sources are best checked
apart (``voices``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hifi_tse.audio.io import load_audio, resample
from hifi_tse.data.layouts import SpeechSource, scan_pattern, scan_speech
from hifi_tse.data.store import (
    SPLITS,
    PackReader,
    load_manifest,
    load_report,
    speech_source_voices,
)
from hifi_tse.data.voice_variants import VARIANT_MARK
from hifi_tse.errors import UserError
from hifi_tse.speaker.frontend import SAMPLE_RATE
from hifi_tse.speaker.ge2e import GE2EEncoder
from hifi_tse.utils import atomic_write_text

# Clips shorter than this carry too little voice for a GE2E embedding (its partial window is
# 1.6 s; shorter clips are padded), s.
MIN_CLIP_SECONDS = 0.5

ClipLoader = Callable[[], np.ndarray]  # returns (L,) float32 audio at SAMPLE_RATE Hz


@dataclass(frozen=True)
class SpeakerClips:
    """One speaker id of a corpus: where it lives and how to load each of its clips."""

    speaker: str
    split: str  # "train" / "val" / "test", or "" for a raw folder
    loaders: list[ClipLoader]


@dataclass(frozen=True)
class SpeakerRow:
    """Per-speaker result of the check."""

    speaker: str
    split: str
    clips: int
    seconds: float
    consistency: float
    nearest: str
    nearest_cosine: float


@dataclass(frozen=True)
class SimilarPair:
    """Two speaker ids whose centroids' cosine is at or above the threshold."""

    first: str
    second: str
    cosine: float
    across_splits: bool


def speakers_of_packs(
    packs_dir: Path, include_variants: bool = False, voices: str | None = None
) -> list[SpeakerClips]:
    """Every speech speaker of a prepared corpus (all splits), voice variants left out unless
    ``include_variants``, only the sources tagged ``voices`` ("real" / "synthetic") when
    given. Raises UserError when the corpus has no manifests or no such speech."""
    report = load_report(packs_dir)
    kind_of_source = speech_source_voices(report, voices)
    sample_rate = int(report["sample_rate"])
    reader = PackReader(packs_dir)
    by_speaker: dict[tuple[str, str], list[ClipLoader]] = {}
    for split in SPLITS:
        for row in load_manifest(packs_dir, split):
            if row.get("kind") != "speech" or not row.get("speaker"):
                continue
            if voices is not None and kind_of_source.get(row.get("source"), "real") != voices:
                continue
            if not include_variants and VARIANT_MARK in row["speaker"]:
                continue

            def load(pack: str = row["pack"], key: str = row["key"]) -> np.ndarray:
                return resample(reader.read(pack, key), sample_rate, SAMPLE_RATE)

            by_speaker.setdefault((row["speaker"], split), []).append(load)
    if not by_speaker:
        which = f"{voices} " if voices else ""
        raise UserError(f"{packs_dir}: no {which}speech rows in its manifests")
    return [SpeakerClips(spk, split, loaders) for (spk, split), loaders in by_speaker.items()]


def speakers_of_folder(source: SpeechSource) -> list[SpeakerClips]:
    """Every speaker of a raw speech folder under its layout or pattern (unmatched files are
    left out, as ``prepare`` leaves them out)."""
    if source.layout == "pattern":
        files, _ = scan_pattern(source.root, str(source.pattern))
    else:
        _, files = scan_speech(source.root, source.layout)
    by_speaker: dict[str, list[ClipLoader]] = {}
    for f in files:

        def load(path: Path = f.path) -> np.ndarray:
            return load_audio(path, SAMPLE_RATE)

        by_speaker.setdefault(f.speaker, []).append(load)
    return [SpeakerClips(spk, "", loaders) for spk, loaders in by_speaker.items()]


def speaker_centroids(
    speakers: Sequence[SpeakerClips],
    encoder: GE2EEncoder,
    utterances: int,
    seed: int = 0,
) -> tuple[np.ndarray, list[tuple[int, float, float]]]:
    """Unit GE2E centroids ``(S, 256)`` and per speaker (clips used, seconds, consistency).

    Up to ``utterances`` clips per speaker, drawn with ``seed``; clips shorter than
    :data:`MIN_CLIP_SECONDS` are skipped. Raises UserError for a speaker with no usable clip.
    """
    rng = np.random.default_rng(seed)
    centroids, stats = [], []
    for spk in speakers:
        order = rng.permutation(len(spk.loaders))
        wavs = []
        for i in order:
            if len(wavs) == utterances:
                break
            wav = spk.loaders[i]()
            if wav.size >= MIN_CLIP_SECONDS * SAMPLE_RATE:
                wavs.append(wav)
        if not wavs:
            raise UserError(
                f"speaker {spk.speaker!r}: no clip of at least {MIN_CLIP_SECONDS} s to embed"
            )
        emb = encoder.embed_batch(wavs, SAMPLE_RATE)  # (N, 256), unit rows
        centroid = emb.mean(axis=0)
        centroid /= np.linalg.norm(centroid)
        seconds = sum(w.size for w in wavs) / SAMPLE_RATE
        centroids.append(centroid)
        stats.append((len(wavs), seconds, float((emb @ centroid).mean())))
    return np.stack(centroids).astype(np.float32), stats


def similar_pairs(
    names: Sequence[str], splits: Sequence[str], centroids: np.ndarray, threshold: float
) -> list[SimilarPair]:
    """Pairs of speakers whose unit centroids ``(S, D)`` have cosine ≥ ``threshold``, most
    similar first."""
    sims = centroids @ centroids.T
    first, second = np.nonzero(np.triu(sims >= threshold, k=1))
    pairs = [
        SimilarPair(names[i], names[j], float(sims[i, j]), splits[i] != splits[j])
        for i, j in zip(first.tolist(), second.tolist())
    ]
    return sorted(pairs, key=lambda p: -p.cosine)


def check_speakers(
    speakers: Sequence[SpeakerClips],
    encoder: GE2EEncoder,
    utterances: int,
    threshold: float,
    seed: int = 0,
) -> tuple[list[SpeakerRow], list[SimilarPair]]:
    """The per-speaker table (sorted by id) and the similar pairs of ``speakers``."""
    if len(speakers) < 2:
        raise UserError(f"speaker check needs at least 2 speakers, found {len(speakers)}")
    speakers = sorted(speakers, key=lambda s: (s.speaker, s.split))
    centroids, stats = speaker_centroids(speakers, encoder, utterances, seed)
    sims = centroids @ centroids.T
    np.fill_diagonal(sims, -np.inf)
    nearest = sims.argmax(axis=1)
    rows = [
        SpeakerRow(
            speaker=spk.speaker,
            split=spk.split,
            clips=n,
            seconds=round(seconds, 1),
            consistency=round(consistency, 3),
            nearest=speakers[int(j)].speaker,
            nearest_cosine=round(float(sims[i, j]), 3),
        )
        for i, (spk, (n, seconds, consistency), j) in enumerate(zip(speakers, stats, nearest))
    ]
    names = [s.speaker for s in speakers]
    pairs = similar_pairs(names, [s.split for s in speakers], centroids, threshold)
    return rows, pairs


def format_report(
    rows: Sequence[SpeakerRow], pairs: Sequence[SimilarPair], threshold: float
) -> str:
    """The check as plain text: one line per speaker, then the similar pairs."""
    width = max(len(r.speaker) for r in rows)
    lines = [
        f"{'speaker':<{width}}  split  clips  seconds  consistency  nearest (cosine)",
        *(
            f"{r.speaker:<{width}}  {r.split or '-':<5}  {r.clips:5d}  {r.seconds:7.1f}  "
            f"{r.consistency:11.3f}  {r.nearest} ({r.nearest_cosine:.3f})"
            for r in rows
        ),
        "",
    ]
    if not pairs:
        lines.append(f"no two speakers at cosine >= {threshold:g}")
    else:
        lines.append(f"{len(pairs)} pair(s) at cosine >= {threshold:g} (may be one person):")
        lines += [
            f"  {p.first} ~ {p.second}: {p.cosine:.3f}"
            + ("  [across splits: a held-out talker may also train]" if p.across_splits else "")
            for p in pairs
        ]
    return "\n".join(lines)


def write_report(
    path: Path, rows: Sequence[SpeakerRow], pairs: Sequence[SimilarPair], threshold: float
) -> None:
    """The check as JSON (atomic write)."""
    doc = {
        "threshold": threshold,
        "speakers": [asdict(r) for r in rows],
        "similar_pairs": [asdict(p) for p in pairs],
    }
    atomic_write_text(Path(path), json.dumps(doc, indent=1))
