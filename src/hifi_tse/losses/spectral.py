"""The multi-resolution phase-sensitive STFT loss (complex L1).

Resolutions are given as ``[n_fft, win_length, hop_length]`` in samples at 48 kHz (the
config's convention) and scaled to the model sample rate, so a window spans the same
duration in seconds at any rate: ``win`` and ``hop`` scale linearly, ``n_fft`` becomes the
smallest power of two >= max(scaled n_fft, win).

STFT frames are divided by ``sqrt(sum(window^2))`` so that white noise of standard
deviation sigma has bins of magnitude ~sigma at every resolution and sample rate: the loss
values keep the scale of the waveform whichever resolution produced them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from hifi_tse.losses.separation import check_mask, check_pair

REFERENCE_RATE = 48000  # Hz: the rate the configured resolutions are written for


def scale_resolution(res: list[int] | tuple[int, int, int], sample_rate: int) -> tuple[int, ...]:
    """Scale one ``[n_fft, win, hop]`` (samples at 48 kHz) to ``sample_rate``.

    >>> scale_resolution([512, 240, 50], 16000)
    (256, 80, 17)
    """
    if len(res) != 3:
        raise ValueError(f"resolution: expected [n_fft, win, hop], got {list(res)}")
    n_fft, win, hop = res
    factor = sample_rate / REFERENCE_RATE
    win_s = max(2, round(win * factor))
    hop_s = max(1, round(hop * factor))
    need = max(win_s, n_fft * factor)
    n_fft_s = 1 << max(1, math.ceil(math.log2(need)))
    return n_fft_s, win_s, hop_s


def _stft(x: Tensor, n_fft: int, win: int, hop: int) -> Tensor:
    """``(B, L)`` float32 -> ``(B, F, T)`` complex, energy-normalised (see module doc)."""
    window = torch.hann_window(win, device=x.device, dtype=x.dtype)
    spec = torch.stft(
        x,
        n_fft=n_fft,
        hop_length=hop,
        win_length=win,
        window=window,
        center=True,
        pad_mode="constant",  # reflect padding fails on signals shorter than n_fft / 2
        return_complex=True,
    )
    return spec / window.pow(2).sum().sqrt()


class PhaseSensitiveLoss(nn.Module):
    """L1 distance of the real and imaginary STFT parts, averaged over resolutions.

    Unlike SI-SDR it is scale- and phase-sensitive: for ``estimate = g * target`` it equals
    ``|g - 1| * mean(|Re T| + |Im T|)``, minimal at g = 1.

    Args:
        resolutions: ``[[n_fft, win, hop], ...]`` in samples at 48 kHz
            (``ObjectiveConfig.phase_resolutions``).
        sample_rate: model sample rate, Hz.
    """

    def __init__(self, resolutions: list[list[int]], sample_rate: int) -> None:
        super().__init__()
        if not resolutions:
            raise ValueError("at least one STFT resolution is needed")
        self.sample_rate = int(sample_rate)
        self.resolutions: list[tuple[int, ...]] = [
            scale_resolution(r, self.sample_rate) for r in resolutions
        ]

    def forward(self, estimate: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        """Scalar loss over the batch, or over examples where ``mask`` (``(B,)`` bool) holds;
        exactly 0 when the mask selects nothing."""
        check_pair(estimate, target)
        if mask is not None:
            check_mask(mask, estimate.shape[0])
            if not bool(mask.any()):
                return estimate.new_zeros((), dtype=torch.float32)
            estimate, target = estimate[mask], target[mask]
        return self.per_example(estimate, target).mean()

    def per_example(self, estimate: Tensor, target: Tensor) -> Tensor:
        """``(B, L)`` x2 -> ``(B,)`` loss per example."""
        check_pair(estimate, target)
        # the STFT is linear: STFT(est) - STFT(tgt) = STFT(est - tgt), one transform not two
        diff = estimate.float() - target.float()
        total = diff.new_zeros(diff.shape[0])
        for n_fft, win, hop in self.resolutions:  # a handful of resolutions, not bands
            spec = torch.view_as_real(_stft(diff, n_fft, win, hop))
            # (B, F, T, 2): mean |dRe| + mean |dIm|
            total = total + 2.0 * spec.abs().mean(dim=(1, 2, 3))
        return total / len(self.resolutions)
