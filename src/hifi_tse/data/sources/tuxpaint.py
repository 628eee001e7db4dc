"""tuxpaint-stamps-default: spoken descriptions of Tux Paint's rubber stamps.

The Debian package ``tuxpaint-stamps-default`` installs the stamps of the children's drawing
program Tux Paint in ``usr/share/tuxpaint/stamps/<category>/.../<stamp>.*``; beside many
stamps lie spoken descriptions, ``<stamp>_desc_<lang>.ogg`` (``<stamp>_desc.ogg`` in
English; one file is named ``..._desc_da.ogg.ogg``): 7,418 files, 178 minutes, in 13
languages (be bg ca da el en es fr lt ml nl ro ru), 0.2-20 s, mostly 1-2 s, 44.1 kHz.
Other ``.ogg`` files are sound effects, or digits and letters spoken by other readers (``7_nb.ogg``,
``A_filled_en_GB.ogg``: about 10 s per language), and are not used. 965 descriptions are
byte-identical copies (filled and outlined letters share one recording), listed once.

Talkers: one per language, as the changelog credits the descriptions (Belarusian Kseniya
Buraya, Bulgarian Krasimir Petkov, Catalan Pere Pujal i Carabantes, Danish Joe Dalton, Greek
Kiriaki Serafeim, Spanish Estefania Ortiz, Romanian "Tabbytha", Russian Edwin Veber;
French Jacques Chion and PaulK), except where the GE2E check and the recordings show more
than one voice. Within each language the clips were grouped by recording setup (channel
layout and rate) and content (letters, animals, the rest) and the groups' GE2E centroids
compared (20 s chunks): a language's groups agree at 0.86-1.00 (letter names alone, a
content shift, at 0.86-0.94) except French, whose three setups are three voices:

* ``fr``: stereo files with one silent channel (675 clips) - one voice;
* ``fr_2``: true-stereo files under ``animals/`` (67 clips), 0.63 to ``fr``;
* true-stereo letter names (25 clips, 16 s), 0.60 to ``fr`` and 0.67 to ``fr_2``: a third
  voice, too little to be a talker, left out (as are two mono clips).

Also left out: clips recorded at 8 kHz (the same five animals in ca, en and nl, 15 clips,
15 s: an older narrow-band recording, too little to test whose voice it is, below the corpus
rate) and Catalan's 13 stereo clips (11 s, 0.92 to the mono Catalan clips: ambiguous).
Across talkers (``check-speakers`` on the staged talkers) the nearest pair is at 0.82
(``ro``-``ml``; ``fr``-``fr_2`` 0.67), so none merge. ``lt`` (16 s) and ``ml`` (one 5.6 s
utterance, which ``prepare`` leaves out) are kept but barely count.

Spanish is dropped whole by the clipped rule: all 753 distinct Spanish descriptions are
saturated (median 7.1 %, least 1.5 % of sample pairs at full scale; median decoded
peak 1.2x full scale), so the default rules stand. The other drops are 66 hot recordings (clipped;
mostly Catalan and English animals, decoded peaks 1.0-1.6x full scale) and 23 letter names
with under 0.25 s of sound (near-silent).

Licence, as ``usr/share/doc/tuxpaint-stamps-default/copyright`` states it for ``Files: *``
(the recordings included): GPL-2 or later, Copyright 2002-2022 Bill Kendrick.

Measured (``stage_source`` at 16 kHz, default rules): 6,397 clips listed, 5,555 kept
(819 clipped, 753 of them Spanish; 23 near-silent); 13 talkers, 144.1 minutes (be 15.6,
bg 19.5, ca 14.0, da 5.8, el 18.8, en 0.8, fr 17.9, fr_2 1.4, lt 0.3, ml 0.1, nl 0.7,
ro 27.3, ru 21.8).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from hifi_tse.audio.io import read_audio
from hifi_tse.data.sources.base import Clip, VoiceSource, distinct_by_digest, locate
from hifi_tse.utils import file_digest

STAMPS_DIR = "usr/share/tuxpaint/stamps"
ENGLISH = "en"  # the language of a description named ``<stamp>_desc.ogg``
# ``<stamp>_desc.ogg`` (English) or ``<stamp>_desc_<lang>.ogg`` (a locale such as ``pt_BR``).
_DESCRIPTION = re.compile(r"^(?P<stamp>.+)_desc(?:_(?P<lang>[A-Za-z]{2,3}(?:_[A-Za-z]{2,4})?))?$")
_SUFFIX = ".ogg"
MIN_RATE = 16000  # Hz: descriptions recorded at a lower rate are left out (see above)
LAYOUT_PROBE_SECONDS = 1.0  # audio read to tell a file's channel layout
# Ogg Vorbis identification header: b"\x01vorbis", a 4-byte version, the channel count
# (1 byte), then the sample rate (4 bytes, little-endian); it is in the file's first page.
_VORBIS_ID = b"\x01vorbis"
_VORBIS_CHANNELS = 11  # offsets from the start of _VORBIS_ID
_VORBIS_RATE, _VORBIS_RATE_END = 12, 16
_HEAD_BYTES = 128  # bytes read to find the identification header
# A channel with less than this share of the louder channel's energy counts as silent.
SILENT_CHANNEL_SHARE = 1e-6
MONO, ONE_SILENT, STEREO = "mono", "one-silent", "stereo"

# Languages read by more than one voice -> ((channel layout, path prefix, talker), ...):
# the first rule a description matches names its talker; one matching none is left out.
# Figures: GE2E cosine between the groups' centroids (see the module docstring).
SETUP_TALKERS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "fr": (
        (ONE_SILENT, "", "fr"),  # 675 clips; the main French voice
        (STEREO, "animals/", "fr_2"),  # 67 clips; 0.63 to fr
    ),  # left out: stereo letters (0.60 to fr, 0.67 to fr_2; 16 s), 2 mono clips
    "ca": ((MONO, "", "ca"),),  # left out: 13 stereo clips, 0.92 to ca (ambiguous, 11 s)
}


def find(prefixes: Sequence[Path]) -> Path | None:
    """The stamps folder below the first of ``prefixes`` that has it, else None."""
    return locate(STAMPS_DIR, prefixes)


def description_language(path: Path) -> str | None:
    """The language of a spoken stamp description (``en`` for ``*_desc.ogg``), None for any
    other file. A doubled suffix (``x_desc_da.ogg.ogg``) counts as one."""
    name = path.name
    if not name.endswith(_SUFFIX):
        return None
    while name.endswith(_SUFFIX):
        name = name[: -len(_SUFFIX)]
    match = _DESCRIPTION.match(name)
    if match is None:
        return None
    return match.group("lang") or ENGLISH


def stream_format(path: Path) -> tuple[int, int]:
    """``(channels, rate Hz)`` of an audio file: from an Ogg Vorbis file's identification
    header when it has one (fast: no decoder is opened), else from ``soundfile``."""
    with open(path, "rb") as handle:
        head = handle.read(_HEAD_BYTES)
    at = head.find(_VORBIS_ID)
    if at >= 0 and len(head) >= at + _VORBIS_RATE_END:
        channels = head[at + _VORBIS_CHANNELS]
        rate = int.from_bytes(head[at + _VORBIS_RATE : at + _VORBIS_RATE_END], "little")
        if channels and rate:
            return channels, rate
    info = sf.info(str(path))
    return info.channels, info.samplerate


def channel_layout(path: Path) -> str:
    """``mono``, ``one-silent`` (two channels, one of them silent) or ``stereo``, from the
    first :data:`LAYOUT_PROBE_SECONDS` of the file (the whole file when that is silent)."""
    channels, rate = stream_format(path)
    if channels == 1:
        return MONO
    audio, _ = sf.read(str(path), frames=int(LAYOUT_PROBE_SECONDS * rate), always_2d=True)
    energy = np.sum(audio.astype(np.float64) ** 2, axis=0)  # (C,)
    if not energy.max() > 0:
        audio, _ = sf.read(str(path), always_2d=True)
        energy = np.sum(audio.astype(np.float64) ** 2, axis=0)
    return ONE_SILENT if energy.min() <= SILENT_CHANNEL_SHARE * energy.max() else STEREO


def talker_of(language: str, relative: str, path: Path) -> str | None:
    """The talker of a description in ``language`` at ``relative`` (its path below the
    stamps folder): the language itself, or as :data:`SETUP_TALKERS` says (None: left
    out)."""
    rules = SETUP_TALKERS.get(language)
    if rules is None:
        return language
    layout = channel_layout(path)
    for rule_layout, prefix, talker in rules:
        if layout == rule_layout and relative.startswith(prefix):
            return talker
    return None


def distinct_by_content(entries: Iterable[tuple[str, Path]]) -> list[tuple[str, Path]]:
    """``(talker, path)`` pairs, in order, without repeated recordings: a file whose bytes
    occur again under the same talker is kept once (its first occurrence); one whose bytes
    occur under two or more talkers is left out, as it cannot be attributed to one."""
    entries = list(entries)
    kept = distinct_by_digest(
        [(path, talker) for talker, path in entries], [file_digest(path) for _, path in entries]
    )
    return [(talker, path) for path, talker in kept]


def _recorded_rate(path: Path) -> int | None:
    """The file's sample rate, Hz (None when unreadable)."""
    try:
        return stream_format(path)[1]
    except (sf.LibsndfileError, RuntimeError):
        return None


def clips(root: Path) -> Iterator[Clip]:
    """Every spoken description below ``root`` (the stamps folder), by path, one copy of
    each recording; talker as :func:`talker_of` says; descriptions recorded below
    :data:`MIN_RATE` left out."""
    root = Path(root)
    entries = []
    for path in sorted(root.rglob(f"*{_SUFFIX}")):
        language = description_language(path)
        if language is None or not path.is_file():
            continue
        rate = _recorded_rate(path)
        if rate is not None and rate < MIN_RATE:
            continue
        try:
            talker = talker_of(language, path.relative_to(root).as_posix(), path)
        except (sf.LibsndfileError, RuntimeError):
            talker = language  # unreadable: listed, so the staging reports it
        if talker is not None:
            entries.append((talker, path))
    for talker, path in distinct_by_content(entries):
        name = path.relative_to(root).as_posix()
        yield Clip(talker, name, functools.partial(read_audio, str(path)))


SOURCE = VoiceSource(
    name="tuxpaint",
    package="tuxpaint-stamps-default",
    licence="GPL-2 or later (Copyright 2002-2022 Bill Kendrick; the package's Files: *)",
    description="spoken stamp descriptions, about one reader per language (12 languages)",
    find=find,
    clips=clips,
)
