"""Shared fixtures: a tiny prepared corpus built from synthetic audio (session scope).

``tiny_packs`` writes a few "speakers" of harmonic tones (each with its own f0 and formant
envelope, syllable-rate amplitude modulation), noise clips and a handful of simulated RIRs, then
packs them with :func:`hifi_tse.data.prepare.prepare_corpus` at 16 kHz. Any test file can use it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

TINY_SR = 16000
TINY_SPEAKERS = 16
TINY_UTTERANCES = 3
TINY_UTT_SECONDS = 1.2


def _voice(
    rng: np.random.Generator, f0: float, formants: list[float], seconds: float
) -> np.ndarray:
    """A harmonic tone with a formant envelope and syllable-like AM: ``(L,)`` float32."""
    t = np.arange(int(seconds * TINY_SR)) / TINY_SR
    f0_track = f0 * (1.0 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * t))
    phase = 2 * np.pi * np.cumsum(f0_track) / TINY_SR
    wav = np.zeros_like(t)
    for k in range(1, int((TINY_SR / 2 - 200) // f0)):
        fk = k * f0
        gain = sum(np.exp(-0.5 * ((fk - fc) / 150.0) ** 2) for fc in formants) + 0.02
        wav += gain * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    am = 0.55 + 0.45 * np.sin(2 * np.pi * rng.uniform(3.0, 5.0) * t + rng.uniform(0, 6.28))
    wav *= am
    return (0.5 * wav / np.abs(wav).max()).astype(np.float32)


def write_synthetic_corpus(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """Speech folders ``root/speech/spkNN/uttK.wav`` and noise clips; returns both folders."""
    rng = np.random.default_rng(seed)
    speech, noise = root / "speech", root / "noise"
    for s in range(TINY_SPEAKERS):
        f0 = rng.uniform(90.0, 260.0)
        formants = sorted(rng.uniform(300.0, 3500.0, size=3).tolist())
        spk = speech / f"spk{s:02d}"
        spk.mkdir(parents=True)
        for u in range(TINY_UTTERANCES):
            sf.write(spk / f"utt{u}.wav", _voice(rng, f0, formants, TINY_UTT_SECONDS), TINY_SR)
    noise.mkdir(parents=True)
    for n in range(4):
        white = rng.standard_normal(int(2.0 * TINY_SR))
        coloured = np.cumsum(white) if n % 2 else white  # brown and white noise
        coloured = coloured - coloured.mean()
        sf.write(noise / f"noise{n}.wav", (0.3 * coloured / np.abs(coloured).max()), TINY_SR)
    return speech, noise


@pytest.fixture(scope="session", autouse=True)
def subprocess_tmpdir(tmp_path_factory: pytest.TempPathFactory):
    """Temporary files of the processes tests start (torchrun's agents make a
    ``torchelastic_*`` folder each) go under pytest's own temporary root, which pytest
    prunes, instead of piling up in /tmp."""
    tmp = tmp_path_factory.mktemp("subprocess_tmp")
    previous = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmp)
    yield tmp
    if previous is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = previous


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread: tests share 2 cores with an xdist peer, and oversubscribed threads
    run the tiny model ~20x slower; also makes in-process and subprocess runs bitwise equal."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_packs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared packs dir (train/val/test manifests + HDF5 packs) at 16 kHz."""
    from hifi_tse.data.prepare import prepare_corpus

    root = tmp_path_factory.mktemp("tiny_corpus")
    speech, noise = write_synthetic_corpus(root)
    out = root / "packs"
    prepare_corpus(
        speech=[(speech, "folder")],
        noise=[noise],
        rir=[],
        simulate_rirs=6,
        out=out,
        sample_rate=TINY_SR,
        min_seconds=0.5,
        val_ratio=0.25,
        test_ratio=0.125,
        workers=1,
        seed=0,
        progress=False,
        storage="float32",  # the golden mixer hashes were taken on float32 packs
    )
    return out
