"""Streaming extraction on one CPU core: algorithmic latency, per-block compute, RTF.

A causal generator (``model.causal: true`` on the chosen config; untrained weights, as speed
does not depend on them) runs :class:`hifi_tse.infer.streaming.StreamingExtractor` over
``--seconds`` of two-talker audio fed in blocks of ``--block-ms``. Reported: the algorithmic
latency (one FFT window plus one block, ms), per-block compute time (mean, 95th
percentile, max, ms) and the real-time factor (compute time / audio time) with one thread:
PyTorch fp32, PyTorch bf16 (where the CPU has native bf16) and, for a finite attention
window, the torch-free ONNX Runtime streamer of ``hifi-tse export --format onnx-streaming``,
in the same run.

    python benchmarks/bench_streaming.py --config configs/demo_causal.yaml --block-ms 8
    python benchmarks/bench_streaming.py --config hifi_tse --seconds 4 --block-ms 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hifi_tse.api import Extractor
from hifi_tse.checkpoints import save_generator_checkpoint
from hifi_tse.config import load_config
from hifi_tse.devices import cpu_has_native_bf16
from hifi_tse.infer.onnx_streaming import OnnxStreamer
from hifi_tse.infer.streaming import StreamingExtractor
from hifi_tse.infer.streaming_export import export_streaming_onnx
from hifi_tse.models.generator import build_generator


def talker(rng: np.random.Generator, f0: float, seconds: float, sr: int) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 10))
    return (0.1 * x * (0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t)) ** 2).astype(np.float32)


def run_stream(stream: Any, mix: np.ndarray, block: int) -> list[float]:
    """Seconds of compute per block of ``block`` samples."""
    times = []
    for start in range(0, mix.size, block):
        t0 = time.perf_counter()
        stream.process(mix[start : start + block])
        times.append(time.perf_counter() - t0)
    stream.flush()
    return times


def _onnx_streamer(path: Path, ref: np.ndarray) -> OnnxStreamer:
    streamer = OnnxStreamer(path, threads=1)
    streamer.enroll(ref)
    return streamer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="demo", help="config file or built-in name")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seconds", type=float, default=20.0, help="audio streamed, s")
    parser.add_argument("--block-ms", type=float, default=16.0, help="block length, ms")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    sets = ["model.causal=true", "model.grad_checkpoint=false", *args.overrides]
    cfg = load_config(args.config, sets)
    sr = cfg.audio.sample_rate
    torch.manual_seed(0)
    model = build_generator(cfg).eval()
    rng = np.random.default_rng(0)
    mix = talker(rng, 130.0, args.seconds, sr) + talker(rng, 210.0, args.seconds, sr)
    ref = talker(rng, 130.0, 2.0, sr)
    block = max(1, int(round(args.block_ms * sr / 1000)))
    results: dict[str, object] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "config": args.config,
        "sample_rate": sr,
        "n_fft": cfg.stft.n_fft,
        "hop": cfg.stft.hop_length,
        "block_ms": 1000.0 * block / sr,
        "parameters_M": sum(p.numel() for p in model.parameters()) / 1e6,
        "algorithmic_latency_ms": 1000.0 * (cfg.stft.n_fft + block) / sr,
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "causal.pt"
        save_generator_checkpoint(path, model, cfg, step=0)
        streamers = {}
        for precision in ["fp32"] + (["bf16"] if cpu_has_native_bf16() else []):
            ex = Extractor.from_checkpoint(path, threads=1, precision=precision)
            enrollment = ex.enroll(ref, sr)
            streamers[precision] = lambda ex=ex, e=enrollment: StreamingExtractor(ex, e)
        if cfg.model.attention_window_seconds > 0:
            onnx = Path(tmp) / "causal.onnx"
            export_streaming_onnx(model, cfg, onnx)
            streamers["onnx"] = lambda: _onnx_streamer(onnx, ref)
        for name, make in streamers.items():
            run_stream(make(), mix[: 20 * block], block)  # warm-up
            times = np.array(run_stream(make(), mix, block)) * 1000.0
            results[name] = {
                "block_ms_mean": float(times.mean()),
                "block_ms_p95": float(np.percentile(times, 95)),
                "block_ms_max": float(times.max()),
                "rtf": float(times.sum() / 1000.0 / args.seconds),
            }
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
