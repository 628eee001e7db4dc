"""Real-voice corpora: speaker ids from any naming scheme, held-out speakers by name, voice
variants of the training speakers, real/synthetic filters, and the demo's real sources."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_prepare import run_prepare, tone, write

from hifi_tse.cli import main as cli_main
from hifi_tse.config import Config, config_from_dict
from hifi_tse.data.layouts import SpeechSource, parse_source
from hifi_tse.data.mixer import Sources
from hifi_tse.data.real_voices import single_talker_spans
from hifi_tse.data.store import PackReader, load_manifest, load_report
from hifi_tse.data.voice_variants import VoiceVariant, apply_variant, draw_variants
from hifi_tse.errors import UserError

SR = 16000
FILLETS_LIKE = r"^[^/]+/(?P<lang>cs|nl)/[^/]+-(?P<character>[a-z]+)-[^/]+$"


def make_game_tree(root: Path, utts: int = 3) -> Path:
    """A tree named like the game's dialogue: level/lang/level-character-line.ogg, plus files
    the pattern must skip (numbered minor characters, language-free effects)."""
    f0 = {"m": 110.0, "v": 180.0, "hs": 140.0}
    for lang in ("cs", "nl"):
        for who, base in f0.items():
            for u in range(utts):
                level = f"level{u}"
                x = tone(1.6, 22050, base + (7 if lang == "nl" else 0), seed=u, channels=2)
                write(root / level / lang / f"{level}-{who}-line{u}.ogg", x, 22050, "VORBIS")
    write(root / "level0" / "cs" / "level0-4-x.ogg", tone(1.6, 22050, 90, 1), 22050, "VORBIS")
    write(root / "level0" / "en" / "effect.ogg", tone(1.6, 22050, 90, 2), 22050, "VORBIS")
    return root


def add_later_levels(root: Path) -> None:
    """Files named like the game's later levels (no level prefix) and its Dutch grunts."""
    for k, rel in enumerate(
        (
            "hanoi/cs/m-first.ogg",
            "rush/cs/m-second.ogg",
            "fdto/cs/third-m.ogg",
            "briefcase/cs/kd-intro.ogg",
            "briefcase/cs/kd-outro.ogg",
            "linux/cs/1-unnamed.ogg",
            "electromagnet/nl/b-hurt-0.ogg",
            "electromagnet/nl/s-hurt-0.ogg",
        )
    ):
        write(root / rel, tone(1.8, 22050, 100 + 9 * k, seed=k, channels=2), 22050, "VORBIS")
    # A damaged file of a staged talker: skipped, as prepare skips one, not a failed build.
    (root / "nowall" / "cs").mkdir(parents=True, exist_ok=True)
    (root / "nowall" / "cs" / "m-damaged.ogg").write_bytes(b"OggS" + bytes(200))


def f0_median(x: np.ndarray, sr: int) -> float:
    import parselmouth

    pitch = parselmouth.Sound(x.astype(np.float64), sampling_frequency=sr).to_pitch()
    f = pitch.selected_array["frequency"]
    return float(np.median(f[f > 0]))


def test_pattern_names_speakers_and_lists_unmatched_files(tmp_path: Path) -> None:
    root = make_game_tree(tmp_path / "game")
    src = parse_source(f"{root}:pattern={FILLETS_LIKE}")
    assert src.layout == "pattern" and src.pattern == FILLETS_LIKE  # colons in REGEX kept
    report = run_prepare([src], tmp_path / "out")
    rows = load_manifest(tmp_path / "out", "train")
    assert {r["speaker"] for r in rows} == {"cs-m", "cs-v", "cs-hs", "nl-m", "nl-v", "nl-hs"}
    assert len(rows) == 18
    assert sorted(Path(p).name for p in report["unmatched"]) == ["effect.ogg", "level0-4-x.ogg"]
    assert report["sources"][0]["layout"] == f"pattern={FILLETS_LIKE}"
    # Ogg Vorbis stereo at 22.05 kHz is decoded, downmixed and resampled to 16 kHz.
    x = PackReader(tmp_path / "out").read(rows[0]["pack"], rows[0]["key"])
    assert x.ndim == 1 and abs(len(x) - 1.6 * SR) <= 2


def test_bad_patterns_are_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = make_game_tree(tmp_path / "game", utts=2)
    for bad, words in [("(?P<x>[a-z]", "invalid pattern"), ("cs/", "no named group"),
                       ("(?P<who>zzz)", "no file path matches")]:  # fmt: skip
        with pytest.raises(UserError, match=words) as err:
            run_prepare([parse_source(f"{root}:pattern={bad}")], tmp_path / "o")
        assert "\n" not in str(err.value)
    code = cli_main(["prepare", "--speech", f"{root}:pattern=cs/", "--out", str(tmp_path / "o")])
    assert code == 2 and "no named group" in capsys.readouterr().err


def test_named_held_out_speakers_from_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = make_game_tree(tmp_path / "game")
    out = tmp_path / "out"
    args = ["prepare", "--speech", f"{root}:pattern={FILLETS_LIKE}", "--out", str(out),
            "--sample-rate", str(SR), "--min-seconds", "1", "--workers", "1", "--quiet",
            "--val-ratio", "0.4", "--test-ratio", "0.4"]  # fmt: skip
    assert cli_main(args + ["--val-speakers", "nl-m", "--test-speakers", "nl-v,nl-hs"]) == 0
    speakers = {s: {r["speaker"] for r in load_manifest(out, s)} for s in ("train", "val", "test")}
    # The named speakers replace the share-based split: every other speaker trains.
    assert speakers == {"train": {"cs-m", "cs-v", "cs-hs"}, "val": {"nl-m"},
                        "test": {"nl-v", "nl-hs"}}  # fmt: skip
    assert cli_main(args + ["--val-speakers", "nl-x"]) == 2
    err = capsys.readouterr().err
    assert "nl-x not found" in err and len(err.strip().splitlines()) == 1


def test_variants_draw_spread_reproducible_transforms() -> None:
    a = draw_variants(3, "src/spk", 8, (0.7, 1.45), (0.86, 1.16))
    assert a == draw_variants(3, "src/spk", 8, (0.7, 1.45), (0.86, 1.16))
    assert a != draw_variants(3, "src/other", 8, (0.7, 1.45), (0.86, 1.16))
    # A Latin hypercube: one variant in each eighth of each log range.
    for values, (lo, hi) in [([v.pitch_ratio for v in a], (0.7, 1.45)),
                             ([v.formant_ratio for v in a], (0.86, 1.16))]:  # fmt: skip
        u = (np.log(values) - np.log(lo)) / (np.log(hi) - np.log(lo))
        assert sorted(np.floor(u * 8).astype(int).tolist()) == list(range(8))


def test_apply_variant_moves_pitch_by_its_ratio_and_keeps_length_and_peak() -> None:
    x = tone(1.5, SR, 140.0, seed=0).astype(np.float32)
    for ratio in (0.8, 1.3):
        y = apply_variant(x, SR, VoiceVariant(pitch_ratio=ratio, formant_ratio=1.0))
        assert len(y) == len(x) and np.isclose(np.abs(y).max(), np.abs(x).max(), rtol=1e-4)
        assert f0_median(y, SR) / f0_median(x, SR) == pytest.approx(ratio, rel=0.05)
    # A formant shift alone moves the spectral envelope, not the fundamental: a vowel-like
    # signal (harmonics of 140 Hz under resonances at 900 and 2200 Hz).
    t = np.arange(int(1.5 * SR)) / SR
    harmonics = np.arange(1, int(7000 / 140.0))
    envelope = np.exp(-(((harmonics * 140 - 900) / 300) ** 2))
    envelope += 0.5 * np.exp(-(((harmonics * 140 - 2200) / 400) ** 2))
    vowel = (envelope[:, None] * np.sin(2 * np.pi * 140 * harmonics[:, None] * t)).sum(0)
    vowel = (0.5 * vowel / np.abs(vowel).max()).astype(np.float32)
    up = apply_variant(vowel, SR, VoiceVariant(pitch_ratio=1.0, formant_ratio=1.25))
    down = apply_variant(vowel, SR, VoiceVariant(pitch_ratio=1.0, formant_ratio=0.8))
    for y in (up, down):
        assert f0_median(y, SR) / f0_median(vowel, SR) == pytest.approx(1.0, rel=0.05)

    def strongest_harmonic_hz(z: np.ndarray) -> float:
        spec, freq = np.abs(np.fft.rfft(z)), np.fft.rfftfreq(len(z), 1 / SR)
        amps = [spec[np.argmin(np.abs(freq - h * 140.0))] for h in harmonics]
        return float(harmonics[int(np.argmax(amps))] * 140.0)

    # The first resonance moves with the ratio (measured: 840 -> 700 and 1120 Hz).
    assert strongest_harmonic_hz(vowel) == 840.0
    assert strongest_harmonic_hz(down) == pytest.approx(0.8 * 840, abs=80)
    assert strongest_harmonic_hz(up) == pytest.approx(1.25 * 840, abs=80)


def test_voice_variants_are_training_speakers_that_keep_one_transform(tmp_path: Path) -> None:
    root = make_game_tree(tmp_path / "game", utts=4)
    src = SpeechSource(root, "pattern", FILLETS_LIKE, val_speakers=("nl-m", "nl-hs"),
                       test_speakers=("nl-v",), voice_variants=3)  # fmt: skip
    cfg = config_from_dict({"preparation": {"variant_utterances": 2}})
    report = run_prepare([src], tmp_path / "out", cfg=cfg)
    rows = {s: load_manifest(tmp_path / "out", s) for s in ("train", "val", "test")}
    assert not any("variant" in r for s in ("val", "test") for r in rows[s])  # never held out
    variants = [r for r in rows["train"] if "variant" in r]
    by_speaker: dict[str, list[dict]] = {}
    for r in variants:
        by_speaker.setdefault(r["speaker"], []).append(r)
    # 3 variants of each of the 3 training speakers, 2 utterances each.
    assert len(by_speaker) == 9 and all(len(v) == 2 for v in by_speaker.values())
    assert report["splits"]["train"]["variant_speakers"] == 9
    reader = PackReader(tmp_path / "out")
    originals = {r["utterance"]: r for r in rows["train"] if "variant" not in r}
    for utts in by_speaker.values():
        assert len({json.dumps(u["variant"], sort_keys=True) for u in utts}) == 1
        ratio = utts[0]["variant"]["pitch_ratio"]
        for u in utts:  # every utterance (target and enrollment alike) carries the transform
            orig = originals[u["utterance"].split("~")[0]]
            y = reader.read(u["pack"], u["key"])
            x = reader.read(orig["pack"], orig["key"])
            assert f0_median(y, SR) / f0_median(x, SR) == pytest.approx(ratio, rel=0.06)


def mixing_config(seconds: float) -> Config:
    """Defaults at the test rate, with mixtures and enrollments of ``seconds``."""
    cfg = Config()
    cfg.audio.sample_rate, cfg.audio.segment_seconds, cfg.audio.ref_seconds = SR, seconds, seconds
    return cfg


def prepare_real_and_synthetic(tmp_path: Path) -> Path:
    """Packs of 6 real speakers (a game-like tree) and 3 synthetic ones, in ``tmp_path/out``."""
    game = make_game_tree(tmp_path / "game", utts=3)
    synth = tmp_path / "synth"
    for s in range(3):
        for u in range(3):
            write(synth / f"voice{s}" / f"u{u}.wav", tone(1.6, SR, 100 + 30 * s, u), SR, "PCM_16")
    run_prepare([SpeechSource(game, "pattern", FILLETS_LIKE, name="game"),
                 SpeechSource(synth, "folder", voices="synthetic")],
                tmp_path / "out")  # fmt: skip
    return tmp_path / "out"


def test_voices_filter_mixes_one_kind_of_speaker(tmp_path: Path) -> None:
    prepare_real_and_synthetic(tmp_path)
    report = load_report(tmp_path / "out")
    assert {s["name"]: s["voices"] for s in report["sources"]} == {
        "game": "real",
        "synth": "synthetic",
    }
    every = Sources(tmp_path / "out", "train", SR)
    real = Sources(tmp_path / "out", "train", SR, voices="real")
    synthetic = Sources(tmp_path / "out", "train", SR, voices="synthetic")
    assert len(every.speakers) == 9
    assert all(s.startswith("game/") for s in real.speakers) and len(real.speakers) == 6
    assert all(s.startswith("synth/") for s in synthetic.speakers) and len(synthetic.speakers) == 3
    with pytest.raises(UserError, match="voices: expected"):
        Sources(tmp_path / "out", "train", SR, voices="robot")
    from hifi_tse.data.datasets import FixedExampleSet

    cfg = mixing_config(1.0)
    fixed = FixedExampleSet(tmp_path / "out", cfg, split="train", seed=1, n=12, voices="real")
    for i in range(len(fixed)):
        meta = fixed.example(i).meta
        assert meta["target_speaker"].startswith("game/")
        assert all(s.startswith("game/") for s in meta["interferer_speakers"])


def test_synthetic_share_weights_training_talkers_only(tmp_path: Path) -> None:
    from hifi_tse.data.datasets import FixedExampleSet
    from hifi_tse.data.mixer import mix_example

    out = prepare_real_and_synthetic(tmp_path)  # 3 of 9 speakers are synthetic
    sources = Sources(out, "train", SR)

    def synthetic_targets(share: float, n: int = 600) -> float:
        cfg = mixing_config(0.5)
        cfg.mixing.synthetic_share, cfg.mixing.num_interferers = share, [1, 1]
        rng = np.random.default_rng(0)
        examples = [mix_example(cfg, sources, rng, phase=1, step=None) for _ in range(n)]
        return np.mean([e.meta["target_speaker"].startswith("synth/") for e in examples])

    # the standard error of a share over 600 draws is under 0.02
    assert synthetic_targets(0.0) == pytest.approx(3 / 9, abs=0.06)
    assert synthetic_targets(0.8) == pytest.approx(0.8, abs=0.06)
    assert synthetic_targets(0.2) == pytest.approx(0.2, abs=0.06)
    # one kind of voice in the split: nothing to weight
    assert Sources(out, "train", SR, voices="real").speaker_probabilities(0.8) is None
    # only synthetic talkers asked for, but 3 of them for a mixture of 4: a one-line error
    cfg = mixing_config(0.5)
    cfg.mixing.synthetic_share, cfg.mixing.num_interferers = 1.0, [3, 3]
    with pytest.raises(UserError, match=r"synthetic_share=1.0: train holds 3 speaker"):
        mix_example(cfg, sources, np.random.default_rng(0), phase=1, step=None)

    # fixed validation / test sets keep every speaker equally likely: the same examples
    cfg = mixing_config(1.0)
    plain = FixedExampleSet(out, cfg, split="train", seed=1, n=8)
    cfg.mixing.synthetic_share = 0.9
    weighted = FixedExampleSet(out, cfg, split="train", seed=1, n=8)
    for i in range(8):
        np.testing.assert_array_equal(plain.example(i).mix, weighted.example(i).mix)


def test_single_talker_spans_drop_overlaps() -> None:
    turns = [("a", 0.0, 4.0), ("b", 3.0, 6.0), ("a", 5.5, 9.0), ("b", 9.5, 10.0)]
    spans = single_talker_spans(turns, min_seconds=0.4)
    assert spans == [("a", 0.0, 3.0), ("a", 6.0, 9.0), ("b", 4.0, 5.5), ("b", 9.5, 10.0)]
    assert single_talker_spans(turns, min_seconds=1.0)[-1] == ("b", 4.0, 5.5)


def test_demo_corpus_holds_real_voices_apart_from_synthetic(tmp_path: Path) -> None:
    from hifi_tse.data import demo_corpus as dc
    from hifi_tse.data.real_voices import EXTRA_SOURCE, FILLETS_SOURCE

    game = make_game_tree(tmp_path / "game", utts=3)
    add_later_levels(game)
    alsa = tmp_path / "alsa"
    for name in ("Front_Left", "Front_Right", "Noise"):
        write(alsa / f"{name}.wav", tone(1.4, 48000, 120, len(name)), 48000, "PCM_16")
    sample = tmp_path / "call" / "sample"
    call = np.concatenate([tone(3.0, SR, 110, 1), tone(3.0, SR, 190, 2), tone(3.0, SR, 110, 3),
                           tone(3.0, SR, 190, 4)])  # fmt: skip
    write(sample.with_suffix(".wav"), call, SR, "PCM_16")
    sample.with_suffix(".rttm").write_text(
        "".join(f"SPEAKER sample 1 {3.0 * k:.2f} 3.00 <NA> <NA> {'ab'[k % 2]} <NA> <NA>\n"
                for k in range(4))
    )  # fmt: skip
    out = tmp_path / "demo"
    summary = dc.build_demo_corpus(
        out, seed=3, num_voices=6, sentences_per_voice=3, sample_rate=SR, workers=2,
        simulate_rirs=4, progress=False, real_voices=True, voice_variants=2,
        real_roots={"fillets_root": game, "alsa_root": alsa, "pyannote_sample": sample,
                    "package_sources": []},
    )  # fmt: skip
    assert summary["real_missing"] == ""
    rows = {s: load_manifest(out, s) for s in ("train", "val", "test")}
    speakers = {s: {f"{r['source']}/{r['speaker']}" for r in rs if r["kind"] == "speech"}
                for s, rs in rows.items()}  # fmt: skip
    assert f"{FILLETS_SOURCE}/nl-m" in speakers["val"]
    assert {f"{FILLETS_SOURCE}/nl-v", f"{EXTRA_SOURCE}/pyannote-a",
            f"{EXTRA_SOURCE}/pyannote-b"} <= speakers["test"]  # fmt: skip
    # ALSA's noise file is not a voice; its voice clips (padded to the minimum) train.
    assert f"{EXTRA_SOURCE}/alsa" in speakers["train"]
    assert not any("Noise" in r["utterance"] for r in rows["train"])
    real_train = {s for s in speakers["train"] if not s.startswith(dc.SYNTHETIC_SOURCE + "/")}
    originals = {s for s in real_train if "~v" not in s}
    # The later levels' talkers train under their own names, grouped across levels; the
    # Dutch grunts (both held-out talkers under one name) and unnamed talkers are left out.
    assert originals == {f"{FILLETS_SOURCE}/{x}" for x in ("cs-m", "cs-v", "cs-hs", "nl-hs")} | {
        f"{EXTRA_SOURCE}/{x}" for x in ("alsa", "cs-later-m", "cs-kd")
    }
    # (nowall's damaged file is not among them, and did not stop the build.)
    later_m = [r for r in rows["train"] if r["speaker"] == "cs-later-m"]
    assert sorted(r["utterance"] for r in later_m) == [
        "cs-later-m/fdto_third-m",
        "cs-later-m/hanoi_m-first",
        "cs-later-m/rush_m-second",
    ]
    assert not any("hurt" in r["utterance"] for split in rows.values() for r in split)
    assert len(real_train - originals) == 2 * len(originals)  # 2 variants each, train only
    assert not any("~v" in s for split in ("val", "test") for s in speakers[split])
    assert summary["real_voices"]["speakers"] == {"train": 21, "val": 1, "test": 3}
    # The synthetic voices keep the split they have without real voices.
    synthetic = {s: {x for x in spk if x.startswith(dc.SYNTHETIC_SOURCE + "/")}
                 for s, spk in speakers.items()}  # fmt: skip
    assert all(len(v) == 2 for v in synthetic.values())
    real_test = Sources(out, "test", SR, voices="real")
    assert sorted(real_test.speakers) == sorted(speakers["test"] - synthetic["test"])


def test_a_source_held_out_whole_is_scored_apart(tmp_path: Path) -> None:
    game = make_game_tree(tmp_path / "game", utts=3)
    other = tmp_path / "other"
    for s in range(3):
        for u in range(3):
            write(other / f"o{s}" / f"u{u}.wav", tone(1.6, SR, 120 + 25 * s, u), SR, "PCM_16")
    run_prepare([SpeechSource(game, "pattern", FILLETS_LIKE, name="game", test_speakers=("nl-v",)),
                 SpeechSource(other, "folder", name="other", whole_split="test")],
                tmp_path / "out")  # fmt: skip
    rows = load_manifest(tmp_path / "out", "test")
    speakers = {f"{r['source']}/{r['speaker']}" for r in rows if r["kind"] == "speech"}
    assert {"other/o0", "other/o1", "other/o2", "game/nl-v"} == speakers
    train = load_manifest(tmp_path / "out", "train")
    assert not any(r["source"] == "other" for r in train)
    unseen = Sources(tmp_path / "out", "test", SR, voices="unseen-source")
    assert unseen.speakers == ["other/o0", "other/o1", "other/o2"]
    seen = Sources(tmp_path / "out", "train", SR, voices="seen-source")
    assert all(s.startswith("game/") for s in seen.speakers)
    # The demo scores them apart from the held-out talkers of training sources (here only
    # nl-v, too few to score); without a source held out whole it scores "real" voices.
    from hifi_tse import demo

    assert demo.test_voice_kinds(tmp_path / "out") == ["unseen-source"]
    with pytest.raises(UserError, match="whole_split must be one of"):
        run_prepare([SpeechSource(other, "folder", name="other", whole_split="dev")],
                    tmp_path / "bad")  # fmt: skip


def test_held_out_sources_from_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    game = make_game_tree(tmp_path / "game")
    other = tmp_path / "other"
    for s in range(2):
        for u in range(3):
            write(other / f"o{s}" / f"u{u}.wav", tone(1.6, SR, 120 + 25 * s, u), SR, "PCM_16")
    out = tmp_path / "out"
    args = ["prepare", "--speech", f"{game}:pattern={FILLETS_LIKE}", "--speech", f"{other}:folder",
            "--out", str(out), "--sample-rate", str(SR), "--min-seconds", "1", "--workers", "1",
            "--quiet", "--val-ratio", "0.2", "--test-ratio", "0.2"]  # fmt: skip
    assert cli_main(args + ["--held-out-sources", "other=val"]) == 0
    val = {(r["source"], r["speaker"]) for r in load_manifest(out, "val") if r["kind"] == "speech"}
    assert {("other", "o0"), ("other", "o1")} <= val
    assert not any(r["source"] == "other" for r in load_manifest(out, "train"))
    assert cli_main(args + ["--held-out-sources", "nowhere=test"]) == 2
    assert cli_main(args + ["--held-out-sources", "other=train"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "no --speech folder named nowhere" in err[0] and "NAME=val or NAME=test" in err[1]
