"""HiFi-GAN discriminators: multi-period (MPD) and multi-scale (MSD).

Every sub-discriminator returns ``(logits (B, N), [feature maps])``; the feature maps are
what feature matching compares. Layer shapes follow HiFi-GAN with the channel counts
expressed as multiples of ``GanConfig.channels`` (32 gives HiFi-GAN's 32..1024).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

from hifi_tse.config import ConfigError, GanConfig

# HiFi-GAN architecture constants (not tunables): layer widths as multiples of the base
# channel count, kernel sizes and strides of the period / scale discriminators.
_PERIOD_MULTS = (1, 4, 16, 32)
_PERIOD_KERNEL, _PERIOD_STRIDE = 5, 3
# (out multiple, kernel, stride, groups) for the scale discriminator's conv stack.
_SCALE_LAYERS = (
    (4, 15, 1, 1),
    (4, 41, 2, 4),
    (8, 41, 2, 16),
    (16, 41, 4, 16),
    (32, 41, 4, 16),
    (32, 41, 1, 16),
    (32, 5, 1, 1),
)
_LEAKY_SLOPE = 0.1
_POOL_KERNEL, _POOL_STRIDE = 4, 2

Output = tuple[torch.Tensor, list[torch.Tensor]]


class PeriodDiscriminator(nn.Module):
    """Looks at the waveform folded into ``(L / period, period)`` with 2-D convs."""

    def __init__(self, period: int, channels: int) -> None:
        super().__init__()
        self.period = period
        convs = []
        c_in = 1
        for mult in _PERIOD_MULTS:
            c_out = channels * mult
            convs.append(
                weight_norm(
                    nn.Conv2d(
                        c_in,
                        c_out,
                        (_PERIOD_KERNEL, 1),
                        (_PERIOD_STRIDE, 1),
                        padding=(_PERIOD_KERNEL // 2, 0),
                    )
                )
            )
            c_in = c_out
        convs.append(
            weight_norm(
                nn.Conv2d(c_in, c_in, (_PERIOD_KERNEL, 1), 1, padding=(_PERIOD_KERNEL // 2, 0))
            )
        )
        self.convs = nn.ModuleList(convs)
        self.post = weight_norm(nn.Conv2d(c_in, 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, wav: torch.Tensor) -> Output:
        """``wav (B, L)`` -> ``(logits (B, N), features)``."""
        b, length = wav.shape
        pad = (-length) % self.period
        if pad:
            # Reflect needs pad < L; very short inputs fall back to zero padding.
            mode = "reflect" if pad < length else "constant"
            wav = F.pad(wav[:, None], (0, pad), mode=mode)[:, 0]
        x = wav.view(b, 1, -1, self.period)
        return _conv_stack(x, self.convs, self.post)


def _conv_stack(x: torch.Tensor, convs: nn.ModuleList, post: nn.Module) -> Output:
    """Leaky-ReLU conv stack then the logit conv: ``(logits (B, N), every layer's output)``."""
    feats = []
    for conv in convs:
        x = F.leaky_relu(conv(x), _LEAKY_SLOPE)
        feats.append(x)
    x = post(x)
    feats.append(x)
    return x.flatten(1), feats


class ScaleDiscriminator(nn.Module):
    """1-D grouped-conv discriminator on the (possibly average-pooled) waveform."""

    def __init__(self, channels: int, use_spectral_norm: bool) -> None:
        super().__init__()
        norm = spectral_norm if use_spectral_norm else weight_norm
        convs = []
        c_in = 1
        for mult, kernel, stride, groups in _SCALE_LAYERS:
            c_out = channels * mult
            convs.append(
                norm(nn.Conv1d(c_in, c_out, kernel, stride, groups=groups, padding=kernel // 2))
            )
            c_in = c_out
        self.convs = nn.ModuleList(convs)
        self.post = norm(nn.Conv1d(c_in, 1, 3, 1, padding=1))

    def forward(self, wav: torch.Tensor) -> Output:
        """``wav (B, L)`` -> ``(logits (B, N), features)``."""
        x = wav[:, None]
        return _conv_stack(x, self.convs, self.post)


class Discriminators(nn.Module):
    """All sub-discriminators: one per period in ``gan_cfg.periods``, then
    ``gan_cfg.num_scales`` scales (scale 0 on the raw waveform with spectral norm, each next
    one on a 2x average-pooled copy)."""

    def __init__(self, gan_cfg: GanConfig) -> None:
        super().__init__()
        ch = gan_cfg.channels
        if ch % 4:
            # The grouped convs of the scale discriminator need 4*channels divisible by 16.
            raise ConfigError(f"gan.channels: expected a multiple of 4, got {ch}")
        self.periods = nn.ModuleList(PeriodDiscriminator(p, ch) for p in gan_cfg.periods)
        self.scales = nn.ModuleList(
            ScaleDiscriminator(ch, use_spectral_norm=i == 0) for i in range(gan_cfg.num_scales)
        )
        self.pool = nn.AvgPool1d(_POOL_KERNEL, _POOL_STRIDE, padding=_POOL_KERNEL // 2)

    def forward(self, wav: torch.Tensor) -> list[Output]:
        """``wav (B, L)`` -> ``[(logits, features)]`` (len(periods) + num_scales entries)."""
        if wav.dim() != 2:
            raise ValueError(f"Discriminators expect (batch, time), got {tuple(wav.shape)}")
        outputs = [d(wav) for d in self.periods]
        x = wav
        for i, d in enumerate(self.scales):
            if i > 0:
                x = self.pool(x[:, None])[:, 0]
            outputs.append(d(x))
        return outputs
