"""GE2E speaker encoder: parity with resemblyzer/librosa, speaker discrimination, errors, batching.

Real weights (``resemblyzer/pretrained.pt`` of the installed wheel) and real speech: the Czech
and Dutch voice lines of Fish Fillets NG (``-m-`` is the small fish, ``-v-`` the big one, each
voiced by one actor per language). Tests that need what is not installed skip.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from hifi_tse.audio.io import load_audio
from hifi_tse.errors import UserError
from hifi_tse.speaker.ge2e import (
    EMBED_SIZE,
    HOP,
    N_MELS,
    SAMPLE_RATE,
    GE2EEncoder,
    cosine,
    default_weights_path,
    mel_filterbank,
    partial_starts,
)

FILLETS = Path("/usr/share/games/fillets-ng/sound")
# Measured on 4 lines per voice: same-voice mean cosine 0.79 (cs) / 0.82 (nl), cross-voice
# 0.59 / 0.67, i.e. gaps of 0.20 / 0.15; half the smaller gap still catches a broken model.
MIN_SPEAKER_GAP = 0.1


def _lines(lang: str, voice: str, n: int) -> list[Path]:
    """The first ``n`` lines (sorted by path) of one voice lasting 2.5-6 s; skip if absent."""
    found = []
    for path in sorted(FILLETS.glob(f"*/{lang}/*-{voice}-*.ogg")):
        if 2.5 <= sf.info(str(path)).duration <= 6.0:
            found.append(path)
        if len(found) == n:
            return found
    pytest.skip(f"needs {n} Fish Fillets NG '{lang}' '{voice}' voice lines under {FILLETS}")


def _harmonic(seconds: float = 3.3, seed: int = 0) -> np.ndarray:
    """A voiced-speech-like test signal at 16 kHz: ``(L,)`` float32.

    Gliding f0 with vibrato, 1/k harmonics up to Nyquist, syllable-rate AM, a little noise.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = 120.0 + 30.0 * t / seconds + 4.0 * np.sin(2 * np.pi * 5.0 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    k = np.arange(1, int(SAMPLE_RATE / 2 / 160.0))[:, None]
    wav = (np.sin(k * phase + rng.uniform(0, 2 * np.pi, k.shape)) / k).sum(axis=0)
    wav *= 0.6 + 0.4 * np.sin(2 * np.pi * 4.0 * t)
    wav += 0.01 * rng.standard_normal(t.size)
    return (0.3 * wav / np.abs(wav).max()).astype(np.float32)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Batches here are a few windows: extra threads only wait on each other (and on any other
    job sharing the CPUs, where spinning OpenMP threads made single calls take seconds)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def encoder() -> GE2EEncoder:
    try:
        return GE2EEncoder.from_pretrained()
    except UserError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def speech() -> list[np.ndarray]:
    """Three different lines of the Czech small fish, 16 kHz mono."""
    return [load_audio(p, SAMPLE_RATE) for p in _lines("cs", "m", 3)]


def test_filterbank_matches_librosa() -> None:
    librosa = pytest.importorskip("librosa")
    ours = mel_filterbank()
    ref = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=400, n_mels=N_MELS)
    assert ours.shape == ref.shape == (N_MELS, 201)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("source", ["harmonic", "speech"])
def test_mel_matches_librosa(source: str, request: pytest.FixtureRequest) -> None:
    librosa = pytest.importorskip("librosa")
    wavs = [_harmonic()] if source == "harmonic" else request.getfixturevalue("speech")
    enc = GE2EEncoder()  # the front end has no weights
    for wav in wavs:
        ours = enc.mel(wav).numpy()
        ref = librosa.feature.melspectrogram(
            y=wav, sr=SAMPLE_RATE, n_fft=400, hop_length=HOP, n_mels=N_MELS
        ).T
        assert ours.shape == ref.shape == (wav.size // HOP + 1, N_MELS)
        # float32 rounding only: 1e-7 of the peak measured, per bin ~1e-5 above the noise floor.
        assert np.abs(ours - ref).max() <= 1e-6 * ref.max()
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6 * ref.max())


def test_partial_windows_match_resemblyzer() -> None:
    rz = pytest.importorskip("resemblyzer")
    for n in [0, 1, 159, 160, 3000, 25_599, 25_600, 25_601, 37_000, 64_000, 100_003, 321_987]:
        _, mel_slices = rz.VoiceEncoder.compute_partial_slices(n, rate=1.3, min_coverage=0.75)
        assert partial_starts(n).tolist() == [s.start for s in mel_slices], n


def test_embeddings_match_resemblyzer(encoder: GE2EEncoder, speech: list[np.ndarray]) -> None:
    rz = pytest.importorskip("resemblyzer")
    ref_model = rz.VoiceEncoder(device="cpu", verbose=False)
    for wav in [_harmonic(), *speech]:
        # The package's preprocessing minus the webrtcvad trim, which we do not implement.
        ref = ref_model.embed_utterance(rz.audio.normalize_volume(wav, -30, increase_only=True))
        ours = encoder.embed_utterance(wav, SAMPLE_RATE)
        assert ours.shape == (EMBED_SIZE,) and ours.dtype == np.float32
        assert np.abs(ours - ref).max() < 1e-4
        assert abs(np.linalg.norm(ours) - 1.0) < 1e-5 and ours.min() >= 0.0


@pytest.mark.parametrize("lang", ["cs", "nl"])
def test_same_speaker_closer_than_other_speaker(encoder: GE2EEncoder, lang: str) -> None:
    small = [load_audio(p, SAMPLE_RATE) for p in _lines(lang, "m", 4)]
    big = [load_audio(p, SAMPLE_RATE) for p in _lines(lang, "v", 4)]
    emb = encoder.embed_batch(small + big, SAMPLE_RATE)
    small_emb, big_emb = emb[:4], emb[4:]
    same = [cosine(a, b) for a, b in itertools.combinations(small_emb, 2)]
    cross = [cosine(a, b) for a in small_emb for b in big_emb]
    print(f"{lang}: same-speaker mean {np.mean(same):.3f}, cross-speaker {np.mean(cross):.3f}")
    assert np.mean(same) > np.mean(cross) + MIN_SPEAKER_GAP


def test_missing_or_bad_weights_are_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="pip install --no-deps resemblyzer") as exc:
        default_weights_path("hifi-tse-no-such-distribution")
    assert "\n" not in str(exc.value)

    with pytest.raises(UserError, match="pip install --no-deps resemblyzer") as exc:
        GE2EEncoder.from_pretrained(tmp_path / "absent.pt")
    assert "\n" not in str(exc.value)

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match="not a readable torch checkpoint") as exc:
        GE2EEncoder.from_pretrained(garbage)
    assert "\n" not in str(exc.value)

    wrong = tmp_path / "wrong.pt"
    torch.save({"model_state": {"linear.weight": torch.zeros(3, 3)}}, wrong)
    with pytest.raises(UserError, match="not GE2E encoder weights") as exc:
        GE2EEncoder.from_pretrained(wrong)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("wav", "match"),
    [
        (np.zeros(0, dtype=np.float32), "empty"),
        (np.full(16000, np.nan, dtype=np.float32), "NaN"),
        (np.array([0.1, np.inf, 0.0] * 8000, dtype=np.float32), "Inf"),
        (np.zeros(16000, dtype=np.int16), "float audio"),
    ],
)
def test_bad_audio_is_refused_in_one_line(wav: np.ndarray, match: str) -> None:
    enc = GE2EEncoder()  # validation happens before the network, so no weights are needed
    with pytest.raises(UserError, match=match):
        enc.embed_utterance(wav, SAMPLE_RATE)
    with pytest.raises(UserError, match=match):
        enc.embed_batch([_harmonic(1.0), wav], SAMPLE_RATE)


def test_batch_equals_one_by_one(encoder: GE2EEncoder) -> None:
    rng = np.random.default_rng(1)
    # One partial (0.4 s, padded), a few, many; a quiet clip (volume normalised) and two rates.
    clips = [
        (_harmonic(0.4, seed=1), SAMPLE_RATE),
        (_harmonic(2.7, seed=2), SAMPLE_RATE),
        (0.01 * _harmonic(3.1, seed=3), SAMPLE_RATE),
        (_harmonic(7.9, seed=4), SAMPLE_RATE),
        (0.1 * rng.standard_normal(22050 * 2).astype(np.float32), 22050),
    ]
    for sr in (SAMPLE_RATE, 22050):
        group = [w for w, s in clips if s == sr]
        batch = encoder.embed_batch(group, sr)
        assert batch.shape == (len(group), EMBED_SIZE)
        single = np.stack([encoder.embed_utterance(w, sr) for w in group])
        assert np.abs(batch - single).max() < 1e-5


def test_cosine() -> None:
    a = np.array([1.0, 0.0, 1.0])
    assert cosine(a, a) == pytest.approx(1.0)
    assert cosine(a, np.array([0.0, 1.0, 0.0])) == pytest.approx(0.0)
    assert cosine(a, -2 * a) == pytest.approx(-1.0)
    assert cosine(a, np.zeros(3)) == 0.0
    with pytest.raises(ValueError):
        cosine(a, np.ones(4))
