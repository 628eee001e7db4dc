"""klettres-data: letters and syllables read aloud for KDE's alphabet-learning game.

Where: ``usr/share/klettres/<lang>/{alpha,syllab}/*.ogg`` (44.1 kHz mostly; Danish letters at
128 kHz), one ``sounds.xml`` per language. ``id`` and ``nn`` ship only their XML (their sounds
live in GCompris). Each clip is a letter or syllable of 0.2-1 s padded with silence to
0.5-2.8 s: 51 min of audio, 27 min of it active; staging trims each to its active part.

Talkers: one voice per language folder, checked by GE2E centroids of the two sets' clips
(trimmed, levelled, joined into >= 4 s): 0.88-0.99 between a language's letters and its
syllables, and each set's nearest other. German is the exception (letters near 234 Hz,
syllables near 115 Hz, 0.68 apart: two talkers). The ARTIST tags present (lt, ru) agree with
the folders; nb's is a copyright line. The sounds.xml notes: ``ar`` is a child ("my little
nephew's voice"); ``pt_BR`` credits a father and his son, but every clip is high-pitched
(F0 254-377 Hz, 10th-90th percentile) and the sets score 0.92: one talker.

Licence: GPL-2+ (``usr/share/doc/klettres-data/copyright``, ``Files: *``); nb's sounds.xml:
taken from GCompris, GPL-2+.

Measured (klettres-data 4:22.12.3, staged at 16 kHz): 1769 clips listed (67 left out, see
the tables), 1286 kept, 481 clipped, 2 non-speech (English "ch", Low German "fix": unvoiced),
21 talkers, 21.6 min (gaps between joined syllables included); 11-171 s per talker, median
59 s (tn: 11 s, one utterance). Clipped: Malayalam syllables 444 of 465 (0.1-16 % of sample
pairs at full scale, median 2 %, in runs of 20-60 samples), nb 7, Setswana 19 of 36. The
Setswana ones decode at 6-41x full scale (gain applied before float Vorbis encoding) with no
pile-up under their own peak, so they may be over-scaled rather than saturated; they stay
dropped: the game's players clip them, and nothing here says how they were made.
GE2E check with the other KDE sources: klettres-en_GB ~ klettres-uk 0.915,
klettres-pt_BR ~ klettres-tn 0.901, klettres-it ~ ktuberling-da-Martha_Schou 0.913 (each two
languages: kept apart), klettres-uk ~ ktuberling-uk_b 0.917 (one language: probably one
person under two sources' ids).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence
from pathlib import Path

from hifi_tse.audio.io import read_audio
from hifi_tse.data.sources.base import Clip, ClipRules, VoiceSource, locate

DATA_DIR = "usr/share/klettres"
SETS = ("alpha", "syllab")  # letters, syllables: the two folders of a language
AUDIO_SUFFIXES = (".ogg", ".opus", ".wav", ".flac")

# A language folder is one talker, except where GE2E centroid cosines of the two sets' clips
# (trimmed, levelled, joined into >= 4 s) or their pitch say otherwise; elsewhere the two
# sets score 0.88-0.99 and are each other's nearest. German: letters by a voice near
# 234 Hz, syllables by one near 115 Hz, 0.68 apart.
SET_TALKERS = {("de", "syllab"): "de-b"}
# Left out: sets too small to place. ml/alpha keeps 3 of its 56 letters (the rest are
# clipped), 8 s at 0.80 to ml/syllab; tn/alpha keeps 2 of 7 (2.4 s) at 0.75 to tn/syllab.
LEFT_OUT_SETS = frozenset({("ml", "alpha"), ("tn", "alpha")})
# Four Danish syllables are not the set's man (pitch near 122 Hz): no pitch within 70-400 Hz
# found, and 0.56 between the two GE2E 2-means clusters of the language's clips.
LEFT_OUT_FILES = frozenset(f"da/syllab/ad-{k}.ogg" for k in (23, 24, 25, 27))

# A letter or syllable is short: 0.2-0.25 s of active speech for many (Spanish "pe", Italian
# "t", Czech "ad-9"), loud and voiced. The default 0.25 s minimum called 33 of them
# near-silent; none of the 1836 clips is between 0 and 0.16 s active, so 0.15 s keeps the
# short ones and still drops an empty clip.
MIN_ACTIVE_SECONDS = 0.15
RULES = dataclasses.replace(ClipRules(), min_active_seconds=MIN_ACTIVE_SECONDS)


def find(prefixes: Sequence[Path]) -> Path | None:
    """The klettres data folder below the first of ``prefixes`` that has it."""
    return locate(DATA_DIR, prefixes)


def clips(root: Path) -> Iterator[Clip]:
    """Every letter and syllable clip, by language, set and file name; the talker is the
    language folder unless :data:`SET_TALKERS` names another (see the tables above)."""
    for language in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        for set_name in SETS:
            folder = language / set_name
            if (language.name, set_name) in LEFT_OUT_SETS or not folder.is_dir():
                continue
            talker = SET_TALKERS.get((language.name, set_name), language.name)
            for path in sorted(folder.iterdir()):
                name = f"{language.name}/{set_name}/{path.name}"
                if name in LEFT_OUT_FILES or path.suffix.lower() not in AUDIO_SUFFIXES:
                    continue
                if path.is_file():
                    yield Clip(talker, name, functools.partial(read_audio, str(path)))


SOURCE = VoiceSource(
    name="klettres",
    package="klettres-data",
    licence="GPL-2+ (debian/copyright, Files: *; nb's sounds from GCompris, GPL-2+)",
    description="KDE alphabet game: letters and syllables padded with silence, by language",
    find=find,
    clips=clips,
    rules=RULES,
)
