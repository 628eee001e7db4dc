"""ONNX export of the generator's spectral core and the torch-free ONNX Runtime runner."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import soundfile as sf
import torch
from eval_fixtures import SR, tiny_ckpt, tiny_onnx, voice  # noqa: F401

from hifi_tse.cli import main
from hifi_tse.infer.loading import load_generator
from hifi_tse.infer.onnx_runner import NumpyStft, OnnxModel


def test_numpy_stft_matches_torch():
    from hifi_tse.audio.stft import Stft
    from hifi_tse.config import StftConfig

    cfg = StftConfig(n_fft=256, win_length=200, hop_length=64)
    torch_stft, np_stft = Stft(cfg), NumpyStft(256, 200, 64)
    x = np.random.default_rng(0).standard_normal((2, 1001)).astype(np.float32)
    want = torch.view_as_real(torch_stft(torch.from_numpy(x))).numpy()
    got = np_stft.forward(x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(np_stft.inverse(got, 1001), x, atol=1e-5)


def test_export_metadata(tiny_onnx):  # noqa: F811
    proto = onnx.load(str(tiny_onnx))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["sample_rate"] == str(SR)
    assert meta["chunk_samples"] == str(SR) and meta["ref_samples"] == str(SR)
    assert meta["hop_length"] == "128" and meta["n_fft"] == "256"
    assert meta["checkpoint_step"] == "123"
    assert meta["dynamic"] == "1"  # batch, chunk and enrollment lengths are free


def test_onnx_matches_pytorch_on_a_clip(tiny_ckpt, tiny_onnx):  # noqa: F811
    model, _ = load_generator(tiny_ckpt)
    runner = OnnxModel(tiny_onnx, threads=1)
    rng = np.random.default_rng(0)
    mix = np.stack(
        [voice(rng, 130.0, 1.0, SR) + voice(rng, 210.0, 1.0, SR) for _ in range(2)]
    )  # (2, C): batch of two chunks
    ref = voice(rng, 130.0, 1.0, SR)
    got = runner.chunk_fn(ref)(mix)
    with torch.no_grad():
        want = model(torch.from_numpy(mix), torch.from_numpy(ref)[None].expand(2, -1)).numpy()
    assert np.abs(want - mix).max() > 1e-2  # not a pass-through model
    assert np.abs(got - want).max() < 1e-3
    # other lengths than the traced ones (dynamic axes): 0.7 s chunks, 1.3 s enrollment
    mix2, ref2 = mix[:, : int(0.7 * SR)], voice(rng, 130.0, 1.3, SR)
    got2 = runner.chunk_fn(ref2)(mix2)
    with torch.no_grad():
        want2 = model(torch.from_numpy(mix2), torch.from_numpy(ref2)[None].expand(2, -1)).numpy()
    assert got2.shape == mix2.shape and np.abs(got2 - want2).max() < 1e-3


def test_separate_with_onnx_matches_pytorch(
    tiny_ckpt,  # noqa: F811
    tiny_onnx,  # noqa: F811
    tmp_path,
):
    rng = np.random.default_rng(1)
    mix = voice(rng, 120.0, 2.6, SR) + 0.7 * voice(rng, 190.0, 2.6, SR)
    sf.write(tmp_path / "mix.wav", mix, SR)
    sf.write(tmp_path / "ref.wav", voice(rng, 120.0, 1.0, SR), SR)
    common = ["--mix", str(tmp_path / "mix.wav"), "--ref", str(tmp_path / "ref.wav")]
    common += ["--overlap-seconds", "0.25", "--chunk-seconds", "1.0"]
    assert main(["separate", "--onnx", str(tiny_onnx), *common, "-o", str(tmp_path / "o.wav")]) == 0
    pt_args = ["separate", "--checkpoint", str(tiny_ckpt), *common]
    assert main(pt_args + ["-o", str(tmp_path / "p.wav")]) == 0
    y_onnx, sr = sf.read(tmp_path / "o.wav", dtype="float32")
    y_pt, _ = sf.read(tmp_path / "p.wav", dtype="float32")
    assert sr == SR and y_onnx.shape == mix.shape == y_pt.shape
    assert np.abs(y_onnx - y_pt).max() < 1e-3


def test_export_bad_checkpoint_leaves_no_file(tmp_path, capsys):
    (tmp_path / "bad.pt").write_bytes(b"nope")
    out = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(tmp_path / "bad.pt"), "-o", str(out)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.pt" in err
    assert not out.exists()


def test_separate_onnx_rejects_non_hifi_models(tmp_path, capsys):
    (tmp_path / "x.onnx").write_bytes(b"not onnx at all")
    sf.write(tmp_path / "m.wav", np.zeros(SR, np.float32) + 0.1, SR)
    args = ["separate", "--onnx", str(tmp_path / "x.onnx"), "--mix", str(tmp_path / "m.wav")]
    code = main(args + ["--ref", str(tmp_path / "m.wav"), "-o", str(tmp_path / "o.wav")])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and "x.onnx" in err
    assert not (tmp_path / "o.wav").exists()


@pytest.mark.slow
def test_export_cli_verifies_full_chunk_default(tiny_ckpt, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(tiny_ckpt), "-o", str(out)]) == 0
    assert "max abs difference" in capsys.readouterr().out


def _export_and_run(tmp_path, model, cfg, remove):
    """Export ``model`` to ONNX and run it and PyTorch on one two-talker clip; then
    ``remove(model)`` takes the feature under test away. Returns ONNX, PyTorch and
    PyTorch-without outputs ``(1, L)``."""
    from hifi_tse.checkpoints import save_generator_checkpoint

    save_generator_checkpoint(tmp_path / "m.pt", model, cfg, step=1)
    out = tmp_path / "m.onnx"
    args = ["export", "--checkpoint", str(tmp_path / "m.pt"), "-o", str(out)]
    assert main(args + ["--chunk-seconds", "1.0", "--ref-seconds", "1.0", "--no-verify"]) == 0
    rng = np.random.default_rng(0)
    mix = (voice(rng, 130.0, 1.0, SR) + voice(rng, 210.0, 1.0, SR))[None]
    ref = voice(rng, 130.0, 1.0, SR)
    got = OnnxModel(out, threads=1).chunk_fn(ref)(mix)
    with torch.no_grad():
        want = model(torch.from_numpy(mix), torch.from_numpy(ref)[None]).numpy()
        remove(model)
        without = model(torch.from_numpy(mix), torch.from_numpy(ref)[None]).numpy()
    return got, want, without


def test_onnx_carries_the_bin_shape_features(tmp_path):
    from eval_fixtures import tiny_config

    from hifi_tse.models.generator import build_generator

    cfg = tiny_config()
    cfg.band_split.bin_shape = True
    torch.manual_seed(0)
    model = build_generator(cfg).eval()
    with torch.no_grad():  # features that matter, and a mask that depends on them
        model.encoder.bin_weight.normal_(std=1.0)
        model.decoder.out_weight.normal_(std=0.1)
    got, want, without = _export_and_run(
        tmp_path, model, cfg, lambda m: m.encoder.bin_weight.zero_()
    )
    assert np.abs(want - without).max() > 0.1 * np.abs(without).max()
    assert np.abs(got - want).max() < 1e-3
