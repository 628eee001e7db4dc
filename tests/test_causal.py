"""model.causal: no output sample depends on input more than one STFT window ahead."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eval_fixtures import SR, tiny_config, voice

from hifi_tse.models.generator import build_generator


def seeded_generator(cfg, seed: int = 0):
    """A generator of ``cfg`` in eval mode whose mask depends on the features."""
    torch.manual_seed(seed)
    model = build_generator(cfg).eval()
    with torch.no_grad():  # a mask that depends on the features (not pass-through)
        model.decoder.out_weight.normal_(std=0.1)
    return model


def causal_tiny(causal: bool = True):
    cfg = tiny_config()
    cfg.model.causal = causal
    return seeded_generator(cfg), cfg


@pytest.mark.parametrize("window_seconds", [0.0, 0.1])
def test_future_input_never_changes_past_output(window_seconds: float) -> None:
    model, cfg = causal_tiny()
    if window_seconds:
        cfg.model.attention_window_seconds = window_seconds
        model = build_generator(cfg).eval()
        with torch.no_grad():
            model.decoder.out_weight.normal_(std=0.1)
    rng = np.random.default_rng(0)
    mix = torch.from_numpy(voice(rng, 130.0, 1.5, SR) + voice(rng, 210.0, 1.5, SR))[None]
    ref = torch.from_numpy(voice(rng, 130.0, 1.0, SR))[None]
    cut = int(0.8 * SR)
    changed = mix.clone()
    changed[:, cut:] = torch.from_numpy(rng.standard_normal(mix.shape[1] - cut)).float()
    with torch.no_grad():
        a, b = model(mix, ref), model(changed, ref)
    # Sample n is made from frames whose window holds n; a causal model sees no frame after
    # them, so the look-ahead is at most one window (n_fft samples with centred frames).
    horizon = cut - cfg.stft.n_fft
    assert torch.allclose(a[:, :horizon], b[:, :horizon], atol=1e-6)
    assert (a[:, cut:] - b[:, cut:]).abs().max() > 1e-3  # the change does reach the output


def test_the_offline_model_does_look_ahead() -> None:
    model, cfg = causal_tiny(causal=False)
    rng = np.random.default_rng(1)
    mix = torch.from_numpy(voice(rng, 130.0, 1.5, SR) + voice(rng, 210.0, 1.5, SR))[None]
    ref = torch.from_numpy(voice(rng, 130.0, 1.0, SR))[None]
    cut = int(0.8 * SR)
    changed = mix.clone()
    changed[:, cut:] = 0.0
    with torch.no_grad():
        a, b = model(mix, ref), model(changed, ref)
    horizon = cut - cfg.stft.n_fft
    assert (a[:, :horizon] - b[:, :horizon]).abs().max() > 1e-4  # so the test above can fail


def test_causal_model_uses_forward_only_lstms_on_time() -> None:
    model, _ = causal_tiny()
    for stage in model.backbone.stages:
        assert not stage.block.inter.lstm.bidirectional
        assert stage.block.intra.lstm.bidirectional  # across bands within a frame: no time
        assert stage.block.attn.causal


def test_causal_model_exports_to_onnx(tmp_path) -> None:
    from test_export import _export_and_run

    model, cfg = causal_tiny()
    got, want, _ = _export_and_run(tmp_path, model, cfg, lambda m: None)
    assert np.abs(got - want).max() < 1e-3


def test_a_causal_model_warm_starts_from_an_offline_one(tmp_path) -> None:
    """--init-from an offline checkpoint into model.causal: every weight is copied, the time
    LSTMs keep their forward direction and its columns of the output projection."""
    from hifi_tse.checkpoints import save_generator_checkpoint
    from hifi_tse.train.setup import warm_start

    offline, cfg = causal_tiny(causal=False)
    path = tmp_path / "offline.pt"
    save_generator_checkpoint(path, offline, cfg)
    causal, _ = causal_tiny()
    copied, new = warm_start(causal, path)
    assert new == [] and copied == len(causal.state_dict())
    src, dst = offline.state_dict(), causal.state_dict()
    hidden = cfg.model.lstm_hidden
    for name, value in dst.items():
        if name.endswith("inter.proj.weight"):
            assert src[name].shape[1] == 2 * hidden and value.shape[1] == hidden
            assert torch.equal(value, src[name][:, :hidden])
        else:
            assert torch.equal(value, src[name]), name


@pytest.mark.parametrize(
    ("old_reinject", "extra_blocks", "new_reinject"),
    [
        ([0, 1], 1, [0, 1]),  # a third block without re-injection
        ([0, 1], 1, [0, 1, 2]),  # a third block with its re-injection
        ([0], 0, [0, 1]),  # a re-injection before an existing block
    ],
)
def test_a_larger_model_starts_as_the_checkpoint_it_grows_from(
    tmp_path, old_reinject, extra_blocks, new_reinject
) -> None:
    """--init-from a checkpoint with fewer backbone blocks or re-injections: what is added
    starts as the identity (same output to float precision), its inner layers random, and
    it trains."""
    from hifi_tse.checkpoints import save_generator_checkpoint
    from hifi_tse.train.setup import warm_start

    cfg = tiny_config()
    cfg.model.reinject_blocks = old_reinject
    small = seeded_generator(cfg)
    path = tmp_path / "small.pt"
    save_generator_checkpoint(path, small, cfg)
    cfg.model.num_blocks += extra_blocks
    cfg.model.reinject_blocks = new_reinject
    torch.manual_seed(1)
    large = build_generator(cfg).eval()
    copied, new = warm_start(large, path)
    assert copied == len(small.state_dict())
    index = len(large.backbone.stages) - 1 if extra_blocks else 1
    grown = large.backbone.stages[index]
    added = f"backbone.stages.{index}." + ("" if extra_blocks else "reinject.")
    assert new and all(name.startswith(added) for name in new)
    assert (grown.reinject is not None) == (index in new_reinject)
    # The output layers start at zero, the layers inside the branch do not (so they learn).
    out_layer = grown.block.inter.proj if extra_blocks else grown.reinject.attn.out
    inner = grown.block.intra.lstm.weight_ih_l0 if extra_blocks else grown.reinject.attn.q.weight
    assert out_layer.weight.abs().sum() == 0 and inner.abs().sum() > 0

    rng = np.random.default_rng(2)
    mix = torch.from_numpy(voice(rng, 130.0, 1.0, SR) + voice(rng, 210.0, 1.0, SR))[None]
    ref = torch.from_numpy(voice(rng, 130.0, 1.0, SR))[None]
    with torch.no_grad():
        want, got = small(mix, ref), large(mix, ref)
    assert torch.allclose(got, want, atol=1e-6)

    # One update moves the new output layers off zero, so the output changes.
    large.train()
    opt = torch.optim.Adam(large.parameters(), lr=1e-3)
    large(mix, ref).pow(2).mean().backward()
    opt.step()
    assert out_layer.weight.abs().sum() > 0
    with torch.no_grad():
        assert not torch.allclose(large.eval()(mix, ref), want, atol=1e-6)
