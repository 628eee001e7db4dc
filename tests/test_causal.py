"""model.causal: no output sample depends on input more than one STFT window ahead."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eval_fixtures import SR, tiny_config, voice

from hifi_tse.models.generator import build_generator


def causal_tiny(causal: bool = True):
    cfg = tiny_config()
    cfg.model.causal = causal
    torch.manual_seed(0)
    model = build_generator(cfg).eval()
    with torch.no_grad():  # a mask that depends on the features (not pass-through)
        model.decoder.out_weight.normal_(std=0.1)
    return model, cfg


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


@pytest.mark.parametrize("reinject_new", [False, True])
def test_a_deeper_model_starts_as_the_checkpoint_it_grows_from(tmp_path, reinject_new) -> None:
    """--init-from a checkpoint with fewer backbone blocks: the added stage starts as the
    identity (same output to float precision), its recurrences random, and it trains."""
    from hifi_tse.checkpoints import save_generator_checkpoint
    from hifi_tse.train.setup import new_backbone_stages, warm_start

    shallow, cfg = causal_tiny(causal=False)
    path = tmp_path / "shallow.pt"
    save_generator_checkpoint(path, shallow, cfg)
    cfg.model.num_blocks += 1
    if reinject_new:
        cfg.model.reinject_blocks = [*cfg.model.reinject_blocks, cfg.model.num_blocks - 1]
    torch.manual_seed(1)
    deep = build_generator(cfg).eval()
    added = cfg.model.num_blocks - 1
    copied, new = warm_start(deep, path)
    assert copied == len(shallow.state_dict())
    assert new and all(name.startswith(f"backbone.stages.{added}.") for name in new)
    assert new_backbone_stages(deep, shallow.state_dict()) == [added]
    stage = deep.backbone.stages[added]
    assert stage.block.intra.lstm.weight_ih_l0.abs().sum() > 0  # not silenced: it can learn
    assert (stage.reinject is not None) == reinject_new

    rng = np.random.default_rng(2)
    mix = torch.from_numpy(voice(rng, 130.0, 1.0, SR) + voice(rng, 210.0, 1.0, SR))[None]
    ref = torch.from_numpy(voice(rng, 130.0, 1.0, SR))[None]
    with torch.no_grad():
        want, got = shallow(mix, ref), deep(mix, ref)
    assert torch.allclose(got, want, atol=1e-6)

    # One update moves the new stage's output layers off zero, so the output changes.
    deep.train()
    opt = torch.optim.Adam(deep.parameters(), lr=1e-3)
    deep(mix, ref).pow(2).mean().backward()
    opt.step()
    assert stage.block.inter.proj.weight.abs().sum() > 0
    with torch.no_grad():
        assert not torch.allclose(deep.eval()(mix, ref), want, atol=1e-6)
