"""STFT / iSTFT pair used by the generator (and anything that must match its framing).

Framing: a Hann window of ``win_length`` samples (zero-padded to ``n_fft`` by torch), hop
``hop_length``, centre padding with zeros. Zero (not reflect) padding is used so that any
input length works, including inputs shorter than ``n_fft / 2``; the inverse trims the
padding, so ``inverse(forward(x), L) == x`` up to float rounding for every ``L``.
"""

from __future__ import annotations

import torch
from torch import nn

from hifi_tse.config import StftConfig


class Stft(nn.Module):
    """Complex STFT and its exact inverse.

    Args:
        cfg: ``n_fft``, ``win_length`` and ``hop_length`` in samples.
    """

    def __init__(self, cfg: StftConfig) -> None:
        super().__init__()
        self.n_fft = cfg.n_fft
        self.win_length = cfg.win_length
        self.hop_length = cfg.hop_length
        # Not persistent: derived from the config, so state_dicts stay architecture-only.
        self.register_buffer("window", torch.hann_window(cfg.win_length), persistent=False)

    @property
    def num_bins(self) -> int:
        """Frequency bins F = n_fft / 2 + 1."""
        return self.n_fft // 2 + 1

    def num_frames(self, length: int) -> int:
        """Frames T produced for ``length`` samples (centre padding)."""
        return 1 + length // self.hop_length

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """``wav (B, L) float32`` -> ``(B, F, T) complex64`` spectrum."""
        if wav.dim() != 2:
            raise ValueError(f"Stft expects (batch, time), got shape {tuple(wav.shape)}")
        return torch.stft(
            wav,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window.to(wav.dtype),
            center=True,
            pad_mode="constant",
            return_complex=True,
        )

    def inverse(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """``spec (B, F, T) complex`` -> ``(B, length) float`` (overlap-add, trimmed)."""
        return torch.istft(
            spec,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window.to(spec.real.dtype),
            center=True,
            length=length,
        )
