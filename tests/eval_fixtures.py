"""Shared builders for the evaluation / separation / export tests (not a conftest).

Import the fixtures into a test module with ``from eval_fixtures import tiny_ckpt, ...``.
Everything is session-scoped and built under pytest's ``tmp_path_factory`` (one copy per
xdist worker), so no fixed paths are shared between processes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
SR = 16000  # tiny config rate

# One intra-op thread: the suite runs two xdist workers on two cores, and oversubscribed
# OpenMP threads make the tiny LSTMs 20x slower than single-threaded.
torch.set_num_threads(1)

if str(Path(__file__).parent) not in sys.path:  # let test modules import this file
    sys.path.insert(0, str(Path(__file__).parent))


def voice(rng: np.random.Generator, f0: float, seconds: float, sr: int) -> np.ndarray:
    """Speech-like test signal: harmonic stack at ``f0`` Hz with syllable-rate bursts."""
    t = np.arange(int(seconds * sr)) / sr
    f = f0 * (1.0 + 0.05 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(f) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 12) if k * f0 < sr / 2 - 500)
    env = np.clip(np.sin(2 * np.pi * rng.uniform(2.5, 4.5) * t + rng.uniform(0, 6)), 0, None)
    x = x * env**0.5 + 0.01 * rng.standard_normal(t.size)
    return (0.5 * x / np.max(np.abs(x))).astype(np.float32)


def write_corpus(root: Path, sr: int = SR, speakers: int = 10, utts: int = 3) -> Path:
    """A folder-layout speech corpus, noise clips and exponential-decay RIRs as WAVs."""
    rng = np.random.default_rng(0)
    for s in range(speakers):
        f0 = 90.0 + 17.0 * s
        for u in range(utts):
            path = root / "speech" / f"spk{s:02d}" / f"utt{u}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, voice(rng, f0, 2.5, sr), sr)
    for n in range(4):
        path = root / "noise" / f"noise{n}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, (0.1 * rng.standard_normal(3 * sr)).astype(np.float32), sr)
    for r in range(4):
        path = root / "rir" / f"rir{r}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        n = int(0.1 * sr)
        h = rng.standard_normal(n) * np.exp(-np.arange(n) / (0.015 * sr * (r + 1)))
        h[0] = 1.0
        sf.write(path, (h / np.abs(h).max()).astype(np.float32), sr)
    return root


def tiny_config():
    from hifi_tse.config import load_config

    return load_config(TINY)


def make_checkpoint(path: Path, perturb: float = 0.05, seed: int = 0, cfg=None) -> Path:
    """Untrained tiny generator in the shipped checkpoint format; ``perturb`` moves the
    decoder off its pass-through initialisation so the output is not the mixture."""
    from hifi_tse.checkpoints import save_generator_checkpoint
    from hifi_tse.models.generator import build_generator

    cfg = cfg or tiny_config()
    torch.manual_seed(seed)
    model = build_generator(cfg).eval()
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.add_(perturb * torch.randn_like(p))
    save_generator_checkpoint(path, model, cfg, step=123)
    return path


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="session")
def tiny_packs(tmp_path_factory) -> Path:
    """Packs dir with train / val / test speakers built by ``prepare_corpus``."""
    from hifi_tse.data.prepare import prepare_corpus

    base = tmp_path_factory.mktemp("corpus")
    src = write_corpus(base / "wav")
    out = base / "packs"
    prepare_corpus(
        speech=[(src / "speech", "folder")],
        noise=[src / "noise"],
        rir=[src / "rir"],
        simulate_rirs=0,
        out=out,
        sample_rate=SR,
        min_seconds=0.5,
        val_ratio=0.25,
        test_ratio=0.3,
        workers=1,
        seed=0,
        progress=False,
    )
    return out


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory, tiny_ckpt) -> Path:
    """The tiny checkpoint exported for 1 s chunks and a 1 s enrollment."""
    from hifi_tse.cli import main

    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    code = main(
        ["export", "--checkpoint", str(tiny_ckpt), "-o", str(out), "--chunk-seconds", "1.0"]
        + ["--ref-seconds", "1.0", "--no-verify"]
    )
    assert code == 0
    return out
