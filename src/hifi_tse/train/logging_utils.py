"""Run logging: console lines, a JSONL metrics log and TensorBoard, all rank-0 only.

``metrics.jsonl`` in the run folder holds one JSON object per line: ``{"kind": "train", "step":
N, ...terms}`` every ``log_interval`` steps, ``{"kind": "val", ...}`` after each validation, and
``{"kind": "event", ...}`` for starts, resumes, warnings and the end of the run. ``step`` always
counts finished optimiser steps.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from hifi_tse.data.store import VOICE_KINDS
from hifi_tse.utils import atomic_write_text

LOG = logging.getLogger("hifi_tse.train")
METRICS_NAME = "metrics.jsonl"


def configure_console_logging() -> None:
    """Training's console lines on stdout: INFO on global rank 0, warnings only elsewhere."""
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(message)s",
        stream=sys.stdout,
        force=True,
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/Inf; keep them visible as strings
    return value


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop records written after ``last_step`` (and a torn last line) before a resume.

    A killed run may have logged steps beyond its last checkpoint; the resumed run logs them
    again, so the log reads like one uninterrupted run.
    """
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if int(record.get("step", -1)) <= last_step:
            kept.append(line)
    atomic_write_text(path, "".join(k + "\n" for k in kept))


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}"


def format_train_line(record: dict[str, Any], total_steps: int) -> str:
    """One console line: step, phase, every loss term, rms_ratio, lr, grad norms, speed, ETA."""
    terms = " ".join(
        f"{k[5:]}={record[k]:.4g}"
        for k in sorted(record)
        if k.startswith("loss/") and k != "loss/rms_ratio"  # shown once, below
    )
    position = record.get("schedule_step", record["step"])
    where = (
        f"step {record['step']:>7d}/{total_steps}"
        if position == record["step"]
        else f"step {record['step']:>7d} (schedule {position}/{total_steps})"
    )
    return (
        f"{where} phase {record['phase']} | {terms} | "
        f"rms_ratio={record.get('rms_ratio', float('nan')):.3f} lr={record['lr']:.3e} "
        f"gnorm={record['grad_norm_before']:.3g}->{record['grad_norm_after']:.3g} | "
        f"{record['step_time']:.3f}s/step {record['examples_per_s']:.1f} ex/s "
        f"ETA {format_duration(record['eta_s'])}"
    )


_GROUP_KEYS = ("tp_si_sdri", "rms_ratio", "ta_energy_db")  # per kind, in the val line


def format_val_line(record: dict[str, Any]) -> str:
    # Kinds of voice only: per-source figures (``source/<name>/...``) would run off the line;
    # then the level of continuous speech, by kind where validation splits it so.
    names = ["loss", "tp_si_sdr", "tp_si_sdri", "rms_ratio", "ta_energy_db"]
    names += [f"{kind}/{key}" for kind in VOICE_KINDS for key in _GROUP_KEYS]
    continuous = [f"{kind}/continuous/rms_ratio" for kind in VOICE_KINDS]
    names += [k for k in continuous if k in record] or ["continuous/rms_ratio"]
    parts = [
        f"{name}={record[name]:.4g}±{record.get(name + '_se', math.nan):.2g}"
        for name in names
        if name in record
    ]
    return f"val step {record['step']}: " + " ".join(parts)


class RunLogger:
    """Console + JSONL + TensorBoard sink. Inactive (all no-ops) on ranks other than 0."""

    def __init__(
        self, run_dir: Path, active: bool, tensorboard: bool = True, purge_step: int | None = None
    ) -> None:
        self.active = active
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / METRICS_NAME
        self.writer = None
        if active:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if active and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(
                log_dir=str(self.run_dir / "tensorboard"), purge_step=purge_step
            )

    def jsonl(self, record: dict[str, Any]) -> None:
        if not self.active:
            return
        line = json.dumps({k: _jsonable(v) for k, v in record.items()})
        with open(self.metrics_path, "a") as fh:
            fh.write(line + "\n")
            fh.flush()

    def info(self, message: str) -> None:
        if self.active:
            LOG.info(message)

    def warning(self, message: str, step: int) -> None:
        """Console warning, TensorBoard text and a JSONL event."""
        if not self.active:
            return
        LOG.warning("WARNING: %s", message)
        if self.writer is not None:
            self.writer.add_text("health/warning", message, step)
        self.jsonl({"kind": "event", "event": "warning", "step": step, "message": message})

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def audio(self, tag: str, wav: np.ndarray, step: int, sample_rate: int) -> None:
        """``wav (L,)`` float32 in [-1, 1] (clipped here for display only)."""
        if self.writer is None:
            return
        self.writer.add_audio(tag, np.clip(wav, -1.0, 1.0)[None, :], step, sample_rate)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
