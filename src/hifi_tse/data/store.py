"""HDF5 packs and JSONL manifests: the on-disk form of a prepared corpus.

Packs dir layout::

    manifest_{train,val,test}.jsonl   one JSON row per utterance / noise clip / RIR
    packs/{kind}/{source}/{split}_{shard}.h5
    prepare_report.json

A pack holds one dataset per file under ``audio/<position>`` and a ``meta`` dataset (UTF-8
JSON bytes) describing what the pack contains; it is written under a temporary name and
renamed when complete, so an existing ``*.h5`` is always a finished pack.

The pack's ``storage`` attribute says how each ``audio/<position>`` dataset holds its
``(L,)`` samples (packs written before the attribute existed are ``float32``):

* ``float32``: the samples as a contiguous float32 dataset (4 bytes per sample).
* ``int16``: ``round(x / scale)`` as a contiguous int16 dataset (2 bytes per sample) with
  the float32 ``scale`` as a dataset attribute; ``x = q * scale``. Audio on the 16-bit grid
  (every ``x * 32768`` an integer in [-32768, 32767], as 16-bit PCM read at the pack rate
  is) gets ``scale = 1/32768`` exactly and round-trips bit-exactly; other audio (resampled, peaks
  above full scale) gets ``scale = peak / 32767``, so nothing clips and the error is at most
  ``scale / 2`` per sample.
* ``flac``: the same integers encoded as one FLAC stream per file (uint8 byte dataset;
  attributes ``scale`` and ``frames``, the sample count), 16-bit for audio on the 16-bit
  grid, else 24-bit (scale ``1/2**23`` exactly for audio on the 24-bit grid, else
  ``peak / (2**23 - 1)``).

:meth:`PackReader.read` returns float32 for every storage, and a crop reads only its slice:
an HDF5 hyperslab for float32 / int16, and for FLAC a seek in the stream (read through a
file object over the byte dataset, so only the blocks it touches leave the disk) followed
by decoding just the crop's frames.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import soundfile as sf

from hifi_tse.errors import UserError
from hifi_tse.utils import atomic_write_text

PACK_FORMAT = "hifi-tse-pack"
# 2: the ``storage`` attribute (float32 / int16 / flac). Version-1 packs are float32.
PACK_VERSION = 2
SPLITS = ("train", "val", "test")

STORAGES = ("float32", "int16", "flac")
# int16 by default: half the bytes of float32 (0.35 against 0.69 GB per hour at 48 kHz),
# lossless for 16-bit sources at the pack rate and within half a step of a per-file scale
# otherwise, for 7 % of the mixing rate; FLAC saves 7 % more disk for 37 % of the mixing
# rate (benchmarks/bench_data.py, docs/benchmarks.md).
DEFAULT_STORAGE = "int16"
# What a pack without a ``storage`` attribute holds (written before storages existed).
LEGACY_STORAGE = "float32"
INT16_BITS = 16
FLAC_BITS_LOSSY = 24  # FLAC of audio off the 16-bit grid: 24-bit, error 2**-24 of the peak
_FLAC_SUBTYPES = {16: "PCM_16", 24: "PCM_24"}
_SUBTYPE_BITS = {v: k for k, v in _FLAC_SUBTYPES.items()}
# libsndfile returns int32 reads of n-bit PCM shifted to the top of the int32 word.
_INT32_BITS = 32
# Read-ahead of the file object FLAC is decoded through: libFLAC asks for small pieces
# (headers, frame sync during a seek); one HDF5 slice call per 64 KiB keeps them cheap.
_FLAC_READ_BUFFER_BYTES = 1 << 16
# Rate written into FLAC headers when the writer is not told the pack's rate.
_FLAC_DEFAULT_RATE = 48000


def manifest_path(packs_dir: Path, split: str) -> Path:
    return Path(packs_dir) / f"manifest_{split}.jsonl"


def write_manifest(packs_dir: Path, split: str, rows: list[dict[str, Any]]) -> None:
    """Write ``manifest_{split}.jsonl`` atomically (one JSON object per line)."""
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    atomic_write_text(manifest_path(packs_dir, split), text)


def load_manifest(packs_dir: Path, split: str) -> list[dict[str, Any]]:
    """Rows of ``manifest_{split}.jsonl``; UserError when it is missing or not JSONL."""
    path = manifest_path(packs_dir, split)
    if not path.is_file():
        raise UserError(f"{path}: manifest not found (run `hifi-tse prepare --out {packs_dir}`)")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            raise UserError(f"{path}:{n}: not a JSON line") from None
    return rows


def recorded_storage(packs_dir: Path) -> str | None:
    """The storage ``prepare_report.json`` names: None without a readable report, float32
    for a report from before storages existed."""
    path = Path(packs_dir) / "prepare_report.json"
    try:
        return str(json.loads(path.read_text()).get("storage", LEGACY_STORAGE))
    except (OSError, ValueError):
        return None


def load_report(packs_dir: Path) -> dict[str, Any]:
    """``prepare_report.json`` of a packs dir; UserError when missing."""
    path = Path(packs_dir) / "prepare_report.json"
    if not path.is_file():
        raise UserError(f"{path}: not found (run `hifi-tse prepare --out {packs_dir}`)")
    return json.loads(path.read_text())


VOICE_KINDS = ("real", "synthetic")
# Narrower selections of the real voices, for evaluation: the talkers of sources held out
# whole (a recording chain never trained on) and those of sources that also train.
REAL_SOURCE_GROUPS = ("unseen-source", "seen-source")
VOICE_SELECTIONS = VOICE_KINDS + REAL_SOURCE_GROUPS


def speech_source_voices(report: dict[str, Any], voices: str | None) -> dict[str, str]:
    """Speech source name -> ``"real"`` / ``"synthetic"`` from a prepare report (untagged
    sources are real). ``voices``, when given, is checked to be one of
    :data:`VOICE_SELECTIONS` (UserError otherwise)."""
    if voices is not None and voices not in VOICE_SELECTIONS:
        raise UserError(f"voices: expected one of {', '.join(VOICE_SELECTIONS)}, got {voices!r}")
    return {
        s["name"]: s.get("voices", "real")
        for s in report.get("sources", [])
        if s.get("kind") == "speech"
    }


def selected_sources(report: dict[str, Any], voices: str | None) -> set[str]:
    """Names of the speech sources whose speakers ``voices`` (one of
    :data:`VOICE_SELECTIONS`, None: all) selects, from a prepare report."""
    kinds = speech_source_voices(report, voices)
    if voices is None:
        return set(kinds)
    if voices in VOICE_KINDS:
        return {name for name, kind in kinds.items() if kind == voices}
    held_whole = {
        s["name"]
        for s in report.get("sources", [])
        if s.get("kind") == "speech" and s.get("whole_split") in ("val", "test")
    }
    real = {name for name, kind in kinds.items() if kind == "real"}
    return real & held_whole if voices == "unseen-source" else real - held_whole


def check_storage(storage: str) -> str:
    """``storage`` if it is one of :data:`STORAGES`; UserError naming them otherwise."""
    if storage not in STORAGES:
        raise UserError(f"--storage: expected one of {', '.join(STORAGES)}, got {storage!r}")
    return storage


def _grid_scale(x: np.ndarray, bits: int) -> float | None:
    """``2**-(bits-1)`` when every sample of ``(L,)`` float ``x`` is an integer multiple of it
    that fits a signed ``bits``-bit integer (x read from such PCM at its own rate), else None.
    """
    full = 2.0 ** (bits - 1)
    q = x.astype(np.float64) * full  # exact: a power-of-two scaling of float32 values
    if q.size and (q.min() < -full or q.max() > full - 1 or not np.array_equal(q, np.rint(q))):
        return None
    return 1.0 / full


def quantise(x: np.ndarray, bits: int) -> tuple[np.ndarray, np.float32]:
    """``(L,)`` float audio → ``(L,)`` int32 ``q`` in the signed ``bits``-bit range and a
    float32 ``scale`` with ``x ≈ q * scale``.

    On the ``bits``-bit grid the scale is ``2**-(bits-1)`` and ``q * scale == x`` exactly;
    otherwise ``scale = peak / (2**(bits-1) - 1)`` (no clipping whatever the peak, error at
    most ``scale / 2`` per sample).
    """
    x = np.asarray(x)
    if not np.isfinite(x).all():
        raise ValueError("quantise: audio contains NaN or Inf samples")
    full = 2 ** (bits - 1)
    scale = _grid_scale(x, bits)
    if scale is None:
        peak = float(np.max(np.abs(x))) if x.size else 0.0
        scale = peak / (full - 1) if peak > 0 else 1.0 / full
    scale32 = np.float32(scale)
    # Quantise with the float32 scale that is stored, so dequantising inverts exactly this;
    # the clip only guards against the float32 rounding of the scale (never > half a step).
    q = np.clip(np.rint(x.astype(np.float64) / float(scale32)), -full, full - 1)
    return q.astype(np.int32), scale32


def dequantise(q: np.ndarray, scale: float | np.floating) -> np.ndarray:
    """``(L,)`` integers → ``(L,)`` float32 ``q * scale`` (computed in float32)."""
    x = np.asarray(q).astype(np.float32)
    x *= np.float32(scale)
    return x


def encode_flac(q: np.ndarray, bits: int, sample_rate: int) -> bytes:
    """FLAC bytes of ``(L,)`` integers ``q`` in the signed ``bits``-bit range (16 or 24)."""
    if bits == INT16_BITS:
        data = q.astype(np.int16)
    else:
        # libsndfile takes int32 input as full-scale 32-bit: put the 24 bits on top.
        data = q.astype(np.int32) << (_INT32_BITS - bits)
    buf = io.BytesIO()
    sf.write(buf, data, sample_rate, format="FLAC", subtype=_FLAC_SUBTYPES[bits])
    return buf.getvalue()


class PackWriter:
    """Writes one pack file dataset by dataset, so a pack never has to fit in memory.

    Use on a temporary path (``utils.atomic_path``) and rename after :meth:`close`::

        with atomic_path(final) as tmp, PackWriter(tmp, "int16") as w:
            w.add("audio/000000", wav)
            w.set_meta({...})

    ``storage`` is one of :data:`STORAGES` (see the module docstring for each layout);
    ``sample_rate`` (Hz) is only written into FLAC headers.
    """

    def __init__(
        self, path: Path, storage: str = DEFAULT_STORAGE, sample_rate: int = _FLAC_DEFAULT_RATE
    ) -> None:
        self.storage = check_storage(storage)
        self.sample_rate = int(sample_rate)
        self._f = h5py.File(path, "w")
        self._f.attrs["format"] = PACK_FORMAT
        self._f.attrs["version"] = PACK_VERSION
        self._f.attrs["storage"] = storage

    def add(self, key: str, wav: np.ndarray) -> None:
        """Store ``(L,)`` float audio (uncompressed storages contiguously: crops are slices)."""
        wav = np.asarray(wav, dtype=np.float32)
        if self.storage == "float32":
            self._f.create_dataset(key, data=wav)
        elif self.storage == "int16":
            q, scale = quantise(wav, INT16_BITS)
            ds = self._f.create_dataset(key, data=q.astype(np.int16))
            ds.attrs["scale"] = scale
        else:
            on_16_bit_grid = _grid_scale(wav, INT16_BITS) is not None
            bits = INT16_BITS if on_16_bit_grid else FLAC_BITS_LOSSY
            q, scale = quantise(wav, bits)
            blob = encode_flac(q, bits, self.sample_rate)
            ds = self._f.create_dataset(key, data=np.frombuffer(blob, dtype=np.uint8))
            ds.attrs["scale"] = scale
            ds.attrs["frames"] = len(wav)

    def set_meta(self, meta: dict[str, Any]) -> None:
        data = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        self._f.create_dataset("meta", data=data)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> PackWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_pack_meta(path: Path) -> dict[str, Any] | None:
    """The ``meta`` of a finished pack, or None when the file is not a readable pack."""
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != PACK_FORMAT or "meta" not in f:
                return None
            return json.loads(bytes(f["meta"][()]).decode())
    except (OSError, ValueError, KeyError):
        return None


class _DatasetFile(io.RawIOBase):
    """A read-only, seekable file object over a 1-D uint8 HDF5 dataset (a FLAC stream):
    each read is an HDF5 slice, so decoding a crop touches only the bytes it needs."""

    def __init__(self, ds: h5py.Dataset) -> None:
        super().__init__()
        self._ds = ds
        self._size = int(ds.shape[0])
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        n = max(0, min(len(view), self._size - self._pos))
        if n:
            view[:n] = self._ds[self._pos : self._pos + n]
            self._pos += n
        return n


def _read_flac(ds: h5py.Dataset, start: int, length: int | None) -> np.ndarray:
    """``(length,)`` float32 samples from ``start`` of a FLAC dataset; decodes only those."""
    frames = int(ds.attrs["frames"])
    stop = frames if length is None else min(frames, start + length)
    if stop <= start:
        return np.zeros(0, dtype=np.float32)
    stream = io.BufferedReader(_DatasetFile(ds), _FLAC_READ_BUFFER_BYTES)
    with sf.SoundFile(stream) as snd:
        if start:
            snd.seek(start)
        q = snd.read(stop - start, dtype="int32")
        bits = _SUBTYPE_BITS[snd.subtype]
    # int32 reads carry the n-bit sample in the top bits: fold the shift into the scale
    # (a power of two, so q * scale is the same float32 as for the unshifted integers).
    scale = np.float32(ds.attrs["scale"]) * np.float32(2.0 ** (bits - _INT32_BITS))
    return dequantise(q, scale)


class PackReader:
    """Reads (crops of) pack datasets as float32; HDF5 handles are opened lazily, once per
    process, whatever the pack's storage (float32, int16 or FLAC; see the module docstring).

    The reader remembers the pid that opened its handles: after a fork (DataLoader worker)
    it drops the inherited handles and reopens its own, and it pickles without handles
    (spawned workers), so no ``worker_init_fn`` is needed.
    """

    def __init__(self, packs_dir: Path) -> None:
        self.packs_dir = Path(packs_dir)
        self._pid: int | None = None
        self._files: dict[str, h5py.File] = {}
        self._storages: dict[str, str] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"packs_dir": self.packs_dir, "_pid": None, "_files": {}, "_storages": {}}

    def _file(self, pack: str) -> h5py.File:
        pid = os.getpid()
        if self._pid != pid:
            # Inherited handles belong to the parent; never use (or close) them here.
            self._files = {}
            self._storages = {}
            self._pid = pid
        f = self._files.get(pack)
        if f is None:
            path = self.packs_dir / pack
            try:
                f = h5py.File(path, "r")
            except OSError as exc:
                raise UserError(f"{path}: cannot open pack ({exc})") from None
            storage = f.attrs.get("storage", LEGACY_STORAGE)
            storage = storage.decode() if isinstance(storage, bytes) else str(storage)
            if storage not in STORAGES:
                f.close()
                raise UserError(
                    f"{path}: unknown pack storage {storage!r} (expected one of "
                    f"{', '.join(STORAGES)}; written by a newer hifi-tse?)"
                )
            self._files[pack] = f
            self._storages[pack] = storage
        return f

    def storage(self, pack: str) -> str:
        """How ``pack`` stores its audio: one of :data:`STORAGES`."""
        self._file(pack)
        return self._storages[pack]

    def num_samples(self, pack: str, key: str) -> int:
        ds = self._file(pack)[key]
        if self._storages[pack] == "flac":
            return int(ds.attrs["frames"])
        return int(ds.shape[0])

    def read(self, pack: str, key: str, start: int = 0, length: int | None = None) -> np.ndarray:
        """``(length,)`` float32 samples from ``start`` (fewer at the end of the dataset).

        Only the requested slice is read from disk (and, for FLAC, decoded).
        """
        ds = self._file(pack)[key]
        storage = self._storages[pack]
        if storage == "flac":
            return _read_flac(ds, start, length)
        stop = ds.shape[0] if length is None else min(ds.shape[0], start + length)
        if storage == "int16":
            return dequantise(ds[start:stop], ds.attrs["scale"])
        return np.asarray(ds[start:stop], dtype=np.float32)

    def close(self) -> None:
        if self._pid == os.getpid():
            for f in self._files.values():
                f.close()
        self._files = {}
        self._storages = {}
