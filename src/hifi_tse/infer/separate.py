"""Chunked overlap-add extraction of arbitrarily long recordings (NumPy only, no torch).

A *chunk function* maps a batch of fixed-length mixture chunks ``(B, C) float32`` at the
model rate to the extracted target ``(B, C) float32``; the enrollment is bound into it by
the backend (PyTorch in :mod:`hifi_tse.infer.loading`, ONNX Runtime in
:mod:`hifi_tse.infer.onnx_runner`). This module schedules the chunks, cross-fades them and
streams files through them, so memory stays bounded by the chunk batch whatever the length.

Chunk ``k`` starts at ``k * H`` (hop ``H = C - O``, overlap ``O``). Neighbouring chunks
cross-fade over their ``O`` shared samples with ``sin^2`` / ``cos^2`` ramps, which sum to
exactly 1, so a model that returned its input would reproduce the input bit-for-bit up to
float rounding. The last chunk runs at its true length (never padded here), so a signal
shorter than a chunk is processed exactly like one pass.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from hifi_tse.errors import UserError
from hifi_tse.utils import atomic_path

ChunkFn = Callable[[np.ndarray], np.ndarray]
"""``(B, C) float32 mixture chunks -> (B, C) float32 estimates`` at the model rate."""


@dataclass(frozen=True)
class ChunkPlan:
    """Chunking in samples at the model rate."""

    chunk: int  # C, samples per chunk
    overlap: int  # O, samples shared by neighbouring chunks (cross-fade length)
    batch: int  # chunks per model call

    @property
    def hop(self) -> int:
        return self.chunk - self.overlap

    @classmethod
    def from_seconds(
        cls,
        sample_rate: int,
        chunk_seconds: float,
        overlap_seconds: float,
        batch: int,
        align: int = 1,
    ) -> ChunkPlan:
        """Plan from seconds; the hop is rounded down to a multiple of ``align`` samples.

        Pass the model's STFT hop as ``align``: chunk starts then fall on the one-pass STFT
        frame grid, so away from the seams a chunk sees the very frames a single pass would
        (an STFT-mask model is only shift-equivariant for whole-hop shifts). The overlap
        grows by the rounding (< ``align`` samples); the chunk keeps its length.
        """
        chunk = int(round(chunk_seconds * sample_rate))
        overlap = int(round(overlap_seconds * sample_rate))
        if chunk <= 0:
            raise UserError(f"--chunk-seconds: expected > 0, got {chunk_seconds}")
        if overlap < 0 or 2 * overlap > chunk:
            # only neighbouring chunks may overlap, else the cross-fades no longer sum to 1
            raise UserError(
                f"--overlap-seconds: expected 0 <= overlap <= half the chunk "
                f"({chunk_seconds} s), got {overlap_seconds}"
            )
        if batch < 1:
            raise UserError(f"--batch-chunks: expected >= 1, got {batch}")
        hop = (chunk - overlap) // align * align
        if hop <= 0 or 2 * (chunk - hop) > chunk:
            raise UserError(
                f"--chunk-seconds: {chunk_seconds} s is too short for overlap "
                f"{overlap_seconds} s with hops of {align} samples"
            )
        return cls(chunk=chunk, overlap=chunk - hop, batch=batch)

    def away_from_seams(self, length: int) -> np.ndarray:
        """``(length,)`` bool: False in every cross-fade ``[s, s + O)`` (s = a chunk start
        after the first) widened by ``O / 2`` on both sides, True elsewhere.

        Kept samples lie at least ``1.5 O`` inside the chunk that produced them, so a model
        whose time context is shorter than that reproduces the one-pass output there.
        """
        keep = np.ones(length, dtype=bool)
        margin = self.overlap // 2
        for start in range(self.hop, length, self.hop):
            keep[max(0, start - margin) : start + self.overlap + margin] = False
        return keep


def fade_in(overlap: int) -> np.ndarray:
    """``(O,)`` raised-cosine ramp 0 → 1 sampled at half-sample offsets; ``fade_in + its
    mirror (the fade-out) == 1`` exactly, so cross-faded chunks keep unit gain."""
    n = (np.arange(overlap, dtype=np.float64) + 0.5) / max(overlap, 1)
    return (np.sin(0.5 * np.pi * n) ** 2).astype(np.float32)


class OverlapAdd:
    """Streaming chunk scheduler: ``push`` samples in, get finished output samples out.

    Output sample ``t`` is final once every chunk covering it has run; ``push`` returns the
    finished prefix, ``finish`` the rest, so the concatenation has exactly the input length.
    A chunk runs during ``push`` only once a sample beyond its end has arrived (then it is
    known not to be the last chunk and gets a fade-out).
    """

    def __init__(self, fn: ChunkFn, plan: ChunkPlan) -> None:
        if not (plan.chunk > 0 and 0 <= 2 * plan.overlap <= plan.chunk and plan.batch >= 1):
            raise ValueError(f"invalid chunk plan {plan}: need 0 <= 2 * overlap <= chunk")
        self.fn = fn
        self.plan = plan
        self._ramp_in = fade_in(plan.overlap)
        self._ramp_out = self._ramp_in[::-1].copy()
        self._buf = np.zeros(0, dtype=np.float32)  # input from absolute sample _buf_start
        self._buf_start = 0
        self._acc = np.zeros(0, dtype=np.float32)  # output from absolute sample _emitted
        self._emitted = 0
        self._next_chunk = 0
        self._total = 0
        self._done = False

    def _start(self, k: int) -> int:
        return k * self.plan.hop

    def _run(self, ks: list[int], last: int | None) -> None:
        """Run chunks ``ks`` (consecutive) as one batch and overlap-add them into ``_acc``.

        Every chunk is ``C`` samples long except a last chunk that the signal does not fill:
        it runs alone at its true length, so a signal shorter than one chunk is processed
        exactly like a single pass (a fixed-length backend pads it itself).
        """
        c, o = self.plan.chunk, self.plan.overlap
        width = min(c, self._total - self._start(ks[-1])) if ks[-1] == last else c
        batch = np.zeros((len(ks), width), dtype=np.float32)
        for row, k in enumerate(ks):
            lo = self._start(k) - self._buf_start
            batch[row] = self._buf[lo : lo + width]
        est = np.asarray(self.fn(batch), dtype=np.float32)
        if est.shape != batch.shape:
            raise RuntimeError(f"chunk function returned {est.shape}, expected {batch.shape}")
        if o:
            if ks[0] > 0:  # a later chunk is at least O + 1 samples long
                est[0, :o] *= self._ramp_in
            if len(ks) > 1:  # rows of a multi-chunk batch are all C long
                est[1:, :o] *= self._ramp_in
                est[:-1, c - o :] *= self._ramp_out
            if ks[-1] != last:
                est[-1, c - o :] *= self._ramp_out
        end = self._start(ks[-1]) + width
        need = end - self._emitted
        if need > self._acc.size:
            self._acc = np.concatenate([self._acc, np.zeros(need - self._acc.size, np.float32)])
        for row, k in enumerate(ks):
            lo = self._start(k) - self._emitted
            self._acc[lo : lo + width] += est[row]
        self._next_chunk = ks[-1] + 1

    def _pop(self, upto: int) -> np.ndarray:
        """Return output samples ``[_emitted, upto)`` and drop consumed input."""
        n = upto - self._emitted
        out = self._acc[:n].copy()
        if out.size < n:  # nothing was added there (cannot happen past the first chunk)
            out = np.concatenate([out, np.zeros(n - out.size, np.float32)])
        self._acc = self._acc[n:]
        self._emitted = upto
        keep_from = self._start(self._next_chunk) - self._buf_start
        if keep_from > 0:
            self._buf = self._buf[keep_from:]
            self._buf_start += keep_from
        return out

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Append ``(n,)`` model-rate input; return the output samples that became final."""
        if self._done:
            raise RuntimeError("push after finish")
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._buf = np.concatenate([self._buf, samples])
        self._total += samples.size
        ready: list[int] = []
        k = self._next_chunk
        while self._start(k) + self.plan.chunk < self._total:  # chunk k is not the last
            ready.append(k)
            k += 1
            if len(ready) == self.plan.batch:
                self._run(ready, last=None)
                ready = []
        if ready:
            self._run(ready, last=None)
        return self._pop(min(self._start(self._next_chunk), self._total))

    def finish(self) -> np.ndarray:
        """Run the remaining chunks (the last one at its own length); return the rest."""
        self._done = True
        if self._total == 0:
            return np.zeros(0, dtype=np.float32)
        o, h = self.plan.overlap, self.plan.hop
        # chunk k >= 1 is needed iff some sample lies beyond the previous chunk's end
        last = max(0, -(-(self._total - o) // h) - 1)
        full = list(range(self._next_chunk, last))
        for i in range(0, len(full), self.plan.batch):
            self._run(full[i : i + self.plan.batch], last=last)
        self._run([last], last=last)  # alone: it may be shorter than a chunk
        return self._pop(self._total)


def separate_array(mixture: np.ndarray, fn: ChunkFn, plan: ChunkPlan) -> np.ndarray:
    """Chunked extraction of an in-memory ``(L,)`` model-rate mixture → ``(L,)`` float32."""
    ola = OverlapAdd(fn, plan)
    head = ola.push(mixture)
    return np.concatenate([head, ola.finish()])


# --------------------------------------------------------------------------- enrollment


@dataclass(frozen=True)
class VadSettings:
    """Energy VAD used to check enrollments (values come from the CLI flags)."""

    frame_seconds: float  # analysis frame, s
    threshold_db: float  # a frame is active within this many dB of the loudest frame
    floor_db: float  # ... and above this absolute level, dBFS (mean power)
    min_active_seconds: float  # warn below this much active speech, s
    min_active_fraction: float  # warn when less than this share of frames is active


def active_speech(wav: np.ndarray, sample_rate: int, vad: VadSettings) -> tuple[float, float]:
    """(active seconds, active fraction) of ``wav (L,)`` by a frame-energy VAD."""
    frame = max(1, int(round(vad.frame_seconds * sample_rate)))
    n = wav.size // frame
    if n == 0:
        return 0.0, 0.0
    power = (wav[: n * frame].astype(np.float64).reshape(n, frame) ** 2).mean(axis=1)
    db = 10.0 * np.log10(power + np.finfo(np.float32).tiny)
    active = (db > db.max() - vad.threshold_db) & (db > vad.floor_db)
    return float(active.sum() * frame / sample_rate), float(active.mean())


def stderr_warn(message: str) -> None:
    print(message, file=sys.stderr)


# --------------------------------------------------------------------------- files


def _subtype_for(path: Path) -> tuple[str, str]:
    fmt = path.suffix.lstrip(".").upper() or "WAV"
    if fmt not in sf.available_formats():
        raise UserError(f"{path}: unsupported output format {fmt!r} (use .wav or .flac)")
    return fmt, ("PCM_24" if fmt == "FLAC" else "FLOAT")


def _read_blocks(path: Path, block_frames: int) -> tuple[int, int, Iterator[np.ndarray]]:
    """Open ``path`` and return (sample rate, frames, iterator of mono float32 blocks)."""
    if not path.exists():
        raise UserError(f"{path}: file not found")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, expected an audio file")
    try:
        handle = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: not a readable audio file ({reason})") from None
    if handle.frames == 0:
        handle.close()
        raise UserError(f"{path}: audio is empty (zero samples)")

    def blocks() -> Iterator[np.ndarray]:
        with handle:
            for block in handle.blocks(blocksize=block_frames, dtype="float32", always_2d=True):
                mono = block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]
                if not np.isfinite(mono).all():
                    raise UserError(f"{path}: audio contains NaN or Inf samples")
                yield np.ascontiguousarray(mono, dtype=np.float32)

    return int(handle.samplerate), int(handle.frames), blocks()


def separate_file(
    mix_path: Path,
    out_path: Path,
    fn: ChunkFn,
    sample_rate: int,
    plan: ChunkPlan,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Stream ``mix_path`` through the chunked model into ``out_path``; returns frames written.

    Any input rate and channel count: blocks are downmixed, resampled to ``sample_rate``
    with a streaming soxr resampler, extracted, resampled back and written as mono at the
    input rate with exactly the input's frame count. The output appears atomically (a
    temporary file renamed into place); on any error nothing is left at ``out_path``.
    ``progress`` receives the number of input frames consumed after each block.
    """
    mix_path, out_path = Path(mix_path), Path(out_path)
    fmt, subtype = _subtype_for(out_path)
    in_rate, frames, blocks = _read_blocks(mix_path, plan.chunk * plan.batch)
    down = soxr.ResampleStream(in_rate, sample_rate, 1, dtype="float32", quality="HQ")
    up = soxr.ResampleStream(sample_rate, in_rate, 1, dtype="float32", quality="HQ")
    same_rate = in_rate == sample_rate
    ola = OverlapAdd(fn, plan)
    written = 0
    with atomic_path(out_path) as tmp:
        with sf.SoundFile(
            str(tmp), "w", samplerate=in_rate, channels=1, subtype=subtype, format=fmt
        ) as writer:

            def emit(model_rate: np.ndarray, last: bool) -> None:
                nonlocal written
                y = model_rate if same_rate else up.resample_chunk(model_rate, last=last)
                y = y[: frames - written]
                writer.write(y)
                written += y.size

            consumed = 0
            for block in blocks:
                x = block if same_rate else down.resample_chunk(block, last=False)
                emit(ola.push(x), last=False)
                consumed += block.size
                if progress is not None:
                    progress(consumed)
            if not same_rate:
                emit(ola.push(down.resample_chunk(np.zeros(0, np.float32), last=True)), False)
            emit(ola.finish(), last=True)
            if written < frames:  # resampler rounding: pad the final few samples
                writer.write(np.zeros(frames - written, dtype=np.float32))
                written = frames
    return written


def _header_order(path: Path, lineno: int, names: list[str], columns: list[str]) -> list[str]:
    """Column order from a header row, which must name every expected column exactly once."""
    missing = [c for c in columns if c not in names]
    unknown = [n for n in names if n not in columns]
    if missing or unknown or len(set(names)) != len(names):
        problem = (
            f"lacks column(s) {', '.join(missing)}"
            if missing
            else f"has unknown or repeated column(s) {', '.join(unknown) or ', '.join(names)}"
        )
        raise UserError(f"{path}:{lineno}: header {problem} (expected {', '.join(columns)})")
    return names


def read_csv_rows(path: Path, columns: list[str], required: int) -> list[dict[str, str]]:
    """Rows of a CSV of file paths → dicts keyed by ``columns`` (missing optional cells = "").

    The first ``required`` columns must be non-empty. An optional header row (its first cell
    is a column name) must name every one of ``columns`` and sets their order; without it
    the cells are in ``columns`` order. Blank lines and lines starting with ``#`` are
    ignored; relative paths are resolved against the CSV's folder.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: list file not found")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a readable text file ({type(exc).__name__})") from None
    rows: list[dict[str, str]] = []
    order = list(columns)  # column names by position; a header row may reorder them
    for lineno, cells in enumerate(csv.reader(text.splitlines()), start=1):
        cells = [c.strip() for c in cells]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if not rows and cells[0].lower() in columns:
            order = _header_order(path, lineno, [c.lower() for c in cells], columns)
            continue
        by_name = dict(zip(order, cells))
        if len(cells) > len(order) or any(not by_name.get(c) for c in columns[:required]):
            raise UserError(
                f"{path}:{lineno}: expected columns {', '.join(order)} "
                f"({', '.join(columns[:required])} required), got {cells}"
            )
        row = {}
        for name in columns:
            cell = by_name.get(name, "")
            if cell and name != "out":
                cell = ";".join(
                    str(p if Path(p).is_absolute() else path.parent / p)
                    for p in (part.strip() for part in cell.split(";"))
                    if p
                )
            row[name] = cell
        rows.append(row)
    if not rows:
        raise UserError(f"{path}: no rows (expected {', '.join(columns)})")
    return rows
