"""The one device resolver of the command lines, the API and the trainer, and what the CPU can
run natively."""

from __future__ import annotations

import torch

from hifi_tse.errors import UserError


def resolve_device(name: str | None, local_rank: int = 0) -> torch.device:
    """``--device`` value -> device: ``cpu``; ``cuda`` (under torchrun this process's GPU,
    ``cuda:LOCAL_RANK``); ``cuda:N``; None (CUDA when available, else CPU). UserError (one
    line, naming the value) when CUDA is asked for but absent or the value is unknown."""
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine (use cpu)")
    if name == "cuda":
        return torch.device("cuda", local_rank)
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name}: expected cpu, cuda or cuda:N")
    return device


def cpu_has_native_bf16() -> bool:
    """Whether this CPU executes bf16 natively (AVX-512 BF16 or AMX), as oneDNN sees it."""
    supported = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool((supported and supported()) or (amx and amx()))


def bf16_autocast_available(device: torch.device) -> bool:
    """Whether bf16 autocast pays on ``device``: CUDA, or a CPU with native bf16."""
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
