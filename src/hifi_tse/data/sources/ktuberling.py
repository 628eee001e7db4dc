"""ktuberling-data: the spoken object names of KDE's potato-guy game, in 26 languages.

Where: ``usr/share/ktuberling/sounds/<lang>/`` (Ogg Vorbis, WAV, Opus; 8-48 kHz, words of
0.5-2 s, median 0.9 s), and one ``<lang>.soundtheme`` per language saying which file the game
plays for each object. Only played files are listed (37 on disk are not: older French
copies, a theme tune, stray words), each content once (51 are byte copies: the four Serbian
variants share one recording, a few clips serve two objects).

Talkers: KDE translators recorded their language, often a playground at a time and not
always alone. A clip's ARTIST tag, where present, names its speaker (7 names in ``ca``, one
in ``da``, ``el``, ``lt``, ``wa``); the talker is then ``<lang>-<name>``, else ``<lang>``.
Untagged folders holding several voices are split by playground (the game's sound names:
Egypt, moon, pizzeria, ...) and sample rate, as :data:`UNTAGGED_GROUPS` records with the GE2E
figures that decided it. Left out: Nynorsk (text-to-speech, see
:data:`SYNTHETIC_LANGUAGES`) and groups too small or too mixed to place (53 clips).

Licence: GPL-2+ (``usr/share/doc/ktuberling-data/copyright``, ``Files: *``; no separate
statement for the sounds).

Measured (ktuberling-data 4:22.12.3, staged at 16 kHz with the default rules): 1561 clips
listed, 1486 kept, 75 clipped (41 of Slovenian's 66: up to 800 samples at or over 0.95 of full
scale in a 1 s word, in runs of up to 40), 33 talkers, 27.6 min; 9-208 s per talker,
median 35 s (ten single-language talkers have 9-15 s: two or three 4 s utterances).
GE2E check (``hifi-tse check-speakers``, all three KDE sources together): one pair at or over
0.9 within this source, da-Martha_Schou ~ sr 0.911 (two languages, kept apart); across
sources, ktuberling-uk_b ~ klettres-uk 0.917 (both Ukrainian: probably one person under two
sources' ids) and da-Martha_Schou ~ klettres-it 0.913 (two languages, kept apart).
"""

from __future__ import annotations

import functools
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from hifi_tse.audio.io import read_audio
from hifi_tse.data.sources.base import Clip, VoiceSource, locate
from hifi_tse.data.sources.tags import artist, ascii_name
from hifi_tse.errors import UserError
from hifi_tse.utils import file_digest

SOUNDS_DIR = "usr/share/ktuberling/sounds"
THEME_SUFFIX = ".soundtheme"

# Playgrounds, from the game's sound names (the same in every language): "<playground>_<thing>"
# for these, "<character>-tux" / "tux-<thing>" for Robin Hood, a bare name for the potato.
PLAYGROUND_PREFIXES = ("egypt", "moon", "pizzeria", "xmas", "tv", "robot_workshop", "butterflies")
ROBIN = "robin"
POTATO = "potato"
_PREFIXED = re.compile(rf"({'|'.join(PLAYGROUND_PREFIXES)})_")

# Left out whole: the Nynorsk clips carry the ARTIST line of the GCompris Nynorsk voice files
# ("Karl Ove Hufthammer / Øystein Steffensen-Alværvik", 48 kHz Opus from opusenc, 2022), which
# GCompris and klettres's nn/sounds.xml state were made with the CereVoice text-to-speech
# service; GE2E cannot tell a good TTS voice from a person, so it is not counted as a real one.
SYNTHETIC_LANGUAGES = frozenset({"nn"})

# One person under two spellings of an ARTIST tag: "Bernat" (21 potato clips) and "Bernat Mas"
# (18 Egypt clips) score 0.94 (GE2E centroid cosine of their joined clips); the other five
# Catalan names, recorded alongside (Mas and Llado families), score 0.67-0.88 against them.
ARTIST_ALIASES = {"Bernat": "Bernat Mas"}

# Untagged language folders that hold more than one voice. Groups are a playground, or a
# playground at one sample rate ("potato@8000"); the value is the talker within the language
# (None: left out). Unlisted groups are the language's main talker. Figures are GE2E centroid
# cosines of each group's clips as staged (trimmed, levelled, joined into >= 4 s). The rule:
# a group joins the talker whose groups it scores >= 0.88 with on average (one voice's groups
# score 0.88-0.99); a group of under 8 s, too little for a steady centroid, joins its nearest
# at >= 0.85 (Slovenian pizzeria, 4 s at 0.87) or is left out; a group whose clips, one by
# one, are nearer two different talkers is left out.
UNTAGGED_GROUPS: dict[str, dict[str, str | None]] = {
    "da": {
        "tv": "b",  # 0.84-0.86 to the main talker's four playgrounds (0.99 among those)
        # 0.90 to Martha Schou's tagged Robin Hood clips, 0.70-0.72 to the main talker
        "xmas": "Martha Schou",
    },
    "en": {"tv": None},  # 4 clips (5 s) at 0.61-0.66 to the main talker: too little to stand
    "es": {"potato@44100": None},  # 1 clip at 0.57 to the 8 kHz talker
    "fr": {
        "potato@8000": "b",  # the original 8 kHz set: 0.60-0.68 to the 44.1 kHz playgrounds
        "potato@22050": None,  # 2 clips (1.6 s), 0.56-0.65 to every other group
        "robin": "c",  # 0.73-0.83 to the main talker (0.82-0.97 among its playgrounds)
    },
    "nl": {"potato@22050": None},  # 2 clips at 0.68 to the 8 kHz talker
    "ru": {"robin": "b", "tv": "b", "xmas": "b"},  # 0.98 among them, 0.59-0.67 to the main
    "sl": {"tv": None},  # 1 clip (3 more clipped) at 0.72-0.74
    "uk": {
        "butterflies": "b",  # 0.96 to each other, 0.70-0.80 to the main talker
        "robot_workshop": "b",
        # Both voices: clip by clip, about a third of its 35 kept clips are nearer "b".
        "robin": None,
    },
    "wa": {POTATO: None},  # the one untagged clip, 0.61-0.70 to Djan Cayron's playgrounds
}


@dataclass(frozen=True)
class Sound:
    """One clip file a language's sound theme plays: ``file`` relative to the sounds folder."""

    language: str
    file: str
    playground: str


def find(prefixes: Sequence[Path]) -> Path | None:
    """The sounds folder below the first of ``prefixes`` that has it."""
    return locate(SOUNDS_DIR, prefixes)


def playground(sound_name: str) -> str:
    """The playground a game sound name belongs to (``"egypt_camel"`` → ``"egypt"``)."""
    match = _PREFIXED.match(sound_name)
    if match:
        return match.group(1)
    if sound_name.endswith("-tux") or sound_name.startswith("tux-"):
        return ROBIN
    return POTATO


def theme_sounds(theme: Path) -> list[Sound]:
    """The files ``theme`` (a ``<lang>.soundtheme``) plays, once each (the first name that
    plays a file gives its playground), sorted by file. Raises UserError when the theme is
    not readable XML or a sound lacks its name or file."""
    try:
        top = ET.parse(theme).getroot()
    except (ET.ParseError, OSError) as exc:
        raise UserError(f"{theme}: not a readable ktuberling sound theme ({exc})") from None
    language = top.get("code") or theme.name.removesuffix(THEME_SUFFIX)
    found: dict[str, Sound] = {}
    for sound in top.iter("sound"):
        name, file = sound.get("name"), sound.get("file")
        if not name or not file:
            raise UserError(f"{theme}: a <sound> without a name or file attribute")
        if Path(file).is_absolute() or ".." in Path(file).parts:
            raise UserError(f"{theme}: sound file {file!r} is outside the sounds folder")
        found.setdefault(file, Sound(language, file, playground(name)))
    return [found[f] for f in sorted(found)]


def talker_of(language: str, group: str, rate: int, speaker: str | None) -> str | None:
    """The talker id of a clip of ``language`` in playground ``group`` at ``rate`` Hz whose
    ARTIST tag is ``speaker``; None when it is left out (see the module's tables)."""
    if language in SYNTHETIC_LANGUAGES:
        return None
    if speaker is not None:
        return f"{language}-{ascii_name(ARTIST_ALIASES.get(speaker, speaker))}"
    groups = UNTAGGED_GROUPS.get(language, {})
    for key in (f"{group}@{rate}", group):
        if key in groups:
            who = groups[key]
            return None if who is None else f"{language}-{ascii_name(who)}"
    return language


def clips(root: Path) -> Iterator[Clip]:
    """Every clip a sound theme plays, by language then file, each file's content once (the
    Serbian variants share one recording; a few clips serve two objects), talker ids as
    :func:`talker_of` gives them."""
    seen: set[str] = set()
    for theme in sorted(Path(root).glob(f"*{THEME_SUFFIX}")):
        for sound in theme_sounds(theme):
            path = Path(root) / sound.file
            if not path.is_file():  # a theme may name files the package does not ship
                continue
            digest = file_digest(path)
            if digest in seen:
                continue
            seen.add(digest)
            rate = _rate(path)
            talker = talker_of(sound.language, sound.playground, rate, artist(path))
            if talker is not None:
                yield Clip(talker, sound.file, functools.partial(read_audio, str(path)))


def _rate(path: Path) -> int:
    try:
        return int(sf.info(str(path)).samplerate)
    except (sf.LibsndfileError, RuntimeError):
        return 0  # unreadable: staging reports it when it reads the clip


SOURCE = VoiceSource(
    name="ktuberling",
    package="ktuberling-data",
    licence="GPL-2+ (debian/copyright, Files: *; the sounds carry no other statement)",
    description="KDE potato-guy object names: 1 s words by language and ARTIST tag",
    find=find,
    clips=clips,
)
