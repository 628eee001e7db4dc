"""Checkpoint files, the one module that writes and reads them: their format and version,
the training payload and what resume restores (training state, RNG streams), and the
inference-only form that ``export`` and the shipped model use.

A checkpoint is a plain dict saved with ``torch.save`` that loads with
``torch.load(..., weights_only=True)`` and no allow-listing: every value is a tensor, a number,
a string, None, or a list/dict/tuple of those (Python's and NumPy's RNG states are converted).
Every checkpoint holds ``format``, ``version``, ``config`` and ``ema`` or ``model`` weights;
a training checkpoint adds ``model``, ``optimizer``, ``train_state``, ``rng`` (and the
discriminator's), which an exported one leaves out.

Files in the run folder: ``checkpoint_{step:07d}.pt`` (rotating, ``keep_last`` kept, phase
boundary checkpoints never deleted), ``checkpoint_best.pt`` (highest TP SI-SDR) and
``checkpoint_final.pt``. Every write goes through :func:`hifi_tse.utils.atomic_path`.
"""

# The legacy global NumPy RNG is a training stream like Python's and torch's (third-party
# code draws from it), so it is seeded, saved and restored on purpose here.
# ruff: noqa: NPY002

from __future__ import annotations

import pickle
import random
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hifi_tse.config import Config
from hifi_tse.errors import UserError
from hifi_tse.schedules import phase_at
from hifi_tse.utils import atomic_path

CHECKPOINT_FORMAT = "hifi-tse-checkpoint"
CHECKPOINT_VERSION = 1
BEST_NAME = "checkpoint_best.pt"
FINAL_NAME = "checkpoint_final.pt"
_NUMBERED = re.compile(r"^checkpoint_(\d{7,})\.pt$")


def numbered_name(step: int) -> str:
    return f"checkpoint_{step:07d}.pt"


@dataclass
class TrainState:
    """Counters and scores that a checkpoint carries besides weights and optimiser state.

    ``step`` counts finished optimiser steps; the next step to run has index ``step``.
    """

    step: int = 0
    best_si_sdr: float = float("-inf")
    best_step: int = -1
    best_healthy: bool = False
    patience_count: int = 0
    val_history: list[dict[str, float]] = field(default_factory=list)
    nonfinite_total: int = 0
    nonfinite_consecutive: int = 0
    elapsed_seconds: float = 0.0
    budget_seconds: float = 0.0  # train.budget_minutes spent so far, s (wall clock)

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "best_si_sdr": self.best_si_sdr,
            "best_step": self.best_step,
            "best_healthy": self.best_healthy,
            "patience_count": self.patience_count,
            "val_history": [dict(v) for v in self.val_history],
            "nonfinite_total": self.nonfinite_total,
            "nonfinite_consecutive": self.nonfinite_consecutive,
            "elapsed_seconds": self.elapsed_seconds,
            "budget_seconds": self.budget_seconds,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainState:
        return cls(
            step=int(d["step"]),
            best_si_sdr=float(d["best_si_sdr"]),
            best_step=int(d["best_step"]),
            # absent in checkpoints written before the health rule: treat as not known healthy
            best_healthy=bool(d.get("best_healthy", False)),
            patience_count=int(d["patience_count"]),
            val_history=[dict(v) for v in d["val_history"]],
            nonfinite_total=int(d["nonfinite_total"]),
            nonfinite_consecutive=int(d["nonfinite_consecutive"]),
            elapsed_seconds=float(d["elapsed_seconds"]),
            budget_seconds=float(d.get("budget_seconds", 0.0)),
        )

    def reset_patience(self) -> None:
        """``--reset-patience``: forget the best score and the patience counter."""
        self.best_si_sdr = float("-inf")
        self.best_step = -1
        self.best_healthy = False
        self.patience_count = 0


# --------------------------------------------------------------------------- RNG states


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy (legacy global), torch CPU and CUDA generator states, weights_only-safe."""
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(x) for x in py["internal"]), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state(
        (
            npst["name"],
            npst["keys"].numpy().astype(np.uint32),
            int(npst["pos"]),
            int(npst["has_gauss"]),
            float(npst["gauss"]),
        )
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- files


def build_checkpoint(
    cfg: Config,
    state: TrainState,
    model: dict[str, torch.Tensor],
    ema: dict[str, torch.Tensor],
    optimizer: dict[str, Any],
    examples_per_step: int,
    world_size: int,
    discriminator: dict[str, torch.Tensor] | None = None,
    disc_optimizer: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the checkpoint dict (format of the shared contract plus training state)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": cfg.to_dict(),
        "step": state.step,
        "phase": phase_at(state.step, cfg),
        "model": model,
        "ema": ema,
        "optimizer": optimizer,
        "discriminator": discriminator,
        "disc_optimizer": disc_optimizer,
        # The LR is a pure function of the step (schedule.lr_at): its position is the step.
        "scheduler": {"step": state.step},
        "rng": capture_rng_state(),
        "sampler": {
            "start_index": state.step * examples_per_step,
            "examples_per_step": examples_per_step,
            "world_size": world_size,
        },
        "train_state": state.to_dict(),
    }


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: temporary file beside ``path``, fsync, rename."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def read_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Any hifi-tse checkpoint (training or exported), ``weights_only``; one-line UserErrors
    for every failure mode (missing, a folder, not a torch file, another format or version,
    no config or weights)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: checkpoint not found")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, expected a checkpoint file")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except (
        RuntimeError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        EOFError,
        ValueError,
        OSError,
        AttributeError,
        KeyError,
        IndexError,
    ) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights only load failed" in reason.lower():
            # torch's message is a paragraph on weights_only; say what it means here
            reason = "not a torch.save file, or it holds Python objects besides tensors"
        raise UserError(f"{path}: not a readable checkpoint ({reason[:160]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path}: not a hifi-tse checkpoint (missing format={CHECKPOINT_FORMAT!r})")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise UserError(
            f"{path}: checkpoint version {ckpt.get('version')!r} is not supported "
            f"(expected {CHECKPOINT_VERSION})"
        )
    if not isinstance(ckpt.get("config"), dict):
        raise UserError(f"{path}: checkpoint has no 'config' mapping")
    if not isinstance(ckpt.get("ema"), dict) and not isinstance(ckpt.get("model"), dict):
        raise UserError(f"{path}: checkpoint holds neither 'ema' nor 'model' weights")
    return ckpt


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A training checkpoint to resume from; UserError when it cannot resume a run."""
    payload = read_checkpoint(path, map_location)
    for key in ("optimizer", "train_state", "rng", "model", "ema"):
        if key not in payload:
            raise UserError(f"{path}: checkpoint lacks '{key}' (an exported model cannot resume)")
    return payload


def save_generator_checkpoint(
    path: str | Path, model: torch.nn.Module, cfg: Config, step: int = 0
) -> None:
    """Write an inference-only checkpoint (format, version, config, step, ema) atomically:
    what ``export --format checkpoint`` and the shipped demo model hold."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": cfg.to_dict(),
        "step": int(step),
        "ema": state,
    }
    save_checkpoint(Path(path), payload)


def numbered_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``checkpoint_{step}.pt`` in ``run_dir``, by step."""
    found = []
    for p in Path(run_dir).glob("checkpoint_*.pt"):
        m = _NUMBERED.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def remove_partial_checkpoints(run_dir: Path) -> list[Path]:
    """Delete the temporary files of checkpoint writes that died before their rename.

    A writer killed mid-save (SIGKILL, a lost node) leaves ``.checkpoint_*.tmp.pt`` beside
    the good files (see :func:`hifi_tse.utils.atomic_path`); they are never read, only large.
    Returns the deleted paths. Call it only while no process of the run is writing.
    """
    partial = sorted(Path(run_dir).glob(".checkpoint_*.tmp.pt"))
    for p in partial:
        p.unlink(missing_ok=True)
    return partial


def resolve_resume(resume: str, run_dir: Path) -> Path:
    """``--resume latest`` (or ``auto``) -> highest-step numbered checkpoint of ``run_dir``;
    else the path."""
    if resume in ("latest", "auto"):
        found = numbered_checkpoints(run_dir)
        if not found:
            raise UserError(f"--resume latest: no checkpoint_*.pt in {run_dir}")
        return found[-1][1]
    return Path(resume)


def phase_boundary_steps(cfg: Config) -> set[int]:
    """Step counts N at which the phase changes (N steps done, step N-1 ended a phase)."""
    # Phases change only at phase1_steps and at the GAN start; check just those candidates.
    candidates = {cfg.train.phase1_steps, max(cfg.gan.start_step, cfg.train.phase1_steps)}
    return {
        n
        for n in candidates
        if 0 < n <= cfg.train.steps and phase_at(n, cfg) != phase_at(n - 1, cfg)
    }


def rotate_checkpoints(run_dir: Path, keep_last: int, protected: set[int]) -> list[Path]:
    """Delete numbered checkpoints beyond the newest ``keep_last``, sparing ``protected`` steps.

    Returns the deleted paths. Best and final checkpoints are never touched (other names).
    """
    rotating = [(s, p) for s, p in numbered_checkpoints(run_dir) if s not in protected]
    doomed = [p for _, p in rotating[:-keep_last]] if len(rotating) > keep_last else []
    for p in doomed:
        p.unlink(missing_ok=True)
    return doomed
