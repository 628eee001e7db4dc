"""Target activity (hifi_tse.infer.activity): detection against a known on/off pattern,
gating, the CSV / RTTM files of ``hifi-tse separate`` and ``hifi-tse stream --activity``."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import hifi_tse
from hifi_tse.api import Extractor
from hifi_tse.audio.io import resample
from hifi_tse.cli import main
from hifi_tse.data import espeak
from hifi_tse.eval.activity_eval import frame_counts, rates, target_truth
from hifi_tse.infer.activity import DEFAULTS, FADE_SECONDS, Activity, Segment, read_activity

MODELS = Path(__file__).resolve().parent.parent / "models"
OFFLINE, CAUSAL = MODELS / "demo_model.pt", MODELS / "demo_causal_model.pt"
SR = 16000
FILE_RATE = 22050  # the WAV files' rate: the CLI resamples to the model's and back
LEVEL = 0.05  # RMS of every utterance
TARGET = espeak.VoiceSettings("en-US", "m3", 50, 60, 160, 70)
OTHER = espeak.VoiceSettings("en-GB-x-rp", "f1", 50, 60, 170, 70)
TARGET_LINES = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "We will meet again tomorrow morning at the old station.",  # the enrollment
)
OTHER_LINES = (
    "A large fawn jumped quickly over white zinc boxes in the yard.",
    "Six spoons of fresh snow peas and five thick slabs of blue cheese.",
    "The birch canoe slid on the smooth planks of the wooden deck.",
    "Glue the sheet to the dark blue background before it dries.",
)
SECONDS = 16.0
TARGET_STARTS = (1.0, 9.0)  # s; the interferer talks throughout
GAP_SECONDS = 0.3  # between the interferer's sentences


def _say(text: str, voice: espeak.VoiceSettings) -> np.ndarray:
    wav, rate = espeak.synthesize(text, voice)
    wav = resample(wav, rate, SR)
    return (wav * LEVEL / np.sqrt(np.mean(wav**2))).astype(np.float32)


@pytest.fixture(scope="module")
def scene() -> dict[str, np.ndarray]:
    """A 16 s mixture at 16 kHz: an interferer talking throughout, the target in two
    sentences starting at :data:`TARGET_STARTS`; the target's third sentence enrolls."""
    n = int(SECONDS * SR)
    target, other = np.zeros(n, np.float32), np.zeros(n, np.float32)
    lines = [_say(t, TARGET) for t in TARGET_LINES]
    spans = []
    for start, line in zip(TARGET_STARTS, lines):
        a = int(start * SR)
        target[a : a + line.size] = line
        spans.append((start, start + line.size / SR))
    t = int(0.2 * SR)
    for line in [_say(t, OTHER) for t in OTHER_LINES] * 2:
        k = min(line.size, n - t)
        if k <= 0:
            break
        other[t : t + k] = line[:k]
        t += line.size + int(GAP_SECONDS * SR)
    return {"mix": target + other, "target": target, "ref": lines[2], "spans": np.array(spans)}


@pytest.fixture(scope="module")
def offline(one_thread) -> Extractor:
    return Extractor.from_checkpoint(OFFLINE, threads=1)


@pytest.fixture(scope="module")
def detected(offline, scene) -> tuple[np.ndarray, Activity]:
    return offline.extract_with_activity(scene["mix"], SR, offline.enroll(scene["ref"], SR))


def test_activity_follows_the_known_on_off_pattern(detected, scene) -> None:
    est, act = detected
    assert isinstance(act, hifi_tse.Activity)  # exported at the package's top
    truth = target_truth(scene["target"], SR, DEFAULTS)
    assert act.scores.shape == act.active.shape == truth.shape
    assert act.frame_seconds == pytest.approx(DEFAULTS.frame_seconds)
    assert rates(frame_counts(act.active, truth))["f1"] >= 0.85  # 0.96 when written
    # every segment lies in a target sentence (a pause may split one), every sentence starts
    # a segment within 0.5 s
    for seg in act.segments:
        assert any(a - 0.5 < seg.start < seg.end < b + 0.5 for a, b in scene["spans"])
        assert seg.score > DEFAULTS.on_db  # the estimate keeps most of the mixture there
    for a, _ in scene["spans"]:
        assert any(abs(seg.start - a) < 0.5 for seg in act.segments)
    assert est.shape == scene["mix"].shape


def test_gate_is_exact_silence_outside_the_segments(detected) -> None:
    est, act = detected
    gated = act.gate(est, SR)
    inside = np.zeros(est.size, dtype=bool)
    for seg in act.segments:
        inside[int(round(seg.start * SR)) : int(round(seg.end * SR))] = True
    assert not np.any(gated[~inside])  # exact zeros
    fade = int(round(FADE_SECONDS * SR))
    core = inside.copy()
    for seg in act.segments:  # away from the fades the estimate is untouched
        a, b = int(round(seg.start * SR)), int(round(seg.end * SR))
        core[a : a + fade] = core[b - fade : b] = False
    np.testing.assert_array_equal(gated[core], est[core])
    gain = act.gain(est.size, SR)
    assert np.all((gain[inside] > 0) & (gain[inside] <= 1))
    # a hand-made activity: the fade is a monotone raised cosine inside the segment
    hand = Activity(0.02, np.zeros(5, np.float32), np.zeros(5, bool), (Segment(0.1, 0.5, 0.0),))
    g = hand.gain(1000, 1000, fade_seconds=0.05)
    assert not g[:100].any() and not g[500:].any() and np.all(np.diff(g[100:150]) > 0)
    assert np.all(g[150:450] == 1.0)


def _write(path: Path, audio: np.ndarray) -> Path:
    sf.write(path, resample(audio, SR, FILE_RATE), FILE_RATE, subtype="FLOAT")
    return path


def test_separate_writes_csv_and_rttm_and_gates(detected, scene, tmp_path) -> None:
    _, act = detected
    mix = _write(tmp_path / "meeting.wav", scene["mix"])
    ref = _write(tmp_path / "alice.wav", scene["ref"])
    base = ["separate", "--checkpoint", str(OFFLINE), "--threads", "1", "--ref", str(ref)]
    csv_path, out = tmp_path / "alice.csv", tmp_path / "alice_only.wav"
    assert main([*base, "--mix", str(mix), "-o", str(out), "--activity", str(csv_path),
                 "--gate"]) == 0  # fmt: skip
    segments = read_activity(csv_path)
    assert csv_path.read_text().startswith("start,end,score\n")
    assert len(segments) == len(act.segments)
    for got, want in zip(segments, act.segments):  # the files' rate changes little
        assert abs(got.start - want.start) <= 0.06 and abs(got.end - want.end) <= 0.06
    audio, rate = sf.read(out, dtype="float32")
    assert rate == FILE_RATE and audio.size == sf.info(mix).frames
    inside = np.zeros(audio.size, dtype=bool)
    for seg in segments:
        inside[int(round(seg.start * rate)) : int(round(seg.end * rate)) + 1] = True
    assert not np.any(audio[~inside]) and np.any(audio[inside])
    # batch mode: an RTTM beside each output, same segments
    mixes = tmp_path / "mixes"
    mixes.mkdir()
    _write(mixes / "meeting.wav", scene["mix"])
    outs = tmp_path / "outs"
    assert main([*base, "--mix-dir", str(mixes), "--out-dir", str(outs),
                 "--activity", ".rttm"]) == 0  # fmt: skip
    rttm = outs / "meeting_target.rttm"
    lines = rttm.read_text().splitlines()
    assert lines and all(line.split()[:3] == ["SPEAKER", "meeting", "1"] for line in lines)
    got = [t for s in read_activity(rttm) for t in (s.start, s.end)]
    assert got == pytest.approx([t for s in segments for t in (s.start, s.end)], abs=2e-3)
    assert sf.info(outs / "meeting_target.wav").frames == audio.size
    # a path with another suffix fails in one line, before any work
    bad = main([*base, "--mix", str(mix), "-o", str(out), "--activity", str(tmp_path / "a.txt")])
    assert bad != 0


def test_stream_prints_activity_per_block(scene, tmp_path, monkeypatch, capsys) -> None:
    ref = _write(tmp_path / "alice.wav", scene["ref"])
    lead = int(1.0 * SR)  # digital silence, then the target's first sentence alone
    signal = scene["target"][: int(5.0 * SR)]
    pcm = np.clip(np.round(signal * 32768), -32768, 32767).astype("<i2").tobytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(pcm)))
    stdout = io.TextIOWrapper(io.BytesIO())
    monkeypatch.setattr(sys, "stdout", stdout)
    args = ["stream", "--checkpoint", str(CAUSAL), "--ref", str(ref), "--rate", str(SR),
            "--block-ms", "40", "--threads", "1", "--activity"]  # fmt: skip
    assert main(args) == 0
    lines = [ln.split() for ln in capsys.readouterr().err.splitlines() if ln.startswith("activity")]
    assert len(lines) >= int(5.0 / 0.04) - 2  # one line per output block
    spans = [tuple(float(x) for x in ln[1].split("-")) for ln in lines]
    assert spans[-1][1] == pytest.approx(signal.size / SR, abs=1e-3)
    states = {(a, b): ln[-1] for (a, b), ln in zip(spans, lines)}
    silent = [s for (a, b), s in states.items() if b < lead / SR - 0.1]
    talking = [s for (a, b), s in states.items() if 1.2 < a < 4.0]
    assert silent and all(s == "off" for s in silent)
    assert talking.count("on") >= 0.8 * len(talking)
    assert len(stdout.buffer.getvalue()) == len(pcm)  # the audio still flows


def test_evaluate_reports_activity_on_partial_and_absent_mixtures(offline, scene, tmp_path):
    from hifi_tse.eval.cli import eval_options
    from hifi_tse.eval.evaluate import evaluate_model

    base = {"snr_db": 0.0, "num_interferers": 1, "ref": scene["ref"], "meta": {}}
    other = scene["mix"] - scene["target"]
    items = [
        {**base, "mix": scene["mix"], "target": scene["target"], "target_present": True,
         "index": 0},
        {**base, "mix": other, "target": np.zeros_like(other), "target_present": False,
         "index": 1},
    ]  # fmt: skip
    opts = eval_options(perceptual=False, speaker_similarity=False, activity=True)
    opts = type(opts)(**{**opts.__dict__, "progress": False})
    metrics = evaluate_model(offline, items, opts, tmp_path, partial_items=items[:1])
    block = metrics["activity"]["all"]
    assert block["partial"]["count"] == 1 and block["partial"]["f1"] > 0.5
    assert block["ta"]["count"] == 1 and 0.0 <= block["ta"]["flagged_share"] <= 1.0
    assert "## Target activity" in (tmp_path / "report.md").read_text()
    # without the flag nothing is scored
    opts = type(opts)(**{**opts.__dict__, "activity": False})
    assert evaluate_model(offline, items, opts, None, partial_items=items[:1])["activity"] is None
