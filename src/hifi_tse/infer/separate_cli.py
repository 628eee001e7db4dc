"""``hifi-tse separate``: extract the enrolled talker from recordings of any rate and length.

Single file::

    hifi-tse separate --checkpoint ckpt.pt --mix meeting.wav --ref alice.wav -o alice_only.wav

Batch: ``--list rows.csv`` (columns ``mix, ref[, out]``; several references in one cell are
separated by ``;``; relative paths are relative to the CSV) or ``--mix-dir DIR --ref REF``,
with ``--out-dir``. ``--onnx model.onnx`` runs the same chunked pipeline on ONNX Runtime.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from hifi_tse.errors import UserError
from hifi_tse.infer.separate import (
    ChunkFn,
    ChunkPlan,
    VadSettings,
    load_reference,
    read_csv_rows,
    separate_file,
    stderr_warn,
)

# Defaults of the CLI flags (the flags are the configuration of inference).
CHUNK_SECONDS = 4.0  # the training segment length of the full config
OVERLAP_SECONDS = 1.0
BATCH_CHUNKS = 2
VAD_FRAME_SECONDS = 0.02
VAD_THRESHOLD_DB = 40.0
VAD_FLOOR_DB = -70.0
VAD_MIN_ACTIVE_SECONDS = 1.0
VAD_MIN_ACTIVE_FRACTION = 0.3
OUTPUT_SUFFIX = "_target"


def add_inference_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared with other commands that run the chunked pipeline."""
    p.add_argument("--chunk-seconds", type=float, default=CHUNK_SECONDS, help="chunk length, s")
    p.add_argument(
        "--overlap-seconds",
        type=float,
        default=OVERLAP_SECONDS,
        help="cross-fade between chunks, s (at most half a chunk)",
    )
    p.add_argument("--batch-chunks", type=int, default=BATCH_CHUNKS, help="chunks per model call")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (PyTorch only)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: library)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="hifi-tse checkpoint (.pt)")
    src.add_argument("--onnx", type=Path, help="model exported by `hifi-tse export`")
    p.add_argument("--raw-weights", action="store_true", help="use 'model' instead of EMA")
    inp = p.add_mutually_exclusive_group(required=True)
    inp.add_argument("--mix", type=Path, help="mixture recording")
    inp.add_argument("--list", type=Path, help="CSV of mix, ref[, out] rows")
    inp.add_argument("--mix-dir", type=Path, help="folder of mixtures (all share --ref)")
    p.add_argument("--ref", type=Path, action="append", default=[], help="enrollment (repeat)")
    p.add_argument("-o", "--out", type=Path, help="output file (with --mix)")
    p.add_argument("--out-dir", type=Path, help="output folder (with --list / --mix-dir)")
    add_inference_arguments(p)
    g = p.add_argument_group("enrollment check (energy VAD)")
    g.add_argument("--vad-frame-seconds", type=float, default=VAD_FRAME_SECONDS)
    g.add_argument(
        "--vad-threshold-db",
        type=float,
        default=VAD_THRESHOLD_DB,
        help="frames within this many dB of the loudest are speech",
    )
    g.add_argument("--vad-floor-db", type=float, default=VAD_FLOOR_DB, help="dBFS floor")
    g.add_argument(
        "--min-ref-speech-seconds",
        type=float,
        default=VAD_MIN_ACTIVE_SECONDS,
        help="warn below this much active speech in the enrollment, s",
    )
    g.add_argument(
        "--min-ref-active-fraction",
        type=float,
        default=VAD_MIN_ACTIVE_FRACTION,
        help="warn when a smaller share of the enrollment is speech",
    )


def vad_from_args(args: argparse.Namespace) -> VadSettings:
    return VadSettings(
        frame_seconds=args.vad_frame_seconds,
        threshold_db=args.vad_threshold_db,
        floor_db=args.vad_floor_db,
        min_active_seconds=args.min_ref_speech_seconds,
        min_active_fraction=args.min_ref_active_fraction,
    )


def _jobs(args: argparse.Namespace) -> list[tuple[Path, list[Path], Path]]:
    """(mixture, references, output) per file to process; checks flag combinations."""
    if args.mix is not None:
        if args.out is None:
            raise UserError("--mix needs -o/--out (the output file)")
        if not args.ref:
            raise UserError("--mix needs at least one --ref (enrollment of the target)")
        return [(args.mix, list(args.ref), args.out)]
    if args.out_dir is None:
        raise UserError("--list / --mix-dir need --out-dir")
    jobs = []
    if args.mix_dir is not None:
        if not args.ref:
            raise UserError("--mix-dir needs at least one --ref")
        if not args.mix_dir.is_dir():
            raise UserError(f"{args.mix_dir}: not a folder")
        from hifi_tse.audio.io import AUDIO_SUFFIXES

        mixes = sorted(p for p in args.mix_dir.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
        if not mixes:
            raise UserError(f"{args.mix_dir}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
        for mix in mixes:
            jobs.append((mix, list(args.ref), args.out_dir / f"{mix.stem}{OUTPUT_SUFFIX}.wav"))
        return jobs
    for row in read_csv_rows(args.list, ["mix", "ref", "out"], required=2):
        mix = Path(row["mix"])
        refs = [Path(r) for r in row["ref"].split(";") if r.strip()]
        out = Path(row["out"]) if row.get("out") else Path(f"{mix.stem}{OUTPUT_SUFFIX}.wav")
        jobs.append((mix, refs, out if out.is_absolute() else args.out_dir / out))
    return jobs


@dataclass(frozen=True)
class Backend:
    """A loaded model: its rate, its STFT hop, an optional fixed chunk length and a
    factory binding an enrollment ``(L_ref,)`` into a :data:`ChunkFn`."""

    sample_rate: int
    stft_hop: int
    fixed_chunk: int | None
    make_fn: Callable[[np.ndarray], ChunkFn]


def load_backend(args: argparse.Namespace) -> Backend:
    """PyTorch (``--checkpoint``) or ONNX Runtime (``--onnx``, torch never imported)."""
    if args.onnx is not None:
        from hifi_tse.infer.onnx_runner import OnnxModel

        onnx_model = OnnxModel(args.onnx, threads=args.threads)
        return Backend(
            onnx_model.sample_rate,
            onnx_model.stft.hop,
            None if onnx_model.dynamic else onnx_model.chunk_samples,
            onnx_model.chunk_fn,
        )
    import torch

    from hifi_tse.infer.loading import TorchChunkFn, load_generator, resolve_device

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model, cfg = load_generator(args.checkpoint, device=device, use_ema=not args.raw_weights)

    def make(ref: np.ndarray) -> ChunkFn:
        return TorchChunkFn(model, ref, device)

    return Backend(cfg.audio.sample_rate, cfg.stft.hop_length, None, make)


def plan_from_args(args: argparse.Namespace, backend: Backend) -> ChunkPlan:
    """Chunk plan at the model rate; a fixed-shape ONNX model's chunk length wins."""
    chunk_seconds = args.chunk_seconds
    if backend.fixed_chunk is not None:
        chunk_seconds = backend.fixed_chunk / backend.sample_rate
    plan = ChunkPlan.from_seconds(
        backend.sample_rate,
        chunk_seconds,
        args.overlap_seconds,
        args.batch_chunks,
        align=backend.stft_hop,
    )
    if backend.fixed_chunk is not None and plan.chunk != backend.fixed_chunk:
        plan = dataclasses.replace(plan, chunk=backend.fixed_chunk)
    return plan


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    jobs = _jobs(args)
    for mix, refs, _ in jobs:  # fail before any work when an input is missing
        for path in [mix, *refs]:
            if not path.is_file():
                raise UserError(f"{path}: file not found")
    backend = load_backend(args)
    sample_rate, make_fn = backend.sample_rate, backend.make_fn
    plan = plan_from_args(args, backend)
    vad = vad_from_args(args)
    cache: dict[tuple[Path, ...], ChunkFn] = {}
    for mix, refs, out in tqdm(jobs, desc="files", unit="file", disable=len(jobs) < 2 or None):
        key = tuple(refs)
        if key not in cache:
            cache = {key: make_fn(load_reference(refs, sample_rate, vad, stderr_warn))}
        try:
            frames = sf.info(str(mix)).frames
        except Exception:
            frames = None
        with tqdm(total=frames, desc=mix.name, unit="smp", unit_scale=True, disable=None) as bar:
            separate_file(
                mix, out, cache[key], sample_rate, plan, progress=lambda n: bar.update(n - bar.n)
            )
    return 0
