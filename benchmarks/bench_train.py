"""Training throughput: optimiser steps/s and examples/s, data loading included.

* tiny config (``configs/tiny.yaml``) on CPU, always;
* the full config (``configs/hifi_tse.yaml``) on CUDA when a GPU is present.

Each case builds a small synthetic corpus (harmonic "voices" with their own f0 and formants,
noise, simulated RIRs) at the config's sample rate with ``prepare_corpus``, creates a real
:class:`hifi_tse.train.trainer.Trainer` (no validation or checkpoints inside the timed loop) and
times ``Trainer.run_one_step`` — data fetch, forward, losses, backward, clipping, optimiser and
EMA — after a few warm-up steps.

With ``--cpu-precision``: ``train.bf16`` off and on, side by side in one run, on this CPU
(when it has native bf16) for the demo config and the full 48 kHz config (``--full-steps``
steps each, the full config being slow on a CPU).

Usage: ``python benchmarks/bench_train.py [--steps 30] [--warmup 5] [--threads N]
[--cpu-precision [--full-steps 3]] [--json F]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from hifi_tse.config import Config, load_config
from hifi_tse.data.prepare import prepare_corpus
from hifi_tse.train.trainer import Trainer, TrainOptions

REPO = Path(__file__).resolve().parents[1]
SPEAKERS, UTTERANCES, UTT_SECONDS = 12, 3, 5.0


def write_corpus(root: Path, sample_rate: int, seed: int = 0) -> Path:
    """Synthetic speech/noise folders packed at ``sample_rate``; returns the packs dir."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(UTT_SECONDS * sample_rate)) / sample_rate
    for s in range(SPEAKERS):
        f0 = rng.uniform(90.0, 260.0)
        formants = rng.uniform(300.0, 3500.0, size=3)
        spk = root / "speech" / f"spk{s:02d}"
        spk.mkdir(parents=True)
        for u in range(UTTERANCES):
            k = np.arange(1, int(min(8000.0, sample_rate / 2 - 200) // f0))[:, None]
            gains = np.exp(-0.5 * ((k * f0 - formants[None, :]) / 150.0) ** 2).sum(1) + 0.02
            wav = (gains[:, None] * np.sin(2 * np.pi * f0 * k * t[None, :] + u)).sum(0)
            wav *= 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t + s)
            sf.write(spk / f"utt{u}.wav", (0.5 * wav / np.abs(wav).max()), sample_rate)
    (root / "noise").mkdir()
    for n in range(4):
        noise = rng.standard_normal(int(6.0 * sample_rate))
        sf.write(root / "noise" / f"n{n}.wav", 0.1 * noise / np.abs(noise).max(), sample_rate)
    out = root / "packs"
    prepare_corpus(
        speech=[(root / "speech", "folder")],
        noise=[root / "noise"],
        rir=[],
        simulate_rirs=6,
        out=out,
        sample_rate=sample_rate,
        min_seconds=1.0,
        val_ratio=0.25,
        test_ratio=0.125,
        workers=1,
        seed=seed,
        progress=False,
    )
    return out


def bench(cfg: Config, device: str, steps: int, warmup: int) -> dict[str, float | str]:
    with tempfile.TemporaryDirectory() as tmp:
        packs = write_corpus(Path(tmp) / "corpus", cfg.audio.sample_rate)
        opts = TrainOptions(
            cfg=cfg,
            data_dir=packs,
            run_dir=Path(tmp) / "run",
            device=device,
            tensorboard=False,
        )
        trainer = Trainer(opts)
        for _ in range(warmup):
            trainer.run_one_step()
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.run_one_step()
        if device == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        trainer.log.close()
    per_step = cfg.train.batch_size * cfg.train.grad_accum_steps
    return {
        "device": device,
        "steps": steps,
        "seconds": wall,
        "steps_per_s": steps / wall,
        "examples_per_s": steps * per_step / wall,
        "examples_per_step": per_step,
        "segment_seconds": cfg.audio.segment_seconds,
        "params": sum(p.numel() for p in trainer.generator.parameters()),
    }


def cpu_precision(args: argparse.Namespace, quiet: list[str]) -> dict[str, dict]:
    """``train.bf16`` off and on for the demo and full configs on CPU, in one process."""
    from hifi_tse.devices import cpu_has_native_bf16

    if not cpu_has_native_bf16():
        print("--cpu-precision: this CPU has no native bf16; train.bf16 stays off on it")
        return {}
    out = {}
    full_quiet = [*quiet, f"train.steps={args.full_steps + 2}"]
    for name, config, steps, sets in (
        ("demo", "demo.yaml", args.steps, quiet),
        ("full", "hifi_tse.yaml", args.full_steps, full_quiet),
    ):
        for bf16 in (False, True):
            cfg = load_config(REPO / "configs" / config, [*sets, f"train.bf16={bf16}"])
            key = f"{name}_cpu_{'bf16' if bf16 else 'fp32'}"
            out[key] = bench(cfg, "cpu", steps, 1 if name == "full" else args.warmup)
        ratio = out[f"{name}_cpu_bf16"]["steps_per_s"] / out[f"{name}_cpu_fp32"]["steps_per_s"]
        print(f"{name} config on CPU: bf16 {ratio:.2f}x the steps/s of fp32")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed optimiser steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    parser.add_argument(
        "--cpu-precision", action="store_true", help="time train.bf16 off and on, on CPU"
    )
    parser.add_argument("--full-steps", type=int, default=3, help="with --cpu-precision")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # Keep validation and checkpoints out of the timed loop; steps must cover the run.
    quiet = [
        f"train.steps={args.steps + args.warmup + 1}",
        "train.phase1_steps=0",
        "train.val_interval=1000000",
        "train.save_interval=1000000",
        "train.log_interval=1000000",
    ]
    results = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "tiny_cpu": bench(
            load_config(REPO / "configs/tiny.yaml", quiet), "cpu", args.steps, args.warmup
        ),
    }
    if torch.cuda.is_available():
        full = load_config(REPO / "configs/hifi_tse.yaml", quiet)
        results["full_cuda"] = bench(full, "cuda", args.steps, args.warmup)
    if args.cpu_precision:
        results.update(cpu_precision(args, quiet))
    for name, res in results.items():
        if name == "machine":
            print(f"machine: {res}")
            continue
        print(
            f"{name}: {res['steps_per_s']:.2f} steps/s, {res['examples_per_s']:.1f} examples/s "
            f"({res['examples_per_step']} examples/step, {res['segment_seconds']} s segments, "
            f"{res['params'] / 1e6:.2f} M params)"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
