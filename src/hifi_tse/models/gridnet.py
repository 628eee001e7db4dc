"""TF-GridNet-style backbone on band features ``(K, B, T, D)``.

Each block runs, with pre-norm residuals:
  1. intra-frame BiLSTM across the K bands of every frame  (sequence K, batch B*T),
  2. sub-band BiLSTM across time for every band             (sequence T, batch K*B),
  3. multi-head self-attention across time for every band    (sequence T, batch K*B).
A causal backbone (``model.causal``) runs (2) forward in time only and masks (3) to past
frames, so no frame's output depends on a later frame.
The band-first layout makes both LSTM inputs free views: ``(K, B*T, D)`` is the
sequence-first input of (1), ``(K*B, T, D)`` the batch-first input of (2) and (3).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from hifi_tse.models.attention import SelfAttention
from hifi_tse.models.conditioning import ReferenceAttention


class _BiLSTMResidual(nn.Module):
    """``x + Linear(BiLSTM(LN(x)))`` on a ``(S, N, D)`` or ``(N, S, D)`` sequence
    (``bidirectional=False``: a forward-only LSTM, for the causal time axis)."""

    def __init__(
        self, dim: int, hidden: int, eps: float, batch_first: bool, bidirectional: bool = True
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.lstm = nn.LSTM(dim, hidden, batch_first=batch_first, bidirectional=bidirectional)
        self.proj = nn.Linear((2 if bidirectional else 1) * hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.norm(x))
        return x + self.proj(h)


class GridNetBlock(nn.Module):
    """One GridNet block ``(K, B, T, D) -> (K, B, T, D)``."""

    def __init__(
        self,
        dim: int,
        lstm_hidden: int,
        heads: int,
        eps: float,
        attention_window: int = 0,
        causal: bool = False,
    ) -> None:
        super().__init__()
        self.intra = _BiLSTMResidual(dim, lstm_hidden, eps, batch_first=False)
        self.inter = _BiLSTMResidual(
            dim, lstm_hidden, eps, batch_first=True, bidirectional=not causal
        )
        self.attn_norm = nn.LayerNorm(dim, eps=eps)
        self.attn = SelfAttention(dim, heads, attention_window, causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, b, t, d = x.shape
        x = self.intra(x.view(k, b * t, d))  # across bands
        x = self.inter(x.view(k * b, t, d))  # across time
        x = x + self.attn(self.attn_norm(x))
        return x.view(k, b, t, d)


class _Stage(nn.Module):
    """Optional speaker re-injection followed by a GridNet block."""

    def __init__(
        self,
        dim: int,
        lstm_hidden: int,
        heads: int,
        eps: float,
        reinject: bool,
        attention_window: int = 0,
        causal: bool = False,
    ):
        super().__init__()
        self.reinject = ReferenceAttention(dim, heads, eps) if reinject else None
        self.block = GridNetBlock(dim, lstm_hidden, heads, eps, attention_window, causal)

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return self.second_half(self.first_half(x, ref))

    # The two checkpoint segments: each holds one BiLSTM, so backward recomputes (and keeps
    # the oneDNN workspace of) a single LSTM at a time instead of a whole block.
    def first_half(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """Re-injection + intra-frame BiLSTM, ``(K, B, T, D) -> (K, B, T, D)``."""
        if self.reinject is not None:
            x = self.reinject(x, ref)
        k, b, t, d = x.shape
        return self.block.intra(x.view(k, b * t, d)).view(k, b, t, d)

    def second_half(self, x: torch.Tensor) -> torch.Tensor:
        """Sub-band BiLSTM + self-attention across time, ``(K, B, T, D) -> (K, B, T, D)``."""
        k, b, t, d = x.shape
        x = self.block.inter(x.view(k * b, t, d))
        x = x + self.block.attn(self.block.attn_norm(x))
        return x.view(k, b, t, d)


class GridNet(nn.Module):
    """Stack of GridNet blocks with speaker re-injection before the listed blocks.

    Args:
        dim: feature width D.
        lstm_hidden: BiLSTM hidden units per direction.
        heads: attention heads.
        num_blocks: number of blocks.
        reinject_blocks: indices of blocks preceded by re-injection cross-attention.
        eps: LayerNorm variance floor.
        grad_checkpoint: recompute activations in backward (training only) to save memory;
            each block is two checkpoint segments (one BiLSTM each).
        attention_window: one-sided self-attention span in frames (0 = whole input).
        causal: forward-only time LSTMs and self-attention over past frames only.
    """

    def __init__(
        self,
        dim: int,
        lstm_hidden: int,
        heads: int,
        num_blocks: int,
        reinject_blocks: list[int],
        eps: float,
        grad_checkpoint: bool,
        attention_window: int = 0,
        causal: bool = False,
    ) -> None:
        super().__init__()
        reinject = set(reinject_blocks)
        self.stages = nn.ModuleList(
            _Stage(dim, lstm_hidden, heads, eps, i in reinject, attention_window, causal)
            for i in range(num_blocks)
        )
        self.grad_checkpoint = grad_checkpoint

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """``x (K, B, T, D)``, reference features ``ref (K, B, S, D)`` -> ``(K, B, T, D)``."""
        use_ckpt = self.grad_checkpoint and self.training and torch.is_grad_enabled()
        for stage in self.stages:
            if use_ckpt:
                x = checkpoint(stage.first_half, x, ref, use_reentrant=False)
                x = checkpoint(stage.second_half, x, use_reentrant=False)
            else:
                x = stage(x, ref)
        return x
