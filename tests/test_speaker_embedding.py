"""The frozen GE2E conditioning path (model.speaker_embedding: ge2e)."""

from __future__ import annotations

import numpy as np
import pytest
import soxr
import torch
from eval_fixtures import SR, tiny_config, voice
from test_export import _export_and_run

from hifi_tse.models.generator import build_generator
from hifi_tse.speaker import ge2e

try:
    ge2e.default_weights_path()
except Exception:  # noqa: BLE001 - no weights installed: these tests cannot run
    pytest.skip("resemblyzer weights not installed", allow_module_level=True)


def ge2e_generator(seed: int = 0):
    cfg = tiny_config()
    cfg.model.speaker_embedding = "ge2e"
    torch.manual_seed(seed)
    model = build_generator(cfg)
    model.speaker_embedding.load_pretrained()
    return model.eval(), cfg


def test_in_model_embedding_is_the_ge2e_embedding_of_the_enrollment() -> None:
    model, _ = ge2e_generator()
    enc = model.speaker_embedding.encoder
    rng = np.random.default_rng(0)
    ref = 0.05 * voice(rng, 140.0, 2.0, SR)  # quiet: the -30 dBFS floor raises it
    with torch.no_grad():
        got = model.speaker_embedding.embed(torch.from_numpy(ref)[None])[0].numpy()
        mel = enc.mel(ge2e.normalize_volume(ref))
        want = enc.embed_partials(mel[None])[0].numpy()
    assert np.abs(got - want).max() < 1e-5 and np.linalg.norm(got) == pytest.approx(1.0)
    # Another voice gives another embedding.
    with torch.no_grad():
        other = model.speaker_embedding.embed(torch.from_numpy(voice(rng, 230.0, 2.0, SR))[None])
    assert float(np.dot(got, other[0].numpy())) < 0.999


def test_48k_models_decimate_to_the_same_embedding() -> None:
    from hifi_tse.models.speaker_embedding import GE2EConditioning

    rng = np.random.default_rng(1)
    x16 = voice(rng, 150.0, 2.0, 16000)
    x48 = soxr.resample(x16, 16000, 48000).astype(np.float32)
    low, high = GE2EConditioning(16000, 8), GE2EConditioning(48000, 8)
    low.load_pretrained()
    high.load_pretrained()
    with torch.no_grad():
        e16 = low.embed(torch.from_numpy(x16)[None])[0].numpy()
        e48 = high.embed(torch.from_numpy(x48)[None])[0].numpy()
    assert float(np.dot(e16, e48)) > 0.995
    with pytest.raises(ValueError, match="multiple of 16000"):
        GE2EConditioning(22050, 8)


def test_switching_it_on_starts_from_the_same_model_and_only_the_projection_trains() -> None:
    cfg = tiny_config()
    torch.manual_seed(0)
    plain = build_generator(cfg).eval()
    model, _ = ge2e_generator()
    model.load_state_dict(plain.state_dict(), strict=False)  # as --init-from does
    rng = np.random.default_rng(2)
    mix = torch.from_numpy(voice(rng, 130.0, 1.0, SR) + voice(rng, 210.0, 1.0, SR))[None]
    ref = torch.from_numpy(voice(rng, 130.0, 1.0, SR))[None]
    with torch.no_grad():
        assert torch.equal(model(mix, ref), plain(mix, ref))  # zero-initialised FiLM
    frozen = {k: v.clone() for k, v in model.speaker_embedding.encoder.state_dict().items()}
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        model(mix, ref).square().mean().backward()
        opt.step()
    assert all(
        torch.equal(v, model.speaker_embedding.encoder.state_dict()[k]) for k, v in frozen.items()
    )
    assert model.speaker_embedding.proj.weight.abs().sum() > 0
    assert not model.speaker_embedding.encoder.training  # frozen: stays in eval mode


def test_checkpoints_carry_the_encoder_and_onnx_matches(tmp_path) -> None:
    from hifi_tse.checkpoints import save_generator_checkpoint
    from hifi_tse.errors import UserError
    from hifi_tse.infer.loading import load_generator

    model, cfg = ge2e_generator()
    with torch.no_grad():  # a projection that matters, and a mask that depends on it
        model.speaker_embedding.proj.weight.normal_(std=0.5)
        model.decoder.out_weight.normal_(std=0.1)
    got, want, without = _export_and_run(
        tmp_path, model, cfg, lambda m: m.speaker_embedding.proj.weight.zero_()
    )
    assert np.abs(want - without).max() > 0.01 * np.abs(without).max()
    assert np.abs(got - want).max() < 1e-3
    loaded, _ = load_generator(tmp_path / "m.pt")
    assert bool(loaded.speaker_embedding.pretrained)
    blank, cfg = ge2e_generator()
    blank.speaker_embedding.pretrained.zero_()
    save_generator_checkpoint(tmp_path / "blank.pt", blank, cfg, step=1)
    with pytest.raises(UserError, match="no pretrained weights"):
        load_generator(tmp_path / "blank.pt")


@pytest.mark.parametrize("rate", [16000, 48000])
def test_numpy_enrollment_mels_match_the_model(rate: int) -> None:
    from hifi_tse.models.speaker_embedding import GE2EConditioning
    from hifi_tse.speaker.frontend import enrollment_mels

    rng = np.random.default_rng(3)
    ref = 0.02 * voice(rng, 160.0, 1.3, rate)  # below -30 dBFS: the floor scales it
    with torch.no_grad():
        want = GE2EConditioning(rate, 8).mels(torch.from_numpy(ref)[None])[0].numpy()
    got = enrollment_mels(ref, rate)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_training_with_the_ge2e_path_runs_to_its_end(tiny_packs, tmp_path) -> None:
    from test_train_e2e import _cmd, _end

    from hifi_tse.cli import main

    run = tmp_path / "run"
    sets = ("train.steps=2", "train.phase1_steps=1", "model.speaker_embedding=ge2e")
    assert main(_cmd(tiny_packs, run, *sets)) == 0
    assert _end(run)["step"] == 2  # the end-of-run digest handles the 0-dim buffer
