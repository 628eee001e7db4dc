"""HiFi-GAN multi-period + multi-scale discriminators on odd lengths."""

import pytest
import torch

from hifi_tse.config import ConfigError, GanConfig
from hifi_tse.models.discriminator import Discriminators

# One torch thread (conftest): tiny tensors gain nothing from threads on a shared CPU.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("length", [4001, 3333, 37])
def test_outputs_for_odd_lengths(length):
    torch.manual_seed(0)
    cfg = GanConfig(channels=4)
    disc = Discriminators(cfg)
    wav = torch.randn(2, length, requires_grad=True)
    outputs = disc(wav)
    assert len(outputs) == len(cfg.periods) + cfg.num_scales
    for logits, feats in outputs:
        assert logits.dim() == 2 and logits.shape[0] == 2 and logits.shape[1] >= 1
        assert len(feats) >= 5 and all(f.shape[0] == 2 for f in feats)
        assert torch.isfinite(logits).all()
    # Period sub-discriminators fold the (padded) signal into `period` columns.
    for period, (_, feats) in zip(cfg.periods, outputs, strict=False):
        assert feats[0].shape[-1] == period
    # Scale sub-discriminators see progressively pooled (shorter) signals.
    scale_len = [feats[0].shape[-1] for _, feats in outputs[len(cfg.periods) :]]
    assert scale_len == sorted(scale_len, reverse=True) and len(set(scale_len)) == len(scale_len)
    sum(lg.square().mean() for lg, _ in outputs).backward()
    assert wav.grad is not None and wav.grad.abs().sum() > 0


def test_default_channels_and_batch_independence():
    torch.manual_seed(0)
    disc = Discriminators(GanConfig()).eval()
    a, b = torch.randn(1, 2401), torch.randn(1, 2401)
    both = disc(torch.cat([a, b]))
    only_a = disc(a)
    for (lg_both, _), (lg_a, _) in zip(both, only_a, strict=True):
        torch.testing.assert_close(lg_both[:1], lg_a, atol=1e-4, rtol=1e-4)


def test_bad_channel_count_and_shape_raise():
    with pytest.raises(ConfigError, match="gan.channels"):
        Discriminators(GanConfig(channels=6))
    with pytest.raises(ValueError, match="batch, time"):
        Discriminators(GanConfig(channels=4))(torch.randn(100))
