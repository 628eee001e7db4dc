"""kajongg: the spoken calls of KDE's Mah Jongg game (tile names, winds, "pung", "kong").

Where: ``usr/share/kajongg/voices/<voice>/*.ogg`` (English: female1, female2, male1, male2)
and ``voices/de/<voice>/*.ogg`` (German, same voice names); 44.1 kHz Vorbis, 41-42 words of
0.3-1.5 s (median 0.86 s) per folder, 4.8 min in all. Very quiet: loudest frames at -13 to
-53 dBFS (median -36), see :data:`SILENCE_DBFS`.

Talkers: the ARTIST tag names the speaker: Petra (female1), Maria (female2), Wolfgang
(male1) in both languages, Klaus (German male2); the English male2 is untagged and is its
folder. The tags' cross-language pairs are one voice by GE2E centroid cosine (Petra 0.96,
Maria 0.97, Wolfgang 0.90, pitch 167 and 154 Hz), while the two male2 folders score 0.67
(pitch 105 against 137 Hz): five talkers.

Licence: GPL-2+ (``usr/share/doc/kajongg/copyright``, ``Files: *``; no separate statement
for the voices).

Measured (kajongg 4:22.12.3, staged at 16 kHz with :data:`RULES`): 335 clips, 335
kept (the default rules called 12 near-silent), 5 talkers, 5.6 min (gaps included); 35-93 s
per talker. GE2E check with the other KDE sources: nearest other source's talker 0.71-0.80,
so no KDE contributor voices both a game here and another.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence
from pathlib import Path

from hifi_tse.audio.io import read_audio
from hifi_tse.data.sources.base import Clip, ClipRules, VoiceSource, locate
from hifi_tse.data.sources.tags import artist, ascii_name

VOICES_DIR = "usr/share/kajongg/voices"
AUDIO_SUFFIXES = (".ogg", ".opus", ".wav", ".flac")

# The clips are very quiet: the loudest frame of a word is at -42 to -53 dBFS for two of the
# voices (female1, male1, English and German), over a noise floor near -75 dBFS. With the
# default -60 dBFS floor a word kept only its top 10-15 dB, and 12 short words (chow, kong,
# pung, wind names: 0.16-0.24 s left active, 43-100 % voiced) were called near-silent.
# -70 dBFS is 5 dB over those voices' noise floor and still drops nothing spoken.
SILENCE_DBFS = -70.0
# A call can be short ("chow": 0.27-0.45 s); see klettres for the same minimum.
MIN_ACTIVE_SECONDS = 0.15
RULES = dataclasses.replace(
    ClipRules(), silence_dbfs=SILENCE_DBFS, min_active_seconds=MIN_ACTIVE_SECONDS
)


def find(prefixes: Sequence[Path]) -> Path | None:
    """The voices folder below the first of ``prefixes`` that has it."""
    return locate(VOICES_DIR, prefixes)


def _voice_folders(root: Path) -> Iterator[tuple[str, Path]]:
    """``(label, folder)`` for ``voices/<voice>/`` (English) and ``voices/<lang>/<voice>/``:
    a folder holding audio is a voice, one holding folders a language."""
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        if any(p.is_dir() for p in folder.iterdir()):
            for voice in sorted(p for p in folder.iterdir() if p.is_dir()):
                yield f"{folder.name}-{voice.name}", voice
        else:
            yield folder.name, folder


def clips(root: Path) -> Iterator[Clip]:
    """Every call of every voice, by folder then file. The talker is the clip's ARTIST tag
    (Petra, Maria, Wolfgang, Klaus), so a person's English and German folders are one talker;
    a clip without one is its folder's (the English male2)."""
    for label, folder in _voice_folders(root):
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in AUDIO_SUFFIXES or not path.is_file():
                continue
            speaker = artist(path)
            talker = ascii_name(speaker) if speaker is not None else label
            name = f"{label}/{path.name}"
            yield Clip(talker, name, functools.partial(read_audio, str(path)))


SOURCE = VoiceSource(
    name="kajongg",
    package="kajongg",
    licence="GPL-2+ (debian/copyright, Files: *; the voices carry no other statement)",
    description="KDE Mah Jongg calls: very quiet 0.9 s words; 5 voices, 3 in English and German",
    find=find,
    clips=clips,
    rules=RULES,
)
