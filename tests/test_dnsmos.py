"""No-reference DNSMOS: parity with the speechmos wheel's own code, framing, behaviour on
noise, the missing-wheel error, and the ``--dnsmos`` flags of evaluate and separate.

The fixture clips are a synthetic voiced signal (gliding harmonic stack with syllable-rate
bursts), clean and with white noise, written to 16-bit WAV files and read back. The
parity tests import ``speechmos.dnsmos`` (which needs librosa, from the dev extra); tests
that need what is not installed skip.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from eval_fixtures import tiny_ckpt  # noqa: F401

from hifi_tse.cli import main
from hifi_tse.errors import UserError
from hifi_tse.eval import dnsmos
from hifi_tse.eval.dnsmos import DnsmosScorer, distinct_windows, windows

SR = dnsmos.SAMPLE_RATE
LONG_SECONDS = 11.5  # two 9.01 s windows
SHORT_SECONDS = 4.8  # repeated once to 9.6 s: one window
NOISE_RMS = 0.05
PARITY_TOL = 1e-3  # MOS points
# Measured on the fixture: BAK 3.3 clean vs 1.6 noisy, pBAK 3.0 vs 1.6.
MIN_BAK_DROP = 0.5

try:
    dnsmos.model_path("p835")
    HAVE_WHEEL = True
except UserError:
    HAVE_WHEEL = False
needs_wheel = pytest.mark.skipif(not HAVE_WHEEL, reason="speechmos wheel not installed")
HAVE_REFERENCE = HAVE_WHEEL and importlib.util.find_spec("librosa") is not None


def _voiced(seconds: float, seed: int = 0) -> np.ndarray:
    """``(L,)`` float32 speech-like signal at 16 kHz, peak about 0.3."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 140.0 + 30.0 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(k * phase + rng.uniform(0, 6)) / k for k in range(1, 12))
    bursts = (np.sin(2 * np.pi * 2.5 * t) > -0.2).astype(np.float64)
    return (0.15 * x * bursts).astype(np.float32)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, np.ndarray]:
    """Clean and noisy clips, long and short, as read back from 16-bit WAV files."""
    folder = tmp_path_factory.mktemp("dnsmos")
    rng = np.random.default_rng(1)
    out = {}
    for name, seconds in (("long", LONG_SECONDS), ("short", SHORT_SECONDS)):
        clean = _voiced(seconds)
        noisy = clean + NOISE_RMS * rng.standard_normal(clean.size).astype(np.float32)
        for kind, wav in (("clean", clean), ("noisy", noisy)):
            path = folder / f"{kind}_{name}.wav"
            sf.write(path, wav, SR, subtype="PCM_16")
            out[f"{kind}_{name}"], _ = sf.read(path, dtype="float32")
    return out


@pytest.fixture(scope="module")
def scorer() -> DnsmosScorer:
    if not HAVE_WHEEL:
        pytest.skip("speechmos wheel not installed")
    return DnsmosScorer(threads=1)


@pytest.mark.skipif(not HAVE_REFERENCE, reason="needs the speechmos wheel and librosa")
@pytest.mark.parametrize("clip", ["noisy_long", "clean_short"])
def test_scores_equal_the_packages_own(scorer, clips, clip) -> None:
    from speechmos import dnsmos as reference

    wav = clips[clip]
    ours = scorer.score(wav, SR)
    plain = reference.run(wav, SR)
    personal = reference.run(wav, SR, model_type="dnsmos_personalized")
    theirs = {
        "sig": plain["sig_mos"],
        "bak": plain["bak_mos"],
        "ovrl": plain["ovrl_mos"],
        "p808": plain["p808_mos"],
        "psig": personal["sig_mos"],
        "pbak": personal["bak_mos"],
        "povrl": personal["ovrl_mos"],
    }
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(float(value), abs=PARITY_TOL), key


@pytest.mark.skipif(not HAVE_REFERENCE, reason="needs the speechmos wheel and librosa")
def test_p808_features_equal_librosas(clips) -> None:
    from speechmos import dnsmos as reference

    wins = windows(clips["noisy_long"])
    theirs = reference.DNSMOS.audio_melspec(None, wins[1][: -dnsmos.P808_TRIM])
    ours = dnsmos.p808_features(wins[1:2])[0]
    assert ours.shape == theirs.shape == (900, dnsmos.P808_N_MELS)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_framing_follows_the_reference() -> None:
    # Windows start every second; the reference's float arithmetic makes windows 7-23 fall
    # one sample short and skips them, and so do we: a 20 s clip has windows at 0-6 s only.
    ramp = np.arange(20 * SR, dtype=np.float32)
    wins = windows(ramp)
    assert wins.shape == (7, dnsmos.WINDOW_SAMPLES)
    np.testing.assert_array_equal(wins[:, 0], np.arange(7) * SR)
    # A short clip is doubled until it fills a window; its copies are scored once.
    short = np.arange(2 * SR, dtype=np.float32)
    wins = windows(short)
    np.testing.assert_array_equal(wins[0, : 2 * SR], short)
    np.testing.assert_array_equal(wins[0, 2 * SR : 4 * SR], short)
    unique, index = distinct_windows(wins)
    assert len(wins) == 7 and len(unique) == 2
    np.testing.assert_array_equal(unique[index], wins)


def test_noise_lowers_background_scores(scorer, clips) -> None:
    clean, noisy = scorer.score_batch([clips["clean_short"], clips["noisy_short"]], SR)
    assert noisy["bak"] < clean["bak"] - MIN_BAK_DROP
    assert noisy["pbak"] < clean["pbak"] - MIN_BAK_DROP
    assert all(1.0 <= v <= 5.0 for v in (*clean.values(), *noisy.values()))
    # Another rate is resampled to 16 kHz: a 48 kHz copy scores as the 16 kHz clip does.
    from hifi_tse.audio.io import resample

    upsampled = scorer.score(resample(clips["noisy_short"], SR, 3 * SR), 3 * SR)
    assert upsampled["bak"] == pytest.approx(noisy["bak"], abs=0.1)


def test_missing_wheel_names_the_pip_command(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        DnsmosScorer(dist="hifi-tse-no-such-wheel")
    message = str(err.value)
    assert "\n" not in message and "pip install --no-deps speechmos==0.0.1.1" in message
    with pytest.raises(UserError, match="model not found"):
        dnsmos.model_path("p835", dist="numpy")  # installed, but holds no DNSMOS model
    with pytest.raises(UserError, match="NaN"):
        dnsmos.prepare(np.array([0.0, np.nan], dtype=np.float32), SR)


# --------------------------------------------------------------------------- commands


@pytest.fixture()
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _pair(folder: Path, seed: int) -> tuple[Path, Path, Path]:
    """A 1 s two-talker mixture, its target and a 1 s enrollment of the target, as WAVs
    (1 s clips repeat into one distinct DNSMOS window: the cheapest to score)."""
    target = _voiced(1.0, seed)
    other = np.roll(_voiced(1.0, seed + 7), SR // 3) * 0.8
    paths = tuple(folder / f"{name}{seed}.wav" for name in ("mix", "tgt", "ref"))
    for path, wav in zip(paths, (target + other, target, _voiced(1.0, seed + 3))):
        sf.write(path, wav, SR)
    return paths


@needs_wheel
def test_evaluate_list_reports_mixture_and_estimate(tiny_ckpt, tmp_path, capsys, one_thread):  # noqa: F811
    mix, tgt, ref = _pair(tmp_path, 0)
    mix2, _, ref2 = _pair(tmp_path, 1)
    (tmp_path / "pairs.csv").write_text(f"mix,ref,target\n{mix},{ref},{tgt}\n{mix2},{ref2},\n")
    out = tmp_path / "ev"
    code = main(["evaluate", "--checkpoint", str(tiny_ckpt), "--list", str(tmp_path / "pairs.csv"),
                 "--out", str(out), "--no-perceptual", "--no-speaker-similarity",
                 "--dnsmos"])  # fmt: skip
    assert code == 0 and "DNSMOS OVRL" in capsys.readouterr().out
    quality = json.loads((out / "metrics.json").read_text())["dnsmos"]
    for group in ("tp", "ta"):
        for key in dnsmos.COLUMNS:
            assert quality[group][key]["n"] == 1, (group, key)
    assert "No-reference quality (DNSMOS)" in (out / "report.md").read_text()
    header = (out / "per_example.csv").read_text().splitlines()[0].split(",")
    assert set(dnsmos.COLUMNS) <= set(header)


@needs_wheel
def test_no_target_mode_and_separate_report_dnsmos(tiny_ckpt, tmp_path, capsys, one_thread):  # noqa: F811
    from hifi_tse.speaker.ge2e import default_weights_path

    mix, _, ref = _pair(tmp_path, 2)
    est = tmp_path / "est.wav"
    code = main(["separate", "--checkpoint", str(tiny_ckpt), "--mix", str(mix), "--ref", str(ref),
                 "-o", str(est), "--dnsmos", "--threads", "1"])  # fmt: skip
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert code == 0 and line.startswith("DNSMOS (mixture → estimate): SIG ") and "pBAK" in line
    try:
        default_weights_path()
    except UserError:
        pytest.skip("--no-target needs resemblyzer's weights")
    (tmp_path / "own.csv").write_text(f"mix,ref\n{mix},{ref}\n")
    out = tmp_path / "own"
    code = main(["evaluate", "--checkpoint", str(tiny_ckpt), "--list", str(tmp_path / "own.csv"),
                 "--no-target", "--dnsmos", "--out", str(out)])  # fmt: skip
    assert code == 0 and "DNSMOS OVRL" in capsys.readouterr().out
    quality = json.loads((out / "metrics.json").read_text())["dnsmos"]
    assert all(quality[key]["n"] == 1 for key in dnsmos.COLUMNS)
    assert "mixture → estimate" in (out / "report.md").read_text()
    header = (out / "per_example.csv").read_text().splitlines()[0].split(",")
    assert set(dnsmos.COLUMNS) <= set(header)
