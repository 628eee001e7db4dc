"""hedgewars-data: the hedgehogs' voice packs of the game Hedgewars.

The Debian package ``hedgewars-data`` installs 15 voice packs, one folder each, in
``usr/share/games/hedgewars/Data/Sounds/voices/<pack>/<Sound>.ogg`` (44.1 or 48 kHz, mostly
stereo; 839 files, 14.9 minutes): short lines a hedgehog says in play ("Incoming!",
"Take cover!"), named by the game's sound (``Incoming.ogg``), the same names in every pack.
Ten packs are English characters (British, Classic, Default, HillBilly, Mobster, Pirate,
Robot, Russian, Singer, Surfer), five are localisations (``Default_es``, ``_pl``, ``_ru``,
``_uk``; ``Russian_pl``). The voices are acted high, cartoon voices (median F0 of every
pack 210-400 Hz; Robot's flattened to 195-250 Hz, 10th-90th percentile).

What is left out, and why:

* **Non-words** (:data:`NON_WORDS`, 269 files, 198 s): effort grunts, pain cries, laughs,
  coughs, screams and battle cries (``Jump*``, ``Ooff*``, ``Ow*``, ``Ouch``, ``Firepunch*``,
  ``Laugh``, ``Hmm``, ``Nooo``, ``Flyaway``, ``Poison*``). They are voiced, so the staging's
  voicing rule keeps them (voiced share 0.2-1.0), but they carry little of what identifies a
  talker. The staging rules (defaults) then drop 4 of the 558 clips listed: 2 clipped
  (0.14 % saturated pairs), 1 near-silent (0.24 s) and Mobster's gravelly "So long" (voiced
  share 0.19); right for this source.
* **Recordings in several talkers' folders** (19 word files): ``Classic`` and ``Default``
  share nine recordings (kept once, as the two are merged below); ``Default_uk`` reuses
  their "Uh-oh" (all three copies left out: it cannot be attributed to one talker).

Talkers: one per pack, except where the GE2E check (``hifi-tse check-speakers`` on the
staged packs) could not tell packs apart: packs are merged by complete linkage at centroid
cosine >= 0.95 (every pair in a merged group at least that; this project's same actor under
two names scored 0.94-0.98). The game's About page names four actors for the hedgehog
voices, so several packs per actor is expected. :data:`MERGE` lists the merges with their
figures. The encoder separates these voices poorly: every pack's nearest other
pack is at 0.87-0.97, and its own halves at 0.91-0.99 (27 of 30 half-pack centroids are
nearest to their own pack's other half), so the merges are the best evidence available,
not certain.

Licence, as ``usr/share/doc/hedgewars-data/copyright`` states it for
``share/hedgewars/Data/Sounds/*``: GFDL-1.3, Copyright 2004-2006 Andrey Korotaev.

Measured (``stage_source`` at 16 kHz, default rules): 558 clips listed, 554 kept; 11 talkers,
12.0 minutes (28-132 s each). Checked again after the merges, the merged ``Default`` is at
0.96 to Russian, Pirate and ``Default_es`` (a centroid of more varied clips sits nearer
the others): these identities stay uncertain.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from pathlib import Path

from hifi_tse.audio.io import read_audio
from hifi_tse.data.sources.base import Clip, VoiceSource, locate
from hifi_tse.data.sources.tuxpaint import distinct_by_content

VOICES_DIR = "usr/share/games/hedgewars/Data/Sounds/voices"
_SUFFIX = ".ogg"

# Voice pack -> talker, for packs the GE2E check could not tell apart (complete linkage at
# centroid cosine >= 0.95 over the staged packs, no pack merged; pairs' cosines below).
MERGE: dict[str, str] = {
    "Classic": "Default",  # Default 0.965, Surfer 0.960; nine identical recordings shared
    "Surfer": "Default",  # Default 0.973
    "Mobster": "British",  # British 0.962
    "Default_ru": "Default_es",  # Default_es 0.964
}

# Sound names (the game's, the same in every pack) that are not words: effort grunts, pain
# cries, laughs, coughs, screams and battle cries.
NON_WORDS: frozenset[str] = frozenset(
    {
        *(f"Jump{k}" for k in range(1, 4)),
        *(f"Ooff{k}" for k in range(1, 4)),
        *(f"Ow{k}" for k in range(1, 5)),
        *(f"Firepunch{k}" for k in range(1, 7)),
        "Ouch",
        "Laugh",
        "Hmm",
        "Nooo",
        "Flyaway",
        "PoisonCough",
        "PoisonMoan",
    }
)


def find(prefixes: Sequence[Path]) -> Path | None:
    """The voices folder below the first of ``prefixes`` that has it, else None."""
    return locate(VOICES_DIR, prefixes)


def talker_of(pack: str) -> str:
    """The talker of a voice pack: the pack's name unless :data:`MERGE` names another."""
    return MERGE.get(pack, pack)


def clips(root: Path) -> Iterator[Clip]:
    """Every spoken line of every pack below ``root`` (``<pack>/<Sound>.ogg``), by path;
    non-words (:data:`NON_WORDS`) and recordings found under two talkers left out, a
    recording repeated under one talker listed once."""
    root = Path(root)
    entries = [
        (talker_of(path.parent.name), path)
        for path in sorted(root.glob(f"*/*{_SUFFIX}"))
        if path.is_file() and path.stem not in NON_WORDS
    ]
    for talker, path in distinct_by_content(entries):
        name = path.relative_to(root).as_posix()
        yield Clip(talker, name, functools.partial(read_audio, str(path)))


SOURCE = VoiceSource(
    name="hedgewars",
    package="hedgewars-data",
    licence="GFDL-1.3 (Data/Sounds: Copyright 2004-2006 Andrey Korotaev)",
    description="short acted game lines of hedgehog voice packs (pitched up), a talker a pack",
    find=find,
    clips=clips,
)
