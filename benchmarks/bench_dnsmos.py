"""No-reference DNSMOS on one CPU thread: seconds of CPU per minute of audio, per model.

Scores ``--seconds`` (default 60) of a synthetic voiced signal with light noise at 16 kHz
with :class:`hifi_tse.eval.dnsmos.DnsmosScorer`, one model at a time, ONNX Runtime on one
intra-op thread, and reports process CPU time (features + model; the session is created and
warmed up outside the timed call) per minute of audio and per analysis window, for single
windows per call and for batches. A minute holds 34 windows (9.01 s long, 1 s apart; the
reference framing skips windows 7-23). Needs ``pip install --no-deps speechmos==0.0.1.1``.

    OMP_NUM_THREADS=1 python benchmarks/bench_dnsmos.py [--seconds 60] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from hifi_tse.eval.dnsmos import DEFAULT_MODELS, SAMPLE_RATE, DnsmosScorer, windows

BATCHES = (1, 8)
SECONDS_PER_MINUTE = 60.0


def voiced_signal(seconds: float, seed: int = 0) -> np.ndarray:
    """``(L,)`` float32 at 16 kHz: gliding harmonic stack, syllable bursts, noise at -30 dB."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = 130.0 + 40.0 * np.sin(2 * np.pi * 0.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    x = sum(np.sin(k * phase) / k for k in range(1, 12)) * (np.sin(2 * np.pi * 3.0 * t) > 0)
    x = 0.2 * x + 0.005 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def cpu_seconds(scorer: DnsmosScorer, wav: np.ndarray, repeats: int) -> float:
    """Least process CPU time of ``repeats`` scorings of ``wav``, s."""
    scorer.score(wav[: 10 * SAMPLE_RATE], SAMPLE_RATE)  # session creation and warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        scorer.score(wav, SAMPLE_RATE)
        best = min(best, time.process_time() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0, help="audio length scored, s")
    p.add_argument("--repeats", type=int, default=2, help="timed runs (the least is kept)")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    wav = voiced_signal(args.seconds)
    n_windows = len(windows(wav))
    minutes = args.seconds / SECONDS_PER_MINUTE
    rows = []
    for name in DEFAULT_MODELS:
        for batch in BATCHES:
            scorer = DnsmosScorer(models=(name,), threads=1, batch_windows=batch)
            cpu = cpu_seconds(scorer, wav, args.repeats)
            rows.append(
                {
                    "model": name,
                    "batch_windows": batch,
                    "cpu_s_per_audio_minute": cpu / minutes,
                    "cpu_ms_per_window": 1000.0 * cpu / n_windows,
                }
            )
            print(
                f"{name:14s} batch {batch}: {cpu / minutes:6.2f} s CPU per minute of audio, "
                f"{1000.0 * cpu / n_windows:6.1f} ms per window",
                flush=True,
            )
    print(
        f"{args.seconds:g} s of audio, {n_windows} windows; {platform.processor() or '?'} "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seconds": args.seconds, "windows": n_windows, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
