"""``hifi-tse export``: write a checkpoint's generator as an ONNX model for ``separate --onnx``.

    hifi-tse export --checkpoint ckpt.pt --format onnx -o model.onnx
    hifi-tse export --checkpoint ckpt.pt --format checkpoint -o small.pt   # EMA weights only
    hifi-tse export --checkpoint causal.pt --format onnx-streaming -o causal.onnx

``onnx-streaming`` (a causal model with a finite attention window) writes the streaming
form, state in and state out, as ``NAME.onnx`` (one call per run of new frames) and
``NAME.enroll.onnx`` (once per enrollment), for ``hifi-tse stream --onnx`` and
:class:`hifi_tse.infer.onnx_streaming.OnnxStreamer`, which need no torch.

The mixture chunk (``--chunk-seconds``, default: the ``separate`` default) and the
enrollment length (``--ref-seconds``, default: the config's ``audio.ref_seconds``) are the
shapes traced and are recorded in the model's metadata. The usual export keeps batch and
both lengths dynamic; ``separate --onnx`` reads the metadata and, for a fixed-shape
fallback export, uses the recorded chunk length.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hifi_tse.errors import UserError
from hifi_tse.infer.separate_cli import CHUNK_SECONDS

VERIFY_TOLERANCE = 1e-3  # max abs difference to PyTorch on a random chunk (full scale 1)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, required=True, help="hifi-tse checkpoint (.pt)")
    p.add_argument(
        "--format",
        choices=["onnx", "onnx-streaming", "checkpoint"],
        default="onnx",
        help="onnx; onnx-streaming (causal models: state in, state out); or checkpoint: a "
        "small inference-only .pt (config + EMA weights)",
    )
    p.add_argument("-o", "--out", type=Path, required=True, help="output file")
    p.add_argument("--chunk-seconds", type=float, default=CHUNK_SECONDS, help="chunk length, s")
    p.add_argument("--ref-seconds", type=float, default=None, help="enrollment length, s")
    p.add_argument("--raw-weights", action="store_true", help="export 'model' instead of EMA")
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime check")


def run(args: argparse.Namespace) -> int:
    import torch

    from hifi_tse.checkpoints import read_checkpoint, save_generator_checkpoint
    from hifi_tse.infer.export import export_onnx, verify_export
    from hifi_tse.infer.loading import load_generator

    model, cfg = load_generator(args.checkpoint, use_ema=not args.raw_weights)
    step = int(read_checkpoint(args.checkpoint).get("step", -1))
    if args.format == "checkpoint":
        save_generator_checkpoint(args.out, model, cfg, step=step)
        size_mb = args.out.stat().st_size / 2**20
        print(
            f"wrote {args.out}: config + {'raw' if args.raw_weights else 'EMA'} weights, "
            f"step {step}, {size_mb:.1f} MB"
        )
        return 0
    if args.format == "onnx-streaming":
        return _export_streaming(model, cfg, args, step)
    sr = cfg.audio.sample_rate
    ref_seconds = args.ref_seconds if args.ref_seconds is not None else cfg.audio.ref_seconds
    chunk, ref = int(round(args.chunk_seconds * sr)), int(round(ref_seconds * sr))
    if chunk < cfg.stft.n_fft or ref < cfg.stft.n_fft:
        raise UserError(
            f"--chunk-seconds/--ref-seconds: expected at least one FFT frame "
            f"({cfg.stft.n_fft / sr:.3f} s), got {args.chunk_seconds} / {ref_seconds}"
        )
    meta = export_onnx(model, cfg, args.out, chunk, ref, step=step)
    print(
        f"wrote {args.out}: chunk {chunk} samples, enrollment {ref} samples at {sr} Hz, "
        f"{'dynamic batch and lengths' if meta['dynamic'] == '1' else 'fixed shapes'}"
    )
    if not args.no_verify:
        with torch.no_grad():
            _check(verify_export(model, args.out, sr), args.out, "a random chunk")
    return 0


def _check(err: float, path: Path, what: str) -> None:
    print(f"ONNX Runtime vs PyTorch on {what}: max abs difference {err:.2e}")
    if err > VERIFY_TOLERANCE:
        raise UserError(
            f"{path}: ONNX output differs from PyTorch by {err:.2e} (> {VERIFY_TOLERANCE:g})"
        )


def _export_streaming(model: Any, cfg: Any, args: argparse.Namespace, step: int) -> int:
    from hifi_tse.infer.onnx_streaming import enroll_path
    from hifi_tse.infer.streaming_export import export_streaming_onnx, verify_streaming_export

    meta = export_streaming_onnx(model, cfg, args.out, step=step)
    print(
        f"wrote {args.out} (a run of frames per call, state in and out) and "
        f"{enroll_path(args.out)} (per enrollment): hop {meta['hop_length']} samples, "
        f"attention window {meta['window_frames']} frames, latency {meta['n_fft']} samples"
    )
    if not args.no_verify:
        _check(verify_streaming_export(model, args.out), args.out, "a random stream")
    return 0
