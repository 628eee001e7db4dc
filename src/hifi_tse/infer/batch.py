"""Extraction over many files, on one process or many (``torchrun``, one or several nodes).

The file list is sharded by global rank (file ``i`` goes to rank ``i % world_size``); each
output is written atomically and an existing output is skipped, so a stopped or failed job
resumes where it stopped by running the same command again. A file that cannot be read or
extracted is recorded, never fatal: the rest is done, and global rank 0 writes
``separate_summary.json`` (done, skipped and failed counts over all ranks, the failures
with their reasons) into the output folder.

Processes join a gloo group only to gather the failures at the end (CPU or GPU extraction
alike), so nothing else is exchanged between them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hifi_tse.errors import UserError
from hifi_tse.utils import atomic_write_text

SUMMARY_NAME = "separate_summary.json"
Job = tuple[Path, list[Path], Path]  # (mixture, enrollment clips, output)


@dataclass
class BatchReport:
    """What one rank (or, merged, the whole job) did."""

    done: int = 0
    skipped: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Ranks:
    """This process's place in a torchrun job (``rank 0 of 1`` without torchrun)."""

    rank: int
    world_size: int
    local_rank: int

    @classmethod
    def from_env(cls) -> Ranks:
        return cls(
            int(os.environ.get("RANK", "0")),
            int(os.environ.get("WORLD_SIZE", "1")),
            int(os.environ.get("LOCAL_RANK", "0")),
        )


def shard(jobs: list[Job], ranks: Ranks) -> list[Job]:
    """This rank's share: every ``world_size``-th job from position ``rank``."""
    return jobs[ranks.rank :: ranks.world_size]


def run_jobs(
    jobs: list[Job],
    extract_one: Callable[[Path, list[Path], Path], None],
    overwrite: bool = False,
) -> BatchReport:
    """Run ``extract_one(mix, refs, out)`` for each job; existing outputs are skipped unless
    ``overwrite``; a UserError (unreadable, silent or missing input) is recorded and the
    job goes on."""
    report = BatchReport()
    for mix, refs, out in jobs:
        if out.is_file() and not overwrite:
            report.skipped += 1
            continue
        try:
            missing = [p for p in [mix, *refs] if not p.is_file()]
            if missing:
                raise UserError(f"{missing[0]}: file not found")
            extract_one(mix, refs, out)
            report.done += 1
        except UserError as exc:
            report.failed.append({"mix": str(mix), "out": str(out), "reason": str(exc)})
    return report


def gather(report: BatchReport, ranks: Ranks) -> BatchReport | None:
    """The job-wide report on rank 0 (None elsewhere); a gloo group when world_size > 1."""
    if ranks.world_size == 1:
        return report
    import torch.distributed as dist

    from hifi_tse.train.distributed import join_process_group

    if not dist.is_initialized():
        join_process_group("gloo", ranks.rank, ranks.world_size)
    parts: list[Any] = [None] * ranks.world_size
    dist.all_gather_object(parts, asdict(report))
    dist.destroy_process_group()
    if ranks.rank != 0:
        return None
    merged = BatchReport()
    for part in parts:
        merged.done += part["done"]
        merged.skipped += part["skipped"]
        merged.failed += part["failed"]
    merged.failed.sort(key=lambda f: f["mix"])
    return merged


def write_summary(out_dir: Path, report: BatchReport, total: int, ranks: Ranks) -> Path:
    """``separate_summary.json`` in ``out_dir`` (atomically)."""
    path = Path(out_dir) / SUMMARY_NAME
    payload = {"files": total, "world_size": ranks.world_size, **asdict(report)}
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
    return path
