"""HDF5 packs and JSONL manifests: the on-disk form of a prepared corpus.

Packs dir layout::

    manifest_{train,val,test}.jsonl   one JSON row per utterance / noise clip / RIR
    packs/{kind}/{source}/{split}_{shard}.h5
    prepare_report.json

A pack holds one contiguous float32 dataset per file under ``audio/<position>`` (so a
crop is read with h5py slicing without touching the rest) and a ``meta`` dataset (UTF-8 JSON
bytes) describing what the pack contains; it is written under a temporary name and renamed
when complete, so an existing ``*.h5`` is always a finished pack.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hifi_tse.errors import UserError
from hifi_tse.utils import atomic_write_text

PACK_FORMAT = "hifi-tse-pack"
PACK_VERSION = 1
SPLITS = ("train", "val", "test")


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


def load_report(packs_dir: Path) -> dict[str, Any]:
    """``prepare_report.json`` of a packs dir; UserError when missing."""
    path = Path(packs_dir) / "prepare_report.json"
    if not path.is_file():
        raise UserError(f"{path}: not found (run `hifi-tse prepare --out {packs_dir}`)")
    return json.loads(path.read_text())


class PackWriter:
    """Writes one pack file dataset by dataset, so a pack never has to fit in memory.

    Use on a temporary path (``utils.atomic_path``) and rename after :meth:`close`::

        with atomic_path(final) as tmp, PackWriter(tmp) as w:
            w.add("audio/000000", wav)
            w.set_meta({...})
    """

    def __init__(self, path: Path) -> None:
        self._f = h5py.File(path, "w")
        self._f.attrs["format"] = PACK_FORMAT
        self._f.attrs["version"] = PACK_VERSION

    def add(self, key: str, wav: np.ndarray) -> None:
        """Store ``(L,)`` audio contiguously (uncompressed: crops are cheap slices)."""
        self._f.create_dataset(key, data=np.asarray(wav, dtype=np.float32))

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


class PackReader:
    """Reads (crops of) pack datasets; HDF5 handles are opened lazily, once per process.

    The reader remembers the pid that opened its handles: after a fork (DataLoader worker)
    it drops the inherited handles and reopens its own, and it pickles without handles
    (spawned workers), so no ``worker_init_fn`` is needed.
    """

    def __init__(self, packs_dir: Path) -> None:
        self.packs_dir = Path(packs_dir)
        self._pid: int | None = None
        self._files: dict[str, h5py.File] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"packs_dir": self.packs_dir, "_pid": None, "_files": {}}

    def _file(self, pack: str) -> h5py.File:
        pid = os.getpid()
        if self._pid != pid:
            # Inherited handles belong to the parent; never use (or close) them here.
            self._files = {}
            self._pid = pid
        f = self._files.get(pack)
        if f is None:
            path = self.packs_dir / pack
            try:
                f = h5py.File(path, "r")
            except OSError as exc:
                raise UserError(f"{path}: cannot open pack ({exc})") from None
            self._files[pack] = f
        return f

    def num_samples(self, pack: str, key: str) -> int:
        return int(self._file(pack)[key].shape[0])

    def read(self, pack: str, key: str, start: int = 0, length: int | None = None) -> np.ndarray:
        """``(length,)`` float32 samples from ``start`` (fewer at the end of the dataset).

        Only the requested slice is read from disk.
        """
        ds = self._file(pack)[key]
        stop = ds.shape[0] if length is None else min(ds.shape[0], start + length)
        return np.asarray(ds[start:stop], dtype=np.float32)

    def close(self) -> None:
        if self._pid == os.getpid():
            for f in self._files.values():
                f.close()
        self._files = {}
