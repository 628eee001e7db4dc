"""Flight of the Amazon Queen: the queen.1c reader, talker ids from the game data, staging."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hifi_tse.data.sources import amazon_queen as aq
from hifi_tse.data.sources.base import stage_source

RATE = 11025  # the game's speech rate
INSTALLED = Path("data/real-voices/flight-of-the-amazon-queen") / aq.ARCHIVE_DIR / aq.ARCHIVE_NAME
MP3_WRITABLE = "MP3" in sf.available_formats()
needs_mp3 = pytest.mark.skipif(not MP3_WRITABLE, reason="this libsndfile cannot write MP3")


def voiced(seconds: float, f0: float, seed: int, level: float = 0.3) -> np.ndarray:
    """A voice-like ``(L,)`` signal at RATE: harmonics of a gliding f0, syllable envelope."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))) / RATE
    wav = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6))
    return (level * wav * envelope / np.max(np.abs(wav))).astype(np.float32)


def mp3(wav: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wav, RATE, format="MP3")
    return buf.getvalue()


def write_archive(path: Path, files: list[tuple[str, bytes]], compression: int = 1) -> None:
    """A queen.1c: QTBL header, a table of (name, bundle 1, offset, size), then the data."""
    head = struct.pack(">4s6s2xBH", b"QTBL", b"CEM10", compression, len(files))
    offset = len(head) + 21 * len(files)
    table, blobs = b"", b""
    for name, data in files:
        table += struct.pack(">12sBII", name.encode(), 1, offset, len(data))
        offset += len(data)
        blobs += data
    path.write_bytes(head + table + blobs)


def game_file(*int16s: int, tail: bytes = b"") -> bytes:
    """A game-data entry: the 20-byte header the engine skips, big-endian int16s, ``tail``."""
    return bytes(20) + struct.pack(f">{len(int16s)}h", *int16s) + tail


def logic_files() -> list[tuple[str, bytes]]:
    """QUEEN.JAS with 3 objects (1: Trader Bob, a person; 2: a note made to talk; 3: a
    crate, no person) and QUEEN2.JAS: 1 description, then the 3 names."""
    objects = [(1, -3), (2, -4), (3, 5)]  # (name index, image)
    records = b"".join(struct.pack(">h12xh", n, image) for n, image in objects)
    jas = game_file(1, 3, len(objects), 1, tail=records)
    text = "A description\r\nTrader Bob\r\nnote\r\ncrate\r\n".encode("latin-1")
    return [("QUEEN.JAS", jas), ("QUEEN2.JAS", text)]


def cutaway() -> bytes:
    """C1A.CUT: record 1 the hero speaks; record 2 animates the crate (2 frames, skipped);
    record 3 Trader Bob speaks; record 4 the note (a stand-in) speaks; record 5 spoken text."""

    def record(obj: int, anim_list: int = 0, execute: int = 0) -> tuple[int, ...]:
        fields = [0] * 17
        fields[0], fields[4], fields[5] = obj, anim_list, execute
        return (*fields, 0)  # no people turned on

    frames = (7, *range(9), 8, *range(9), -2)
    body = (
        *record(0),
        *record(3, anim_list=1, execute=1),
        *frames,
        *record(1),
        *record(2),
        *record(-2),
    )
    data_offset = 12 + 2 * len(body) + 2
    return game_file(0, 5, 0, data_offset, data_offset, data_offset, *body, 0)


def fixture_archive(path: Path, clipped: bool = False) -> None:
    lines = {  # entry -> (f0, seconds)
        "020006J1.SB": (120, 2.5),  # dialogue 2, the hero
        "020006P1.SB": (220, 2.5),  # dialogue 2 (BOB1.DOG), the person: Trader Bob
        "02XXXXP1.SB": (220, 2.5),
        "JOE00011.SB": (120, 2.5),  # the hero's remark
        "C1A__011.SB": (120, 2.5),  # cutaway record 1: the hero
        "C1A__031.SB": (220, 2.0),  # record 3: Trader Bob
        "C1A__041.SB": (300, 2.0),  # record 4: the note, not placed
        "C1A__051.SB": (300, 2.0),  # record 5: shown text, no known voice
        "10SSSSSS.SB": (300, 1.0),  # a sound effect
        "030006P1.SB": (300, 2.0),  # dialogue 3 (SPARKY8.DOG), left out
    }
    files = logic_files() + [
        ("BOB1.DOG", game_file(1, 1, 2)),
        ("SPARKY8.DOG", game_file(1, 2, 3)),  # Sparky gagged: left out
        ("C1A.CUT", cutaway()),
    ]
    for k, (name, (f0, seconds)) in enumerate(sorted(lines.items())):
        wav = voiced(seconds, f0, k)
        if clipped and name == "02XXXXP1.SB":
            wav = np.clip(wav * 6, -1.0, 1.0)
        files.append((name, mp3(wav)))
    files.append(("JOE00021.SB", dict(files)["JOE00011.SB"]))  # stored twice: kept once
    write_archive(path, sorted(files))


@needs_mp3
def test_reads_two_entries_by_seeking(tmp_path: Path) -> None:
    a, b = voiced(1.0, 150, 1), voiced(0.6, 240, 2)
    path = tmp_path / "queen.1c"
    write_archive(path, [("A.SB", mp3(a)), ("B.SB", mp3(b))])
    archive = aq.read_archive(path)
    assert (archive.version, archive.compression) == ("CEM10", 1)
    assert list(archive.entries) == ["A.SB", "B.SB"]
    for original, f0, entry in zip((a, b), (150, 240), archive.entries.values()):
        wav, rate = aq.read_speech(str(path), entry.offset, entry.size, entry.name)
        assert rate == RATE and wav.dtype == np.float32 and wav.ndim == 1
        assert abs(len(wav) - len(original)) < 0.05 * RATE
        spectrum = np.abs(np.fft.rfft(wav, n=RATE))  # 1 Hz bins
        assert abs(int(np.argmax(spectrum)) - f0) < 10


def test_bad_tables_fail_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "queen.1c"
    write_archive(path, [("A.SB", b"x" * 100), ("B.SB", b"y" * 50)])
    data = bytearray(path.read_bytes())
    struct.pack_into(">I", data, 15 + 21 + 17, 5000)  # B.SB's size, past the end
    path.write_bytes(bytes(data))
    with pytest.raises(aq.QueenArchiveError, match=r"queen\.1c: entry B\.SB spans") as err:
        aq.read_archive(path)
    assert "\n" not in str(err.value)
    data[15 : 15 + 4] = b"A\x01\x02B"  # a non-printable name
    path.write_bytes(bytes(data))
    with pytest.raises(aq.QueenArchiveError, match="non-printable name"):
        aq.read_archive(path)
    path.write_bytes(b"QUEEN" + bytes(30))
    with pytest.raises(aq.QueenArchiveError, match="no QTBL header"):
        aq.read_archive(path)
    with pytest.raises(aq.QueenArchiveError, match="entry A.SB: not decodable audio"):
        aq.decode_speech(b"x" * 100, "A.SB")


@needs_mp3
def test_talkers_from_dialogues_and_cutaways(tmp_path: Path) -> None:
    folder = tmp_path / "usr/share/scummvm/flight-of-the-amazon-queen"
    folder.mkdir(parents=True)
    fixture_archive(folder / "queen.1c")
    assert aq.find([tmp_path / "nothing", tmp_path]) == folder
    talkers = {c.name: c.talker for c in aq.clips(folder)}
    assert talkers == {
        "020006J1.SB": "joe",
        "020006P1.SB": "trader_bob",
        "02XXXXP1.SB": "trader_bob",
        "JOE00011.SB": "joe",
        "C1A__011.SB": "joe",
        "C1A__031.SB": "trader_bob",
    }


@needs_mp3
def test_stage_end_to_end_drops_a_clipped_line(tmp_path: Path) -> None:
    root = tmp_path / "game"
    root.mkdir()
    fixture_archive(root / "queen.1c", clipped=True)
    report = stage_source(aq.SOURCE, root, tmp_path / "out", 16000)
    assert report["clips"] == 6 and report["kept"] == 5
    assert report["dropped"] == {"clipped": 1}
    assert sorted(report["seconds_by_talker"]) == ["amazon_queen-joe", "amazon_queen-trader_bob"]
    wavs = sorted((tmp_path / "out").glob("amazon_queen-*/*.wav"))
    assert wavs and all(sf.info(w).samplerate == 16000 for w in wavs)
    assert json.loads((tmp_path / "out/stage_report.json").read_text())["kept"] == 5


def test_not_installed(tmp_path: Path) -> None:
    assert aq.find([tmp_path]) is None
    assert aq.SOURCE.find([tmp_path / "missing"]) is None


@pytest.mark.skipif(not INSTALLED.is_file(), reason="flight-of-the-amazon-queen not extracted")
def test_installed_archive_lines() -> None:
    archive = aq.read_archive(INSTALLED)
    assert (archive.version, archive.compression) == ("CEM10", 1)
    clips = list(aq.clips(INSTALLED.parent))
    assert len(clips) == 6342 and len({c.talker for c in clips}) == 34  # as the docstring says
    wav, rate = clips[0].read()
    assert rate == RATE and len(wav) > RATE
