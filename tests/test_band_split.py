"""Band layout coverage, STFT round trip, and the vectorised band encoder / decoder against
slow per-band reference loops."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hifi_tse.audio.stft import Stft
from hifi_tse.config import BandRegion, BandSplitConfig, StftConfig, load_config
from hifi_tse.models.band_split import BandMergeDecoder, BandSplitEncoder, band_layout

# One torch thread (conftest): tiny tensors gain nothing from threads on a shared CPU.
pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _check_layout(layout, n_fft, overlap):
    num_bins = n_fft // 2 + 1
    covered = torch.zeros(num_bins, dtype=torch.int64)
    for s, e in layout:
        assert 0 <= s < e <= num_bins
        covered[s:e] += 1
    assert bool((covered >= 1).all()), "some bin is in no band"
    assert layout[0][0] == 0 and layout[-1][1] == num_bins
    starts = [s for s, _ in layout]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    for (_, e0), (s1, _) in zip(layout[:-1], layout[1:], strict=True):
        assert e0 - s1 == overlap, "neighbours must share exactly overlap_bins bins"


@pytest.mark.parametrize("name", ["hifi_tse.yaml", "tiny.yaml"])
def test_band_layout_covers_every_bin(name):
    cfg = load_config(CONFIGS / name)
    layout = band_layout(cfg.audio.sample_rate, cfg.stft.n_fft, cfg.band_split)
    _check_layout(layout, cfg.stft.n_fft, cfg.band_split.overlap_bins)


def test_full_layout_has_about_53_bands_fine_to_coarse():
    cfg = load_config(CONFIGS / "hifi_tse.yaml")
    layout = band_layout(48000, 2048, cfg.band_split)
    assert len(layout) == 53
    # Schema defaults describe the same system.
    assert band_layout(48000, 2048, BandSplitConfig()) == layout
    widths = [e - s for s, e in layout]
    assert max(widths[:10]) <= 6 and min(widths[-10:]) >= 30  # fine low, coarse high


def test_layout_extends_last_region_to_nyquist_and_handles_zero_overlap():
    cfg = BandSplitConfig(regions=[BandRegion(upper_hz=500.0, width_bins=3)], overlap_bins=0)
    layout = band_layout(16000, 512, cfg)
    _check_layout(layout, 512, 0)
    # A region whose edge is past Nyquist ends the layout there.
    cfg = BandSplitConfig(
        regions=[BandRegion(upper_hz=30000.0, width_bins=20), BandRegion(40000.0, 5)],
        overlap_bins=2,
    )
    layout = band_layout(16000, 256, cfg)
    _check_layout(layout, 256, 2)
    assert len(layout) == round(129 / 20)


@pytest.mark.parametrize("length", [1, 37, 16001, 16384])
def test_stft_round_trip_any_length(length):
    stft = Stft(StftConfig(n_fft=256, win_length=200, hop_length=100))
    wav = torch.randn(2, length)
    spec = stft(wav)
    assert spec.shape == (2, 129, stft.num_frames(length)) and spec.is_complex()
    back = stft.inverse(spec, length)
    assert back.shape == (2, length)
    assert torch.allclose(back, wav, atol=1e-5)


def _layout_tiny():
    cfg = load_config(CONFIGS / "tiny.yaml")
    return band_layout(cfg.audio.sample_rate, cfg.stft.n_fft, cfg.band_split), 129


def test_encoder_matches_per_band_loop():
    torch.manual_seed(0)
    layout, num_bins = _layout_tiny()
    enc = BandSplitEncoder(layout, num_bins, feature_dim=16, eps=1e-5)
    with torch.no_grad():  # non-trivial norm affine so the check covers it
        enc.norm_weight.uniform_(0.5, 1.5)
        enc.norm_bias.normal_()
    spec = torch.randn(2, num_bins, 7, dtype=torch.complex64)
    fast = enc(spec)  # (K, B, T, D)

    gain, shift, weight = enc.padded_weights()
    for k, (s, e) in enumerate(layout):
        w = e - s
        band = torch.view_as_real(spec[:, s:e]).permute(0, 2, 1, 3).reshape(2, 7, 2 * w)
        normed = F.layer_norm(band, (2 * w,), gain[k, 0, : 2 * w], shift[k, 0, : 2 * w], 1e-5)
        slow = normed @ weight[k, : 2 * w] + enc.bias[k]
        torch.testing.assert_close(fast[k], slow, atol=1e-5, rtol=1e-5)
    assert enc.weight.numel() == sum(2 * (e - s) for s, e in layout) * 16  # no dead padding


def _plain_and_extended(**extra):
    """A plain encoder and one with the ``extra`` features sharing its weights, checked to
    match at init (the extra weights are zero); returns ``layout, plain, enc, spec``."""
    torch.manual_seed(0)
    layout, num_bins = _layout_tiny()
    plain = BandSplitEncoder(layout, num_bins, feature_dim=16, eps=1e-5)
    enc = BandSplitEncoder(layout, num_bins, feature_dim=16, eps=1e-5, **extra)
    enc.load_state_dict(plain.state_dict(), strict=False)
    spec = torch.randn(2, num_bins, 7, dtype=torch.complex64)
    torch.testing.assert_close(enc(spec), plain(spec))  # zero-initialised: no change at init
    return layout, plain, enc, spec


def test_level_features_add_band_and_frame_levels():
    layout, plain, enc, spec = _plain_and_extended(level_floor_db=-100.0)
    with torch.no_grad():
        enc.level_weight.normal_()
    # per band loop: power in dB / 20, relative to the frame mean over bands, plus that mean
    levels = []
    for s, e in layout:
        band = torch.view_as_real(spec[:, s:e])  # (B, W, T, 2)
        power = band.square().mean(dim=(1, 3))  # (B, T)
        levels.append(10 * torch.log10(power + 1e-10) / 20.0)
    levels = torch.stack(levels)  # (K, B, T)
    frame = levels.mean(0)
    expected = plain(spec) + torch.stack(
        [
            (levels[k] - frame)[..., None] * enc.level_weight[k, 0]
            + frame[..., None] * enc.level_weight[k, 1]
            for k in range(len(layout))
        ]
    )
    torch.testing.assert_close(enc(spec), expected, atol=1e-4, rtol=1e-4)
    # the envelope part ignores the input gain; the loudness part moves by exactly 20 dB / 20
    louder = enc(spec * 10.0) - enc(spec)
    step = enc.level_weight[:, 1][:, None, None, :].expand_as(louder)
    torch.testing.assert_close(louder, step, atol=1e-3, rtol=1e-3)  # (LayerNorm eps aside)


def test_decoder_starts_at_unit_mask_and_matches_per_band_loop():
    torch.manual_seed(1)
    layout, num_bins = _layout_tiny()
    dec = BandMergeDecoder(layout, num_bins, feature_dim=8, hidden=12, eps=1e-5)
    x = torch.randn(len(layout), 2, 5, 8)
    mask = dec(x)
    assert mask.shape == (2, num_bins, 5)
    torch.testing.assert_close(mask, torch.ones_like(mask), atol=0, rtol=0)

    with torch.no_grad():
        dec.out_weight.normal_()
        dec.out_bias.normal_()
    fast = dec(x)
    acc = torch.zeros(2, num_bins, 5, dtype=torch.complex64)
    count = torch.zeros(num_bins)
    b = dec.bands
    out_w = b.pad_rows(dec.out_weight)  # (K, C, H)
    out_b = b.pad_rows(dec.out_bias[:, None])[..., 0]  # (K, C)
    for k, (s, e) in enumerate(layout):
        w = e - s
        h = F.layer_norm(x[k], (8,), eps=1e-5) * dec.norm_weight[k] + dec.norm_bias[k]
        h = torch.tanh(h @ dec.hidden_weight[k] + dec.hidden_bias[k])
        m = h @ out_w[k, : 2 * w].T + out_b[k, : 2 * w]  # (B, T, 2W)
        m = torch.view_as_complex(m.view(2, 5, w, 2).contiguous()).transpose(1, 2)
        acc[:, s:e] += m
        count[s:e] += 1
    torch.testing.assert_close(fast, acc / count[None, :, None], atol=1e-5, rtol=1e-5)


def test_bin_shape_features_are_phase_free_per_bin_shapes():
    layout, plain, enc, spec = _plain_and_extended(bin_floor_db=-100.0)
    num_bins = spec.shape[1]
    # stored flat: one row per real band bin, no padding
    assert enc.bin_weight.shape == (sum(e - s for s, e in layout), 16)
    with torch.no_grad():
        enc.bin_weight.normal_()
    # per band loop: each bin's dB / 20 minus the band's mean of those, times its own row
    rows = iter(enc.bin_weight.split([e - s for s, e in layout]))
    extra = []
    for s, e in layout:
        db = 10 * torch.log10(spec[:, s:e].abs().square() + 1e-10) / 20.0  # (B, W, T)
        shape = db - db.mean(1, keepdim=True)
        extra.append(torch.einsum("bwt,wd->btd", shape, next(rows)))
    torch.testing.assert_close(enc(spec), plain(spec) + torch.stack(extra), atol=1e-4, rtol=1e-4)
    # the shape part alone ignores every bin's phase and the input gain
    with torch.no_grad():
        enc.weight.zero_()
    turned = spec * torch.exp(1j * 6.28 * torch.rand(spec.shape))
    torch.testing.assert_close(enc(turned * 3.0), enc(spec), atol=1e-4, rtol=1e-4)
    tilted = spec * torch.linspace(0.2, 2.0, num_bins)[None, :, None]
    assert (enc(tilted) - enc(spec)).abs().max() > 0.1
