"""Load a generator from a checkpoint file, and wrap it as a chunk function for separation.

The architecture comes from the checkpoint's own ``config`` (never from a YAML beside it),
and the EMA weights are used when the checkpoint has them: that is the model training
validated and selected.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hifi_tse.checkpoints import read_checkpoint
from hifi_tse.config import Config, ConfigError, config_from_dict
from hifi_tse.devices import cpu_has_native_bf16
from hifi_tse.errors import UserError


def load_generator(
    path: str | Path, device: str | torch.device = "cpu", use_ema: bool = True
) -> tuple[torch.nn.Module, Config]:
    """Build the checkpoint's generator in eval mode on ``device`` → ``(Generator, Config)``.

    ``use_ema``: load the EMA weights when present (falls back to ``model``). A checkpoint
    from another architecture (state dict keys or shapes that do not fit the generator built
    from its config) raises UserError naming the file.
    """
    from hifi_tse.models.generator import build_generator

    path = Path(path)
    ckpt = read_checkpoint(path, device="cpu")
    try:
        cfg = config_from_dict(ckpt["config"])
    except ConfigError as exc:
        raise UserError(f"{path}: checkpoint config is invalid ({exc})") from None
    key = "ema" if use_ema and isinstance(ckpt.get("ema"), dict) else "model"
    state = ckpt.get(key)
    if not isinstance(state, dict):
        raise UserError(f"{path}: checkpoint has no {key!r} weights")
    model = build_generator(cfg)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:2])[:200]
        raise UserError(
            f"{path}: weights do not fit the generator built from its config "
            f"(other architecture?): {detail}"
        ) from None
    embedding = getattr(model, "speaker_embedding", None)
    if embedding is not None and not bool(embedding.pretrained):
        raise UserError(f"{path}: its GE2E speaker encoder holds no pretrained weights")
    model.to(device).eval()
    return model, cfg


class TorchChunkFn:
    """Chunk function over a PyTorch generator with a fixed enrollment.

    ``__call__(chunks (B, C) float32) -> (B, C) float32``; the enrollment ``(L_ref,)`` is
    repeated over the batch. Runs under ``torch.inference_mode``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        ref: np.ndarray,
        device: torch.device,
        precision: str = "fp32",
    ) -> None:
        self.model = model
        self.device = device
        self.bf16 = check_precision(precision, device) == "bf16"
        self.ref = torch.from_numpy(np.ascontiguousarray(ref, dtype=np.float32)).to(device)
        # The enrollment is encoded once here, not again for every chunk.
        with torch.inference_mode(), self._autocast():
            self.cues = model.reference_cues(self.ref.unsqueeze(0))

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def __call__(self, chunks: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), self._autocast():
            mix = torch.from_numpy(np.ascontiguousarray(chunks, dtype=np.float32)).to(self.device)
            est = self.model(mix, None, cues=self.cues.expand(mix.shape[0]))
        return est.float().cpu().numpy()


class TorchPairsFn:
    """``__call__(mixtures (B, L), references (B, L_ref))`` float32 -> ``(B, L)`` float32: one
    batched pass, each mixture with its own enrollment (evaluation sets)."""

    def __init__(self, model: torch.nn.Module, device: torch.device, precision: str) -> None:
        self.model = model
        self.device = device
        self.bf16 = check_precision(precision, device) == "bf16"

    def __call__(self, mixtures: np.ndarray, references: np.ndarray) -> np.ndarray:
        bf16 = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)
        with torch.inference_mode(), bf16:
            mix = torch.from_numpy(np.ascontiguousarray(mixtures, dtype=np.float32))
            ref = torch.from_numpy(np.ascontiguousarray(references, dtype=np.float32))
            est = self.model(mix.to(self.device), ref.to(self.device))
        return est.float().cpu().numpy()


PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str, device: torch.device) -> str:
    """``precision`` if this device runs it; UserError (one line) otherwise.

    bf16 autocast needs a CUDA device with bf16 support or a CPU with native bf16
    instructions (AVX-512 BF16 or AMX): elsewhere it is emulated and slower than fp32.
    """
    if precision not in PRECISIONS:
        raise UserError(f"--precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError("--precision bf16: this GPU has no bf16 support")
        if device.type == "cpu" and not cpu_has_native_bf16():
            raise UserError("--precision bf16: this CPU has no native bf16 (AVX-512 BF16 / AMX)")
    return precision
