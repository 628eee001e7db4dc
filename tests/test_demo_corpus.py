"""Demo corpus: the espeak binding, voice diversity, reproducibility, the packed build."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hifi_tse.data import demo_corpus as dc
from hifi_tse.data import espeak
from hifi_tse.errors import UserError

SENTENCE = "The early train to the coast leaves from platform four."


def _median_f0(wav: np.ndarray, sr: int) -> float:
    """Median F0 (Hz) of voiced 40 ms frames by normalised autocorrelation (60-450 Hz)."""
    frame, hop = int(0.04 * sr), int(0.01 * sr)
    lags = np.arange(int(sr / 450), int(sr / 60) + 1)
    f0s = []
    for start in range(0, len(wav) - frame, hop):
        x = wav[start : start + frame] - wav[start : start + frame].mean()
        energy = float((x**2).sum())
        if energy < 1e-4:
            continue
        ac = np.array([float((x[:-lag] * x[lag:]).sum()) for lag in lags]) / energy
        k = int(np.argmax(ac))
        if ac[k] > 0.6:
            f0s.append(sr / lags[k])
    assert len(f0s) > 20, "too few voiced frames"
    return float(np.median(f0s))


def _ltas_db(wav: np.ndarray, sr: int) -> np.ndarray:
    """Long-term average spectrum in 16 log-spaced bands 200 Hz-10 kHz, dB, mean removed."""
    n = 1024
    frames = np.lib.stride_tricks.sliding_window_view(wav, n)[:: n // 4] * np.hanning(n)
    power = (np.abs(np.fft.rfft(frames, axis=1)) ** 2).mean(axis=0)
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    edges = np.geomspace(200.0, 10000.0, 17)
    bands = np.array(
        [power[(freqs >= lo) & (freqs < hi)].mean() for lo, hi in zip(edges, edges[1:])]
    )
    db = 10.0 * np.log10(bands + 1e-12)
    return db - db.mean()


def _rms_db(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a - b) ** 2).mean()))


def test_espeak_synthesises_a_sentence() -> None:
    voice = espeak.VoiceSettings("en-US", "m3", 50, 50, 175, 70)
    wav, sr = espeak.synthesize(SENTENCE, voice)
    assert sr == 22050
    assert wav.dtype == np.float32 and wav.ndim == 1
    seconds = len(wav) / sr
    assert 2.0 < seconds < 5.0, seconds  # ten words at 175 words per minute
    rms = float(np.sqrt((wav**2).mean()))
    assert rms > 0.01 and float(np.abs(wav).max()) < 1.0
    # Speech, not a tone: energy comes and goes between words.
    frames = (wav[: len(wav) // 441 * 441].reshape(-1, 441) ** 2).mean(axis=1)
    assert (frames < 0.01 * frames.max()).mean() > 0.05


def test_invalid_voice_settings_are_refused() -> None:
    good = espeak.VoiceSettings("en-US", "m3", 50, 50, 175, 70)
    bad = [
        espeak.VoiceSettings("en-US", "no_such_variant", 50, 50, 175, 70),
        espeak.VoiceSettings("xx-Nowhere", "m3", 50, 50, 175, 70),
        espeak.VoiceSettings("en-US", "m3", 101, 50, 175, 70),
        espeak.VoiceSettings("en-US", "m3", 50, 50, 10, 70),
    ]
    espeak.validate_voice(good)
    for voice in bad:
        with pytest.raises(UserError) as exc:
            espeak.synthesize(SENTENCE, voice)
        assert "\n" not in str(exc.value)
    with pytest.raises(UserError, match="variant"):
        espeak.validate_voice(bad[0])
    # Every variant the corpus uses exists in the shipped data folder.
    shipped = set(espeak.available_variants())
    assert set(dc.HIGH_VARIANTS + dc.LOW_VARIANTS) <= shipped


def test_different_voice_settings_sound_different() -> None:
    low = espeak.VoiceSettings("en-US", "m3", 25, 50, 170, 70)
    high = espeak.VoiceSettings("en-GB-x-rp", "f1", 75, 50, 170, 70)
    wav_low, sr = espeak.synthesize(SENTENCE, low)
    wav_high, _ = espeak.synthesize(SENTENCE, high)
    f0_low, f0_high = _median_f0(wav_low, sr), _median_f0(wav_high, sr)
    assert f0_high > 1.4 * f0_low, (f0_low, f0_high)
    # Same pitch setting, other variant: the formants (spectral envelope) move by more than
    # the envelope changes between two sentences of one voice.
    other = espeak.VoiceSettings("en-US", "Andy", 25, 50, 170, 70)
    wav_other, _ = espeak.synthesize(SENTENCE, other)
    wav_low2, _ = espeak.synthesize(dc.SENTENCES[1], low)
    same_voice = _rms_db(_ltas_db(wav_low, sr), _ltas_db(wav_low2, sr))
    other_voice = _rms_db(_ltas_db(wav_low, sr), _ltas_db(wav_other, sr))
    assert other_voice > 1.5 * same_voice, (same_voice, other_voice)


def test_default_voices_are_distinct_and_valid() -> None:
    specs = [dc.voice_spec(dc.DEFAULT_SEED, k) for k in range(dc.DEFAULT_VOICES)]
    pairs = {(s.settings.variant, s.settings.language) for s in specs}
    assert len(pairs) == len(specs)  # no two voices share accent and variant
    assert len({s.voice_id for s in specs}) == len(specs)
    for s in specs:
        espeak.validate_voice(s.settings)
    assert specs[3] == dc.voice_spec(dc.DEFAULT_SEED, 3)  # a pure function of (seed, index)
    assert specs[3] != dc.voice_spec(dc.DEFAULT_SEED + 1, 3)
    with pytest.raises(UserError, match="--sentences"):
        dc.voice_sentences(0, 0, len(dc.SENTENCES) + 1)


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): dc.file_digest(p) for p in sorted(folder.rglob("*.wav"))}


def test_same_seed_gives_byte_identical_voices(tmp_path: Path) -> None:
    a = dc.synthesize_voices(tmp_path / "a", 7, 4, 3, 16000, workers=2)
    b = dc.synthesize_voices(tmp_path / "b", 7, 4, 3, 16000, workers=2)
    da, db = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert len(da) == 12 and da == db
    assert a["durations"] == b["durations"]
    for durs in a["durations"].values():
        assert all(dc.UTTERANCE_SECONDS[0] <= d <= dc.UTTERANCE_SECONDS[1] for d in durs)
    wav, sr = sf.read(next((tmp_path / "a" / "voice000").glob("*.wav")))
    assert sr == 16000 and 0.85 < np.abs(wav).max() <= dc.PEAK_LEVEL + 1e-3
    # A re-run reuses complete voices; a changed setting re-synthesises them.
    again = dc.synthesize_voices(tmp_path / "a", 7, 4, 3, 16000, workers=2)
    assert again["reused"] == 4 and again["synthesised"] == 0
    other = dc.synthesize_voices(tmp_path / "a", 8, 4, 3, 16000, workers=2)
    assert other["synthesised"] == 4 and _digests(tmp_path / "a") != da


def test_noise_clips(tmp_path: Path) -> None:
    sr, n = 16000, 16000 * 4
    rng = np.random.default_rng(0)
    slopes = {}
    for kind, exponent in dc.COLOUR_EXPONENT.items():
        wav = dc.coloured_noise(rng, n, sr, exponent)
        spec = np.abs(np.fft.rfft(wav)) ** 2
        f = np.fft.rfftfreq(n, 1 / sr)
        band = (f > 100) & (f < 6000)
        slopes[kind] = np.polyfit(np.log10(f[band]), 10 * np.log10(spec[band] + 1e-20), 1)[0]
    # Power slope in dB per decade: 0 (white), -10 (pink), -20 (brown).
    assert abs(slopes["white"]) < 2 and abs(slopes["pink"] + 10) < 2
    assert abs(slopes["brown"] + 20) < 2
    hum = dc.hum_noise(np.random.default_rng(1), n, sr)
    spec = np.abs(np.fft.rfft(hum))
    peak_hz = float(np.fft.rfftfreq(n, 1 / sr)[np.argmax(spec)])
    assert min(abs(peak_hz - 50), abs(peak_hz - 60)) < 2
    # File-name order spreads the kinds, so prepare's name-sorted val/test tails mix them.
    plan = dc._noise_plan()
    assert [p[0] for p in plan] == sorted(p[0] for p in plan)
    assert len({kind for _, kind, _ in plan[-4:]}) == 4
    assert len({kind for _, kind, _ in plan[-8:-4]}) == 4


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo")
    summary = dc.build_demo_corpus(
        out, seed=3, num_voices=6, sentences_per_voice=3, sample_rate=16000, workers=2,
        simulate_rirs=4, progress=False,
    )  # fmt: skip
    return out, summary


def test_build_demo_corpus_packs_manifests(tiny_corpus: tuple[Path, dict]) -> None:
    out, summary = tiny_corpus
    assert summary["voices"] == 6 and summary["utterances"] == 18
    assert summary["noise_clips"] == sum(dc.NOISE_COUNTS.values()) and summary["rirs"] == 4
    splits = summary["splits"]
    assert sum(s["speakers"] for s in splits.values()) == 6
    assert all(splits[s]["speakers"] >= 2 for s in ("train", "val", "test"))
    assert sum(s["rir"] for s in splits.values()) == 4
    rows = {s: [json.loads(x) for x in (out / f"manifest_{s}.jsonl").read_text().splitlines()]
            for s in ("train", "val", "test")}  # fmt: skip
    speakers = {s: {r["speaker"] for r in rs if r["kind"] == "speech"} for s, rs in rows.items()}
    assert not speakers["train"] & (speakers["val"] | speakers["test"])  # held-out voices
    val_noise = {r["utterance"].split("_")[1].rstrip("0123456789") for r in rows["val"]
                 if r["kind"] == "noise"}  # fmt: skip
    assert len(val_noise) >= 3  # kinds are interleaved, so val noise is not one colour
    assert all((out / r["pack"]).is_file() for rs in rows.values() for r in rs)
    # Babble voices are never speakers.
    voices = json.loads((out / "raw" / "voices.json").read_text())["voices"]
    assert [v["voice_id"] for v in voices] == sorted(speakers["train"] | speakers["val"]
                                                     | speakers["test"])  # fmt: skip


def test_cli_rerun_reuses_everything(
    tiny_corpus: tuple[Path, dict], capsys: pytest.CaptureFixture[str]
) -> None:
    from hifi_tse.cli import main

    out, first = tiny_corpus
    before = _digests(out / "raw")
    argv = ["make-demo-corpus", "--out", str(out), "--seed", "3", "--voices", "6"]
    argv += ["--sentences", "3", "--workers", "2", "--simulate-rirs", "4", "--quiet"]
    assert main(argv + ["--no-real-voices"]) == 0
    text = capsys.readouterr().out
    assert "voices: 6 (0 synthesised, 6 reused)" in text and "val" in text
    assert _digests(out / "raw") == before
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["packs_written"] == 0 and report["packs_reused"] > 0
    assert main(["make-demo-corpus", "--out", str(out), "--voices", "1"]) == 2
