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

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hifi_tse.audio.io import read_audio, resample, save_audio
from hifi_tse.data.layouts import SpeechSource
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


@dataclass(frozen=True)
class RealVoices:
    """The real speech sources found, and one line on what is missing."""

    sources: list[SpeechSource]
    summary: dict[str, int]
    missing: str


def find_real_voices(
    raw: Path,
    sample_rate: int,
    min_seconds: float,
    voice_variants: int,
    *,
    fillets_root: Path = FILLETS_ROOT,
    alsa_root: Path = ALSA_ROOT,
    pyannote_sample: Path | None = None,
) -> RealVoices:
    """Real sources for the demo corpus; stages ALSA and pyannote clips in ``raw/real_extra``.

    ``pyannote_sample`` (the sample's path without suffix) defaults to the installed wheel's.
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
    line = "real voices missing: " + "; ".join(missing) if missing else ""
    return RealVoices(sources=sources, summary=summary, missing=line)


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
