"""flight-of-the-amazon-queen: the CD ("talkie") edition of the 1995 adventure game.

The package installs ScummVM's rebuilt data file ``usr/share/scummvm/flight-of-the-amazon-
queen/queen.1c`` (54 MB): one archive of 7,671 entries, 6,745 of them speech (``.SB``). Its
layout, read from ScummVM's queen engine (``resource.cpp``, ``sound.cpp``, ``talk.cpp``,
``cutaway.cpp``, ``logic.cpp``) and checked on the installed file:

* header: ``b"QTBL"``, a 6-byte version string (``CEM10``: CD, English), 2 unused bytes, a
  compression byte (0 none, 1 MP3, 2 Ogg Vorbis, 3 FLAC; this one is 1), the entry count
  (u16 big-endian); then the table, 21 bytes an entry: name (12 bytes, NUL padded), bundle
  (u8, always 1 here), offset and size (u32 big-endian);
* a speech entry is a bare MP3 stream (MPEG-2.5 layer III, 11,025 Hz mono): the rebuild
  dropped the original ``.SB`` header, so soundfile decodes the entry's bytes as they are.

Who speaks each line comes from the game's own data, not from guesses:

* dialogue lines ``NNhhhhJn``/``NNhhhhPn``: ``NN`` is the dialogue's number (stored in its
  ``.DOG`` entry), ``J`` the hero Joe, ``P`` the person Joe talks to; the engine plays every
  ``P`` line with that dialogue's one person, named here after the ``.DOG`` (BOB1-5 -> Trader
  Bob), as the dialogue's lines confirm (whom Joe greets, who introduces themself);
* ``JOEnnnnn``: Joe's remarks;
* cutaway lines ``<cutaway, padded to 5><record, 2 digits><part>``: the engine's record parse
  (``.CUT`` object records, animation frames skipped as the engine skips them) gives the
  speaking object, and ``QUEEN.JAS``/``QUEEN2.JAS`` its name: a character's name is used as
  is; objects the game makes talk under a stand-in name ("note", "door") are placed from
  what their lines say (:data:`OBJECT_TALKERS`), or left out;
* effects (``NNSSSSSS``), unused files and texts whose voice the data does not name: left out.

GE2E (``check-speakers`` and leave-one-out nearest-centroid accuracy over the staged
utterances) then decided: one voice behind two names merged (:data:`MERGE`, cosine >= 0.97:
the zombie women, Hans = Anderson, Skip = Sparky, the dungeon prisoner); dialogues where the
person does not speak as themself left out (grunts, barks, gagged, made-up language:
:data:`LEFT_OUT_DIALOGUES`); lines repeated byte for byte (the intro, stored twice) kept once.

Measured (staged at 16 kHz, one worker, 37 s with the archive cached): 6,342 clips of 34
talkers, 6,325 kept, 17 dropped (9 near-silent: 0.3-0.5 s grunts with <= 0.24 s active;
8 non-speech: voiced share 0.07-0.19, mostly Klunk's gravelly lines); no clip is clipped
(largest clipped share 0.0004, under the 0.001 rule, though 1,797 clips peak at full scale),
so the default rules fit. 264.6 minutes: Joe 102.6, Trader Bob 14.1, Sparky 13.8, 17 more
talkers 3.6-10.0 minutes, 13 under 3.5 (3.0 down to 0.2: Hugh). GE2E after the merges: no
pair at 0.97 or above (closest 0.960), each utterance nearest its own talker's centroid
96% of the time.

Licence (``usr/share/doc/flight-of-the-amazon-queen/copyright``, ``Files: *``, game content
(C) 1995 John Passfield and Steven Stamatiadis): the Flight of the Amazon Queen licence: free
to distribute, also within a larger (possibly commercial) collection, with the readme and
notices intact; no fee for the game itself; modified versions may be distributed if marked.
"""

from __future__ import annotations

import functools
import hashlib
import io
import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from hifi_tse.audio.io import to_mono
from hifi_tse.data.sources.base import Clip, VoiceSource, distinct_by_digest, locate
from hifi_tse.errors import UserError

ARCHIVE_DIR = "usr/share/scummvm/flight-of-the-amazon-queen"
ARCHIVE_NAME = "queen.1c"

# --- the archive: header, table, entries ---------------------------------------------------
SIGNATURE = b"QTBL"
# signature, version string (NUL padded), 2 unused bytes, compression, entry count
_HEADER = struct.Struct(">4s6s2xBH")
# name (NUL padded), bundle (the file number of a multi-file set), offset, size
_ENTRY = struct.Struct(">12sBII")
COMPRESSIONS = {0: "none", 1: "MP3", 2: "Ogg Vorbis", 3: "FLAC"}
DECODABLE = frozenset({1, 2, 3})  # what soundfile reads; 0 is raw .SB, not supported here
BUNDLE = 1  # every entry of the one-file (rebuilt) archive lives in queen.1c itself
SPEECH_SUFFIX = ".SB"


class QueenArchiveError(UserError):
    """A queen.1c archive or game-data entry that is not as expected (one line)."""


@dataclass(frozen=True)
class Entry:
    """One file in the archive: ``size`` bytes at ``offset`` (both in bytes)."""

    name: str
    offset: int
    size: int


@dataclass(frozen=True)
class Archive:
    """The parsed header and table of a queen.1c; entries by name, in table order."""

    path: Path
    version: str
    compression: int
    entries: dict[str, Entry]


def _entry_name(raw: bytes, path: Path, index: int) -> str:
    name = raw.split(b"\0", 1)[0]
    if not name or any(c < 0x21 or c > 0x7E for c in name):
        raise QueenArchiveError(f"{path}: table entry {index} has a non-printable name {raw!r}")
    return name.decode("ascii")


def read_archive(path: str | Path) -> Archive:
    """Parse the header and table of ``path``; every entry checked to lie inside the file,
    with a printable name and bundle 1. Raises :class:`QueenArchiveError` (one line)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(_HEADER.size)
            if len(head) < _HEADER.size or head[: len(SIGNATURE)] != SIGNATURE:
                raise QueenArchiveError(f"{path}: not a rebuilt queen archive (no QTBL header)")
            _, version, compression, count = _HEADER.unpack(head)
            table = f.read(count * _ENTRY.size)
            file_size = path.stat().st_size
    except OSError as exc:
        raise QueenArchiveError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(table) < count * _ENTRY.size:
        raise QueenArchiveError(f"{path}: table of {count} entries runs past the end of the file")
    if compression not in COMPRESSIONS:
        raise QueenArchiveError(f"{path}: unknown compression {compression} (expected 0-3)")
    entries: dict[str, Entry] = {}
    data_start = _HEADER.size + count * _ENTRY.size
    for k, (raw, bundle, offset, size) in enumerate(_ENTRY.iter_unpack(table)):
        name = _entry_name(raw, path, k)
        if name in entries:
            raise QueenArchiveError(f"{path}: entry {name} appears twice in the table")
        if bundle != BUNDLE:
            raise QueenArchiveError(f"{path}: entry {name} lives in bundle {bundle}, expected 1")
        if offset < data_start or offset + size > file_size:
            raise QueenArchiveError(
                f"{path}: entry {name} spans bytes {offset}-{offset + size}, outside the "
                f"data area {data_start}-{file_size}"
            )
        entries[name] = Entry(name, offset, size)
    text = version.split(b"\0", 1)[0].decode("ascii", errors="replace")
    return Archive(path, text, compression, entries)


def read_entry(path: str | Path, offset: int, size: int, name: str) -> bytes:
    """``size`` bytes at ``offset`` of the archive ``path`` (seeks: the archive is 54 MB)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(size)
    except OSError as exc:
        raise QueenArchiveError(f"{path}: cannot read entry {name} ({exc.strerror})") from None
    if len(data) != size:
        raise QueenArchiveError(f"{path}: entry {name} is cut short ({len(data)} of {size} bytes)")
    return data


def decode_speech(data: bytes, name: str) -> tuple[np.ndarray, int]:
    """One compressed speech entry (the whole entry is the MP3/Ogg/FLAC stream; the rebuild
    dropped the original .SB header) as ``((L,) float32 mono, rate Hz)``."""
    try:
        wav, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise QueenArchiveError(f"queen.1c entry {name}: not decodable audio ({reason})") from None
    return to_mono(np.asarray(wav, dtype=np.float32)), int(rate)


def read_speech(path: str, offset: int, size: int, name: str) -> tuple[np.ndarray, int]:
    """Read and decode one speech entry: ``((L,) float32 mono, rate Hz)``."""
    return decode_speech(read_entry(path, offset, size, name), name)


# --- the game data: who speaks each line ---------------------------------------------------
GAME_HEADER_BYTES = 20  # .JAS, .DOG and .CUT entries start with a header the engine skips
LOGIC_FILE = "QUEEN.JAS"  # rooms, objects, ...: counts, then 16-byte object records
TEXT_FILE = "QUEEN2.JAS"  # text lines: object descriptions, then object names, ...
_OBJECT = struct.Struct(">h12xh")  # name index (<0: hidden), ..., image (-3/-4: a person)
PERSON_IMAGES = frozenset({-3, -4})
_I16 = struct.Struct(">h")
_DOG_NUMBER_AT = 4  # a .DOG's dialogue number, after its level count and unique key
_U16 = struct.Struct(">H")

# Cutaway (.CUT) header: a panel mode, the record count, flags, then the offsets of the game
# states, the texts and the bank names, which come after the records.
_CUT_COUNT_AT, _CUT_DATA_OFFSETS_AT, _CUT_RECORDS_AT = 2, (6, 8, 10), 12
# Cutaway (.CUT) object records: 17 int16 fields, then a count and that many people turned
# on, then (animations only) frames of a header and 9 int16 fields, ended by a header of -2.
_CUT_FIELDS = struct.Struct(">17h")
_CUT_OBJECT, _CUT_ANIM_LIST, _CUT_EXECUTE, _CUT_FROM_OBJECT = 0, 4, 5, 12
_CUT_FRAME_BYTES = 18
_CUT_FRAMES_END = -2
_CUT_MAX_FRAME_HEADER = 1000  # the engine rejects larger frame headers as corrupt
# Object numbers of cutaway records: 0 the hero, -1 a room fade (the hero again), -2 and -3 a
# text spoken by a voice the data does not name, -4 a text shown only.
ROOM_FADE, JOE = -1, 0
CUT_KEY_WIDTH = 5  # a cutaway's voice files: its name padded with "_" to 5, 2-digit record

# Speech file names. Dialogue (.DOG) lines: the dialogue's number (2 digits), the line's
# node (4 hex digits, or XXXX/SSSS for the greetings), J (the hero) or P (the person talked
# to), a part number. The hero's remarks: JOE, 4 digits, part. Cutaway lines: the key above
# and a part (hex digit).
DIALOGUE_LINE = re.compile(r"(\d\d)(?:[0-9A-F]{4}|XXXX|SSSS)([JP])[0-9A-F]")
JOE_LINE = re.compile(r"JOE\d{4}[0-9A-F]")
CUTAWAY_LINE = re.compile(r"(.{7})[0-9A-F]")
HERO = "joe"


def _i16(data: bytes, at: int) -> int:
    return _I16.unpack_from(data, at)[0]


def _game_entry(archive: Archive, name: str, skip: int = GAME_HEADER_BYTES) -> bytes:
    entry = archive.entries.get(name)
    if entry is None:
        raise QueenArchiveError(f"{archive.path}: no {name} entry (needed to name the talkers)")
    data = read_entry(archive.path, entry.offset, entry.size, name)
    return data[skip:]


def read_objects(archive: Archive) -> list[tuple[str, int]]:
    """Every object of the game as ``(name, image)``, by object number (index 0 unused)."""
    logic = _game_entry(archive, LOGIC_FILE)
    try:
        _, name_count, count, description_count = struct.unpack_from(">4H", logic)
        records = [_OBJECT.unpack_from(logic, 8 + k * 16) for k in range(count)]
    except struct.error:
        raise QueenArchiveError(f"{archive.path}: {LOGIC_FILE} is cut short") from None
    lines = _game_entry(archive, TEXT_FILE, skip=0).decode("latin-1").splitlines()
    names = lines[description_count : description_count + name_count]
    if len(names) < name_count:
        raise QueenArchiveError(f"{archive.path}: {TEXT_FILE} has too few lines for the names")
    objects = [("", 0)]
    for name, image in records:
        objects.append((names[abs(name) - 1] if 0 < abs(name) <= name_count else "", image))
    return objects


def read_dialogues(archive: Archive) -> dict[int, str]:
    """Dialogue number (the first two digits of its voice files) -> .DOG name, e.g. 6 -> BOB1."""
    numbers: dict[int, str] = {}
    for name in archive.entries:
        if name.endswith(".DOG"):
            data = _game_entry(archive, name)
            if len(data) < _DOG_NUMBER_AT + _I16.size:
                raise QueenArchiveError(f"{archive.path}: {name} is cut short")
            numbers[_i16(data, _DOG_NUMBER_AT)] = name[: -len(".DOG")]
    return numbers


def _record_speaker(fields: tuple[int, ...], objects: list[tuple[str, int]]) -> tuple[int, bool]:
    """(who speaks a cutaway record: an object number, 0 for the hero, -1 for no one or an
    unknown voice; whether animation frames follow it), as the game engine decides."""
    number = JOE if fields[_CUT_OBJECT] == ROOM_FADE else fields[_CUT_OBJECT]
    still = fields[_CUT_ANIM_LIST] == 0
    person = still and (number == JOE or (number > 0 and objects[number][1] in PERSON_IMAGES))
    if fields[_CUT_FROM_OBJECT] > 0 or number < JOE:  # a copied object, or a text
        return -1, False
    if person:
        return number, False
    return -1, fields[_CUT_EXECUTE] != 0  # an animation: its frames follow if it runs


def read_cutaway(data: bytes, objects: list[tuple[str, int]], name: str) -> dict[int, int]:
    """Record number (1-based) -> speaking object (0: the hero) of one .CUT entry (without its
    header), for the records that speak with a known voice."""
    at, speakers = _CUT_RECORDS_AT, {}
    try:
        count = abs(_i16(data, _CUT_COUNT_AT))
        end = min(_U16.unpack_from(data, offset)[0] for offset in _CUT_DATA_OFFSETS_AT)
        for record in range(1, count + 1):
            fields = _CUT_FIELDS.unpack_from(data, at)
            at += _CUT_FIELDS.size
            if fields[_CUT_OBJECT] >= len(objects):
                raise QueenArchiveError(
                    f"queen.1c {name}: record {record} names object {fields[_CUT_OBJECT]}, "
                    f"past the game's {len(objects) - 1}"
                )
            at += 2 + 2 * _i16(data, at)  # the people turned on
            speaker, animated = _record_speaker(fields, objects)
            while animated:
                header = _i16(data, at)
                at += 2
                if header == _CUT_FRAMES_END:
                    break
                if header > _CUT_MAX_FRAME_HEADER:
                    raise QueenArchiveError(f"queen.1c {name}: record {record} is corrupt")
                at += _CUT_FRAME_BYTES
            if speaker >= 0:
                speakers[record] = speaker
    except (struct.error, IndexError):
        raise QueenArchiveError(f"queen.1c {name}: records run past the end") from None
    if at > end:
        raise QueenArchiveError(f"queen.1c {name}: records overrun the data after them")
    return speakers


def read_cutaways(archive: Archive, objects: list[tuple[str, int]]) -> dict[str, tuple[str, int]]:
    """Voice key (7 characters, e.g. ``C1A__03``) -> (cutaway name, speaking object) of every
    cutaway line with a known voice. Keys two records would share (past record 99) are left
    out."""
    keys: dict[str, tuple[str, int]] = {}
    shared: set[str] = set()
    for name in archive.entries:
        if not name.endswith(".CUT"):
            continue
        cutaway = name[: -len(".CUT")]
        base = cutaway.ljust(CUT_KEY_WIDTH, "_")[:CUT_KEY_WIDTH]
        for record, speaker in read_cutaway(_game_entry(archive, name), objects, name).items():
            key = base + f"{record:02d}"[:2]
            if key in keys:
                shared.add(key)
            keys[key] = (cutaway, speaker)
    return {k: v for k, v in keys.items() if k not in shared}


# --- talkers ------------------------------------------------------------------------------
# The person of each dialogue (its .DOG name, else that name without trailing digits), as the
# dialogue's own lines show (whom Joe greets, who introduces themself).
DIALOGUE_TALKERS: dict[str, str] = {
    "AND": "anderson",
    "APE": "gorilla",  # APE2, APE3: the gorilla in a costume, talking
    "BOB": "trader_bob",
    "BUD": "bud",
    "CHEF": "chef",
    "CHIEF": "chief",
    "DEATH": "ferryman",  # "What do you want mortal?" ... "I've had a few nibbles."
    "FAYE": "faye",
    "FRANK": "frank",
    "HENRY": "henry",
    "IAN": "ian",
    "JIM": "jimmy",
    "JOHN": "john",
    "KLUNK": "klunk",
    "LARIS": "mike_laris",  # "I'm Mike Laris the bellboy."
    "LOLA": "lola",
    "LOU": "skip",  # "Hello Skip."
    "MAN1": "man1",  # a prisoner in the Amazons' dungeon
    "MAN2": "ernie_wilkins",  # "I'm Ernest Wilkins."
    "NAOMI": "naomi",
    "ORACLE": "guardian",
    "PRIN": "azura",
    "SEC": "secretary",
    "SHOWERAM": "showering_amazon",
    "SPARKY": "sparky",
    "TAM": "mary_lou",  # "Howdy Joe, I'm Mary-Lou Cook."
    "WEDGE": "wedgewood",
    "WITCH": "witch_doctor",
    "ZOMBIE1": "zombie1",
    "ZOMBIE2": "zombie2",
}

# Dialogues whose person does not speak as themself: the ape's grunts (APE), barking (DOG),
# Sparky gagged (SPARKY8), the pygmies' made-up language (CHIEF4, WITCH4). Their lines also
# stand apart from the rest of the character's in GE2E: leave-one-out nearest-centroid
# accuracy 0.90-1.00 against 0.42-0.89 for the character's other dialogues.
LEFT_OUT_DIALOGUES = frozenset({"APE", "DOG", "SPARKY8", "CHIEF4", "WITCH4"})

# Cutaway speakers by their object's name in the game, where it is a character's name.
CHARACTER_TALKERS: dict[str, str] = {
    "Anderson": "anderson",
    "Bud": "bud",
    "Eddy": "eddy",
    "Faye": "faye",
    "Frank": "frank",
    "Henry": "henry",
    "Hugh": "hugh",
    "Ian": "ian",
    "Jimmy": "jimmy",
    "Joe King": HERO,
    "John": "john",
    "Klunk": "klunk",
    "Lola": "lola",
    "Mary-Lou": "mary_lou",
    "Naomi": "naomi",
    "Princess Azura": "azura",
    "Rico": "rico",
    "Rita": "rita",
    "Skip": "skip",
    "Sparky": "sparky",
    "Trader Bob": "trader_bob",
    "Wedgewood": "wedgewood",
    "bedraggled prisoner": "bedraggled_prisoner",
    "bellboy": "mike_laris",
    "chef": "chef",
    "chief": "chief",
    "ferryman": "ferryman",
    "gorilla in costume": "gorilla",
    "guardian": "guardian",
    "secretary": "secretary",
    "showering Amazon": "showering_amazon",
    "tired prisoner": "tired_prisoner",
    "vicious dinosaur": "gorilla",  # the gorilla in its costume: "This is my hollow log"
    "witch doctor": "witch_doctor",
    "zombie woman": "zombie_woman",
}
# Not placed: "gorilla" (grunts), "guard dog" (barks), "guard" and "telephone" (unnamed
# guards), and stand-ins whose lines do not say who speaks ("buttons", "rock", "torch",
# "lily pad").

# Cutaway stand-in objects (an object the cutaway makes talk) by number, from the lines.
OBJECT_TALKERS: dict[int, str] = {
    34: "wedgewood",  # "path" (C5C): "SQWAWK! Princess Azura is in trouble!"
    169: "azura",  # "door" (C103G): "We must hurry back to my people!"
    292: "hans",  # "note" (C41B): Faye answers it "Good thinking Hans."
    298: "faye",  # "note" (C41B): Hans answers it "Be careful Faye, ..."
    484: "faye",  # "smoke" (C76B): "I hitched a ride with Anderson in the airship."
    738: "azura",  # "azura obj"
}

# (cutaway, object) -> talker (None: left out), where the object speaks for someone else
# there, or not as itself.
CUTAWAY_TALKERS: dict[tuple[str, int], str | None] = {
    # "At last, I have made it into the valley!"; GE2E: object 517's lines nearest Frank, 0.970
    ("C69Z", 517): "frank",
    ("C69B", 517): None,  # Sparky gagged: "Mffrlt!?"
    ("C69I", 517): None,  # Sparky gagged in part of the scene: "Frrblt!"
}

# Talker -> talker, where GE2E shows one voice behind two names. Rule: merge at centroid
# cosine >= 0.97; every such pair here also has leave-one-out nearest-centroid accuracy
# <= 0.89 between the two, as two halves of one character's dialogues have (0.47-0.81).
# Kept apart, the closest pairs of the final talkers: bud/frank 0.960 (accuracy 0.96),
# ernie_wilkins/john 0.960 (0.89), anderson/henry 0.959 (0.94), azura/lola 0.959 (0.99).
MERGE: dict[str, str] = {
    "zombie1": "zombie_woman",  # ZOMBIE1 ~ ZOMBIE2: 0.991 (accuracy 0.63)
    "zombie2": "zombie_woman",  # ~ the cutaways' "zombie woman": 0.971 (0.74)
    "hans": "anderson",  # 0.983 (0.70)
    "skip": "sparky",  # 0.981 (0.89)
    "man1": "bedraggled_prisoner",  # 0.978 (0.78)
}


def line_role(
    stem: str, dialogues: dict[int, str], cutaways: dict[str, tuple[str, int]]
) -> str | None:
    """Who says the speech entry ``stem`` (its name without .SB) as the game data tells:
    ``"joe"``, ``"dialogue:<DOG name>"`` (the person talked to), ``"object:<cutaway>:<number>"``
    (a cutaway speaker), or None (effects, unused files, lines shown as text)."""
    dialogue = DIALOGUE_LINE.fullmatch(stem)
    if dialogue and int(dialogue.group(1)) in dialogues:
        if dialogue.group(2) == "J":
            return HERO
        return f"dialogue:{dialogues[int(dialogue.group(1))]}"
    if JOE_LINE.fullmatch(stem):
        return HERO
    cutaway = CUTAWAY_LINE.fullmatch(stem)
    if cutaway and cutaway.group(1) in cutaways:
        name, speaker = cutaways[cutaway.group(1)]
        return HERO if speaker == JOE else f"object:{name}:{speaker}"
    return None


def talker_of(role: str | None, objects: list[tuple[str, int]]) -> str | None:
    """The talker id of a :func:`line_role` (None: not placed)."""
    if role is None or role == HERO:
        return role
    kind, _, key = role.partition(":")
    talker: str | None = None
    if kind == "dialogue" and key not in LEFT_OUT_DIALOGUES:
        talker = DIALOGUE_TALKERS.get(key) or DIALOGUE_TALKERS.get(key.rstrip("0123456789"))
    elif kind == "object":
        cutaway, _, number_text = key.partition(":")
        number = int(number_text)
        if (cutaway, number) in CUTAWAY_TALKERS:
            talker = CUTAWAY_TALKERS[(cutaway, number)]
        else:
            talker = OBJECT_TALKERS.get(number) or CHARACTER_TALKERS.get(objects[number][0])
    return MERGE.get(talker, talker) if talker else None


def speech_lines(archive: Archive) -> list[tuple[Entry, str | None, str | None]]:
    """Every speech entry of ``archive`` with its :func:`line_role` and :func:`talker_of`, in
    table order."""
    objects = read_objects(archive)
    dialogues = read_dialogues(archive)
    cutaways = read_cutaways(archive, objects)
    lines = []
    for entry in archive.entries.values():
        if entry.name.endswith(SPEECH_SUFFIX):
            role = line_role(entry.name[: -len(SPEECH_SUFFIX)], dialogues, cutaways)
            lines.append((entry, role, talker_of(role, objects)))
    return lines


def distinct_lines(archive: Archive, lines: list[tuple[Entry, str]]) -> list[tuple[Entry, str]]:
    """``(entry, talker)`` pairs without repeated audio: an entry whose bytes occur again
    under the same talker is kept once (the intro's lines are stored twice); one whose bytes
    occur under two talkers is left out."""
    digests = [
        hashlib.blake2b(read_entry(archive.path, e.offset, e.size, e.name)).digest()
        for e, _ in lines
    ]
    return distinct_by_digest(lines, digests)


def find(prefixes: Sequence[Path]) -> Path | None:
    """The folder holding queen.1c below the first of ``prefixes`` that has it, else None."""
    found = locate(f"{ARCHIVE_DIR}/{ARCHIVE_NAME}", prefixes)
    return found.parent if found is not None else None


def clips(root: Path) -> Iterator[Clip]:
    """Every distinct speech line of ``root``/queen.1c whose talker is known, in table order."""
    archive = read_archive(Path(root) / ARCHIVE_NAME)
    if archive.compression not in DECODABLE:
        raise QueenArchiveError(
            f"{archive.path}: speech is {COMPRESSIONS[archive.compression]}, expected MP3, "
            "Ogg Vorbis or FLAC"
        )
    placed = [(entry, talker) for entry, _, talker in speech_lines(archive) if talker]
    for entry, talker in distinct_lines(archive, placed):
        read = functools.partial(
            read_speech, str(archive.path), entry.offset, entry.size, entry.name
        )
        yield Clip(talker, entry.name, read)


SOURCE = VoiceSource(
    name="amazon_queen",
    package="flight-of-the-amazon-queen",
    licence="Flight of the Amazon Queen licence (free distribution with notices intact, no "
    "fee for the game itself; (C) 1995 John Passfield and Steven Stamatiadis)",
    description="English adventure-game dialogue, 34 talkers, MP3 at 11.025 kHz",
    find=find,
    clips=clips,
)
