"""Real recorded voices for the demo corpus, from packages that install offline.

* Fish Fillets NG voice actors (Debian ``fillets-ng-data-cs`` and ``fillets-ng-data-nl``):
  ``sound/<level>/<lang>/<level>-<character>-<line>.ogg``. The speaker id is taken from the
  path by :data:`FILLETS_PATTERN` (``cs-m``, ``nl-v``, ``cs-hs``, ...); per-level numbered
  minor characters (``-0-``, ``-4-``) and language-free effects do not match and are skipped,
  and so are the ``hurt`` grunts, which hold both Dutch main characters under one name.
  The Dutch main characters are held out: ``nl-m`` for validation, ``nl-v`` for test.
* The Czech talkers of the game's later levels, named without the ``<level>-`` prefix
  (``hanoi/cs/m-*.ogg``, ``fdto/cs/*-m.ogg``, ...): :data:`FILLETS_EXTRA_TALKERS` groups their
  files by talker, and they are staged (decoded, resampled) as training speakers. The groups
  were measured with the GE2E speaker encoder (``docs/demo_model.md``, "More real talkers"):
  other people than every talker the pattern finds; files whose talker was unclear are left
  out.
* ALSA's speaker-test voice (Debian ``alsa-utils``, ``/usr/share/sounds/alsa``): one talker,
  trained on; its clips are padded to the demo's minimum length.
* The two-talker sample call shipped inside the ``pyannote.audio`` wheel, cut into
  single-talker utterances with its RTTM (overlaps dropped): test voices.

Only these sources are used: other real voices found on a machine stay out of training, so
the project's own acceptance sets remain unheard. Each source is optional; what is missing
is reported in one line.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hifi_tse.audio.io import read_audio, resample, save_audio
from hifi_tse.data.layouts import SpeechSource
from hifi_tse.data.sources.base import VoiceSource, search_prefixes, stage_source
from hifi_tse.errors import UserError
from hifi_tse.utils import atomic_write_text

FILLETS_ROOT = Path("/usr/share/games/fillets-ng/sound")
FILLETS_PATTERN = r"^[^/]+/(?P<lang>cs|nl)/[^/]+-(?P<character>(?!hurt-)[a-z]+)-[^/]+$"
# Talker id -> globs under the game's sound folder. The later levels' Czech small fish
# (``m``) and big fish (``v``) are other actors than the main cast's ``cs-m`` / ``cs-v``, one
# per fish across those levels; ``kd`` is the briefcase tape's narrator; in the ``linux``
# level the small fish and talker ``2`` are two more (talker ``1``, the big fish and ``keys``
# were too close to other talkers to name).
_LATER_LEVELS = ("hanoi", "hole", "nowall", "rush")
FILLETS_EXTRA_TALKERS: dict[str, tuple[str, ...]] = {
    "cs-later-m": tuple(f"{lv}/cs/m-*.ogg" for lv in _LATER_LEVELS) + ("fdto/cs/*-m.ogg",),
    "cs-later-v": tuple(f"{lv}/cs/v-*.ogg" for lv in _LATER_LEVELS) + ("fdto/cs/*-v.ogg",),
    "cs-kd": ("briefcase/cs/kd-*.ogg",),
    "cs-linux-m": ("linux/cs/m-*.ogg",),
    "cs-linux-2": ("linux/cs/2-*.ogg",),
}
FILLETS_VAL = ("nl-m",)
FILLETS_TEST = ("nl-v",)
FILLETS_PACKAGES = "fillets-ng-data-cs fillets-ng-data-nl"
FILLETS_SOURCE = "fillets"
ALSA_ROOT = Path("/usr/share/sounds/alsa")
ALSA_VOICE_FILES = (
    "Front_Center",
    "Front_Left",
    "Front_Right",
    "Rear_Center",
    "Rear_Left",
    "Rear_Right",
    "Side_Left",
    "Side_Right",
)
PYANNOTE_DIST = "pyannote.audio"
PYANNOTE_SAMPLE = "pyannote/audio/sample/sample"
EXTRA_SOURCE = "real_extra"  # folder (and source name) of the staged ALSA / pyannote voices
# Silence added on each side of an ALSA clip (they are 1.3-1.5 s long), s.
ALSA_PAD_SECONDS = 0.1


# How each package source (``hifi_tse.data.sources``) enters the demo corpus: its talkers
# train (a few held out by the rule below), or the whole source is held out for validation
# or test: a recording chain the model never hears in training.
# Tux Paint's narrators (13 talkers, 14 languages) are the test's recording chain never heard:
# another project, and no talker of theirs within 0.82 GE2E cosine of any other source's.
# Kajongg's five callers validate the same way (at most 0.80 to the other sources).
SOURCE_ROLES: dict[str, str] = {"tuxpaint": "test", "kajongg": "val"}
TRAIN_ROLE = "train"
# Talkers of each training source held out, chosen by a hash of their ids among those with
# enough speech to be scored (fixed by the ids alone: a rebuild picks the same ones).
HELD_OUT_PER_SOURCE = {"val": 1, "test": 1}
MIN_HELD_OUT_SECONDS = 60.0
# Sources whose talker ids are too uncertain to hold one out (a held-out "talker" who is
# partly a training one would flatter the test): Hedgewars' voice packs sit 0.87-0.97 from
# each other by GE2E, as close as two halves of one pack (data/sources/hedgewars.py).
TRAIN_ONLY_SOURCES = ("hedgewars",)
# Pitch/formant variants per training talker of the package sources: they were for
# multiplying a few talkers; with a hundred, rendering them would cost more than it adds.
PACKAGE_VOICE_VARIANTS = 0


@dataclass(frozen=True)
class RealVoices:
    """The real speech sources found, and one line on what is missing."""

    sources: list[SpeechSource]
    summary: dict[str, Any]
    missing: str
    found: str = ""


def find_real_voices(
    raw: Path,
    sample_rate: int,
    min_seconds: float,
    voice_variants: int,
    *,
    fillets_root: Path = FILLETS_ROOT,
    alsa_root: Path = ALSA_ROOT,
    pyannote_sample: Path | None = None,
    package_sources: Sequence[VoiceSource] | None = None,
    extract_root: Path | None = None,
    workers: int = 1,
) -> RealVoices:
    """Real sources for the demo corpus; stages ALSA and pyannote clips in ``raw/real_extra``
    and every installed package source in ``raw/<source>``.

    ``pyannote_sample`` (the sample's path without suffix) defaults to the installed wheel's.
    ``package_sources`` default to every module of :mod:`hifi_tse.data.sources`, looked for
    in the system and below ``extract_root`` (default ``data/real-voices``, where
    ``make real-voices`` extracts them).
    """
    sources, missing, summary = [], [], {}
    if any(fillets_root.glob(f"*/{lang}/*.ogg") for lang in ("cs", "nl")):
        sources.append(
            SpeechSource(
                fillets_root,
                "pattern",
                FILLETS_PATTERN,
                voices="real",
                val_speakers=FILLETS_VAL,
                test_speakers=FILLETS_TEST,
                voice_variants=voice_variants,
                name=FILLETS_SOURCE,
            )
        )
        summary["fillets_files"] = sum(
            1 for lang in ("cs", "nl") for _ in fillets_root.glob(f"*/{lang}/*.ogg")
        )
        summary["fillets_extra_files"] = _stage_fillets_extra(
            fillets_root, raw / EXTRA_SOURCE, sample_rate
        )
    else:
        missing.append(f"Fish Fillets voices (apt-get install {FILLETS_PACKAGES})")
    extra = raw / EXTRA_SOURCE
    n_alsa = _stage_alsa(alsa_root, extra / "alsa", sample_rate)
    if not n_alsa:
        missing.append("ALSA's test voice (apt-get install alsa-utils)")
    sample = pyannote_sample if pyannote_sample is not None else _pyannote_sample()
    n_pyannote = _stage_rttm(sample, extra, "pyannote", sample_rate, min_seconds)
    if not n_pyannote:
        missing.append("the pyannote sample call (pip install --no-deps pyannote.audio)")
    summary.update(alsa_clips=n_alsa, pyannote_utterances=n_pyannote)
    if n_alsa or n_pyannote or summary.get("fillets_extra_files"):
        test = tuple(sorted({p.name for p in extra.glob("pyannote-*")}))
        sources.append(
            SpeechSource(
                extra,
                "folder",
                voices="real",
                test_speakers=test,
                voice_variants=voice_variants,
            )
        )
    packaged, package_missing, summary["packages"] = _package_sources(
        raw, sample_rate, voice_variants, package_sources, extract_root, workers
    )
    sources += packaged
    missing += package_missing
    line = "real voices missing: " + "; ".join(missing) if missing else ""
    return RealVoices(sources=sources, summary=summary, missing=line, found=_found_line(sources))


def installed_package_sources(
    package_sources: Sequence[VoiceSource] | None = None, extract_root: Path | None = None
) -> list[str]:
    """Names of the package sources installed here (found, not staged)."""
    if package_sources is None:
        from hifi_tse.data.sources import all_sources

        package_sources = all_sources()
    prefixes = search_prefixes(extract_root)
    return [s.name for s in package_sources if s.find(prefixes) is not None]


def _found_line(sources: list[SpeechSource]) -> str:
    names = [src.name or src.root.name for src in sources]
    return f"real voices found: {', '.join(names)}" if names else "real voices found: none"


def _package_sources(
    raw: Path,
    sample_rate: int,
    voice_variants: int,
    package_sources: Sequence[VoiceSource] | None,
    extract_root: Path | None,
    workers: int,
) -> tuple[list[SpeechSource], list[str], dict[str, Any]]:
    """Stage every installed package source; its SpeechSource with its held-out talkers."""
    if package_sources is None:
        from hifi_tse.data.sources import all_sources

        package_sources = all_sources()
    prefixes = search_prefixes(extract_root)
    out, missing, summary = [], [], {}
    for voice_source in package_sources:
        root = voice_source.find(prefixes)
        if root is None:
            missing.append(f"{voice_source.name} ({voice_source.package}: make real-voices)")
            continue
        report = stage_source(
            voice_source, root, raw / voice_source.name, sample_rate, workers=workers
        )
        role = SOURCE_ROLES.get(voice_source.name, TRAIN_ROLE)
        summary[voice_source.name] = {
            "role": role,
            **{k: report[k] for k in ("clips", "kept", "dropped", "talkers", "minutes")},
        }
        if not report["talkers"]:
            continue
        trains_all = role != TRAIN_ROLE or voice_source.name in TRAIN_ONLY_SOURCES
        held = (
            {}
            if trains_all
            else held_out_talkers(
                report["seconds_by_talker"], HELD_OUT_PER_SOURCE, MIN_HELD_OUT_SECONDS
            )
        )
        out.append(
            SpeechSource(
                raw / voice_source.name,
                "folder",
                voices="real",
                name=voice_source.name,
                voice_variants=min(voice_variants, PACKAGE_VOICE_VARIANTS)
                if role == TRAIN_ROLE
                else 0,
                # A training source without held-out talkers trains them all (no share-based
                # split of its talkers).
                whole_split=None if held else role,
                val_speakers=held.get("val", ()),
                test_speakers=held.get("test", ()),
            )
        )
    return out, missing, summary


def held_out_talkers(
    seconds_by_talker: dict[str, float], counts: dict[str, int], min_seconds: float
) -> dict[str, tuple[str, ...]]:
    """Split name -> talkers of one training source held out for it: taken in the order of a
    hash of their ids among those with at least ``min_seconds`` of speech, validation first.
    A source with too few such talkers to keep one for training holds none out."""
    eligible = sorted(
        (t for t, sec in seconds_by_talker.items() if sec >= min_seconds),
        key=lambda t: hashlib.sha1(t.encode()).hexdigest(),
    )
    if len(eligible) <= sum(counts.values()):
        return {}
    held, start = {}, 0
    for split, count in counts.items():
        held[split] = tuple(eligible[start : start + count])
        start += count
    return held


def _pyannote_sample() -> Path | None:
    from importlib import metadata

    try:
        dist = metadata.distribution(PYANNOTE_DIST)
    except metadata.PackageNotFoundError:
        return None
    return Path(str(dist.locate_file(PYANNOTE_SAMPLE)))


def _stage_alsa(root: Path, out: Path, sample_rate: int) -> int:
    """Copy ALSA's voice clips into ``out`` (one speaker folder), padded; returns the count."""
    count = 0
    for name in ALSA_VOICE_FILES:
        src = root / f"{name}.wav"
        if not src.is_file():
            continue
        dst = out / f"{name}.wav"
        if not dst.is_file():
            wav, sr = read_audio(src)
            pad = np.zeros(int(round(ALSA_PAD_SECONDS * sample_rate)), dtype=np.float32)
            save_audio(dst, np.concatenate([pad, resample(wav, sr, sample_rate), pad]), sample_rate)
        count += 1
    return count


def _stage_fillets_extra(root: Path, out: Path, sample_rate: int) -> int:
    """Stage the :data:`FILLETS_EXTRA_TALKERS` files as ``out/<talker>/<level>_<name>.wav``.

    Returns the number of files staged (now or before); an unreadable or empty file is
    skipped, as ``prepare`` would skip it.
    """
    count = 0
    for talker, globs in FILLETS_EXTRA_TALKERS.items():
        for src in sorted({p for g in globs for p in root.glob(g)}):
            dst = out / talker / f"{src.parts[-3]}_{src.stem}.wav"
            if not dst.is_file():
                try:
                    wav, sr = read_audio(src)
                except UserError:
                    continue
                save_audio(dst, resample(wav, sr, sample_rate), sample_rate)
            count += 1
    return count


def rttm_turns(lines: list[str]) -> list[tuple[str, float, float]]:
    """(speaker, start s, end s) of each RTTM ``SPEAKER`` line."""
    turns = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 8 and fields[0] == "SPEAKER":
            start, duration = float(fields[3]), float(fields[4])
            turns.append((fields[7], start, start + duration))
    return turns


def single_talker_spans(
    turns: list[tuple[str, float, float]], min_seconds: float
) -> list[tuple[str, float, float]]:
    """Parts of each turn where nobody else talks, at least ``min_seconds`` long."""
    spans = []
    for spk, start, end in turns:
        pieces = [(start, end)]
        for other, o_start, o_end in turns:
            if other == spk:
                continue
            cut = []
            for a, b in pieces:
                cut += [(a, min(b, o_start)), (max(a, o_end), b)]
            pieces = [(a, b) for a, b in cut if b > a]
        spans += [(spk, a, b) for a, b in pieces if b - a >= min_seconds]
    return sorted(spans, key=lambda s: (s[0], s[1]))


def _stage_rttm(
    sample: Path | None, out: Path, prefix: str, sample_rate: int, min_seconds: float
) -> int:
    """Cut a diarised recording (``sample``.wav + .rttm) into single-talker utterances."""
    if sample is None:
        return 0
    wav_path, rttm_path = sample.with_suffix(".wav"), sample.with_suffix(".rttm")
    if not (wav_path.is_file() and rttm_path.is_file()):
        return 0
    spans = single_talker_spans(rttm_turns(rttm_path.read_text().splitlines()), min_seconds)
    marker = out / f".{prefix}.json"
    wav = None
    for k, (spk, a, b) in enumerate(spans):
        dst = out / f"{prefix}-{spk}" / f"{prefix}_{k:03d}.wav"
        if dst.is_file():
            continue
        if wav is None:
            audio, sr = read_audio(wav_path)
            wav = resample(audio, sr, sample_rate)
        save_audio(dst, wav[int(a * sample_rate) : int(b * sample_rate)], sample_rate)
    atomic_write_text(marker, json.dumps({"spans": spans}))
    return len(spans)
