"""Writing a training run's checkpoints: the payload (every rank joins its RNG gather), the
numbered / best / final files and their rotation; :class:`RunCheckpoints` is that part of
:class:`hifi_tse.train.trainer.Trainer`."""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from hifi_tse.checkpoints import (
    build_checkpoint,
    capture_rng_state,
    numbered_name,
    rotate_checkpoints,
    save_checkpoint,
)
from hifi_tse.train.distributed import gather_objects


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's state dict (names and raw bytes): equal iff weights are equal."""
    h = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        h.update(name.encode())
        # reshape(-1): 0-dim tensors (e.g. the GE2E path's `pretrained` flag) have no byte view
        flat = value.detach().cpu().contiguous().reshape(-1)
        h.update(flat.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class RunCheckpoints:
    """Checkpoint writing of a :class:`~hifi_tse.train.trainer.Trainer`."""

    def checkpoint_payload(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly (collective under DDP)."""
        rng_all = gather_objects(capture_rng_state())
        payload = build_checkpoint(
            self.cfg,
            self.state,
            model=self.generator.state_dict(),
            ema=self.ema.state_dict(),
            optimizer=self.optimizer.state_dict(),
            examples_per_step=self.examples_per_step,
            world_size=self.dist.world_size,
            discriminator=None if self.discriminator is None else self.discriminator.state_dict(),
            disc_optimizer=None
            if self.disc_optimizer is None
            else self.disc_optimizer.state_dict(),
        )
        payload["rng_per_rank"] = rng_all
        return payload

    def save(self, numbered: bool, name: str | None = None) -> None:
        """Write ``checkpoint_{step}.pt`` (then rotate) or the named checkpoint; rank 0 only."""
        payload = self.checkpoint_payload()  # every rank joins the RNG gather
        if numbered:
            # On every rank: finish() decides from it whether all ranks save (and gather) once
            # more, so a rank that skipped it would wait in another collective.
            self._saved_at = self.state.step
        if not self.dist.is_main:
            return
        path = self.run_dir / (numbered_name(self.state.step) if numbered else name)
        save_checkpoint(path, payload)
        if numbered:
            rotate_checkpoints(self.run_dir, self.cfg.train.keep_last, self.boundaries)
        self.log.jsonl(
            {"kind": "event", "event": "checkpoint", "step": self.state.step, "path": path.name}
        )
