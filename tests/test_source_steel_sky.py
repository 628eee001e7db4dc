"""Beneath a Steel Sky source: a tiny game built here (index, disk, objects, scripts, speech)
read end to end, talkers from the scripts, staging with a clipped clip dropped, the GE2E
clustering rule, and (where installed) the real package's figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_rnc import pack_literals

from hifi_tse.data.sources import steel_sky as sky
from hifi_tse.data.sources.base import search_prefixes, stage_source

RATE = sky.SAMPLE_RATE
STORED = 1 << sky.STORED_BIT
PACKED_FLAG = 1 << sky.HEADER_PACKED_BIT
SPEAK_ME, SPEAK_WAIT = 35, 37
FOSTER, JOEY = 3, 1  # object ids in the fixture's sky.cpt (as in the game)
BASE_SUB = 27  # word of a compact holding its base script


def voice(f0: float, seconds: float = 1.5, gain: float = 0.5) -> np.ndarray:
    """A voiced, vowel-like ``(L,)`` signal at RATE: harmonics of ``f0`` with an envelope."""
    t = np.arange(int(seconds * RATE)) / RATE
    wav = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
    return (gain * wav / np.max(np.abs(wav)) * np.hanning(len(t)) ** 0.3).astype(np.float32)


def u8(wav: np.ndarray) -> bytes:
    return np.clip(np.round(wav * 128 + 128), 0, 255).astype(np.uint8).tobytes()


def header(packed: bool) -> bytes:
    return (PACKED_FLAG if packed else 0).to_bytes(2, "little") + bytes(20)


def compacts_file() -> bytes:
    """sky.cpt with one list: id 1 'joey' (base script 1 of module 0), id 3 'foster'."""
    words = [0] * 40
    joey = list(words)
    joey[BASE_SUB] = 1
    table = [0, len(joey), sky.COMPACT_KIND, *joey, 0, len(words), sky.COMPACT_KIND, *words]
    names = b"joey\0foster\0"
    out = (0).to_bytes(2, "little") + (1).to_bytes(2, "little") + (4).to_bytes(2, "little")
    out += (80).to_bytes(4, "little") + len(table).to_bytes(4, "little")
    out += np.array(table, dtype="<u2").tobytes()
    return out + len(names).to_bytes(4, "little") + names


def speak(target: tuple[int, int], text: int, mcode: int) -> list[int]:
    return [*target, sky.OP_PUSH_NUMBER, text, sky.OP_PUSH_NUMBER, 0,
            sky.OP_CALL_MCODE, 3, mcode * sky.MCODE_SCALE]  # fmt: skip


def module_zero() -> bytes:
    """Script 1 (Joey's base script): Joey says text 1 (CUR_ID). Script 2: Foster says text 0
    and text 3 (constant object)."""
    cur = (sky.OP_PUSH_VARIABLE, sky.VAR_CUR_ID * sky.VAR_SCALE)
    script1 = speak(cur, 1, SPEAK_ME) + [19]
    script2 = speak((sky.OP_PUSH_NUMBER, FOSTER), 0, SPEAK_ME)
    script2 += speak((sky.OP_PUSH_NUMBER, FOSTER), 3, SPEAK_WAIT) + [19]
    words = [2, 3, 3 + len(script1), *script1, *script2]
    return np.array(words, dtype="<u2").tobytes()


def build_game(root: Path) -> Path:
    """The three game files under ``root``'s package folder; returns that folder."""
    folder = root / sky.DATA_DIR
    folder.mkdir(parents=True)
    files = {  # number: (bytes, index flags)
        50000: (header(True) + pack_literals(u8(voice(130))), 0),  # Foster, RNC-packed
        50001: (header(False) + u8(voice(230)), STORED),  # Joey, stored
        50002: (header(False) + u8(voice(180)), STORED),  # spoken by no script
        50003: (header(False) + u8(np.clip(voice(130, gain=4.0), -1, 1)), STORED),  # clipped
        59500: (header(False) + u8(voice(135)), STORED),  # intro: Foster
        sky.SCRIPT_MODULE_FIRST: (module_zero(), STORED),
    }
    for module in range(1, sky.SCRIPT_MODULES):
        files[sky.SCRIPT_MODULE_FIRST + module] = ((0).to_bytes(2, "little"), STORED)
    disk, entries = bytearray(), bytearray()
    for number, (data, flags) in files.items():
        entries += number.to_bytes(2, "little") + len(disk).to_bytes(3, "little")
        entries += (len(data) | flags).to_bytes(3, "little")
        disk += data
    (folder / sky.INDEX_NAME).write_bytes(len(files).to_bytes(4, "little") + entries)
    (folder / sky.DISK_NAME).write_bytes(bytes(disk))
    (folder / sky.COMPACT_NAME).write_bytes(compacts_file())
    return folder


def test_files_decode_to_float_audio(tmp_path: Path) -> None:
    folder = build_game(tmp_path)
    assert sky.find([tmp_path]) == folder
    wav, rate = sky.read_speech(str(folder), 50000)  # through the RNC decoder
    assert rate == RATE and wav.dtype == np.float32
    assert np.max(np.abs(wav - voice(130))) <= 1 / 128  # 8-bit rounding only
    assert wav.min() >= -1.0 and wav.max() < 1.0
    assert sky.speech_numbers(folder) == [50000, 50001, 50002, 50003, 59500]


def test_talkers_come_from_the_scripts(tmp_path: Path) -> None:
    folder = build_game(tmp_path)
    talkers = sky.script_talkers(str(folder))
    assert talkers[50000] == talkers[50003] == talkers[59500] == "foster"
    assert talkers[50001] == "joey"  # CUR_ID in the script Joey runs
    assert 50002 not in talkers
    assert {c.name: c.talker for c in sky.clips(folder)}["50002"] == sky.UNLABELLED


def test_staging_drops_the_clipped_clip_and_leaves_out_unlabelled(tmp_path: Path) -> None:
    folder = build_game(tmp_path)
    out = tmp_path / "stage"
    report = stage_source(sky.SOURCE, folder, out, 16000)
    assert report["clips"] == 5 and report["kept"] == 4
    assert report["dropped"] == {"clipped": 1}
    assert report["unassigned"] == 1  # 50002: no script speaks it
    assert sorted(report["seconds_by_talker"]) == ["steel_sky-foster", "steel_sky-joey"]
    assert report["clips_by_talker"]["steel_sky-foster"] == 2  # 50000 and the intro line
    assert json.loads((out / "stage_report.json").read_text())["kept"] == 4
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "steel_sky-foster",
        "steel_sky-joey",
    ]


def test_not_installed_is_none(tmp_path: Path) -> None:
    assert sky.find([tmp_path]) is None
    (tmp_path / sky.DATA_DIR).mkdir(parents=True)
    (tmp_path / sky.DATA_DIR / sky.INDEX_NAME).write_bytes(b"")
    assert sky.find([tmp_path]) is None  # sky.dsk and sky.cpt missing


def test_bad_index_raises_one_line(tmp_path: Path) -> None:
    path = tmp_path / sky.INDEX_NAME
    path.write_bytes((9).to_bytes(4, "little") + bytes(8))
    with pytest.raises(sky.SkyDataError, match="9 entries") as info:
        sky.read_index(str(path))
    assert "\n" not in str(info.value)


def test_clustering_keeps_big_clusters_and_drops_small_ones() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 256))
    groups = [(0, 40), (1, 25), (2, 3)]  # (centre, clips); the third is too small to keep
    emb = np.concatenate([centres[c] + 0.3 * rng.normal(size=(n, 256)) for c, n in groups])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    seconds = np.full(len(emb), 3.0)
    clusters = sky.GE2EClusters(16000, min_cluster_seconds=30.0)
    labels = clusters.cluster(emb, seconds)
    assert labels[:40] == ["voice01"] * 40 and labels[40:65] == ["voice02"] * 25
    assert labels[65:] == [None] * 3
    assert [f.clips for f in clusters.figures] == [40, 25]
    assert all(f.within > f.nearest for f in clusters.figures)
    assert clusters.cluster(emb, seconds) == labels  # deterministic


def test_clustering_leaves_short_clips_out() -> None:
    kept = [("x", "a", voice(130, 0.5)), ("x", "b", voice(130, 2.0)), ("x", "c", voice(220, 2.0))]
    out = sky.GE2EClusters(RATE, min_cluster_seconds=1.0)(kept)
    assert len(out) == 3 and out[0] is None  # under CLUSTER_MIN_CLIP_SECONDS


def test_installed_package_figures() -> None:
    root = sky.find(search_prefixes(Path(__file__).resolve().parents[1] / "data/real-voices"))
    if root is None:
        pytest.skip("beneath-a-steel-sky is not installed (make real-voices)")
    numbers = sky.speech_numbers(root)
    talkers = sky.script_talkers(str(root))
    labelled = [n for n in numbers if n in talkers]
    assert len(numbers) == 3579 and len(labelled) >= 3300
    assert talkers[59500] == "foster" and talkers[59504] == "shaman"  # the intro's table
    counts = {t: sum(talkers[n] == t for n in labelled) for t in set(talkers.values())}
    assert max(counts, key=counts.get) == "foster"
