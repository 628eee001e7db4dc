"""Mixer properties on a real prepared corpus (16 kHz, simulated RIRs, noise)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_prepare import SR, _cfg, build_corpus, make_noise_tree, tone, write

from hifi_tse.audio.signal import (
    convolve_valid,
    crop_or_pad,
    fft_convolve,
    loop_to_length,
    mix_at_snr,
    peak_normalise,
    power,
    speed_perturb,
)
from hifi_tse.config import Config, config_from_dict
from hifi_tse.data.mixer import CLIP_PEAK, Sources, mix_example
from hifi_tse.data.prepare import prepare_corpus
from hifi_tse.errors import UserError
from hifi_tse.eval.metrics import target_activity


def db(x: float) -> float:
    return 10.0 * np.log10(x)


@pytest.fixture(scope="module")
def packs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_corpus(tmp_path_factory.mktemp("mixer"), n_speakers=6, n_utts=3)


def make_cfg(**data) -> Config:
    base = {"max_rir_seconds": 0.2}
    base.update(data)
    return config_from_dict(
        {"audio": {"sample_rate": SR, "segment_seconds": 1.0, "ref_seconds": 0.75}, "mixing": base}
    )


def draw(cfg: Config, packs: Path, seed: int, **kw):
    src = Sources(packs, "train", SR)
    kw.setdefault("phase", 2)
    kw.setdefault("step", None)
    return mix_example(cfg, src, np.random.default_rng(seed), keep_components=True, **kw)


def speaker_of(packs: Path) -> dict[str, str]:
    return {c.uid: c.speaker for u in Sources(packs, "train", SR).utterances for c in u}


def test_signal_helpers() -> None:
    rng = np.random.default_rng(0)
    x, h = rng.standard_normal(1000).astype(np.float32), rng.standard_normal(64).astype(np.float32)
    np.testing.assert_allclose(fft_convolve(x, h), np.convolve(x, h), atol=1e-4)
    np.testing.assert_allclose(convolve_valid(x, h), np.convolve(x, h)[63:1000], atol=1e-4)
    np.testing.assert_array_equal(loop_to_length(np.arange(3.0), 7, 1), [1, 2, 0, 1, 2, 0, 1])
    np.testing.assert_array_equal(crop_or_pad(np.arange(1.0, 4.0), 5, 1), [2, 3, 0, 0, 0])
    assert np.max(np.abs(peak_normalise(x, 0.9))) == pytest.approx(0.9)
    assert len(speed_perturb(x, 1.25, SR)) == pytest.approx(800, abs=2)
    mix, noise = mix_at_snr(x, h[np.arange(1000) % 64], 7.5, 1e-12)
    assert db(power(x) / power(noise)) == pytest.approx(7.5, abs=1e-4)
    np.testing.assert_allclose(mix, x + noise, atol=1e-6)


def test_lengths_snr_sir_reference_and_interferers(packs: Path) -> None:
    cfg = make_cfg(ta_ratio=0.0, speed_perturb=True)
    spk_of = speaker_of(packs)
    for seed in range(12):
        ex = draw(cfg, packs, seed)
        m, c = ex.meta, ex.components
        assert ex.mix.shape == ex.target.shape == (SR,) and ex.ref.shape == (int(0.75 * SR),)
        assert ex.mix.dtype == ex.ref.dtype == ex.target.dtype == np.float32
        assert ex.target_present and np.any(ex.target)
        # realised SNR equals the drawn value (the clip guard scales speech and noise alike)
        np.testing.assert_allclose(ex.mix, c["speech"] + c["noise"], atol=1e-5)
        assert db(power(c["speech"]) / power(c["noise"])) == pytest.approx(ex.snr_db, abs=0.1)
        assert cfg.mixing.snr_db[0] <= ex.snr_db <= cfg.mixing.snr_db[1]
        # every interferer at its drawn SIR against the target
        np.testing.assert_allclose(c["speech"], ex.target + c["interferers"].sum(0), atol=1e-5)
        for y, sir in zip(c["interferers"], m["sir_db"]):
            assert db(power(ex.target) / power(y)) == pytest.approx(sir, abs=0.1)
        # distinct speakers, reference = another utterance of the target speaker
        spk = [m["target_speaker"], *m["interferer_speakers"]]
        assert len(set(spk)) == len(spk) == 1 + ex.num_interferers
        assert 1 <= ex.num_interferers <= 3
        assert m["ref_utterance"] != m["target_utterance"]
        assert spk_of[m["ref_utterance"]] == spk_of[m["target_utterance"]] == m["target_speaker"]
        assert [spk_of[u] for u in m["interferer_utterances"]] == m["interferer_speakers"]
        assert np.max(np.abs(ex.mix)) <= CLIP_PEAK + 1e-6
        assert m["rir_ids"]["target"] is not None  # rir_prob = 1
        assert 0.9 <= m["speed"]["target"] <= 1.1


def fundamental_hz(x: np.ndarray) -> float:
    """The strongest spectral peak of ``x`` (the test tones' fundamental), 0.25 Hz grid."""
    n = 4 * SR
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)), n))
    return float(np.argmax(spectrum) * SR / n)


def test_speed_perturbation_is_one_voice_per_talker_and_training_only(packs: Path) -> None:
    # Dry and clean, so the only change to a talker's tone is the speed factor.
    cfg = make_cfg(ta_ratio=0.0, speed_perturb=True, rir_prob=0.0, noisy_ref_prob=0.0)
    factors = []
    for seed in range(6):
        ex = draw(cfg, packs, seed)
        speed = ex.meta["speed"]
        # build_corpus gives speaker p(225 + s) harmonics of 90 + 25 s Hz
        f0 = 90.0 + 25.0 * (int(ex.meta["target_speaker"][-3:]) - 225)
        # the enrollment is the same (resampled) voice as the target: same factor, same pitch
        assert speed["ref"] == speed["target"]
        assert fundamental_hz(ex.ref) == pytest.approx(f0 * speed["target"], rel=0.01)
        assert fundamental_hz(ex.target) == pytest.approx(f0 * speed["target"], rel=0.01)
        assert all(0.9 <= f <= 1.1 for f in [speed["target"], *speed["interferers"]])
        factors.append(speed["target"])
    assert max(factors) - min(factors) > 0.05  # really perturbed, not a constant
    # validation / test mixtures hold the voices as recorded: no perturbation, and the same
    # example as without speed perturbation in the config
    plain = make_cfg(ta_ratio=0.0, speed_perturb=False, rir_prob=0.0, noisy_ref_prob=0.0)
    for seed in range(3):
        held_out, unperturbed = draw(cfg, packs, seed, augment=False), draw(plain, packs, seed)
        assert held_out.meta["speed"]["ref"] == held_out.meta["speed"]["target"] == 1.0
        for name in ("mix", "ref", "target"):
            np.testing.assert_array_equal(getattr(held_out, name), getattr(unperturbed, name))


def test_target_absent(packs: Path) -> None:
    cfg = make_cfg(ta_ratio=1.0)
    spk_of = speaker_of(packs)
    for seed in range(8):
        ex = draw(cfg, packs, seed)
        m, c = ex.meta, ex.components
        assert not ex.target_present and not m["target_present"]
        assert np.all(ex.target == 0.0)
        assert m["target_utterance"] is None and ex.num_interferers >= 1
        assert m["target_speaker"] not in m["interferer_speakers"]
        assert all(spk_of[u] != m["target_speaker"] for u in m["interferer_utterances"])
        # the mixture is interferers + noise only; SIRs relative to the first interferer
        np.testing.assert_allclose(ex.mix, c["interferers"].sum(0) + c["noise"], atol=1e-5)
        assert m["sir_db"][0] is None
        for y, sir in zip(c["interferers"][1:], m["sir_db"][1:]):
            assert db(power(c["interferers"][0]) / power(y)) == pytest.approx(sir, abs=0.1)
        assert db(power(c["speech"]) / power(c["noise"])) == pytest.approx(ex.snr_db, abs=0.1)
        assert spk_of[m["ref_utterance"]] == m["target_speaker"]


def test_phase_one_is_never_target_absent(packs: Path) -> None:
    cfg = make_cfg(ta_ratio=1.0)
    assert all(draw(cfg, packs, s, phase=1).target_present for s in range(6))
    with pytest.raises(ValueError, match="phase 1"):
        draw(cfg, packs, 0, phase=1, target_present=False)
    half = make_cfg(ta_ratio=0.5)
    present = [draw(half, packs, s, phase=2).target_present for s in range(30)]
    assert 0 < sum(present) < 30


def test_deterministic_for_a_seed(packs: Path) -> None:
    cfg = make_cfg()
    a, b, c = draw(cfg, packs, 42), draw(cfg, packs, 42), draw(cfg, packs, 43)
    for name in ("mix", "ref", "target"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.meta == b.meta
    assert not np.array_equal(a.mix, c.mix)


def test_curriculum_noisy_ref_and_padding(packs: Path) -> None:
    cfg = make_cfg(
        easy_steps=100, easy_snr_db=[18.0, 20.0], noisy_ref_prob=1.0, noisy_ref_ramp=[10, 20]
    )
    for s in range(6):
        ex = draw(cfg, packs, s, step=0)
        assert ex.num_interferers == 1 and 18.0 <= ex.snr_db <= 20.0
        assert ex.meta["difficulty"] == 0.0 and not ex.meta["noisy_ref"]
        late = draw(cfg, packs, s, step=500)
        assert late.meta["noisy_ref"] and late.meta["rir_ids"]["ref"] is not None
        assert late.meta["ref_snr_db"] is not None
    # segment longer than every utterance (1.5 s) and noise clip (2 s): padded / looped
    long_cfg = config_from_dict(
        {
            "audio": {"sample_rate": SR, "segment_seconds": 3.0, "ref_seconds": 2.0},
            "mixing": {"max_rir_seconds": 0.2, "speed_perturb": False},
        }
    )
    ex = draw(long_cfg, packs, 3)
    assert ex.mix.shape == (3 * SR,) and ex.ref.shape == (2 * SR,)
    noise = ex.components["noise"]  # the 2 s clip looped: period 2 s, no silent gap
    np.testing.assert_allclose(noise[: SR // 2], noise[2 * SR : 2 * SR + SR // 2])
    assert np.mean(noise == 0.0) < 0.01
    assert np.sum(ex.target == 0.0) > 0.3 * SR  # zero padding around the 1.5 s utterance


def test_sources_checks(packs: Path) -> None:
    with pytest.raises(UserError, match="Hz"):
        Sources(packs, "train", 48000)
    with pytest.raises(UserError, match="speaker"):
        Sources(packs, "val", SR)  # val is empty in this corpus


def test_dense_target_crops_find_the_speech_in_training_only(tmp_path: Path) -> None:
    """Utterances of 2 s of digital silence then 1 s of voice: a uniform 1-s crop rarely
    holds only voice, the dense crop always does; fixed sets never change."""
    speech = tmp_path / "speech"
    for s in range(4):
        for u in range(2):
            voice = tone(1.0, SR, 90.0 + 25 * s, seed=10 * s + u)
            path = speech / f"wav48/p{225 + s}/p{225 + s}_{u:03d}.flac"
            write(path, np.r_[np.zeros(2 * SR), voice], SR, "PCM_24")
    packs = tmp_path / "packs"
    noise = make_noise_tree(tmp_path / "noise")
    prepare_corpus(
        [(speech, None)], [noise], [], 0, packs, SR, 1.0, 0.0, 0.0, 1, 0,
        cfg=_cfg(max_rir_seconds=0.2), progress=False,
    )  # fmt: skip
    fixed = {"speed_perturb": False, "rir_prob": 0.0, "ta_ratio": 0.0}

    def activities(dense: float, augment: bool = True) -> list[float]:
        """Target activity of 24 TP mixtures (0 for a crop of silence alone)."""
        cfg = make_cfg(dense_target_prob=dense, **fixed)
        src, rng = Sources(packs, "train", SR), np.random.default_rng(5)
        exs = [mix_example(cfg, src, rng, phase=2, step=None, augment=augment) for _ in range(24)]
        return [target_activity(ex.target, SR) or 0.0 for ex in exs]

    uniform, dense, half = activities(0.0), activities(1.0), activities(0.5)
    assert min(dense) == 1.0
    assert np.mean(uniform) < 0.6 and sum(a == 1.0 for a in uniform) < 6
    assert 0 < sum(a < 1.0 for a in half) < sum(a < 1.0 for a in uniform)
    # validation / test sets (augment=False) draw the same mixtures whatever the setting
    assert activities(1.0, augment=False) == activities(0.0, augment=False)
