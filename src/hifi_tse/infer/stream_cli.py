"""``hifi-tse stream``: real-time extraction of raw PCM from stdin to stdout.

    arecord -f S16_LE -c 1 -r 16000 | hifi-tse stream --checkpoint causal.pt --ref me.wav \\
        --rate 16000 | aplay -f S16_LE -c 1 -r 16000

Reads signed 16-bit little-endian mono PCM at ``--rate`` Hz, writes the same format. Needs a
causal model (``model.causal: true``): a checkpoint, or with ``--onnx`` its streaming ONNX
export (``hifi-tse export --format onnx-streaming``), which runs without torch. Input at
another rate than the model's is resampled on the way in and out (soxr streams). The first
latency's worth of output is the model's delay (``StreamingExtractor.latency_samples``) and
the output has the input's length. ``--activity`` prints, for every output block, whether the
target talks in it (to stderr: ``activity START-END s SCORE dB on|off``; causal, see
:class:`hifi_tse.infer.activity.StreamingActivity`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import BinaryIO

import numpy as np

from hifi_tse.infer.activity import StreamingActivity

PCM_SCALE = 32768.0  # s16le full scale


def add_arguments(p: argparse.ArgumentParser) -> None:
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", type=Path, help="causal hifi-tse checkpoint")
    model.add_argument(
        "--onnx",
        type=Path,
        help="streaming ONNX export (hifi-tse export --format onnx-streaming); runs without torch",
    )
    p.add_argument("--ref", type=Path, action="append", required=True, help="enrollment clip")
    p.add_argument("--rate", type=int, required=True, help="sample rate of stdin/stdout, Hz")
    p.add_argument(
        "--block-ms",
        type=float,
        default=None,
        help="input block length, ms (default: half the model's STFT hop); the latency is one "
        "FFT window plus one block",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="CPU threads")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="autocast")
    p.add_argument(
        "--activity",
        action="store_true",
        help="print to stderr, per output block, whether the target talks (level of the "
        "output against the input, dB, and on/off)",
    )


def _to_pcm(x: np.ndarray) -> bytes:
    return np.clip(np.round(x * PCM_SCALE), -32768, 32767).astype("<i2").tobytes()


def stream(
    streamer: object,
    rate: int,
    model_rate: int,
    block: int,
    src: BinaryIO,
    dst: BinaryIO,
    activity: StreamingActivity | None = None,
) -> int:
    """Pump ``src`` through ``streamer`` into ``dst``; returns the samples written.
    ``activity`` sees each model-rate input and output block (and prints a line per block)."""
    import soxr

    resample_in = soxr.ResampleStream(rate, model_rate, 1, dtype="float32")
    resample_out = soxr.ResampleStream(model_rate, rate, 1, dtype="float32")
    same = rate == model_rate
    written, carry = 0, b""
    while True:
        data = src.read(2 * block)
        last = not data
        data, carry = carry + data, b""
        if len(data) % 2:  # an odd byte waits for its partner
            data, carry = data[:-1], data[-1:]
        x = np.frombuffer(data, dtype="<i2").astype(np.float32) / PCM_SCALE
        x = x if same else resample_in.resample_chunk(x, last=last)
        y = streamer.process(x)
        if last:
            y = np.concatenate([y, streamer.flush()])
        if activity is not None:
            activity.push(x, y)
        y = y if same else resample_out.resample_chunk(y, last=last)
        dst.write(_to_pcm(y))
        dst.flush()
        written += y.size
        if last:
            return written


def run(args: argparse.Namespace) -> int:
    from hifi_tse.errors import UserError

    if args.rate <= 0 or (args.block_ms is not None and args.block_ms <= 0):
        raise UserError("--rate and --block-ms: expected positive values")
    streamer, model_rate = _onnx_streamer(args) if args.onnx else _torch_streamer(args)
    from hifi_tse.infer.frame_stream import DEFAULT_BLOCK_HOPS

    default_ms = 1000.0 * DEFAULT_BLOCK_HOPS * streamer.hop / model_rate
    block_ms = args.block_ms if args.block_ms is not None else default_ms
    block = max(1, int(round(block_ms * args.rate / 1000.0)))
    window_ms = 1000.0 * streamer.latency_samples / model_rate
    print(
        f"hifi-tse stream: {model_rate} Hz model, latency {window_ms + block_ms:.0f} ms "
        f"(FFT window {window_ms:.0f} ms + block {block_ms:.0f} ms)",
        file=sys.stderr,
    )
    activity = StreamingActivity(model_rate) if args.activity else None
    stream(streamer, args.rate, model_rate, block, sys.stdin.buffer, sys.stdout.buffer, activity)
    return 0


def _torch_streamer(args: argparse.Namespace) -> tuple[object, int]:
    from hifi_tse.api import Extractor
    from hifi_tse.infer.separate_cli import enroll_files
    from hifi_tse.infer.streaming import StreamingExtractor

    extractor = Extractor.from_checkpoint(
        args.checkpoint, args.device, threads=args.threads, precision=args.precision
    )
    enrollment = enroll_files(extractor, list(args.ref))
    return StreamingExtractor(extractor, enrollment), extractor.sample_rate


def _onnx_streamer(args: argparse.Namespace) -> tuple[object, int]:
    from hifi_tse.errors import UserError
    from hifi_tse.infer.onnx_streaming import OnnxStreamer
    from hifi_tse.infer.separate_cli import enrollment_from_files

    if args.device != "cpu" or args.precision != "fp32":
        raise UserError("--onnx: runs on the CPU in fp32 (drop --device / --precision)")
    streamer = OnnxStreamer(args.onnx, threads=args.threads)
    streamer.enroll(enrollment_from_files(list(args.ref), streamer.sample_rate))
    return streamer, streamer.sample_rate
