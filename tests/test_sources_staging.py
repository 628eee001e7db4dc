"""The staging every real-voice source shares: clip rules, joining, held-out talkers."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import soundfile as sf

from hifi_tse.data.real_voices import find_real_voices, held_out_talkers
from hifi_tse.data.sources.base import (
    Clip,
    ClipRules,
    VoiceSource,
    join_clips,
    judge_clip,
    locate,
    search_prefixes,
    stage_source,
)

RATE = 22050
SR = 16000


def voiced(seconds: float, rate: int, f0: float, seed: int, level: float = 0.3) -> np.ndarray:
    """A voice-like signal: harmonics of a slowly gliding f0 under a syllable-rate envelope."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))) / rate
    wav = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6))
    return (level * wav * envelope / np.max(np.abs(wav))).astype(np.float32)


def _read(path: str) -> tuple[np.ndarray, int]:
    wav, rate = sf.read(path, dtype="float32")
    return wav, rate


def _clips(root: Path) -> list[Clip]:
    return [
        Clip(p.parent.name, p.stem, functools.partial(_read, str(p)))
        for p in sorted(root.glob("*/*.wav"))
    ]


def fake_source(name: str, package_dir: str) -> VoiceSource:
    return VoiceSource(
        name=name,
        package=package_dir,
        licence="test fixture",
        description="talker folders of WAV words",
        find=lambda prefixes: locate(f"usr/share/{package_dir}", prefixes),
        clips=_clips,
    )


def write_words(root: Path, talkers: dict[str, float], words: int, seed: int = 0) -> None:
    for k, (talker, f0) in enumerate(talkers.items()):
        (root / talker).mkdir(parents=True, exist_ok=True)
        for w in range(words):
            wav = voiced(1.1, RATE, f0, seed + 100 * k + w)
            pad = np.zeros(int(0.3 * RATE), dtype=np.float32)
            sf.write(root / talker / f"w{w:02d}.wav", np.concatenate([pad, wav, pad]), RATE)


def test_rules_drop_clipped_silent_and_non_speech() -> None:
    rules = ClipRules()
    speech = voiced(2.0, RATE, 140, 1)
    assert judge_clip(speech, RATE, rules).reason is None
    assert judge_clip(voiced(2.0, RATE, 85, 2), RATE, rules).reason is None  # a low voice
    clipped = np.clip(speech * 4, -1, 1)
    verdict = judge_clip(clipped, RATE, rules)
    assert verdict.reason == "clipped" and verdict.clipped_share > 0.01
    # A peak-normalised clip touching full scale once is not clipped.
    assert judge_clip(speech / np.max(np.abs(speech)), RATE, rules).reason is None
    quiet = np.zeros(RATE * 2, dtype=np.float32)
    quiet[1000:1500] = voiced(0.5, RATE, 140, 3)[:500]  # 23 ms of sound in 2 s
    assert judge_clip(quiet, RATE, rules).reason == "near_silent"
    noise = np.random.default_rng(4).normal(0, 0.1, RATE * 2).astype(np.float32)
    verdict = judge_clip(noise, RATE, rules)
    assert verdict.reason == "non_speech" and verdict.voiced_share < rules.min_voiced_share


def test_join_reaches_the_length_and_keeps_every_clip() -> None:
    rules = ClipRules(join_seconds=4.0, gap_seconds=0.2)
    clips = [np.full(int(1.0 * SR), 0.1, dtype=np.float32) for _ in range(9)]
    utterances = join_clips(clips, SR, rules, join=True)
    # 4 clips + 3 gaps = 4.6 s per utterance; the ninth clip joins the last one.
    assert [round(len(u) / SR, 2) for u in utterances] == [4.6, 5.8]
    gap_samples = int(0.2 * SR)
    assert sum(len(u) for u in utterances) == 9 * SR + 7 * gap_samples
    assert len(join_clips(clips, SR, rules, join=False)) == 9
    loud = [np.full(SR, 3.0, dtype=np.float32)]
    assert np.max(np.abs(join_clips(loud, SR, rules, join=True)[0])) <= rules.peak_limit + 1e-6


def test_stage_source_writes_talker_folders_and_reports(tmp_path: Path) -> None:
    pkg = tmp_path / "extract" / "pkg-a" / "usr" / "share" / "words-a"
    write_words(pkg, {"anna": 150.0, "bob": 95.0}, words=6)
    bad = voiced(1.1, RATE, 120, 9) * 5
    sf.write(pkg / "anna" / "zz_clipped.wav", np.clip(bad, -1, 1), RATE)
    source = fake_source("words_a", "words-a")
    root = source.find(search_prefixes(tmp_path / "extract"))
    assert root == pkg
    assert source.find(search_prefixes(tmp_path / "nowhere")) is None
    out = tmp_path / "staged"
    report = stage_source(source, root, out, SR)
    assert report["clips"] == 13 and report["kept"] == 12
    assert report["dropped"] == {"clipped": 1}
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["words_a-anna", "words_a-bob"]
    for talker in ("words_a-anna", "words_a-bob"):
        files = sorted((out / talker).glob("*.wav"))
        lengths = [sf.info(f).duration for f in files]
        assert all(d >= 4.0 for d in lengths), lengths
        assert sf.info(files[0]).samplerate == SR
    assert json.loads((out / "stage_report.json").read_text())["talkers"] == 2
    # Reused when nothing changed (the files are not rewritten).
    stamp = (out / "words_a-anna" / "0000.wav").stat().st_mtime_ns
    assert stage_source(source, root, out, SR) == report
    assert (out / "words_a-anna" / "0000.wav").stat().st_mtime_ns == stamp


def test_talker_map_relabels_and_leaves_clips_out(tmp_path: Path) -> None:
    pkg = tmp_path / "usr" / "share" / "words-b"
    write_words(pkg, {"unlabelled": 150.0}, words=8)
    source = fake_source("words_b", "words-b")

    def by_half(kept: list[tuple[str, str, np.ndarray]]) -> list[str | None]:
        return ["first" if k < 4 else ("second" if k < 7 else None) for k in range(len(kept))]

    report = stage_source(source, pkg, tmp_path / "out", SR, talker_map=by_half)
    assert report["clips_by_talker"] == {"words_b-first": 4, "words_b-second": 3}
    assert report["unassigned"] == 1


def test_held_out_talkers_follow_the_rule() -> None:
    seconds = {f"t{k}": 120.0 for k in range(6)} | {"short": 10.0}
    held = held_out_talkers(seconds, {"val": 1, "test": 2}, 60.0)
    assert len(held["val"]) == 1 and len(held["test"]) == 2
    assert "short" not in held["val"] + held["test"]
    assert not set(held["val"]) & set(held["test"])
    assert held == held_out_talkers(dict(reversed(seconds.items())), {"val": 1, "test": 2}, 60.0)
    # Too few eligible talkers to keep one for training: none held out.
    assert held_out_talkers({"a": 100.0, "b": 100.0}, {"val": 1, "test": 1}, 60.0) == {}


def test_package_sources_enter_the_corpus_by_role(tmp_path: Path, monkeypatch) -> None:
    from hifi_tse.data import real_voices

    extract = tmp_path / "extract"
    train_pkg = extract / "pkg-a" / "usr" / "share" / "words-a"
    write_words(train_pkg, {f"t{k}": 90.0 + 15 * k for k in range(4)}, words=4)
    held_pkg = extract / "pkg-b" / "usr" / "share" / "words-b"
    write_words(held_pkg, {"x": 120.0, "y": 180.0}, words=4, seed=50)
    sources = [fake_source("words_a", "words-a"), fake_source("words_b", "words-b")]
    missing = fake_source("words_c", "words-c")
    monkeypatch.setitem(real_voices.SOURCE_ROLES, "words_b", "test")
    monkeypatch.setattr(real_voices, "MIN_HELD_OUT_SECONDS", 1.0)
    monkeypatch.setattr(real_voices, "PACKAGE_VOICE_VARIANTS", 1)
    found = find_real_voices(
        tmp_path / "raw",
        SR,
        1.5,
        voice_variants=2,
        fillets_root=tmp_path / "none",
        alsa_root=tmp_path / "none",
        pyannote_sample=None,
        package_sources=[*sources, missing],
        extract_root=extract,
    )
    by_name = {s.name: s for s in found.sources if s.name and s.name.startswith("words")}
    assert set(by_name) == {"words_a", "words_b"}
    assert "words_c (words-c: make real-voices)" in found.missing
    assert found.found.startswith("real voices found: ")
    assert found.found.endswith("words_a, words_b")
    train = by_name["words_a"]
    assert train.whole_split is None and train.voice_variants == 1
    assert len(train.val_speakers) == 1 and len(train.test_speakers) == 1
    assert by_name["words_b"].whole_split == "test"
    # A training source too small to hold a talker out trains every talker.
    monkeypatch.setattr(real_voices, "MIN_HELD_OUT_SECONDS", 1000.0)
    again = find_real_voices(
        tmp_path / "raw2", SR, 1.5, voice_variants=2, fillets_root=tmp_path / "none",
        alsa_root=tmp_path / "none", pyannote_sample=None, package_sources=sources[:1],
        extract_root=extract,
    )  # fmt: skip
    only = [s for s in again.sources if s.name == "words_a"][0]
    assert (
        only.whole_split == "train"
        and not only.val_speakers + only.test_speakers
        and by_name["words_b"].voice_variants == 0
    )
    assert found.summary["packages"]["words_b"]["talkers"] == 2
