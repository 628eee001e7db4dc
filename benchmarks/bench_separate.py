"""Real-time factor and peak memory of ``hifi-tse separate`` on long 48 kHz files.

Every measurement runs ``hifi-tse separate`` in a fresh Python subprocess and reads that
process's peak resident memory (``VmHWM`` from ``/proc/self/status``), so model, buffers
and library overhead are all counted and nothing leaks between measurements. Weights are
untrained (speed and memory do not depend on them).

    python benchmarks/bench_separate.py                          # full config, 60 s + 600 s
    python benchmarks/bench_separate.py --durations 60 --estimate-long 600
    python benchmarks/bench_separate.py --config configs/tiny.yaml --durations 60 600
    python benchmarks/bench_separate.py --seam-check 12          # chunked vs one pass
    python benchmarks/bench_separate.py --durations 60 120 --precision fp32 bf16

``--estimate-long S`` prints an RTF-based time estimate for an S-second file instead of
running it (labelled as an estimate). ``--seam-check S`` compares chunked extraction of an
S-second file with a single pass and reports the relative error away from the chunk seams.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from hifi_tse.cli import main
code = main(sys.argv[1:])
wall = time.perf_counter() - t0
hwm = 0
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        hwm = int(line.split()[1]) * 1024
print(json.dumps({"code": code, "wall_s": wall, "peak_rss_bytes": hwm}))
"""


def write_input(path: Path, seconds: float, sample_rate: int, seed: int) -> None:
    """Speech-like noise bursts written block by block (the parent stays small too)."""
    rng = np.random.default_rng(seed)
    block = sample_rate * 10
    with sf.SoundFile(str(path), "w", samplerate=sample_rate, channels=1, subtype="FLOAT") as f:
        left = int(seconds * sample_rate)
        while left > 0:
            n = min(block, left)
            t = np.arange(n) / sample_rate
            env = np.clip(np.sin(2 * np.pi * 3.1 * t + rng.uniform(0, 6)), 0, None)
            tone = np.sin(2 * np.pi * rng.uniform(100, 250) * t)
            f.write((0.2 * env * tone + 0.02 * rng.standard_normal(n)).astype(np.float32))
            left -= n


def make_checkpoint(config: Path, path: Path) -> int:
    """Untrained generator of ``config`` in the shipped checkpoint format; returns its rate."""
    import torch

    from hifi_tse.checkpoints import save_generator_checkpoint
    from hifi_tse.config import load_config
    from hifi_tse.models.generator import build_generator

    cfg = load_config(config)
    torch.manual_seed(0)
    save_generator_checkpoint(path, build_generator(cfg).eval(), cfg)
    return cfg.audio.sample_rate


def measure(
    args: argparse.Namespace,
    ckpt: Path,
    mix: Path,
    ref: Path,
    out: Path,
    device: str,
    precision: str = "fp32",
):
    cmd = [sys.executable, "-c", CHILD, "separate", "--checkpoint", str(ckpt)]
    cmd += ["--precision", precision]
    cmd += ["--mix", str(mix), "--ref", str(ref), "-o", str(out), "--device", device]
    cmd += ["--threads", str(args.threads), "--chunk-seconds", str(args.chunk_seconds)]
    cmd += ["--overlap-seconds", str(args.overlap_seconds)]
    cmd += ["--batch-chunks", str(args.batch_chunks)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"separate failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def seam_check(config: Path, seconds: float, args: argparse.Namespace) -> dict[str, float]:
    """Relative error (dB) of chunked vs one-pass extraction, overall and away from seams."""
    import torch

    from hifi_tse.config import load_config
    from hifi_tse.infer.loading import TorchChunkFn, load_generator
    from hifi_tse.infer.separate import ChunkPlan, separate_array
    from hifi_tse.models.generator import build_generator

    torch.set_num_threads(args.threads)
    if args.seam_checkpoint is not None:  # a trained model: how much context it really uses
        model, cfg = load_generator(args.seam_checkpoint)
    else:
        cfg = load_config(config, args.seam_set)
        torch.manual_seed(0)
        model = build_generator(cfg).eval()
        with torch.no_grad():  # off the pass-through init, so the check is not trivial
            for p in model.decoder.parameters():
                p.add_(0.05 * torch.randn_like(p))
    sr = cfg.audio.sample_rate
    with tempfile.TemporaryDirectory() as tmp:
        write_input(Path(tmp) / "m.wav", seconds, sr, 1)
        write_input(Path(tmp) / "r.wav", cfg.audio.ref_seconds, sr, 2)
        mix = sf.read(args.seam_mix or Path(tmp) / "m.wav", dtype="float32")[0]
        ref = sf.read(args.seam_ref or Path(tmp) / "r.wav", dtype="float32")[0]
    mix = mix[: int(seconds * sr)]
    fn = TorchChunkFn(model, ref, torch.device("cpu"))
    one = fn(mix[None])[0]
    plan = ChunkPlan.from_seconds(
        sr, args.chunk_seconds, args.overlap_seconds, args.batch_chunks, cfg.stft.hop_length
    )
    chunked = separate_array(mix, fn, plan)
    keep = plan.away_from_seams(mix.size)

    def rel_db(a: np.ndarray, b: np.ndarray) -> float:
        return float(10 * np.log10((np.sum((a - b) ** 2) + 1e-30) / np.sum(b**2)))

    return {
        "seconds": mix.size / sr,
        "model": str(args.seam_checkpoint or f"{config} (random, perturbed decoder)"),
        "attention_window_seconds": cfg.model.attention_window_seconds,
        "all_db": rel_db(chunked, one),
        "away_from_seams_db": rel_db(chunked[keep], one[keep]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "hifi_tse.yaml")
    p.add_argument("--durations", type=float, nargs="*", default=[60.0, 600.0])
    p.add_argument("--estimate-long", type=float, nargs="*", default=[])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--chunk-seconds", type=float, default=4.0)
    p.add_argument("--overlap-seconds", type=float, default=1.0)
    p.add_argument("--batch-chunks", type=int, default=2)
    p.add_argument("--cuda", action="store_true", help="also measure on CUDA when available")
    p.add_argument(
        "--precision",
        nargs="+",
        default=["fp32"],
        choices=["fp32", "bf16"],
        help="precisions measured side by side (bf16 needs native-bf16 hardware)",
    )
    p.add_argument("--seam-check", type=float, default=0.0, help="seconds (0 = skip)")
    p.add_argument("--seam-checkpoint", type=Path, help="trained model for the seam check")
    p.add_argument("--seam-set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--seam-mix", type=Path, help="mixture WAV at the model rate (seam check)")
    p.add_argument("--seam-ref", type=Path, help="enrollment WAV at the model rate (seam check)")
    p.add_argument("--json", type=Path, default=None, help="also write results here")
    args = p.parse_args()

    import torch

    results: dict[str, object] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}",
        "config": str(args.config),
        "threads": args.threads,
        "chunk_seconds": args.chunk_seconds,
        "overlap_seconds": args.overlap_seconds,
        "batch_chunks": args.batch_chunks,
        "runs": [],
    }
    devices = ["cpu"] + (["cuda"] if args.cuda and torch.cuda.is_available() else [])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = tmp / "model.pt"
        sr = make_checkpoint(args.config, ckpt)
        write_input(tmp / "ref.wav", 4.0, 48000, 0)
        for seconds in args.durations:
            mix = tmp / f"mix_{int(seconds)}s.wav"
            write_input(mix, seconds, 48000, 1)
            for device, precision in ((d, q) for d in devices for q in args.precision):
                r = measure(args, ckpt, mix, tmp / "ref.wav", tmp / "out.wav", device, precision)
                run = {
                    "device": device,
                    "precision": precision,
                    "seconds": seconds,
                    "wall_s": round(r["wall_s"], 2),
                    "rtf": round(r["wall_s"] / seconds, 3),
                    "peak_rss_mib": round(r["peak_rss_bytes"] / 2**20, 1),
                    "measured": True,
                }
                results["runs"].append(run)
                print(json.dumps(run), flush=True)
            mix.unlink()
        for seconds in args.estimate_long:
            for device in devices:
                measured = [r for r in results["runs"] if r["device"] == device]
                if measured:
                    rtf = measured[-1]["rtf"]
                    est = {
                        "device": device,
                        "seconds": seconds,
                        "wall_s": round(rtf * seconds, 1),
                        "rtf": rtf,
                        "peak_rss_mib": None,
                        "measured": False,
                    }
                    results["runs"].append(est)
                    print(json.dumps(est), flush=True)
    results["model_sample_rate"] = sr
    if args.seam_check > 0:
        results["seam_check"] = seam_check(args.config, args.seam_check, args)
        print(json.dumps(results["seam_check"]), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
