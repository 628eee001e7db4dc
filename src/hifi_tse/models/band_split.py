"""Band layout, band-split encoder and band-merge mask decoder.

The spectrum is cut into K overlapping sub-bands (fine at low frequencies, coarse at high
ones). Every band has its own LayerNorm and projection, but all bands are processed at once:
bins are gathered into a padded ``(K, Wmax)`` layout and the per-band weights are applied
with one batched matmul (``bmm`` over the band axis), so there is no Python loop over bands
in ``forward``.

Per-band parameters are *stored* flat (one row per real band coefficient, no padding) and
scattered into the padded layout on each call: the parameter count is the true one and no
dead padded weights reach the optimiser.

Feature layout used throughout the models: ``(K, B, T, D)`` — bands first, so folding the
bands into the batch (``(K*B, T, D)``) and the across-band sequence (``(K, B*T, D)``) are
both free views.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hifi_tse.config import BandSplitConfig


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def band_layout(
    sample_rate: int, n_fft: int, band_split_cfg: BandSplitConfig
) -> list[tuple[int, int]]:
    """Sub-band bin ranges ``[(start_bin, end_bin), ...]`` (end exclusive), low to high.

    Each region ``(upper_hz, width_bins)`` of ``band_split_cfg.regions`` covers the bins from
    the previous region's edge up to ``round(upper_hz * n_fft / sample_rate)``; it is split
    into ``round(span / width_bins)`` (at least 1) near-equal bands. The last region (or the
    first whose edge reaches Nyquist) always runs to the Nyquist bin, so every bin
    ``0 .. n_fft / 2`` is covered. Each band is then extended upwards by ``overlap_bins``
    (clipped at Nyquist), so neighbours share that many bins.

    Args:
        sample_rate: Hz.
        n_fft: FFT size, samples.
        band_split_cfg: region spec and overlap.

    Returns:
        K ``(start_bin, end_bin)`` pairs with ``0 <= start < end <= n_fft // 2 + 1``.
    """
    num_bins = n_fft // 2 + 1
    nyquist = sample_rate / 2.0
    regions = band_split_cfg.regions
    cores: list[tuple[int, int]] = []
    start = 0
    for i, region in enumerate(regions):
        last = i == len(regions) - 1 or region.upper_hz >= nyquist
        edge = (
            num_bins
            if last
            else min(num_bins, _round_half_up(region.upper_hz * n_fft / sample_rate))
        )
        span = edge - start
        if span > 0:
            count = max(1, _round_half_up(span / region.width_bins))
            bounds = [start + _round_half_up(j * span / count) for j in range(count + 1)]
            cores.extend(zip(bounds[:-1], bounds[1:], strict=True))
            start = edge
        if last:
            break
    overlap = band_split_cfg.overlap_bins
    return [(s, min(e + overlap, num_bins)) for s, e in cores]


class _PaddedBands(nn.Module):
    """Index buffers for the padded ``(K, Wmax)`` band layout shared by encoder and decoder."""

    def __init__(self, layout: list[tuple[int, int]], num_bins: int) -> None:
        super().__init__()
        widths = [e - s for s, e in layout]
        self.num_bands = len(layout)
        self.max_width = max(widths)
        self.num_bins = num_bins
        w_idx = torch.arange(self.max_width)[None, :]
        starts = torch.tensor([s for s, _ in layout])[:, None]
        valid = w_idx < torch.tensor(widths)[:, None]  # (K, Wmax)
        bins = torch.where(valid, starts + w_idx, torch.zeros_like(w_idx))
        # Coefficient layout inside a band: (Wmax, 2) = bin-major, (real, imag) minor.
        coef_valid = valid[:, :, None].expand(-1, -1, 2).reshape(self.num_bands, -1)  # (K, C)
        self.coef_dim = 2 * self.max_width
        self.register_buffer("gather_idx", bins.reshape(-1), persistent=False)  # (K*Wmax,)
        # Decoder scatter target: padded entries go to a dummy bin (num_bins) that is dropped.
        self.register_buffer(
            "scatter_idx",
            torch.where(valid, bins, torch.full_like(bins, num_bins)).reshape(-1),
            persistent=False,
        )
        self.register_buffer("coef_mask", coef_valid.float()[:, None, :], persistent=False)
        # Positions of the real (unpadded) coefficients in the flattened (K*C) layout.
        self.register_buffer(
            "coef_pos", torch.nonzero(coef_valid.reshape(-1)).squeeze(1), persistent=False
        )
        self.register_buffer(
            "coef_count", coef_valid.sum(1).float()[:, None, None], persistent=False
        )
        counts = torch.zeros(num_bins + 1).index_add_(
            0, self.scatter_idx, torch.ones(self.scatter_idx.numel())
        )[:num_bins]
        self.register_buffer("inv_bin_count", 1.0 / counts, persistent=False)  # (F,)
        # fan-in of each real coefficient row's band, for per-band default init.
        fan = torch.tensor([2 * w for w in widths], dtype=torch.float32)
        self.register_buffer(
            "coef_fan_in",
            fan[:, None].expand(-1, self.coef_dim).reshape(-1)[self.coef_pos],
            persistent=False,
        )
        self.num_coefs = int(coef_valid.sum())
        # The same for the bin layout (K, Wmax): bin-level features and their weights.
        self.register_buffer("bin_mask", valid.float()[:, None, :], persistent=False)
        self.register_buffer(
            "bin_pos", torch.nonzero(valid.reshape(-1)).squeeze(1), persistent=False
        )
        self.register_buffer("bin_count", valid.sum(1).float()[:, None, None], persistent=False)
        self.num_band_bins = int(valid.sum())

    def pad_rows(self, flat: torch.Tensor) -> torch.Tensor:
        """``(num_coefs, N)`` flat per-coefficient rows -> ``(K, C, N)`` zero-padded."""
        full = flat.new_zeros(self.num_bands * self.coef_dim, flat.shape[1])
        return full.index_copy(0, self.coef_pos, flat).view(self.num_bands, self.coef_dim, -1)

    def pad_bin_rows(self, flat: torch.Tensor) -> torch.Tensor:
        """``(num_band_bins, N)`` flat per-bin rows -> ``(K, Wmax, N)`` zero-padded."""
        full = flat.new_zeros(self.num_bands * self.max_width, flat.shape[1])
        return full.index_copy(0, self.bin_pos, flat).view(self.num_bands, self.max_width, -1)


# Level features are in units of this many dB, so their values are O(1) for the projection.
LEVEL_UNIT_DB = 20.0
# Power floor of the level and per-bin shape features, dB: far below any band of real audio,
# so it acts only on digital silence (where log power would be -inf).
FEATURE_FLOOR_DB = -100.0


class BandSplitEncoder(nn.Module):
    """Per-band LayerNorm + Linear over each band's real and imaginary parts.

    The LayerNorm makes every band-frame scale-free, which hides the spectral envelope
    (formants) and the temporal envelope (speech vs pause). With ``level_floor_db`` set, two
    scalars per band-frame are added back through learned per-band directions: the band's
    power in dB relative to the frame's mean over bands (envelope; gain-invariant) and that
    frame mean itself (loudness), both in units of ``LEVEL_UNIT_DB``.

    With ``bin_floor_db`` set, each bin's power in dB relative to its band's mean log power (the
    band's fine spectral shape: harmonics and formant slopes) is added too, through one
    learned direction per bin. The projection of the real and imaginary parts above is
    linear in a spectrum whose phase turns from frame to frame, so averaged over frames (as
    FiLM does) or compared between two utterances (as the cross-attention does) it keeps
    little of a voice; these features are phase-free, so pitch and timbre survive both.
    Their weights start at zero, so a model gains them without changing its output.

    With ``relative_floor_db`` set, every band's power as these three paths see it (the
    LayerNorm's variance, the level features, the per-bin powers) is floored at the
    reference band power minus that many dB: a band holding only rounding noise or dither
    then reads as "empty" whatever its exact content, instead of moving, through the log,
    the frame's mean level over bands and with it every band's level features (and, in a
    loud clip, where the fixed ``eps`` is relatively small, being scaled up by the
    LayerNorm). The
    reference is each frame's loudest band (``whole_clip=False``: stateless, so chunked,
    streaming and exported runs agree) or the whole input's loudest band-frame
    (``whole_clip=True``: the enrollment, always encoded in one piece, whose pauses then
    read as empty too).

    Args:
        layout: band ranges from :func:`band_layout`.
        num_bins: STFT bins F.
        feature_dim: D, per-band feature width.
        eps: LayerNorm variance floor.
        level_floor_db: power floor of the level features, dB; None = no level features.
        bin_floor_db: power floor of the per-bin shape features, dB; None = no such features.
        relative_floor_db: band power floor, dB below the reference band (> 0); None = off.
    """

    def __init__(
        self,
        layout: list[tuple[int, int]],
        num_bins: int,
        feature_dim: int,
        eps: float,
        level_floor_db: float | None = None,
        bin_floor_db: float | None = None,
        relative_floor_db: float | None = None,
    ) -> None:
        super().__init__()
        if relative_floor_db is not None and not relative_floor_db > 0:
            raise ValueError(f"relative_floor_db: expected > 0 dB, got {relative_floor_db}")
        # Power ratio of the floor to the reference band; None = no relative floor.
        self.relative_floor = (
            None if relative_floor_db is None else 10.0 ** (-relative_floor_db / 10.0)
        )
        self.level_floor = None if level_floor_db is None else 10.0 ** (level_floor_db / 10.0)
        self.bin_floor = None if bin_floor_db is None else 10.0 ** (bin_floor_db / 10.0)
        # (K, 2, D): per band, the directions of relative level and frame loudness; zero at
        # init so a new model starts exactly as one without level features.
        self.level_weight = (
            None
            if level_floor_db is None
            else nn.Parameter(torch.zeros(len(layout), 2, feature_dim))
        )
        self.bands = _PaddedBands(layout, num_bins)
        # (num_band_bins, D), stored flat without padding like the projection below.
        self.bin_weight = (
            None
            if bin_floor_db is None
            else nn.Parameter(torch.zeros(self.bands.num_band_bins, feature_dim))
        )
        self.feature_dim = feature_dim
        self.eps = eps
        nc = self.bands.num_coefs
        self.norm_weight = nn.Parameter(torch.ones(nc))
        self.norm_bias = nn.Parameter(torch.zeros(nc))
        # nn.Linear's default init, with each band's own fan-in.
        bound = self.bands.coef_fan_in.rsqrt()
        self.weight = nn.Parameter((torch.rand(nc, feature_dim) * 2 - 1) * bound[:, None])
        band_bound = torch.tensor([1.0 / math.sqrt(2 * (e - s)) for s, e in layout])
        self.bias = nn.Parameter(
            (torch.rand(len(layout), feature_dim) * 2 - 1) * band_bound[:, None]
        )

    @property
    def num_bands(self) -> int:
        return self.bands.num_bands

    def padded_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """LayerNorm gain ``(K, 1, C)``, bias ``(K, 1, C)`` and projection ``(K, C, D)``."""
        b = self.bands
        gain = b.pad_rows(self.norm_weight[:, None]).view(b.num_bands, 1, b.coef_dim)
        shift = b.pad_rows(self.norm_bias[:, None]).view(b.num_bands, 1, b.coef_dim)
        return gain, shift, b.pad_rows(self.weight)

    def forward(self, spec: torch.Tensor, whole_clip: bool = False) -> torch.Tensor:
        """``spec (B, F, T) complex`` -> features ``(K, B, T, D)``; ``whole_clip``: see the
        class docstring (matters only with a relative floor)."""
        return self.forward_real(torch.view_as_real(spec), whole_clip)

    def forward_real(self, spec: torch.Tensor, whole_clip: bool = False) -> torch.Tensor:
        """``spec (B, F, T, 2)`` (real, imag last) -> features ``(K, B, T, D)``.

        The real-valued entry point (no complex dtype), also usable by exporters.
        ``whole_clip``: the relative floor's reference is the loudest band over all ``T``
        frames of each batch item instead of each frame's own (see the class docstring).
        """
        b = self.bands
        batch, _, frames, _ = spec.shape
        x = spec.index_select(1, b.gather_idx)  # (B, K*Wmax, T, 2)
        x = x.view(batch, b.num_bands, b.max_width, frames, 2).permute(1, 0, 3, 2, 4)
        x = x.reshape(b.num_bands, batch * frames, b.coef_dim)  # (K, N, C)
        mask = b.coef_mask
        power = (x.square() * mask).sum(-1, keepdim=True) / b.coef_count  # (K, N, 1)
        floor = None
        if self.relative_floor is not None:
            floor = self._relative_floor(power, batch, whole_clip)
            power = torch.maximum(power, floor)
        shape = None if self.bin_weight is None else self._bin_shape(x, floor)
        # Masked LayerNorm over each band's 2*W real coefficients.
        mean = (x * mask).sum(-1, keepdim=True) / b.coef_count
        xc = (x - mean) * mask
        var = xc.square().sum(-1, keepdim=True) / b.coef_count
        if floor is not None:
            var = torch.maximum(var, floor)
        gain, shift, weight = self.padded_weights()
        level = None
        if self.level_weight is not None:
            level_db = 10.0 * torch.log10(power + self.level_floor) / LEVEL_UNIT_DB
            frame_db = level_db.mean(0, keepdim=True)  # (1, N, 1)
            level = torch.cat([level_db - frame_db, frame_db.expand_as(level_db)], -1)
        x = (xc * torch.rsqrt(var + self.eps)) * gain + shift * mask
        out = torch.baddbmm(self.bias[:, None, :], x, weight)  # (K, N, D)
        if level is not None:
            out = torch.baddbmm(out, level, self.level_weight)
        if shape is not None:
            out = torch.baddbmm(out, shape, b.pad_bin_rows(self.bin_weight))
        return out.view(b.num_bands, batch, frames, self.feature_dim)

    def _relative_floor(self, power: torch.Tensor, batch: int, whole_clip: bool) -> torch.Tensor:
        """Band powers ``(K, N, 1)`` (mean square coefficient, N = B*T frames) -> the floor
        ``(1, N, 1)`` in the same units: the reference band's power times the floor ratio."""
        peak = power.amax(0, keepdim=True)  # (1, N, 1): each frame's loudest band
        if whole_clip:
            per_item = peak.view(batch, -1).amax(1, keepdim=True)  # (B, 1)
            peak = per_item.expand(batch, power.shape[1] // batch).reshape(1, -1, 1)
        return peak * self.relative_floor

    def _bin_shape(self, x: torch.Tensor, floor: torch.Tensor | None) -> torch.Tensor:
        """``x (K, N, C)`` raw band coefficients -> ``(K, N, Wmax)`` per-bin power in
        ``LEVEL_UNIT_DB`` relative to the band's mean over its bins (0 in padding).
        ``floor (1, N, 1)``: the relative floor per coefficient, or None."""
        b = self.bands
        power = x.view(*x.shape[:2], b.max_width, 2).square().sum(-1)  # (K, N, Wmax)
        if floor is not None:
            # A bin's power sums two coefficients (real, imaginary).
            power = torch.maximum(power, 2.0 * floor)
        bin_db = 10.0 * torch.log10(power + self.bin_floor) / LEVEL_UNIT_DB
        band_mean = (bin_db * b.bin_mask).sum(-1, keepdim=True) / b.bin_count
        return (bin_db - band_mean) * b.bin_mask


class BandMergeDecoder(nn.Module):
    """Per-band MLP emitting a complex ratio mask; overlapping bins are averaged.

    The last layer is zero-initialised with bias ``1 + 0j`` on every real coefficient, so the
    mask starts as an exact pass-through.

    Args:
        layout: band ranges from :func:`band_layout`.
        num_bins: STFT bins F.
        feature_dim: D.
        hidden: per-band hidden width.
        eps: LayerNorm variance floor.
    """

    def __init__(
        self,
        layout: list[tuple[int, int]],
        num_bins: int,
        feature_dim: int,
        hidden: int,
        eps: float,
    ) -> None:
        super().__init__()
        self.bands = _PaddedBands(layout, num_bins)
        k = self.bands.num_bands
        self.eps = eps
        self.norm_weight = nn.Parameter(torch.ones(k, 1, feature_dim))
        self.norm_bias = nn.Parameter(torch.zeros(k, 1, feature_dim))
        bound = 1.0 / math.sqrt(feature_dim)
        self.hidden_weight = nn.Parameter((torch.rand(k, feature_dim, hidden) * 2 - 1) * bound)
        self.hidden_bias = nn.Parameter((torch.rand(k, 1, hidden) * 2 - 1) * bound)
        self.out_weight = nn.Parameter(torch.zeros(self.bands.num_coefs, hidden))
        # (real, imag) interleaved per bin: bias 1 on real parts, 0 on imaginary parts.
        real_part = (torch.arange(self.bands.num_coefs) % 2 == 0).float()
        self.out_bias = nn.Parameter(real_part)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``(K, B, T, D)`` -> complex mask ``(B, F, T)`` (complex64)."""
        b = self.bands
        m = self.band_masks(x)  # (B, K*Wmax, T, 2)
        full = m.new_zeros(m.shape[0], b.num_bins + 1, m.shape[2], 2)
        full = full.index_add_(1, b.scatter_idx, m)  # overlap-add into bins (+ dummy bin)
        full = full[:, : b.num_bins] * b.inv_bin_count[None, :, None, None]
        return torch.view_as_complex(full)  # (B, F, T)

    def band_masks(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``(K, B, T, D)`` -> per-band masks ``(B, K*Wmax, T, 2)`` float32 (real,
        imag last) before the overlap-add; padded entries map to ``bands.scatter_idx == F``."""
        b = self.bands
        k, batch, frames, dim = x.shape
        h = nn.functional.layer_norm(x.reshape(k, batch * frames, dim), (dim,), eps=self.eps)
        h = h * self.norm_weight + self.norm_bias
        h = torch.tanh(torch.baddbmm(self.hidden_bias, h, self.hidden_weight))  # (K, N, H)
        weight = b.pad_rows(self.out_weight).transpose(1, 2)  # (K, H, C)
        bias = b.pad_rows(self.out_bias[:, None]).view(k, 1, b.coef_dim)
        m = torch.baddbmm(bias, h, weight).float()  # (K, N, C)
        # (K, B, T, Wmax, 2) -> (B, K*Wmax, T, 2), then overlap-add into bins.
        m = m.view(k, batch, frames, b.max_width, 2).permute(1, 0, 3, 2, 4)
        return m.reshape(batch, k * b.max_width, frames, 2)
