"""Multi-head self- and cross-attention on ``scaled_dot_product_attention``.

SDPA picks a fused kernel (flash / memory-efficient on CUDA, the flash kernel on CPU), so
the ``T x S`` weight matrix is never materialised. Inputs are sequences with any batch
folding the caller chose: ``(N, T, D)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``(N, T, D)`` -> ``(N, H, T, D/H)`` (a view)."""
    n, t, d = x.shape
    return x.view(n, t, heads, d // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(N, H, T, d)`` -> ``(N, T, H*d)``."""
    n, h, t, d = x.shape
    return x.transpose(1, 2).reshape(n, t, h * d)


def band_mask(length: int, window: int, device: torch.device) -> torch.Tensor:
    """``(T, T)`` bool, True where ``|query - key| <= window`` frames."""
    pos = torch.arange(length, device=device)
    return (pos[:, None] - pos[None, :]).abs() <= window


def causal_mask(length: int, window: int, device: torch.device) -> torch.Tensor:
    """``(T, T)`` bool, True where the key is not after the query (and, with ``window`` > 0,
    at most ``window`` frames before it)."""
    pos = torch.arange(length, device=device)
    lag = pos[:, None] - pos[None, :]
    return (lag >= 0) & (lag <= window) if window > 0 else lag >= 0


class SelfAttention(nn.Module):
    """Multi-head self-attention ``(N, T, D) -> (N, T, D)`` (no residual, no norm).

    ``window``: each frame attends to frames at most this many frames away (0 = all). A
    bounded span bounds the time context, so results on a long input can be reproduced
    chunk by chunk. ``causal``: only to itself and earlier frames. The boolean mask keeps the
    fused CPU / CUDA kernels (no ``T x T`` floats).
    """

    def __init__(self, dim: int, heads: int, window: int = 0, causal: bool = False) -> None:
        super().__init__()
        self.heads = heads
        self.window = int(window)
        self.causal = causal
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        # (N, T, 3, H, d) -> three (N, H, T, d) views, no copies.
        qkv = self.qkv(x).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if self.causal:
            mask = causal_mask(t, self.window, x.device)
        else:
            mask = band_mask(t, self.window, x.device) if self.window > 0 else None
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=mask)
        return self.out(_merge_heads(y))


class CrossAttention(nn.Module):
    """Multi-head attention from queries ``x (N, T, D)`` to a context ``ctx (N, S, D)``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """``x (N, T, D)``, ``ctx (N, S, D)`` -> ``(N, T, D)``."""
        return self.attend(x, self.context(ctx))

    def context(self, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``ctx (N, S, D)`` -> keys and values ``(N, H, S, D/H)`` each: what a fixed context
        (an enrollment) contributes, computed once for any number of queries."""
        n, s, d = ctx.shape
        kv = self.kv(ctx).view(n, s, 2, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return kv[0], kv[1]

    def attend(
        self, x: torch.Tensor, keys_values: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        """``x (N, T, D)`` over :meth:`context`'s keys and values -> ``(N, T, D)``."""
        q = _split_heads(self.q(x), self.heads)
        y = F.scaled_dot_product_attention(q, keys_values[0], keys_values[1])
        return self.out(_merge_heads(y))
