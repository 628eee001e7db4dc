"""Random recording chains (data/channel.py) and the mixer's use of them (training only)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

from hifi_tse.config import load_config
from hifi_tse.data.channel import (
    Chain,
    apply_chain,
    chain_sections,
    draw_chain,
    peaking_section,
)
from hifi_tse.data.datasets import TRAIN_STREAM, example_rng
from hifi_tse.data.mixer import Sources, mix_example

SR = 16000


def response_db(sections: np.ndarray, hz: float) -> float:
    """Magnitude response of second-order ``sections`` at ``hz``, dB."""
    _, h = scipy.signal.sosfreqz(sections, worN=[hz], fs=SR)
    return float(20 * np.log10(np.abs(h[0])))


@pytest.mark.parametrize("gain_db", [-12.0, -3.0, 6.0, 12.0])
def test_peaking_section_has_its_gain_at_its_centre_and_unity_far_away(gain_db: float) -> None:
    section = peaking_section(1000.0, gain_db, 1.4, SR)[None]
    assert response_db(section, 1000.0) == pytest.approx(gain_db, abs=1e-6)
    assert abs(response_db(section, 60.0)) < 0.3
    assert abs(response_db(section, 7000.0)) < 0.5
    # An octave above the centre most of the gain is gone: a bump, not a shelf.
    assert abs(response_db(section, 1000.0 * 2.0)) < abs(gain_db) * 0.6


def test_a_chain_cuts_below_its_high_pass_and_above_its_low_pass() -> None:
    chain = Chain(high_pass_hz=300.0, low_pass_hz=3400.0, peaks=((1000.0, 0.0, 1.0),))
    sections = chain_sections(chain, SR)
    assert response_db(sections, 1000.0) == pytest.approx(0.0, abs=0.5)
    assert response_db(sections, 60.0) < -25.0  # 2nd order, 2.3 octaves below
    assert response_db(sections, 7000.0) < -30.0  # 4th order, an octave above
    assert response_db(sections, 300.0) == pytest.approx(-3.0, abs=0.1)
    assert response_db(sections, 3400.0) == pytest.approx(-3.0, abs=0.1)


def test_drawn_chains_stay_in_range_and_replay_from_their_facts() -> None:
    rng = np.random.default_rng(3)
    chains = [draw_chain(rng, SR) for _ in range(300)]
    low_passed = [c.low_pass_hz for c in chains if c.low_pass_hz is not None]
    assert 0.4 < len(low_passed) / len(chains) < 0.6
    assert all(3000.0 <= f <= 0.45 * SR for f in low_passed)
    assert all(40.0 <= c.high_pass_hz <= 400.0 for c in chains)
    gains = np.array([g for c in chains for _, g, _ in c.peaks])
    assert gains.min() >= -12.0 and gains.max() <= 12.0 and abs(gains.mean()) < 1.0
    # a 48 kHz chain may low-pass anywhere up to 0.45 x the rate, a full-band model's range
    wide = [draw_chain(rng, 48000).low_pass_hz for _ in range(200)]
    assert max(f for f in wide if f is not None) > 12000.0
    assert all(Chain.from_facts(c.describe()) == c for c in chains)


def test_a_chain_filters_a_sum_as_the_sum_of_its_filtered_parts() -> None:
    rng = np.random.default_rng(0)
    parts = rng.standard_normal((3, SR)).astype(np.float32)
    chain = draw_chain(rng, SR)
    filtered = apply_chain(np.concatenate([parts.sum(0, keepdims=True), parts]), chain, SR)
    assert filtered.shape == (4, SR) and filtered.dtype == np.float32
    np.testing.assert_allclose(filtered[0], filtered[1:].sum(0), atol=1e-4)
    assert not np.allclose(filtered[1], parts[0], atol=0.05)  # it did filter


def channel_examples(packs, prob: float, augment: bool, n: int, **kwargs):
    from eval_fixtures import TINY

    cfg = load_config(TINY)
    cfg.mixing.channel_prob = prob
    sources = Sources(packs, "train", cfg.audio.sample_rate)
    return [
        mix_example(
            cfg,
            sources,
            example_rng(5, TRAIN_STREAM, 0, i),
            phase=2,
            step=None,
            augment=augment,
            **kwargs,
        )  # fmt: skip
        for i in range(n)
    ]


def test_the_mixer_puts_the_target_through_its_mixtures_chain(tiny_packs) -> None:
    plain = channel_examples(tiny_packs, 0.0, True, 6, target_present=True, keep_components=True)
    chained = channel_examples(tiny_packs, 1.0, True, 6, target_present=True, keep_components=True)
    bare = channel_examples(tiny_packs, 1.0, True, 6, target_present=True)
    for ex, full in zip(bare, chained, strict=True):  # parts or not, the same example
        for name in ("mix", "target", "ref"):
            np.testing.assert_array_equal(getattr(ex, name), getattr(full, name))
    for before, after in zip(plain, chained, strict=True):
        assert before.meta["channel"] == {"mix": None, "ref": None}
        mix_chain = Chain.from_facts(after.meta["channel"]["mix"])
        ref_chain = Chain.from_facts(after.meta["channel"]["ref"])
        assert mix_chain != ref_chain  # the enrollment has a chain of its own
        # The same scene, drawn before the chains: undo the clip guard, filter, rescale.
        mix0 = before.mix / before.meta["gain"]
        target0 = before.target / before.meta["gain"]
        filtered = apply_chain(np.stack([mix0, target0]), mix_chain, SR)
        scale = np.sqrt(np.mean(mix0**2) / np.mean(filtered[0] ** 2)) * after.meta["gain"]
        np.testing.assert_allclose(after.mix, filtered[0] * scale, atol=2e-5)
        np.testing.assert_allclose(after.target, filtered[1] * scale, atol=2e-5)
        c = after.components
        np.testing.assert_allclose(after.mix, c["speech"] + c["noise"], atol=2e-5)
        np.testing.assert_allclose(c["speech"], after.target + c["interferers"].sum(0), atol=2e-5)
        ref = apply_chain(before.ref, ref_chain, SR)
        cosine = np.dot(ref, after.ref) / np.linalg.norm(ref) / np.linalg.norm(after.ref)
        assert cosine > 0.99999
        assert np.max(np.abs(after.mix)) <= 0.95 and np.max(np.abs(after.ref)) <= 0.95


def test_chains_are_drawn_at_their_rate_and_never_for_fixed_sets(tiny_packs) -> None:
    fixed = channel_examples(tiny_packs, 1.0, False, 8)
    for ex, plain in zip(fixed, channel_examples(tiny_packs, 0.0, False, 8), strict=True):
        assert ex.meta["channel"] == {"mix": None, "ref": None}
        np.testing.assert_array_equal(ex.mix, plain.mix)
        np.testing.assert_array_equal(ex.ref, plain.ref)
    drawn = channel_examples(tiny_packs, 0.5, True, 160)
    mix_drawn = np.array([ex.meta["channel"]["mix"] is not None for ex in drawn])
    ref_drawn = np.array([ex.meta["channel"]["ref"] is not None for ex in drawn])
    assert 0.38 < mix_drawn.mean() < 0.62 and 0.38 < ref_drawn.mean() < 0.62
    assert 0.14 < (mix_drawn & ref_drawn).mean() < 0.36  # drawn apart: about 1/4 both
