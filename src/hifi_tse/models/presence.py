"""Per-frame target-presence gain: one learned scalar per frame on the output mask.

Suppressing a target-absent mixture through the complex mask alone takes every one of the
F x T mask values to near zero; a frame-level gain takes one number per frame, computed from
the backbone features pooled over bands (the GridNet blocks have already mixed information
across bands and time, so the pooled feature carries the frame's speaker evidence). It is
trained end to end by the existing objective: the target-absent term pushes it down on
target-absent mixtures, the SI-SDR and amplitude terms hold it up where the target speaks.
"""

from __future__ import annotations

import torch
from torch import nn

GAIN_RANGE = 2.0
"""The gain is ``GAIN_RANGE * sigmoid(z)``: in ``(0, 2)``, exactly 1 at ``z = 0``."""


class PresenceGain(nn.Module):
    """``(K, B, T, D)`` features -> ``(B, T)`` gain in ``(0, 2)``, 1 at initialisation.

    LayerNorm of the band-mean feature, then a zero-initialised linear map to a logit, so an
    untrained gain is exactly 1 and the generator still starts as a pass-through.
    """

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.proj = nn.Linear(dim, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (K, B, T, D)`` -> gain ``(B, T)`` float32."""
        logit = self.proj(self.norm(x.mean(dim=0))).squeeze(-1)  # (B, T)
        return GAIN_RANGE * torch.sigmoid(logit.float())
