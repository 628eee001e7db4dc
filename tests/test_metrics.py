"""Evaluation metrics on NumPy arrays (hifi_tse.eval.metrics)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from eval_fixtures import SR, voice

from hifi_tse.audio.signal import ACTIVITY_FRAME_SECONDS, ACTIVITY_RANGE_DB
from hifi_tse.eval.metrics import (
    energy_db,
    pesq_wb,
    score_example,
    si_sdr,
    stoi,
    summarize,
    target_activity,
)
from hifi_tse.eval.report import build_metrics, render_markdown


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return voice(np.random.default_rng(1), 140.0, 3.0, SR)


def _orthogonal_noise(target: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    t = target - target.mean()
    n = rng.standard_normal(t.size)
    n -= n.mean()
    n -= np.dot(n, t) / np.dot(t, t) * t  # exactly orthogonal to the zero-mean target
    return n


def test_si_sdr_matches_constructed_snr_and_is_scale_and_offset_invariant(speech):
    rng = np.random.default_rng(0)
    t = speech.astype(np.float64)
    n = _orthogonal_noise(t, rng)
    tc = t - t.mean()
    for want_db in (-5.0, 0.0, 12.5):
        n_scaled = n * np.sqrt(np.sum(tc**2) / np.sum(n**2) / 10 ** (want_db / 10))
        est = t + n_scaled
        assert si_sdr(est, t) == pytest.approx(want_db, abs=1e-3)
        assert si_sdr(3.7 * est + 0.2, t) == pytest.approx(want_db, abs=1e-3)


def test_si_sdr_agrees_with_fast_bss_eval(speech):
    fbe = pytest.importorskip("fast_bss_eval")
    rng = np.random.default_rng(2)
    est = speech + 0.3 * rng.standard_normal(speech.size).astype(np.float32)
    ref = fbe.si_sdr(speech[None].astype(np.float64), est[None].astype(np.float64), zero_mean=True)
    assert si_sdr(est, speech) == pytest.approx(float(np.ravel(ref)[0]), abs=1e-3)


def test_si_sdr_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="equal length"):
        si_sdr(np.zeros(10), np.zeros(11))


def test_score_example_tp_improvement_and_rms_ratio(speech):
    rng = np.random.default_rng(3)
    interferer = 0.5 * voice(rng, 230.0, 3.0, SR)
    mix = speech + interferer
    s = score_example(0.5 * speech, mix, speech, True, SR)
    assert s["si_sdri"] == pytest.approx(s["si_sdr"] - si_sdr(mix, speech))
    assert s["si_sdri"] > 30.0  # a perfect (scaled) estimate
    assert s["rms_ratio"] == pytest.approx(0.5, rel=1e-5)
    assert s["pesq"] is not None and s["pesq"] > 4.0
    assert s["stoi"] is not None and s["stoi"] > 0.99
    assert s["suppression_db"] is None


def test_score_example_ta_suppression(speech):
    mix = speech.copy()
    s = score_example(0.1 * mix, mix, np.zeros_like(mix), False, SR)
    assert s["suppression_db"] == pytest.approx(20.0, abs=1e-4)
    assert s["output_db"] == pytest.approx(energy_db(mix) - 20.0, abs=1e-4)
    assert s["si_sdri"] is None and s["pesq"] is None and s["rms_ratio"] is None


def test_pesq_failure_is_missing_not_fatal():
    silence = np.zeros(SR * 2, dtype=np.float32)
    assert pesq_wb(silence, silence, SR) is None  # PESQ: NoUtterancesError
    short = stoi(np.zeros(100), np.zeros(100), SR)  # far below STOI's 30 frames
    assert short is None or math.isfinite(short)


def test_pesq_resamples_from_48k(speech):
    from hifi_tse.audio.io import resample

    s48 = resample(speech, SR, 48000)
    noisy = s48 + 0.05 * np.random.default_rng(4).standard_normal(s48.size).astype(np.float32)
    clean_score, noisy_score = pesq_wb(s48, s48, 48000), pesq_wb(noisy, s48, 48000)
    assert clean_score is not None and noisy_score is not None
    assert clean_score > noisy_score + 1.0


def test_summarize_counts_missing_and_gives_sem():
    s = summarize([1.0, 2.0, None, 3.0, float("nan")])
    assert s["n"] == 3 and s["missing"] == 2
    assert s["mean"] == pytest.approx(2.0)
    assert s["median"] == pytest.approx(2.0)
    assert s["sem"] == pytest.approx(1.0 / math.sqrt(3))
    empty = summarize([None])
    assert empty["mean"] is None and empty["n"] == 0 and empty["missing"] == 1


def test_silent_estimate_scores_the_worst_value_in_evaluation_as_in_training(speech):
    """One SI-SDR for training, validation and evaluation: digital silence is -80 dB
    (10 log10 eps) everywhere, never a neutral-looking 0 dB."""
    import torch

    from hifi_tse.losses.separation import si_sdr as training_si_sdr

    silent = np.zeros_like(speech)
    assert si_sdr(silent, speech) == pytest.approx(-80.0, abs=1e-6)
    target = torch.from_numpy(np.asarray(speech, dtype=np.float32))[None]
    trained = float(training_si_sdr(torch.zeros_like(target), target, 1e-8)[0])
    assert trained == pytest.approx(si_sdr(silent, speech), abs=1e-4)
    assert si_sdr(0.5 * speech, speech) > 70.0  # a perfect estimate: at the 1/eps cap


def test_target_activity_counts_frames_within_range_of_the_loudest(speech):
    frame = int(round(ACTIVITY_FRAME_SECONDS * SR))
    tone = np.sin(2 * np.pi * 200.0 * np.arange(40 * frame) / SR).astype(np.float32)
    # 10 loud frames, 10 frames 20 dB down (active), 20 frames 40 dB down (inactive)
    quiet = 10.0 ** (-20.0 / 20.0)
    faint = 10.0 ** (-(ACTIVITY_RANGE_DB + 10.0) / 20.0)
    gains = np.repeat(np.r_[np.ones(10), np.full(10, quiet), np.full(20, faint)], frame)
    assert target_activity(tone * gains, SR) == pytest.approx(0.5)
    assert target_activity(tone, SR) == pytest.approx(1.0)
    assert target_activity(np.zeros(4 * frame), SR) is None  # silent: undefined
    assert target_activity(tone[: frame - 1], SR) is None  # shorter than a frame
    s = score_example(speech, speech + 0.1, speech, True, SR, perceptual=False)
    assert s["target_activity"] == pytest.approx(target_activity(speech, SR))
    assert score_example(speech, speech, 0 * speech, False, SR)["target_activity"] is None


def test_breakdowns_by_mixture_si_sdr_and_target_activity():
    def tp(si_sdr_mix: float, activity: float | None, si_sdri: float) -> dict:
        return {"target_present": True, "si_sdr_mix": si_sdr_mix, "si_sdri": si_sdri,
                "target_activity": activity, "rms_est": 0.1, "rms_target": 0.1}  # fmt: skip

    ta = {"target_present": False, "suppression_db": 20.0, "rms_est": 0.0}
    records = [tp(-8.0, 0.95, 6.0), tp(-7.0, 0.4, 4.0), tp(2.0, 0.8, 1.0), tp(2.5, None, 3.0), ta]
    metrics = build_metrics(records, [], {})
    by_mix = metrics["by_mixture_si_sdr"]
    assert list(by_mix) == ["< -5", "0 to 5"]
    assert by_mix["< -5"]["tp"]["si_sdri"]["mean"] == pytest.approx(5.0)
    assert by_mix["0 to 5"]["tp"]["count"] == 2 and by_mix["0 to 5"]["ta"]["count"] == 0
    by_act = metrics["by_target_activity"]  # the record without an activity is left out
    assert {k: v["tp"]["count"] for k, v in by_act.items()} == {
        "< 0.5": 1, "0.75 to 0.9": 1, ">= 0.9": 1}  # fmt: skip
    assert by_act[">= 0.9"]["tp"]["si_sdri"]["mean"] == pytest.approx(6.0)
    text = render_markdown({**metrics, "examples": 5}, [])
    assert "## By target activity" in text and "## By mixture SI-SDR bin (dB)" in text
