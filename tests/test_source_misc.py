"""The tuxpaint, hedgewars and festvox_ru sources: layouts, talker ids, rules, staging."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_sources_staging import voiced

from hifi_tse.data.sources import festvox_ru, hedgewars, tuxpaint
from hifi_tse.data.sources.base import search_prefixes, stage_source

SR = 16000
CD_RATE = 44100


def clipped(seconds: float, rate: int, seed: int) -> np.ndarray:
    """``(L,)`` a voice-like signal driven far past full scale and cut there."""
    return np.clip(voiced(seconds, rate, 130.0, seed) * 6, -1, 1)


def write_ogg(path: Path, audio: np.ndarray, rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, rate, format="OGG", subtype="VORBIS")


# --- festvox_ru ----------------------------------------------------------------------------


def test_festvox_ru_one_talker_sentences_staged_unjoined(tmp_path: Path) -> None:
    wav_dir = tmp_path / "pkg" / festvox_ru.WAV_DIR
    wav_dir.mkdir(parents=True)
    for k in range(3):
        sf.write(wav_dir / f"ru_{k + 1:04d}.wav", voiced(4.5, SR, 110.0 + 5 * k, k), SR)
    sf.write(wav_dir / "ru_0009.wav", clipped(4.5, SR, 9), SR)
    (wav_dir / "notes.txt").write_text("not audio")
    root = festvox_ru.SOURCE.find([tmp_path / "elsewhere", tmp_path / "pkg"])
    assert root == wav_dir
    assert festvox_ru.SOURCE.find([tmp_path / "elsewhere"]) is None
    listed = list(festvox_ru.SOURCE.clips(root))
    assert [c.name for c in listed] == ["ru_0001", "ru_0002", "ru_0003", "ru_0009"]
    assert {c.talker for c in listed} == {"nsh"}
    report = stage_source(festvox_ru.SOURCE, root, tmp_path / "out", SR)
    assert report["dropped"] == {"clipped": 1}
    # Sentences are not joined: one utterance per kept clip.
    assert sorted(p.name for p in (tmp_path / "out" / "festvox_ru-nsh").glob("*.wav")) == [
        "0000.wav",
        "0001.wav",
        "0002.wav",
    ]


# --- tuxpaint ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "language"),
    [
        ("cat_desc.ogg", "en"),
        ("cat_desc_fr.ogg", "fr"),
        ("cat_desc_pt_BR.ogg", "pt_BR"),
        ("inukshuk-photo_desc_da.ogg.ogg", "da"),
        ("cat.ogg", None),  # a sound effect
        ("7_en_GB.ogg", None),  # a spoken digit by another reader
        ("cat_desc_fr.txt", None),
    ],
)
def test_tuxpaint_description_language(name: str, language: str | None) -> None:
    assert tuxpaint.description_language(Path(name)) == language


def _tuxpaint_fixture(stamps: Path) -> None:
    """Stamps with descriptions in several languages, setups and copies (see the test)."""
    one_silent = np.stack([voiced(1.4, CD_RATE, 120.0, 1), np.zeros(int(1.4 * CD_RATE))], 1)
    write_ogg(stamps / "animals/cat_desc_fr.ogg", one_silent, CD_RATE)
    write_ogg(stamps / "town/house_desc_fr.ogg", one_silent[::-1], CD_RATE)
    both = np.stack([voiced(1.4, CD_RATE, 210.0, 2), voiced(1.4, CD_RATE, 210.0, 3)], 1)
    write_ogg(stamps / "animals/dog_desc_fr.ogg", both, CD_RATE)  # another French voice
    write_ogg(stamps / "symbols/a_desc_fr.ogg", both, CD_RATE)  # a third one: left out
    write_ogg(stamps / "animals/cat.ogg", voiced(1.0, CD_RATE, 300.0, 4), CD_RATE)  # effect
    write_ogg(stamps / "animals/cat_desc.ogg", voiced(1.2, CD_RATE, 140.0, 5), CD_RATE)
    write_ogg(stamps / "animals/cow_desc.ogg", voiced(1.2, 8000, 140.0, 6), 8000)  # 8 kHz
    letter = stamps / "letters/filled/b_filled_desc_bg.ogg"
    write_ogg(letter, voiced(1.2, CD_RATE, 180.0, 7), CD_RATE)
    (stamps / "letters/outline").mkdir(parents=True)
    shutil.copy(letter, stamps / "letters/outline/b_outline_desc_bg.ogg")  # one recording
    write_ogg(stamps / "town/monument_desc_da.ogg.ogg", voiced(1.2, CD_RATE, 150, 8), CD_RATE)
    write_ogg(stamps / "animals/bull_desc_es.ogg", clipped(1.5, CD_RATE, 9), CD_RATE)
    (stamps / "food").mkdir()
    (stamps / "food/bread_desc_fr.ogg").write_bytes(b"not an ogg file")  # listed, reported


def test_tuxpaint_talkers_setups_copies_and_staging(tmp_path: Path) -> None:
    stamps = tmp_path / "extract" / "tuxpaint-stamps-default" / tuxpaint.STAMPS_DIR
    _tuxpaint_fixture(stamps)
    root = tuxpaint.SOURCE.find(search_prefixes(tmp_path / "extract"))
    assert root == stamps
    assert tuxpaint.SOURCE.find([tmp_path / "nowhere"]) is None
    listed = {c.name: c.talker for c in tuxpaint.SOURCE.clips(root)}
    assert listed == {
        "animals/bull_desc_es.ogg": "es",
        "animals/cat_desc.ogg": "en",
        "animals/cat_desc_fr.ogg": "fr",
        "animals/dog_desc_fr.ogg": "fr_2",
        "food/bread_desc_fr.ogg": "fr",
        "letters/filled/b_filled_desc_bg.ogg": "bg",
        "town/house_desc_fr.ogg": "fr",
        "town/monument_desc_da.ogg.ogg": "da",
    }
    report = stage_source(tuxpaint.SOURCE, root, tmp_path / "out", SR)
    assert report["clips"] == 8 and report["dropped"] == {"clipped": 1, "unreadable": 1}
    assert report["clips_by_talker"] == {
        "tuxpaint-bg": 1,
        "tuxpaint-da": 1,
        "tuxpaint-en": 1,
        "tuxpaint-fr": 2,
        "tuxpaint-fr_2": 1,
    }


def test_tuxpaint_channel_layout(tmp_path: Path) -> None:
    mono, silent, both = (tmp_path / f"{n}.ogg" for n in ("mono", "silent", "both"))
    write_ogg(mono, voiced(1.0, CD_RATE, 120.0, 1), CD_RATE)
    write_ogg(silent, np.stack([np.zeros(CD_RATE), voiced(1.0, CD_RATE, 120.0, 1)], 1), CD_RATE)
    write_ogg(both, np.stack([voiced(1.0, CD_RATE, 120.0, 1)] * 2, 1), CD_RATE)
    layouts = [tuxpaint.channel_layout(p) for p in (mono, silent, both)]
    assert layouts == [tuxpaint.MONO, tuxpaint.ONE_SILENT, tuxpaint.STEREO]
    # Channels and rate from the Vorbis header, or from soundfile for other formats.
    assert tuxpaint.stream_format(both) == (2, CD_RATE)
    sf.write(tmp_path / "low.wav", np.zeros((800, 2), dtype=np.float32), 8000)
    assert tuxpaint.stream_format(tmp_path / "low.wav") == (2, 8000)


# --- hedgewars -----------------------------------------------------------------------------


def test_hedgewars_packs_merges_non_words_and_copies(tmp_path: Path) -> None:
    voices = tmp_path / "pkg" / hedgewars.VOICES_DIR
    assert hedgewars.MERGE["Classic"] == "Default"
    write_ogg(voices / "Default/Incoming.ogg", voiced(1.3, CD_RATE, 300.0, 1), CD_RATE)
    write_ogg(voices / "Default/Takecover.ogg", voiced(1.1, CD_RATE, 310.0, 2), CD_RATE)
    write_ogg(voices / "Classic/Incoming.ogg", voiced(1.2, CD_RATE, 305.0, 3), CD_RATE)
    (voices / "Default_uk").mkdir(parents=True)
    # Classic reuses a Default recording: one talker after the merge, kept once.
    shutil.copy(voices / "Default/Takecover.ogg", voices / "Classic/Takecover.ogg")
    # Default_uk reuses one too: it cannot be attributed, so both copies are left out.
    shutil.copy(voices / "Default/Incoming.ogg", voices / "Default_uk/Incoming.ogg")
    write_ogg(voices / "Default_uk/Hello.ogg", voiced(1.2, CD_RATE, 260.0, 4), CD_RATE)
    write_ogg(voices / "Pirate/Jump1.ogg", voiced(0.4, CD_RATE, 280.0, 5), CD_RATE)  # grunt
    write_ogg(voices / "Pirate/Missed.ogg", voiced(1.2, CD_RATE, 250.0, 6), CD_RATE)
    write_ogg(voices / "Pirate/Victory.ogg", clipped(1.2, CD_RATE, 7), CD_RATE)
    root = hedgewars.SOURCE.find([tmp_path / "pkg"])
    assert root == voices
    assert hedgewars.SOURCE.find([tmp_path / "nowhere"]) is None
    listed = {c.name: c.talker for c in hedgewars.SOURCE.clips(root)}
    assert listed == {
        "Classic/Incoming.ogg": "Default",
        "Classic/Takecover.ogg": "Default",
        "Default_uk/Hello.ogg": "Default_uk",
        "Pirate/Missed.ogg": "Pirate",
        "Pirate/Victory.ogg": "Pirate",
    }
    report = stage_source(hedgewars.SOURCE, root, tmp_path / "out", SR)
    assert report["dropped"] == {"clipped": 1}
    assert report["clips_by_talker"] == {
        "hedgewars-Default": 2,
        "hedgewars-Default_uk": 1,
        "hedgewars-Pirate": 1,
    }


# --- the installed packages, where present -------------------------------------------------


def test_installed_hedgewars_and_festvox_ru_talkers() -> None:
    prefixes = search_prefixes()
    hw_root, ru_root = hedgewars.SOURCE.find(prefixes), festvox_ru.SOURCE.find(prefixes)
    if hw_root is None or ru_root is None:
        pytest.skip("hedgewars-data or festvox-ru not installed (make real-voices)")
    talkers = {c.talker for c in hedgewars.SOURCE.clips(hw_root)}
    packs = {p.name for p in hw_root.iterdir() if p.is_dir()}
    assert talkers == {hedgewars.talker_of(p) for p in packs} and len(talkers) == 11
    assert sum(1 for _ in festvox_ru.SOURCE.clips(ru_root)) == 620
