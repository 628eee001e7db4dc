"""Speaker conditioning: USEF cross-attention, FiLM, re-injection, conditioning dropout.

All modules work on the band-first layout ``(K, B, T, D)`` (see ``band_split``). Attention
is per band: the bands are folded into the batch, so a band's mixture frames attend to the
same band's reference frames across the whole reference.
"""

from __future__ import annotations

import torch
from torch import nn

from hifi_tse.models.attention import CrossAttention


class ReferenceAttention(nn.Module):
    """Per-band cross-attention to the reference, pre-norm residual.

    ``x + Attn(LN(x), LN(ref))`` with Q from the mixture features and K/V from the reference
    features of the same band. Used for USEF conditioning and for speaker re-injection
    before GridNet blocks. Pre-norm keeps the residual stream (and so the signal level it
    carries) untouched by normalisation.
    """

    def __init__(self, dim: int, heads: int, eps: float) -> None:
        super().__init__()
        self.norm_x = nn.LayerNorm(dim, eps=eps)
        self.norm_ref = nn.LayerNorm(dim, eps=eps)
        self.attn = CrossAttention(dim, heads)

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """``x (K, B, T, D)``, ``ref (K, B, S, D)`` -> ``(K, B, T, D)``."""
        return self.attend(x, self.context(ref))

    def context(self, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``ref (K, B, S, D)`` -> the reference's keys and values ``(K*B, H, S, D/H)``,
        computed once per enrollment when the same reference serves many frames."""
        k, b, s, d = ref.shape
        return self.attn.context(self.norm_ref(ref).view(k * b, s, d))

    def attend(
        self, x: torch.Tensor, keys_values: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        """``x (K, B, T, D)`` with :meth:`context`'s keys and values -> ``(K, B, T, D)``."""
        k, b, t, d = x.shape
        q = self.norm_x(x).view(k * b, t, d)
        return x + self.attn.attend(q, keys_values).view(k, b, t, d)


class FiLM(nn.Module):
    """Feature-wise affine modulation from the time-pooled reference, per band.

    ``x * (1 + gamma) + beta`` with ``(gamma, beta) = Linear(mean_t ref)``. The linear layer
    is zero-initialised so the module starts as the identity (gamma = 1, beta = 0).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2 * dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """``x (K, B, T, D)``, ``ref (K, B, S, D)`` -> ``(K, B, T, D)``."""
        return self.modulate(x, self.params(ref))

    def params(self, ref: torch.Tensor) -> torch.Tensor:
        """``ref (K, B, S, D)`` -> ``(gamma, beta)`` side by side, ``(K, B, 1, 2D)``."""
        return self.proj(ref.mean(dim=2, keepdim=True))

    @staticmethod
    def modulate(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """``x (K, B, T, D)`` with :meth:`params` (any shape that broadcasts, last ``2D``)."""
        gamma, beta = params.chunk(2, dim=-1)
        return x * (1.0 + gamma) + beta


def drop_reference(ref: torch.Tensor, prob: float, training: bool) -> torch.Tensor:
    """Conditioning dropout: zero each example's reference features with probability ``prob``.

    Only in training; in eval the features pass unchanged. ``ref (K, B, S, D)``.
    """
    if not training or prob <= 0.0:
        return ref
    keep = (torch.rand(ref.shape[1], device=ref.device) >= prob).to(ref.dtype)
    return ref * keep[None, :, None, None]
