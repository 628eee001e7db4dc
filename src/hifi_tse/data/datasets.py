"""PyTorch datasets over prepared packs: the endless training stream and fixed eval sets.

Seeding story (why worker count, epoch and restarts never change the data):

* Training: example ``i`` of rank ``r`` is drawn from
  ``SeedSequence(cfg.mixing.seed, spawn_key=(TRAIN_STREAM, r, i))``. The index ``i`` is global
  to the rank's stream (the sampler yields 0, 1, 2, ...), so the DataLoader worker that
  happens to build it, the number of workers and the "epoch" play no part: there is no
  epoch, only a position in an endless stream. Resuming at optimiser step ``s`` starts the
  sampler at ``s * examples_per_step`` and reproduces the exact same batches. Different
  ranks use different ``r`` and hence disjoint streams; adding ranks does not change the
  stream of an existing rank.
* Schedules (phase, noisy-reference ramp, difficulty) use ``step = i // examples_per_step``
  inside ``__getitem__``, so they reach every worker process without any shared state.
* Fixed sets (validation / test): item ``i`` is drawn from
  ``SeedSequence(seed, spawn_key=(FIXED_STREAM, i))`` with the schedules at their end, so
  it is a function of ``(seed, i)`` only and never touches the training streams.
* Pack files are opened lazily once per process by :class:`~hifi_tse.data.store.PackReader`,
  so no ``worker_init_fn`` is needed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from hifi_tse.config import Config
from hifi_tse.data.example import Example
from hifi_tse.data.mixer import MIXER_FORMAT_VERSION, Sources, mix_example
from hifi_tse.data.store import LEGACY_STORAGE, manifest_path, recorded_storage
from hifi_tse.schedules import PHASE_TP, phase_at
from hifi_tse.utils import atomic_path

TRAIN_STREAM = 0
FIXED_STREAM = 1
# Seed of the fixed validation set (ARCHITECTURE.md invariant 5): the same set in every run,
# so validation figures of different runs compare; test sets take their own --seed.
VAL_SEED = 20240601
CACHE_FORMAT = "hifi-tse-fixed-set"


def example_rng(seed: int, *key: int) -> np.random.Generator:
    """Generator for one example, a pure function of ``seed`` and the integer ``key``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=tuple(key)))


class MixtureDataset(Dataset):
    """Map-style endless training stream: ``ds[i]`` is example ``i`` of this rank.

    ``ds[i]`` is a pure function of ``(cfg.mixing.seed, rank, i)``; the curriculum step is
    ``i // examples_per_step`` (phase, noisy-reference probability, difficulty).
    Use with :class:`InfiniteSampler` and :func:`collate_batch`.

    Items: dicts with ``mix (L,)``, ``ref (L_ref,)``, ``target (L,)`` float32 arrays,
    ``target_present`` bool, ``snr_db`` float (dB), ``num_interferers`` int, ``index`` int
    and ``meta`` dict.
    """

    def __init__(
        self,
        packs_dir: Path,
        cfg: Config,
        split: str = "train",
        rank: int = 0,
        examples_per_step: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.rank = rank
        self.examples_per_step = examples_per_step or (
            cfg.train.batch_size * cfg.train.grad_accum_steps
        )
        self.sources = Sources(Path(packs_dir), split, cfg.audio.sample_rate)

    def example(self, index: int, step: int | None = None) -> Example:
        """Example ``index``; ``step`` (the schedule position under ``train.budget_minutes``)
        replaces ``index // examples_per_step`` as the curriculum position."""
        if step is None:
            step = index // self.examples_per_step
        rng = example_rng(self.cfg.mixing.seed, TRAIN_STREAM, self.rank, index)
        return mix_example(self.cfg, self.sources, rng, phase=phase_at(step, self.cfg), step=step)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """``ds[index]``, or ``ds[(index, step)]`` from a sampler that follows a time budget."""
        index, step = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (int(key), None)
        return self.example(index, step).to_item(index)


class InfiniteSampler(Sampler[int]):
    """Yields ``start_index, start_index + 1, ...`` forever (resume: ``step * per_step``).

    With ``position`` (a callable returning the trainer's schedule step, under
    ``train.budget_minutes``) it yields ``(index, position())`` pairs instead: the sampler runs
    in the trainer's process, so the workers learn the time-driven curriculum from it.
    """

    def __init__(self, start_index: int = 0, position: Callable[[], int] | None = None) -> None:
        self.start_index = int(start_index)
        self.position = position

    def __iter__(self) -> Iterator[Any]:
        indices = itertools.count(self.start_index)
        if self.position is None:
            return indices
        return ((index, self.position()) for index in indices)

    def state_dict(self) -> dict[str, int]:
        return {"start_index": self.start_index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.start_index = int(state["start_index"])


def collate_batch(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack dataset items into the batch dict of the data contract.

    Returns ``mix (B, L)``, ``ref (B, L_ref)``, ``target (B, L)`` float32, ``target_present
    (B,)`` bool, ``snr_db (B,)`` float32, ``num_interferers (B,)`` int64, ``index (B,)`` int64
    tensors and ``meta``: the list of per-example dicts.
    """

    def stack(name: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([np.asarray(it[name], dtype=np.float32) for it in items]))

    return {
        "mix": stack("mix"),
        "ref": stack("ref"),
        "target": stack("target"),
        "target_present": torch.tensor([bool(it["target_present"]) for it in items]),
        "snr_db": torch.tensor([float(it["snr_db"]) for it in items], dtype=torch.float32),
        "num_interferers": torch.tensor(
            [int(it["num_interferers"]) for it in items], dtype=torch.int64
        ),
        "index": torch.tensor([int(it["index"]) for it in items], dtype=torch.int64),
        "meta": [it["meta"] for it in items],
    }


class FixedExampleSet(Dataset):
    """A fixed evaluation set: ``len == n``, item ``i`` a function of ``(seed, i)`` only.

    Exactly the examples at positions where ``floor((i + 1) * ta_ratio)`` steps up are target
    absent (about ``ta_ratio`` of them, evenly spread; none in phase 1); the schedules are at
    their end (full difficulty, final noisy-reference probability).

    With ``cache_path`` the examples are generated once into an HDF5 file (written
    atomically) and read back from it; the cache is reused only when its recorded seed, n,
    phase, split, config hash and manifest hash all match.
    """

    def __init__(
        self,
        packs_dir: Path,
        cfg: Config,
        split: str = "val",
        seed: int | None = None,
        n: int | None = None,
        phase: int = 2,
        cache_path: Path | None = None,
        voices: str | None = None,
    ) -> None:
        self.packs_dir = Path(packs_dir)
        self.cfg = cfg
        self.split = split
        self.voices = voices
        self.seed = VAL_SEED if seed is None else int(seed)
        self.n = cfg.train.val_examples if n is None else int(n)
        self.phase = int(phase)
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self._sources: Sources | None = None
        self._cache_pid: int | None = None
        self._cache: h5py.File | None = None
        if self.cache_path is not None and not self._cache_valid():
            self._write_cache()

    # ----------------------------------------------------------------- generation

    @property
    def sources(self) -> Sources:
        if self._sources is None:
            self._sources = Sources(
                self.packs_dir, self.split, self.cfg.audio.sample_rate, voices=self.voices
            )
        return self._sources

    def target_present_at(self, index: int) -> bool:
        """TP/TA pattern: TA where ``floor((i+1) * ta_ratio)`` increases (never in phase 1)."""
        if self.phase <= PHASE_TP:
            return True
        r = self.cfg.mixing.ta_ratio
        return int(np.floor((index + 1) * r)) == int(np.floor(index * r))

    def example(self, index: int) -> Example:
        rng = example_rng(self.seed, FIXED_STREAM, index)
        return mix_example(
            self.cfg,
            self.sources,
            rng,
            phase=self.phase,
            step=None,
            target_present=self.target_present_at(index),
            augment=False,
        )

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if not 0 <= index < self.n:
            raise IndexError(f"FixedExampleSet index {index} out of range 0..{self.n - 1}")
        if self.cache_path is not None:
            return self._cached_item(index)
        return self.example(index).to_item(index)

    # ----------------------------------------------------------------- cache

    def _fingerprint(self) -> str:
        # What the examples depend on: the mixing recipe (not its DataLoader workers), the
        # mixer's code version (which covers its constants) and the corpus.
        mixing = {k: v for k, v in self.cfg.to_dict()["mixing"].items() if k != "num_workers"}
        man = manifest_path(self.packs_dir, self.split)
        blob = {
            "mixer_format": MIXER_FORMAT_VERSION,
            "audio": self.cfg.to_dict()["audio"],
            "mixing": mixing,
            "manifest": hashlib.sha1(man.read_bytes()).hexdigest() if man.is_file() else None,
        }
        # Re-packing in another storage keeps the manifest but changes the samples (int16 /
        # 24-bit quantisation); float32 adds nothing, so caches made before storages stay.
        storage = recorded_storage(self.packs_dir) or LEGACY_STORAGE
        if storage != LEGACY_STORAGE:
            blob["storage"] = storage
        return hashlib.sha1(json.dumps(blob, sort_keys=True).encode()).hexdigest()

    def _expected_attrs(self) -> dict[str, Any]:
        return {
            "format": CACHE_FORMAT,
            "seed": self.seed,
            "n": self.n,
            "phase": self.phase,
            "split": self.split,
            "voices": self.voices or "all",
            "config_hash": self._fingerprint(),
        }

    def _cache_valid(self) -> bool:
        assert self.cache_path is not None
        if not self.cache_path.is_file():
            return False
        try:
            with h5py.File(self.cache_path, "r") as f:
                attrs = dict(f.attrs)
        except OSError:
            return False
        want = self._expected_attrs()
        return all(_attr(attrs.get(k)) == v for k, v in want.items())

    def _write_cache(self) -> None:
        assert self.cache_path is not None
        sr = self.cfg.audio.sample_rate
        length = int(round(self.cfg.audio.segment_seconds * sr))
        ref_length = int(round(self.cfg.audio.ref_seconds * sr))
        with atomic_path(self.cache_path) as tmp, h5py.File(tmp, "w") as f:
            for k, v in self._expected_attrs().items():
                f.attrs[k] = v
            mix = f.create_dataset("mix", (self.n, length), dtype=np.float32)
            target = f.create_dataset("target", (self.n, length), dtype=np.float32)
            ref = f.create_dataset("ref", (self.n, ref_length), dtype=np.float32)
            present = np.zeros(self.n, dtype=bool)
            snr = np.zeros(self.n, dtype=np.float32)
            n_int = np.zeros(self.n, dtype=np.int64)
            metas = []
            for i in range(self.n):
                ex = self.example(i)
                mix[i], target[i], ref[i] = ex.mix, ex.target, ex.ref
                present[i], snr[i], n_int[i] = ex.target_present, ex.snr_db, ex.num_interferers
                metas.append(json.dumps(ex.meta))
            f["target_present"] = present
            f["snr_db"] = snr
            f["num_interferers"] = n_int
            f.create_dataset("meta", data=metas, dtype=h5py.string_dtype())

    def _cached_item(self, index: int) -> dict[str, Any]:
        if self._cache is None or self._cache_pid != os.getpid():
            assert self.cache_path is not None
            self._cache = h5py.File(self.cache_path, "r")
            self._cache_pid = os.getpid()
        f = self._cache
        return {
            "mix": np.asarray(f["mix"][index], dtype=np.float32),
            "ref": np.asarray(f["ref"][index], dtype=np.float32),
            "target": np.asarray(f["target"][index], dtype=np.float32),
            "target_present": bool(f["target_present"][index]),
            "snr_db": float(f["snr_db"][index]),
            "num_interferers": int(f["num_interferers"][index]),
            "index": index,
            "meta": json.loads(f["meta"][index]),
        }

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = None
        state["_cache_pid"] = None
        return state


def _attr(value: Any) -> Any:
    """HDF5 attributes come back as NumPy scalars / bytes; make them comparable."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value
