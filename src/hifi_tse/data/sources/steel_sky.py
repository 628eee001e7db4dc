"""beneath-a-steel-sky: the talkie (CD) edition of Revolution Software's 1994 adventure.

**Where the speech is.** ``usr/share/scummvm/beneath-a-steel-sky/`` holds ``sky.dsk`` (every
game file, 72 MB), its index ``sky.dnr`` (u32 count, then 8-byte entries: u16 file number,
u24 offset with bit 23 meaning 16-byte units, u24 flags: bits 0-21 size, bit 22 "packed
without its header", bit 23 "stored") and ScummVM's ``sky.cpt`` (the game objects, with
names). Every file starts with a 22-byte header of 11 u16; when bit 7 of its first word is
set the rest is RNC ProPack method 1 (:mod:`hifi_tse.data.sources.rnc`). A speech file is
that header, then unsigned 8-bit mono PCM at 11025 Hz. In-game lines are files 50000 +
section base + line, for text number ``section << 12 | line`` (ScummVM ``sound.cpp``); the CD
intro's 88 voices are 59500-59672 (``intro.cpp``). The other 59xxx files are the intro's
pictures, palettes and background sounds, not speech (read as 8-bit audio they look like
clipped noise), so only the intro's voice files are listed. Facts read from ScummVM's sky
engine (``disk.cpp``, ``sound.cpp``, ``intro.cpp``, ``logic.cpp``, ``compact.cpp``,
``skydefs.h``); the code is ours.

**Talkers.** The data has no speaker labels and the numbering follows game sections, not
characters; but the game scripts say who speaks. Each speech call in the bytecode (``fnSpeakMe``
and its variants: speaker, text number, animation) names its speaker as a constant object
(named in ``sky.cpt``), as the object running the script (CUR_ID: named by which objects run
that script, from ``sky.cpt`` and the scripts' own start calls), or as the conversation
partner (variable 120: the partner of each conversation script, ``SPEECH_SCRIPTS``, or the
object the script last set it to). Foster says the lines of the conversation scripts he runs
and the dialogue-menu lines (``fnAskThis``); the intro's speakers come from ``intro.cpp``'s
comments. Keys that share a file are one voice, so names spread along them; a file whose
keys disagree (LOB_DAD_SPEECH: Dad or his son, 1.7 min) or lead nowhere stays unlabelled
and is left out (the default talker map), not guessed. Then GE2E merges (``VOICE_MERGES``,
``LEFT_OUT``, rule and figures there). Audio-only GE2E clustering (:class:`GE2EClusters`) is
a fallback talker map and a check: at its default threshold it finds 19 clusters over 63 of
96 min (clips >= 1 s), 86 % pure against the script labels but Foster split in six: 8-bit,
11 kHz speech from one small cast is too uniform for blind clustering.

**Licence** (``usr/share/doc/beneath-a-steel-sky/copyright``, all files):
Beneath-a-Steel-Sky-License: free to distribute, also in aggregate (Linux distributions),
with the readme and notices intact; may be modified and redistributed with a prominent
notice; no fee for the game itself. Game content (C) Revolution Software Ltd.

**Measured** (Debian's v0.0372 data, staged at 16 kHz): 3579 speech clips (3491 in-game, 88
intro), 119.4 min, all RNC-packed (60.9 MB → 79.0 MB of PCM), both CRCs right on every one;
~29 ms to read and unpack a clip (CPU, beside other jobs). The scripts place 3389 clips on
41 talkers. Staging keeps 2995 and drops 580 as clipped (16 %: flat tops of 4-13 samples at
the rails in 0.1-2.7 % of sample pairs, genuine; Joey's robot voice loses 200 of 228), 1
near-silent, 3 non-speech; 165 kept clips are unlabelled and left out. 99.6 min on 40
talkers: Foster 48.8, Lamb 5.3, Jobsworth 4.1, Anchor 3.3, Ken 3.2, Foreman 2.8, Burke 2.5,
Chutney 2.5, Henri 2.1, Anita 2.0, Danielle 1.8, Walter 1.8, ...; the smallest (Shades, an
android) have one clip of 1-3 s.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hifi_tse.data.sources import rnc
from hifi_tse.data.sources.base import Clip, VoiceSource, locate
from hifi_tse.errors import UserError

DATA_DIR = "usr/share/scummvm/beneath-a-steel-sky"
INDEX_NAME = "sky.dnr"  # the disk index ("dinner table")
DISK_NAME = "sky.dsk"  # every game file, most RNC-packed
COMPACT_NAME = "sky.cpt"  # ScummVM's extract of the game objects ("compacts"), with names

# --- the disk: index entries and file headers ----------------------------------------------
SAMPLE_RATE = 11025  # Hz; speech is unsigned 8-bit mono PCM
U8_MIDPOINT = 128  # unsigned 8-bit zero
INDEX_COUNT_BYTES = 4  # u32 LE entry count, then the entries
INDEX_ENTRY_BYTES = 8  # u16 file number, u24 offset field, u24 flags field (all LE)
OFFSET_MASK = 0x7FFFFF
OFFSET_SCALED_BIT = 23  # offset field: set when the offset is stored in 16-byte units
OFFSET_SCALE_SHIFT = 4  # (8-byte units in the 0.0331 floppy release only; not supported)
SIZE_MASK = 0x3FFFFF  # flags field: size on disk, bytes
NO_HEADER_BIT = 22  # flags field: the packed stream holds the file without its header
STORED_BIT = 23  # flags field: set when the file is stored unpacked
FILE_HEADER_BYTES = 22  # every game file starts with 11 u16 LE (ScummVM's DataFileHeader)
HEADER_PACKED_BIT = 7  # header word 0: set when the data after the header is RNC-packed

# --- which files are speech ----------------------------------------------------------------
SPEECH_FIRST = 50000  # game speech is file SPEECH_FIRST + section base + line
# Text numbers are section << 12 | line; a section's lines start at these file offsets.
SECTION_BASES = (0, 600, 1100, 2430, 3380, 4530, 5080, 5230)
INTRO_FIRST = 59000  # files from here are the CD intro: voices, background sounds, pictures
# The first freeware CD release (v0.0368, 5099 index entries) stores texts 20905 and 20906
# at twice the rate (ScummVM's workaround for BASS bug #897775); Debian ships v0.0372.
V0368_ENTRIES = 5099
V0368_DOUBLE_RATE = (54955, 54956)  # speech_file(20905), speech_file(20906)


class SkyDataError(UserError):
    """A sky.dnr / sky.dsk / sky.cpt that is not as expected (one line)."""


@dataclass(frozen=True)
class DiskEntry:
    """Where one game file lives in sky.dsk and how it is stored."""

    number: int
    offset: int  # bytes
    size: int  # bytes on disk
    stored: bool  # unpacked on disk (the header's packed flag is then ignored)
    headerless: bool  # the packed stream holds the file without its 22-byte header


@functools.lru_cache(maxsize=4)
def read_index(path: str) -> dict[int, DiskEntry]:
    """The entries of a sky.dnr by file number. Raises :class:`SkyDataError` (one line)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise SkyDataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    count = int.from_bytes(raw[:INDEX_COUNT_BYTES], "little") if len(raw) >= 4 else 0
    body = raw[INDEX_COUNT_BYTES:]
    if count == 0 or len(body) < count * INDEX_ENTRY_BYTES:
        raise SkyDataError(
            f"{path}: a sky.dnr of {count} entries needs {count * INDEX_ENTRY_BYTES + 4} bytes, "
            f"found {len(raw)}"
        )
    table = np.frombuffer(body[: count * INDEX_ENTRY_BYTES], dtype=np.uint8)
    table = table.reshape(count, INDEX_ENTRY_BYTES).astype(np.int64)
    number = table[:, 0] | table[:, 1] << 8
    offset_field = table[:, 2] | table[:, 3] << 8 | table[:, 4] << 16
    flags = table[:, 5] | table[:, 6] << 8 | table[:, 7] << 16
    offset = offset_field & OFFSET_MASK
    scaled = (offset_field >> OFFSET_SCALED_BIT) & 1
    offset = np.where(scaled == 1, offset << OFFSET_SCALE_SHIFT, offset)
    entries = {}
    for n, o, f in zip(number.tolist(), offset.tolist(), flags.tolist()):
        stored, headerless = bool(f >> STORED_BIT & 1), bool(f >> NO_HEADER_BIT & 1)
        entries[n] = DiskEntry(n, o, f & SIZE_MASK, stored, headerless)
    return entries


def load_game_file(disk: str | Path, entry: DiskEntry) -> bytes:
    """One game file as the game sees it: unpacked, its 22-byte header in front (unless the
    index marks it headerless). Raises :class:`SkyDataError` / :class:`rnc.RncError`."""
    try:
        with open(disk, "rb") as f:
            f.seek(entry.offset)
            data = f.read(entry.size)
    except OSError as exc:
        raise SkyDataError(f"{disk}: cannot read file {entry.number} ({exc.strerror})") from None
    if len(data) != entry.size:
        raise SkyDataError(
            f"{disk}: file {entry.number} is cut short ({len(data)} of {entry.size} bytes)"
        )
    if entry.stored or len(data) < FILE_HEADER_BYTES:
        return data
    flag = int.from_bytes(data[:2], "little")
    if not flag >> HEADER_PACKED_BIT & 1:
        return data
    try:
        body = rnc.unpack(data[FILE_HEADER_BYTES:])
    except rnc.RncError as exc:
        raise rnc.RncError(f"{disk}: file {entry.number}: {exc}") from None
    return body if entry.headerless else data[:FILE_HEADER_BYTES] + body


def is_packed(disk: str | Path, entry: DiskEntry) -> bool:
    """Whether ``entry`` is stored RNC-packed (reads its 2-byte header flag)."""
    if entry.stored:
        return False
    with open(disk, "rb") as f:
        f.seek(entry.offset)
        flag = int.from_bytes(f.read(2), "little")
    return bool(flag >> HEADER_PACKED_BIT & 1)


def speech_audio(data: bytes) -> np.ndarray:
    """The PCM of a speech file (after its 22-byte header), unsigned 8-bit → ``(L,)``
    float32 in [-1, 1)."""
    pcm = np.frombuffer(data, dtype=np.uint8, offset=FILE_HEADER_BYTES)
    return (pcm.astype(np.float32) - U8_MIDPOINT) / U8_MIDPOINT


def read_speech(root: str, number: int) -> tuple[np.ndarray, int]:
    """Speech file ``number`` of the game installed at ``root``: ``((L,) float32, rate Hz)``,
    11025 Hz (but see :data:`V0368_DOUBLE_RATE`)."""
    index = read_index(str(Path(root) / INDEX_NAME))
    entry = index.get(number)
    if entry is None:
        raise SkyDataError(f"{Path(root) / INDEX_NAME}: no file {number}")
    double = len(index) == V0368_ENTRIES and number in V0368_DOUBLE_RATE
    rate = 2 * SAMPLE_RATE if double else SAMPLE_RATE
    return speech_audio(load_game_file(Path(root) / DISK_NAME, entry)), rate


def speech_file(text_number: int) -> int | None:
    """The speech file the game plays for a text number (None: a section without speech)."""
    section, line = text_number >> 12, text_number & 0xFFF
    if section >= len(SECTION_BASES):
        return None
    return SPEECH_FIRST + SECTION_BASES[section] + line


# --- game objects (sky.cpt): names, and which scripts each object runs --------------------
CPT_VERSION = 0
COMPACT_KIND = 1  # object type of a "compact" (a character, item or exit) in sky.cpt
# Word offsets inside a compact (ScummVM's struct Compact).
CPT_GET_TO_TABLE = 5  # id of a list of (place, script) pairs: the get-to scripts
CPT_ACTION_SCRIPT = 17  # what the player runs when using the object
CPT_OWN_SCRIPTS = (27, 29, 31, 33)  # base, action, get-to and extra script: run by the object


@dataclass(frozen=True)
class Compact:
    """One object of sky.cpt: its name, type and ``(size,)`` int64 data words."""

    name: str
    kind: int
    words: np.ndarray


def _u16(raw: bytes, at: int) -> int:
    return int.from_bytes(raw[at : at + 2], "little")


@functools.lru_cache(maxsize=4)
def read_compacts(path: str) -> dict[int, Compact]:
    """The objects of ScummVM's sky.cpt by id (list << 12 | index). Layout: u16 version (0),
    u16 list count, u16 length per list, u32 words of object data, u32 words of the object
    table (per object: u16 size, and if non-zero u16 type and ``size`` data words), u32
    bytes of names (one NUL-terminated name per object present, in table order)."""
    try:
        raw = Path(path).read_bytes()
        if _u16(raw, 0) != CPT_VERSION:
            raise SkyDataError(f"{path}: sky.cpt version {_u16(raw, 0)}, expected 0")
        lists = _u16(raw, 2)
        lengths = [_u16(raw, 4 + 2 * k) for k in range(lists)]
        at = 4 + 2 * lists + 4  # past the object data size
        table_words = int.from_bytes(raw[at : at + 4], "little")
        table = np.frombuffer(raw, dtype="<u2", count=table_words, offset=at + 4)
        at += 4 + 2 * table_words
        names_size = int.from_bytes(raw[at : at + 4], "little")
        names = raw[at + 4 : at + 4 + names_size].split(b"\0")
        out, pos, name_index = {}, 0, 0
        for lst, length in enumerate(lengths):
            for index in range(length):
                size = int(table[pos])
                if size:
                    name = names[name_index].decode("ascii", "replace")
                    words = table[pos + 2 : pos + 2 + size].astype(np.int64)
                    out[lst << 12 | index] = Compact(name, int(table[pos + 1]), words)
                    name_index += 1
                    pos += 1 + size
                pos += 1
    except (OSError, ValueError, IndexError) as exc:
        raise SkyDataError(f"{path}: not a readable sky.cpt ({exc})") from None
    return out


# --- who speaks: the game scripts ------------------------------------------------------------
# Scripts are 16-bit LE bytecode in files SCRIPT_MODULE_FIRST + module; word 0 of a module is
# its script count n, words 1..n where each script starts; script number = module << 12 | k.
# Arguments are pushed, then `call_mcode <argument count> <function number * 4>` runs an
# engine function (opcodes and numbering as in ScummVM's logic.cpp).
SCRIPT_MODULE_FIRST = 60400
SCRIPT_MODULES = 7
OP_PUSH_VARIABLE = 0  # operand: variable number * 4
OP_PUSH_NUMBER = 2
OP_PUSH_OFFSET = 15  # a field of the running object
OP_CALL_MCODE = 11
PUSH_OPS = (OP_PUSH_VARIABLE, OP_PUSH_NUMBER, OP_PUSH_OFFSET)  # two-word pushes
MCODE_SCALE = 4
VAR_SCALE = 4
# fnSpeakMe, fnSpeakMeDir, fnSpeakWait, fnSpeakWaitDir: (speaker object, text number, anim)
MCODE_SPEAK = (35, 36, 37, 38)
MCODE_ASK_THIS = 70  # fnAskThis(text, anim): a line the player may choose (and then says)
VAR_CUR_ID = 12  # the object running the script
# Set before a conversation to the object Foster talks to (the conversation scripts run on
# Foster and make this object answer with fnSpeakWait).
VAR_PARTNER = 120
PLAYER = "foster"

# The conversation scripts (numbers from ScummVM's skydefs.h, e.g. JOBS_SPEECH = 0x10a9):
# run by Foster, who says their CUR_ID lines; the partner says their VAR_PARTNER lines.
SPEECH_SCRIPTS = {
    0x0040: "vincent", 0x0041: "eddie", 0x0042: "blunt", 0x0043: "colston",
    0x0044: "gallagher", 0x0045: "chutney", 0x005D: "lamb", 0x0076: "mantrach",
    0x10A9: "jobsworth", 0x10AB: "joey",
    0x2105: "anita", 0x2106: "lamb", 0x2108: "foreman", 0x2109: "gordon", 0x210A: "guard",
    0x210C: "wreck_guard", 0x210D: "dad", 0x210E: "son", 0x210F: "radman", 0x2110: "joey",
    0x3139: "burke", 0x313A: "jason", 0x313B: "joey", 0x313C: "anchor", 0x313D: "trevor",
    0x313E: "helga", 0x313F: "gallagher",
    0x4001: "danielle", 0x4002: "henri", 0x4003: "buzzer", 0x4004: "jukebox",
    0x4005: "barry", 0x4006: "babs",
    0x5001: "walter", 0x5002: "joey", 0x5003: "ken",
}  # fmt: skip
# Objects that are one character under several names (sky.cpt name → talker).
COMPACT_TALKERS = {
    "sc31_guard": "blunt",  # shares lines with BLUNT_SPEECH's partner
    "sc36_gallagher": "gallagher",
    "sc42_jobsworth": "jobsworth",
    "sc36_colston": "colston",
    "mini_so": "security_officer",  # the same officer as a small and a full-size sprite
    "full_so": "security_officer",
    "medi": "joey",  # Joey's circuit board in the Medi droid (the JOEY_MEDIC script's partner)
}
# One voice for TSE purposes, decided on GE2E embeddings of the kept clips (>= 1 s) with a
# stated rule: centroid cosine >= 0.95 and a leave-one-out centroid test that tells their
# clips apart with AUC < 0.8 → merged into the larger talker; 0.8 <= AUC < 0.9 → the smaller
# one is left out rather than guessed; AUC >= 0.9 → kept apart (most pairs of this small cast
# score 0.90-0.97 in cosine, yet >= 0.92 in AUC).
VOICE_MERGES = {"mantrach": "walter"}  # cos 0.983, AUC 0.69; median F0 136 vs 141 Hz
LEFT_OUT = ("gordon",)  # ~lamb: cos 0.965, AUC 0.896; median F0 193 vs 216 Hz

# The CD intro's voices (file → speaker), from the speaker comments of ScummVM's intro.cpp
# (_cdIntroSeq). 59561 and 59594 (CDV_28, CDV_44) are never played and carry no speaker.
_INTRO = {
    "foster": (
        59500, 59514, 59515, 59518, 59525, 59531, 59534, 59541, 59545, 59546, 59556, 59574,
        59576, 59579, 59581, 59588, 59596, 59600, 59602, 59606, 59610, 59612, 59613, 59614,
        59616, 59629, 59630, 59633, 59639, 59642, 59644, 59649, 59654, 59656, 59659, 59660,
        59663, 59665, 59666, 59668, 59671, 59672,
    ),
    "shaman": (
        59504, 59505, 59507, 59508, 59510, 59511, 59513, 59520, 59523, 59528, 59535, 59558,
        59583, 59587, 59590, 59618, 59621, 59622, 59631,
    ),
    "joey": (59527, 59536, 59539, 59615),
    "reich": (
        59551, 59554, 59562, 59565, 59566, 59567, 59568, 59570, 59624, 59627, 59628, 59635,
        59648, 59655, 59664,
    ),
    "intro_guard": (59563, 59632, 59647, 59667, 59669, 59670),
}  # fmt: skip
INTRO_UNPLAYED = (59561, 59594)
INTRO_VOICES = {n: who for who, numbers in _INTRO.items() for n in numbers}

Key = tuple[str, int | str]  # ("cpt", name) / ("cur", script) / ("partner", script) / ("ask", m)
OP_POP_VAR = 6
MCODE_START_OWN = (7, 24)  # fnStartSub, fnSetAlternate (script): on the running object
# fnTheyStartSub, fnAssignBase, fnAltSetAlternate, fnSendRequest (object, script)
MCODE_START_OTHER = (8, 9, 25, 46)
UNKNOWN_RUNNER = "?"


@dataclass(frozen=True)
class ScriptModule:
    """One script module: ``(W,)`` int64 bytecode words and its scripts' first words."""

    module: int
    words: np.ndarray
    starts: np.ndarray

    def script_at(self, at: int | np.ndarray) -> int | np.ndarray:
        """The number of the script holding word ``at``."""
        return self.module << 12 | np.searchsorted(self.starts, at, side="right")


@functools.lru_cache(maxsize=4)
def script_modules(root: str) -> tuple[ScriptModule, ...]:
    """The game's script modules (files SCRIPT_MODULE_FIRST + 0..6)."""
    index = read_index(str(Path(root) / INDEX_NAME))
    out = []
    for module in range(SCRIPT_MODULES):
        entry = index.get(SCRIPT_MODULE_FIRST + module)
        if entry is None:
            raise SkyDataError(f"{Path(root) / INDEX_NAME}: no script module {module}")
        data = load_game_file(Path(root) / DISK_NAME, entry)
        words = np.frombuffer(data[: len(data) // 2 * 2], dtype="<u2").astype(np.int64)
        out.append(ScriptModule(module, words, words[1 : words[0] + 1]))
    return tuple(out)


def _calls(words: np.ndarray, mcodes: Sequence[int], args: int) -> np.ndarray:
    """Positions of `call_mcode args f*4` (f in ``mcodes``) preceded by ``args`` two-word
    pushes: ``(N,)`` word index of the call."""
    n = len(words)
    call = np.zeros(n, dtype=bool)
    call[: n - 2] = (words[: n - 2] == OP_CALL_MCODE) & (words[1 : n - 1] == args)
    call[: n - 2] &= np.isin(words[2:], [m * MCODE_SCALE for m in mcodes])
    call[: 2 * args] = False
    for k in range(1, args + 1):
        pushed = np.zeros(n, dtype=bool)
        pushed[2 * k :] = np.isin(words[: n - 2 * k], PUSH_OPS)
        call &= pushed
    return np.flatnonzero(call)


def _partner_sets(mod: ScriptModule) -> tuple[np.ndarray, np.ndarray]:
    """Where a script sets VAR_PARTNER: ``(positions, object ids)``, id -1 when it is not a
    constant."""
    w = mod.words
    at = np.flatnonzero((w[2:-1] == OP_POP_VAR) & (w[3:] == VAR_PARTNER * VAR_SCALE))
    value = np.where(w[at] == OP_PUSH_NUMBER, w[at + 1], -1)
    return at, value


def _speaker_key(mod: ScriptModule, at: int, target: tuple, names: dict, sets: tuple) -> Key:
    (op, value), script = target, int(mod.script_at(at))
    if op == OP_PUSH_NUMBER and int(value) in names:
        return ("cpt", names[int(value)])
    if op == OP_PUSH_VARIABLE and value == VAR_CUR_ID * VAR_SCALE:
        return ("cur", script)
    if op == OP_PUSH_VARIABLE and value == VAR_PARTNER * VAR_SCALE:
        # The last constant the script set the partner to before this call, if any.
        set_at, set_to = sets
        mine = (set_at < at) & (mod.script_at(set_at) == script)
        if mine.any() and int(set_to[mine][-1]) in names:
            return ("cpt", names[int(set_to[mine][-1])])
        return ("partner", script)
    return ("other", script)


def _module_keys(mod: ScriptModule, names: dict[int, str]) -> Iterator[tuple[int, Key]]:
    """``(file, key)`` for every speech call of one module whose text is a constant."""
    w, sets = mod.words, _partner_sets(mod)
    for at in _calls(w, MCODE_SPEAK, 3):
        file = speech_file(int(w[at - 3])) if w[at - 4] == OP_PUSH_NUMBER else None
        if file is not None:
            key = _speaker_key(mod, int(at), tuple(w[at - 6 : at - 4]), names, sets)
            if key[0] != "other":
                yield file, key
    for at in _calls(w, (MCODE_ASK_THIS,), 2):
        file = speech_file(int(w[at - 3])) if w[at - 4] == OP_PUSH_NUMBER else None
        if file is not None:
            yield file, ("ask", mod.module)


@functools.lru_cache(maxsize=4)
def speech_keys(root: str) -> dict[int, frozenset]:
    """Speech file → the keys under which the scripts make it spoken (see :data:`Key`)."""
    compacts = read_compacts(str(Path(root) / COMPACT_NAME))
    names = {cid: c.name for cid, c in compacts.items()}
    keys: dict[int, set] = defaultdict(set)
    for mod in script_modules(root):
        for file, key in _module_keys(mod, names):
            keys[file].add(key)
    return {f: frozenset(k) for f, k in keys.items()}


def _seed_runners(compacts: dict[int, Compact]) -> dict[int, set[str]]:
    """Script → objects that run it, from the objects' own fields: their base/action/get-to/
    extra scripts; the player runs every object's action script and get-to scripts."""
    runners: dict[int, set[str]] = defaultdict(set)
    for c in compacts.values():
        if c.kind != COMPACT_KIND:
            continue
        for field in CPT_OWN_SCRIPTS:
            if len(c.words) > field and c.words[field]:
                runners[int(c.words[field])].add(c.name)
        if len(c.words) > CPT_ACTION_SCRIPT and c.words[CPT_ACTION_SCRIPT]:
            runners[int(c.words[CPT_ACTION_SCRIPT])].add(PLAYER)
        table = compacts.get(int(c.words[CPT_GET_TO_TABLE])) if len(c.words) > 5 else None
        if table is not None and c.words[CPT_GET_TO_TABLE]:
            for script in table.words[1::2].tolist():
                if script:
                    runners[script].add(PLAYER)
    return runners


@functools.lru_cache(maxsize=4)
def script_runners(root: str) -> dict[int, frozenset[str]]:
    """Script → the objects that may run it: seeded from sky.cpt, then along the scripts'
    own calls (a script started on the running object inherits its runners; one started on
    a named object gets that object; on any other, an unknown runner)."""
    compacts = read_compacts(str(Path(root) / COMPACT_NAME))
    runners = _seed_runners(compacts)
    inherit: dict[int, set[int]] = defaultdict(set)
    for mod in script_modules(root):
        w = mod.words
        for at in _calls(w, MCODE_START_OWN, 1):
            if w[at - 2] == OP_PUSH_NUMBER:
                inherit[int(mod.script_at(at))].add(int(w[at - 1]))
        for at in _calls(w, MCODE_START_OTHER, 2):
            (who_op, who), (op, script) = w[at - 4 : at - 2], w[at - 2 : at]
            if op != OP_PUSH_NUMBER:
                continue
            if who_op == OP_PUSH_NUMBER and int(who) in compacts:
                runners[int(script)].add(compacts[int(who)].name)
            elif who_op == OP_PUSH_VARIABLE and who == VAR_CUR_ID * VAR_SCALE:
                inherit[int(mod.script_at(at))].add(int(script))
            else:
                runners[int(script)].add(UNKNOWN_RUNNER)
    changed = True
    while changed:
        changed = False
        for parent, children in inherit.items():
            for child in children:
                if not runners[parent] <= runners[child]:
                    runners[child] |= runners[parent]
                    changed = True
    return {s: frozenset(r) for s, r in runners.items()}


def _key_name(key: Key, player_scripts: set[int], runners: dict) -> str | None:
    kind, value = key
    if kind == "cpt":
        return COMPACT_TALKERS.get(str(value), str(value))
    if kind == "partner":
        return SPEECH_SCRIPTS.get(int(value))
    if kind == "cur":
        if value in player_scripts:
            return PLAYER
        found = runners.get(int(value), frozenset())
        if len(found) == 1 and UNKNOWN_RUNNER not in found:
            name = next(iter(found))
            return COMPACT_TALKERS.get(name, name)
        return None
    return PLAYER  # "ask": the player's chosen dialogue lines


def _components(keys: dict[int, frozenset]) -> dict[Key, Key]:
    """Union-find over keys: two keys that share a speech file are one voice."""
    parent: dict[Key, Key] = {}

    def root_of(k: Key) -> Key:
        parent.setdefault(k, k)
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for file in sorted(keys):
        first, *rest = sorted(keys[file], key=repr)
        root_of(first)
        for k in rest:
            parent[root_of(k)] = root_of(first)
    return {k: root_of(k) for k in {k for ks in keys.values() for k in ks}}


def component_names(root: str) -> tuple[dict[int, frozenset], dict[Key, Key], dict[Key, set]]:
    """``(keys by file, component of each key, talker names found per component)``."""
    keys = speech_keys(root)
    runners = script_runners(root)
    player_scripts = set(SPEECH_SCRIPTS) | {
        int(k[1]) for ks in keys.values() for k in ks if k[0] == "partner"
    }
    component = _components(keys)
    names: dict[Key, set[str]] = defaultdict(set)
    for key, top in component.items():
        name = _key_name(key, player_scripts, runners)
        if name is not None:
            names[top].add(name)
    return keys, component, names


@functools.lru_cache(maxsize=4)
def script_talkers(root: str) -> dict[int, str]:
    """Speech file → talker, from the game scripts (in-game lines) and the intro table.

    A key's talker: a named object; the partner of a conversation script (or the object the
    script last set as partner); Foster for a conversation script's own lines (he runs it),
    for dialogue-menu lines and for scripts only he runs; the one object that runs a script.
    Keys sharing a file are one voice (a file is one recording), so names spread along
    them; a file whose keys lead to two names, or to none, gets no talker. Finally
    :data:`VOICE_MERGES` and :data:`LEFT_OUT` apply."""
    keys, component, names = component_names(root)
    out = dict(INTRO_VOICES)
    for file, ks in keys.items():
        found = names[component[next(iter(ks))]]
        if len(found) == 1:
            out[file] = next(iter(found))
    merged = {f: VOICE_MERGES.get(t, t) for f, t in out.items()}
    return {f: t for f, t in merged.items() if t not in LEFT_OUT}


# --- the source ----------------------------------------------------------------------------
UNLABELLED = "unlabelled"  # a clip the scripts do not place (left out by default)


def find(prefixes: Sequence[Path]) -> Path | None:
    """The folder holding sky.dnr, sky.dsk and sky.cpt below the first prefix that has all."""
    for prefix in prefixes:
        folder = locate(DATA_DIR, [prefix])
        if folder is not None and all(
            (folder / n).is_file() for n in (INDEX_NAME, DISK_NAME, COMPACT_NAME)
        ):
            return folder
    return None


def speech_numbers(root: Path) -> list[int]:
    """The speech files present, sorted: in-game lines and the intro's voices."""
    index = read_index(str(Path(root) / INDEX_NAME))
    intro = set(INTRO_VOICES) | set(INTRO_UNPLAYED)
    return sorted(n for n in index if SPEECH_FIRST <= n < INTRO_FIRST or n in intro)


def clips(root: Path) -> Iterator[Clip]:
    """Every speech file in file-number order, talker from :func:`script_talkers` (or
    :data:`UNLABELLED`)."""
    talkers = script_talkers(str(root))
    for number in speech_numbers(root):
        read = functools.partial(read_speech, str(root), number)
        yield Clip(talkers.get(number, UNLABELLED), str(number), read)


def labelled_only(kept: list[tuple[str, str, np.ndarray]]) -> list[str | None]:
    """The default talker map: the scripts' talker, None (left out) for unlabelled clips."""
    return [None if talker == UNLABELLED else talker for talker, _, _ in kept]


# --- talkers from the audio alone: GE2E clusters (a check on the script labels) ------------
CLUSTER_MIN_CLIP_SECONDS = 1.0  # shorter clips fill less than 2/3 of a GE2E window: left out
CLUSTER_MAX_DISTANCE = 0.25  # average-linkage cosine distance where merging stops (cos 0.75)
CLUSTER_MIN_SECONDS = 60.0  # a cluster with less audio is dropped, not guessed, s
CLUSTER_BATCH = 64  # clips embedded per encoder call
CLUSTER_PREFIX = "voice"


@dataclass(frozen=True)
class ClusterFigures:
    """One kept cluster: its clips, seconds, mean clip-to-centroid cosine (``within``) and
    the cosine of its centroid to the nearest other kept cluster's (``nearest``)."""

    talker: str
    clips: int
    seconds: float
    within: float
    nearest: float


class GE2EClusters:
    """A talker map from the audio alone: GE2E embeddings, agglomerative clustering (average
    linkage on cosine distance, stopped at ``max_distance``), deterministic for a given clip
    list. Clips under ``min_clip_seconds`` and clusters under ``min_cluster_seconds`` of audio
    get None (left out, not guessed); kept clusters are named ``voice01``, ``voice02``, ... by
    decreasing audio. ``sample_rate`` is the rate of the audio it is given (the staging rate).
    After a call, :attr:`figures` holds the kept clusters' :class:`ClusterFigures`."""

    def __init__(
        self,
        sample_rate: int,
        *,
        max_distance: float = CLUSTER_MAX_DISTANCE,
        min_clip_seconds: float = CLUSTER_MIN_CLIP_SECONDS,
        min_cluster_seconds: float = CLUSTER_MIN_SECONDS,
    ) -> None:
        self.sample_rate = sample_rate
        self.max_distance = max_distance
        self.min_clip_seconds = min_clip_seconds
        self.min_cluster_seconds = min_cluster_seconds
        self.figures: list[ClusterFigures] = []

    def embed(self, audio: Sequence[np.ndarray]) -> np.ndarray:
        """``(N, 256)`` unit GE2E embeddings of ``N`` clips at :attr:`sample_rate`."""
        from hifi_tse.speaker.ge2e import GE2EEncoder  # torch: only when clustering

        encoder = GE2EEncoder.from_pretrained()
        parts = [
            encoder.embed_batch(audio[k : k + CLUSTER_BATCH], self.sample_rate)
            for k in range(0, len(audio), CLUSTER_BATCH)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, 256), np.float32)

    def cluster(self, embeddings: np.ndarray, seconds: np.ndarray) -> list[str | None]:
        """Cluster ``(N, 256)`` embeddings of clips lasting ``(N,)`` seconds."""
        from scipy.cluster.hierarchy import fcluster, linkage

        if len(embeddings) < 2:
            return [None] * len(embeddings)
        tree = linkage(embeddings.astype(np.float64), method="average", metric="cosine")
        ids = fcluster(tree, t=self.max_distance, criterion="distance")
        total = defaultdict(float)
        for i, sec in zip(ids.tolist(), seconds.tolist()):
            total[i] += sec
        kept = sorted((c for c in total if total[c] >= self.min_cluster_seconds),
                      key=lambda c: (-total[c], c))  # fmt: skip
        names = {c: f"{CLUSTER_PREFIX}{k + 1:02d}" for k, c in enumerate(kept)}
        self.figures = _cluster_figures(embeddings, seconds, ids, names)
        return [names.get(i) for i in ids.tolist()]

    def __call__(self, kept: list[tuple[str, str, np.ndarray]]) -> list[str | None]:
        seconds = np.array([len(a) / self.sample_rate for _, _, a in kept])
        usable = np.flatnonzero(seconds >= self.min_clip_seconds)
        embeddings = self.embed([kept[i][2] for i in usable])
        out: list[str | None] = [None] * len(kept)
        for i, talker in zip(usable.tolist(), self.cluster(embeddings, seconds[usable])):
            out[i] = talker
        return out


def _cluster_figures(
    embeddings: np.ndarray, seconds: np.ndarray, ids: np.ndarray, names: dict[int, str]
) -> list[ClusterFigures]:
    centroids = {}
    for c in names:
        mean = embeddings[ids == c].mean(axis=0)
        centroids[c] = mean / np.linalg.norm(mean)
    out = []
    for c, name in names.items():
        within = float(np.mean(embeddings[ids == c] @ centroids[c]))
        others = [float(centroids[c] @ centroids[o]) for o in names if o != c]
        out.append(
            ClusterFigures(
                name, int((ids == c).sum()), round(float(seconds[ids == c].sum()), 1),
                round(within, 3), round(max(others), 3) if others else float("nan"),
            )
        )  # fmt: skip
    return out


SOURCE = VoiceSource(
    name="steel_sky",
    package="beneath-a-steel-sky",
    licence=(
        "Beneath-a-Steel-Sky-License (debian/copyright): free to distribute unmodified with "
        "this readme and notices intact, or modified with a prominent notice; no fee for the "
        "game itself; game content (C) Revolution Software Ltd"
    ),
    description=(
        "Beneath a Steel Sky (CD talkie, 1994): about 119 min of English dialogue, 11.025 kHz "
        "8-bit, RNC-packed in sky.dsk; talkers from the game scripts"
    ),
    find=find,
    clips=clips,
    talker_map=labelled_only,
)
