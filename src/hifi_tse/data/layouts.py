"""Speech corpus layouts: how a file path names its speaker and utterance.

A layout maps a path relative to the corpus root to a speaker id (or ``None`` when the path
does not fit the layout). Known layouts:

- ``vctk``: speaker folders ``pNNN`` / ``sN`` holding ``pNNN_UUU[_micK].wav|flac``.
- ``librispeech``: ``SPEAKER/CHAPTER/SPEAKER-CHAPTER-UUUU.flac`` (numeric folders).
- ``dns``: the speaker id is inside the file name (``..._reader_01234_...``).
- ``ears``: speaker folders ``pNNN`` holding style-named files (``emo_joy_freeform.wav``).
- ``folder``: the first-level folder is the speaker, whatever the names.
- ``pattern=REGEX``: any naming scheme. ``REGEX`` is searched in the path relative to the
  root (``/`` separators); the speaker id is its named groups joined with ``-`` in pattern
  order, e.g. ``(?P<lang>cs|nl)/[^/]+-(?P<who>[a-z]+)-`` names ``cs/a-m-1.ogg`` ``cs-m``.
  A file that does not match is skipped and listed in the prepare report.

Auto-detection picks the one specific layout (vctk, librispeech, dns, ears) that fits every
file; it falls back to ``folder`` when none fits and every file sits inside a folder.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from hifi_tse.audio.io import AUDIO_SUFFIXES
from hifi_tse.errors import UserError

_VCTK_DIR = re.compile(r"^[ps]\d+$")
_EARS_DIR = re.compile(r"^p\d+$")
_DNS_READER = re.compile(r"(reader_\d+)")


PATTERN_PREFIX = "pattern="


@dataclass(frozen=True)
class SpeechSource:
    """A speech folder and how its paths name speakers.

    ``layout`` is a name of :data:`LAYOUTS`, ``"pattern"`` (with ``pattern`` set) or None to
    auto-detect. ``voices`` tags every speaker of the source as ``"real"`` recordings or
    ``"synthetic"`` ones, for reports that show them apart. ``val_speakers`` /
    ``test_speakers``, when either is given, fix this source's held-out speakers (every other
    speaker trains) instead of the share-based split. ``voice_variants`` pitch/formant-shifted
    copies are made of each training speaker (see :mod:`hifi_tse.data.voice_variants`).
    ``name`` names the source in manifests (default: the folder's name). ``whole_split``
    (``"train"``, ``"val"`` or ``"test"``) puts every speaker of the source in that split:
    held out, a recording chain no training talker shares, the harder test of a model meant
    for unheard recordings; ``"train"``, a source none of whose talkers is held out.
    """

    root: Path
    layout: str | None = None
    pattern: str | None = None
    voices: str = "real"
    val_speakers: tuple[str, ...] = ()
    test_speakers: tuple[str, ...] = ()
    voice_variants: int = 0
    name: str | None = None
    whole_split: str | None = None


@dataclass(frozen=True)
class AudioFile:
    """One speech file: its path, speaker id and utterance id (relative path, no suffix)."""

    path: Path
    speaker: str
    utterance: str


def _vctk(rel: PurePosixPath) -> str | None:
    if len(rel.parts) < 2:
        return None
    spk = rel.parts[-2]
    return spk if _VCTK_DIR.match(spk) and rel.stem.startswith(f"{spk}_") else None


def _ears(rel: PurePosixPath) -> str | None:
    if len(rel.parts) < 2:
        return None
    spk = rel.parts[-2]
    return spk if _EARS_DIR.match(spk) and not rel.stem.startswith(f"{spk}_") else None


def _librispeech(rel: PurePosixPath) -> str | None:
    if len(rel.parts) < 3:
        return None
    spk, chapter = rel.parts[-3], rel.parts[-2]
    return spk if spk.isdigit() and chapter.isdigit() else None


def _dns(rel: PurePosixPath) -> str | None:
    m = _DNS_READER.search(rel.stem)
    return m.group(1) if m else None


def _folder(rel: PurePosixPath) -> str | None:
    return rel.parts[0] if len(rel.parts) >= 2 else None


LAYOUTS: dict[str, Callable[[PurePosixPath], str | None]] = {
    "vctk": _vctk,
    "librispeech": _librispeech,
    "dns": _dns,
    "ears": _ears,
    "folder": _folder,
}
_SPECIFIC = ("vctk", "librispeech", "dns", "ears")


def list_audio_files(root: Path) -> list[Path]:
    """All audio files under ``root`` (recursive, sorted; hidden and temporary files skipped)."""
    out = []
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file():
            out.append(p)
    return sorted(out)


def parse_source(spec: str) -> SpeechSource:
    """``DIR[:layout]`` or ``DIR:pattern=REGEX`` → a :class:`SpeechSource`.

    A colon not followed by a layout is kept as part of the folder name.
    """
    at = spec.find(":" + PATTERN_PREFIX)
    if at >= 0:
        regex = spec[at + 1 + len(PATTERN_PREFIX) :]
        compile_pattern(regex, spec)
        return SpeechSource(Path(spec[:at]), "pattern", regex)
    head, sep, tail = spec.rpartition(":")
    if sep and tail in LAYOUTS:
        return SpeechSource(Path(head), tail)
    if sep and tail and "/" not in tail and not Path(spec).exists():
        raise UserError(
            f"{spec}: unknown layout {tail!r} (expected one of {list(LAYOUTS)} or pattern=REGEX)"
        )
    return SpeechSource(Path(spec))


def compile_pattern(regex: str, where: str) -> re.Pattern[str]:
    """The compiled speaker pattern; UserError when it is invalid or has no named group."""
    try:
        compiled = re.compile(regex)
    except re.error as exc:
        raise UserError(f"{where}: invalid pattern {regex!r} ({exc})") from None
    if not compiled.groupindex:
        raise UserError(
            f"{where}: pattern {regex!r} has no named group; name the speaker id with "
            "(?P<speaker>...)"
        )
    return compiled


def pattern_speaker(compiled: re.Pattern[str], rel: PurePosixPath) -> str | None:
    """Speaker id of ``rel`` under a pattern: its named groups joined with ``-``, or None."""
    m = compiled.search(rel.as_posix())
    if m is None:
        return None
    parts = [m.group(name) for name in sorted(compiled.groupindex, key=compiled.groupindex.get)]
    if any(not part for part in parts):
        return None
    return "-".join(parts)


def detect_layout(root: Path, files: list[Path]) -> str:
    """The layout that fits every file of ``root``; UserError when none or several do."""
    rels = [PurePosixPath(p.relative_to(root).as_posix()) for p in files]
    fits = [name for name in _SPECIFIC if all(LAYOUTS[name](r) is not None for r in rels)]
    if len(fits) == 1:
        return fits[0]
    if len(fits) > 1:
        raise UserError(
            f"{root}: layout is ambiguous (fits {', '.join(fits)}); "
            f"pass it by name as {root}:LAYOUT with LAYOUT one of {', '.join(LAYOUTS)}"
        )
    if all(_folder(r) is not None for r in rels):
        return "folder"
    raise UserError(
        f"{root}: cannot tell speakers apart (files at the top level); "
        f"pass the layout by name as {root}:LAYOUT with LAYOUT one of {', '.join(LAYOUTS)}"
    )


def scan_pattern(root: Path, regex: str) -> tuple[list[AudioFile], list[Path]]:
    """Speech files of ``root`` whose relative path matches ``regex``: (matched, unmatched)."""
    compiled = compile_pattern(regex, str(root))
    matched, unmatched = [], []
    for p in _audio_files_or_error(root):
        rel = PurePosixPath(p.relative_to(root).as_posix())
        spk = pattern_speaker(compiled, rel)
        if spk is None:
            unmatched.append(p)
        else:
            matched.append(AudioFile(path=p, speaker=spk, utterance=str(rel.with_suffix(""))))
    if not matched:
        raise UserError(f"{root}: no file path matches pattern {regex!r}")
    return matched, unmatched


def scan_speech(root: Path, layout: str | None) -> tuple[str, list[AudioFile]]:
    """List the speech files of ``root`` with speaker ids: (layout used, files).

    Raises UserError for a missing folder, a folder without audio, an unknown layout, or
    when a file does not fit the requested layout.
    """
    files = _audio_files_or_error(root)
    if layout is None:
        layout = detect_layout(root, files)
    if layout not in LAYOUTS:
        raise UserError(f"{root}: unknown layout {layout!r} (expected one of {list(LAYOUTS)})")
    fn = LAYOUTS[layout]
    out = []
    for p in files:
        rel = PurePosixPath(p.relative_to(root).as_posix())
        spk = fn(rel)
        if spk is None:
            raise UserError(f"{p}: does not fit layout {layout!r} (no speaker id in the path)")
        out.append(AudioFile(path=p, speaker=spk, utterance=str(rel.with_suffix(""))))
    return layout, out


def scan_plain(root: Path) -> list[AudioFile]:
    """Noise or RIR folder: every audio file, no speaker."""
    return [
        AudioFile(path=p, speaker="", utterance=p.relative_to(root).with_suffix("").as_posix())
        for p in _audio_files_or_error(root)
    ]


def _audio_files_or_error(root: Path) -> list[Path]:
    if not root.is_dir():
        raise UserError(f"{root}: folder not found")
    files = list_audio_files(root)
    if not files:
        raise UserError(
            f"{root}: no audio files found (expected {', '.join(AUDIO_SUFFIXES)} files)"
        )
    return files
