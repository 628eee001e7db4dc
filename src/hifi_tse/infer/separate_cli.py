"""``hifi-tse separate``: extract the enrolled talker from recordings of any rate and length.

Single file::

    hifi-tse separate --checkpoint ckpt.pt --mix meeting.wav --ref alice.wav -o alice_only.wav

Batch: ``--list rows.csv`` (columns ``mix, ref[, out]``; several references in one cell are
separated by ``;``; relative paths are relative to the CSV) or ``--mix-dir DIR --ref REF``,
with ``--out-dir``. ``--onnx model.onnx`` runs the same chunked pipeline on ONNX Runtime.
``--activity alice.csv`` (or ``.rttm``) also writes where the target talks, ``--gate`` silences
the output elsewhere (:mod:`hifi_tse.infer.activity`).
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from hifi_tse.api import (  # noqa: F401 - the chunking defaults are re-exported for other CLIs
    BATCH_CHUNKS,
    CHUNK_SECONDS,
    OVERLAP_SECONDS,
    VAD,
    Enrollment,
    EnrollmentWarning,
    Extractor,
    enrollment_waveform,
)
from hifi_tse.audio.io import load_audio
from hifi_tse.errors import UserError
from hifi_tse.infer.activity import (
    FileActivity,
    add_activity_arguments,
    extract_file_with_activity,
    file_activity_from_args,
)
from hifi_tse.infer.separate import (
    VadSettings,
    read_csv_rows,
    separate_file,
    stderr_warn,
)

# The CLI flags default to the API's settings (the flags are the configuration of inference).
VAD_FRAME_SECONDS = VAD.frame_seconds
VAD_THRESHOLD_DB = VAD.threshold_db
VAD_FLOOR_DB = VAD.floor_db
VAD_MIN_ACTIVE_SECONDS = VAD.min_active_seconds
VAD_MIN_ACTIVE_FRACTION = VAD.min_active_fraction
OUTPUT_SUFFIX = "_target"
DNSMOS_NAME = "dnsmos.json"  # batch modes: per-file DNSMOS of mixture and estimate, in --out-dir


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
    add_precision_argument(p)


def add_precision_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="bf16: autocast (PyTorch only; CPUs with AVX-512 BF16 / AMX, or bf16 GPUs)",
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="hifi-tse checkpoint (.pt)")
    src.add_argument("--onnx", type=Path, help="model exported by `hifi-tse export`")
    p.add_argument("--raw-weights", action="store_true", help="use 'model' instead of EMA")
    inp = p.add_mutually_exclusive_group(required=True)
    inp.add_argument("--mix", type=Path, help="mixture recording")
    inp.add_argument(
        "--mix-list", "--list", dest="list", type=Path, help="CSV of mix, ref[, out] rows"
    )
    inp.add_argument("--mix-dir", type=Path, help="folder of mixtures (all share --ref)")
    p.add_argument("--ref", type=Path, action="append", default=[], help="enrollment (repeat)")
    p.add_argument("-o", "--out", type=Path, help="output file (with --mix)")
    p.add_argument("--out-dir", type=Path, help="output folder (with --mix-list / --mix-dir)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="batch modes: redo outputs that exist (by default they are skipped, so a re-run "
        "resumes)",
    )
    p.add_argument(
        "--activity",
        metavar="FILE|SUFFIX",
        help="also write where the target talks: a .csv (start,end,score) or .rttm file with "
        "--mix; .csv or .rttm (the suffix) beside each output in batch modes",
    )
    p.add_argument(
        "--gate",
        action="store_true",
        help="write silence outside the target's segments (short fades at the edges)",
    )
    add_activity_arguments(p)
    add_inference_arguments(p)
    p.add_argument(
        "--dnsmos",
        action="store_true",
        help="score mixture and estimate with no-reference DNSMOS (P.835, personalised P.835, "
        f"P.808; at 16 kHz): one line, and {DNSMOS_NAME} in --out-dir for batches (needs: "
        "pip install --no-deps speechmos==0.0.1.1)",
    )
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


def load_extractor(args: argparse.Namespace) -> Extractor:
    """The API's extractor for ``--checkpoint`` (PyTorch) or ``--onnx`` (torch never imported)."""
    chunking = {
        "chunk_seconds": args.chunk_seconds,
        "overlap_seconds": args.overlap_seconds,
        "batch_chunks": args.batch_chunks,
        "vad": vad_from_args(args),
    }
    if args.onnx is not None:
        if args.precision != "fp32":
            raise UserError("--precision: ONNX Runtime runs the export in fp32")
        return Extractor.from_onnx(args.onnx, threads=args.threads, **chunking)
    return Extractor.from_checkpoint(
        args.checkpoint,
        args.device,
        use_ema=not args.raw_weights,
        threads=args.threads,
        precision=args.precision,
        **chunking,
    )


def enroll_files(extractor: Extractor, refs: list[Path]) -> Enrollment:
    """Enroll from files; the API's enrollment warnings go to stderr as one line each."""
    rate = extractor.sample_rate
    return _enroll_files(refs, rate, lambda clips, name: extractor.enroll(clips, rate, name=name))


def enrollment_from_files(refs: list[Path], model_rate: int) -> np.ndarray:
    """The checked enrollment waveform ``(L_ref,)`` at ``model_rate`` from files, for a
    backend without an :class:`Extractor` (the ONNX streamer); warnings as above."""

    def waveform(clips: list[np.ndarray], name: str) -> np.ndarray:
        return enrollment_waveform(clips, model_rate, model_rate, name=name)[0]

    return _enroll_files(refs, model_rate, waveform)


def _enroll_files(
    refs: list[Path], model_rate: int, enroll: Callable[[list[np.ndarray], str], Any]
) -> Any:
    clips = []
    for path in refs:
        wav = load_audio(path, model_rate)
        if not np.any(wav):
            raise UserError(f"{path}: reference is all zeros (digital silence)")
        clips.append(wav)
    names = ", ".join(str(p) for p in refs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EnrollmentWarning)
        enrollment = enroll(clips, f"reference {names}")
    for w in caught:
        stderr_warn(f"warning: {w.message}")
    return enrollment


def _extract_fn(
    extractor: Extractor, activity: FileActivity | None = None, single: bool = True
) -> Callable[[Path, list[Path], Path], None]:
    """``extract(mix, refs, out)`` with the last enrollment kept (batches share one);
    ``activity``: ``--activity`` / ``--gate`` (then the file is processed in memory)."""
    from tqdm import tqdm

    cache: dict[tuple[Path, ...], Enrollment] = {}

    def extract(mix: Path, refs: list[Path], out: Path) -> None:
        key = tuple(refs)
        if key not in cache:
            cache.clear()
            cache[key] = enroll_files(extractor, refs)
        if activity is not None:
            extract_file_with_activity(extractor, cache[key], mix, out, activity, single)
            return
        try:
            frames = sf.info(str(mix)).frames
        except Exception:  # noqa: BLE001 - separate_file reports an unreadable file itself
            frames = None
        with tqdm(total=frames, desc=mix.name, unit="smp", unit_scale=True, disable=None) as bar:
            separate_file(
                mix,
                out,
                cache[key].chunk_fn,
                extractor.sample_rate,
                extractor.plan,
                progress=lambda n: bar.update(n - bar.n),
            )

    return extract


def run(args: argparse.Namespace) -> int:
    from hifi_tse.infer.batch import Ranks, gather, run_jobs, shard, write_summary

    jobs = _jobs(args)
    quality = _dnsmos_scorer(args)  # a missing wheel fails before any work
    if args.mix is not None:  # one file: fail before any work when an input is missing
        for path in [args.mix, *args.ref]:
            if not path.is_file():
                raise UserError(f"{path}: file not found")
        _extract_fn(load_extractor(args), file_activity_from_args(args))(*jobs[0])
        if quality is not None:
            from hifi_tse.eval.dnsmos import format_line

            mix, _, out = jobs[0]
            print(format_line(_dnsmos_rows(quality, [(mix, out)])[0]))
        return 0
    ranks = Ranks.from_env()
    if ranks.world_size > 1 and args.device == "cuda":
        args.device = f"cuda:{ranks.local_rank}"  # one GPU per process
    extract = _extract_fn(load_extractor(args), file_activity_from_args(args), single=False)
    report = run_jobs(shard(jobs, ranks), extract, args.overwrite)
    merged = gather(report, ranks)
    if merged is None:
        return 0
    path = write_summary(args.out_dir, merged, len(jobs), ranks)
    print(
        f"{merged.done} extracted, {merged.skipped} skipped (output exists), "
        f"{len(merged.failed)} failed; summary: {path}"
    )
    for failure in merged.failed:
        stderr_warn(f"failed: {failure['reason']}")
    if quality is not None:
        _write_dnsmos(quality, [(mix, out) for mix, _, out in jobs], args.out_dir)
    return 1 if merged.failed else 0


def _dnsmos_scorer(args: argparse.Namespace) -> Any:
    """The DNSMOS scorer when ``--dnsmos`` was given (None otherwise)."""
    if not args.dnsmos:
        return None
    from hifi_tse.eval.dnsmos import DnsmosScorer

    return DnsmosScorer(threads=args.threads)


def _dnsmos_rows(quality: Any, pairs: list[tuple[Path, Path]]) -> list[dict[str, Any]]:
    """DNSMOS of each ``(mixture, estimate)`` file pair whose estimate exists: ``mix``,
    ``out`` and the ``dnsmos_<score>`` / ``dnsmos_<score>_mix`` fields."""
    from hifi_tse.audio.io import read_audio
    from hifi_tse.eval.dnsmos import MIX_SUFFIX, PREFIX

    rows = []
    for mix, out in pairs:
        if not out.is_file():
            continue
        row: dict[str, Any] = {"mix": str(mix), "out": str(out)}
        for path, tail in ((out, ""), (mix, MIX_SUFFIX)):
            scores = quality.score(*read_audio(path))
            row.update({f"{PREFIX}{k}{tail}": v for k, v in scores.items()})
        rows.append(row)
    return rows


def _write_dnsmos(quality: Any, pairs: list[tuple[Path, Path]], out_dir: Path) -> None:
    """Score every output present (this run's and earlier ones'), write ``dnsmos.json``
    (means and per file) into ``out_dir`` and print the means in one line."""
    import json

    from hifi_tse.eval.dnsmos import COLUMNS, format_line
    from hifi_tse.utils import atomic_write_text

    rows = _dnsmos_rows(quality, pairs)
    means = {c: float(np.mean([r[c] for r in rows])) for c in COLUMNS if rows and c in rows[0]}
    payload = {"files": len(rows), "mean": means, "per_file": rows}
    path = Path(out_dir) / DNSMOS_NAME
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
    print(f"{format_line(means)} (mean of {len(rows)} files); {path}")
