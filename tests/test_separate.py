"""Chunked overlap-add extraction, the ``separate`` command and its bad-input handling."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from eval_fixtures import ROOT, SR, TINY, make_checkpoint, tiny_ckpt, voice  # noqa: F401

from hifi_tse.cli import main
from hifi_tse.config import load_config
from hifi_tse.errors import UserError
from hifi_tse.infer.loading import TorchChunkFn, load_generator
from hifi_tse.infer.separate import (
    ChunkPlan,
    OverlapAdd,
    VadSettings,
    active_speech,
    fade_in,
    read_csv_rows,
    separate_array,
)
from hifi_tse.models.generator import build_generator

# --------------------------------------------------------------------------- engine


def test_crossfade_ramps_sum_to_one():
    for overlap in (1, 7, 4000):
        ramp = fade_in(overlap)
        np.testing.assert_allclose(ramp + ramp[::-1], 1.0, atol=1e-6)
        assert np.all(np.diff(ramp) > 0)


@pytest.mark.parametrize("length", [1, 99, 100, 101, 175, 1234, 5000])
@pytest.mark.parametrize("plan", [(100, 25, 3), (100, 0, 1), (64, 32, 2), (100, 50, 4)])
def test_identity_model_reproduces_input(length, plan):
    x = np.random.default_rng(length).standard_normal(length).astype(np.float32)
    y = separate_array(x, lambda b: b.copy(), ChunkPlan(*plan))
    assert y.shape == x.shape
    np.testing.assert_allclose(y, x, atol=1e-5)


def test_streaming_pushes_equal_one_shot_and_memory_stays_bounded():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(60 * 1000).astype(np.float32)  # 60 s at a toy 1 kHz
    plan = ChunkPlan(chunk=400, overlap=100, batch=2)
    calls: list[int] = []

    def gain(b: np.ndarray) -> np.ndarray:
        calls.append(b.shape[1])
        return 0.5 * b

    ola = OverlapAdd(gain, plan)
    out, peak = [], 0
    pos = 0
    while pos < x.size:
        n = int(rng.integers(1, 900))
        out.append(ola.push(x[pos : pos + n]))
        pos += n
        peak = max(peak, ola._buf.size, ola._acc.size)
    out.append(ola.finish())
    y = np.concatenate(out)
    np.testing.assert_allclose(y, 0.5 * x, atol=1e-5)
    assert peak < 900 + plan.chunk * (plan.batch + 1)  # independent of the signal length
    assert max(calls) == plan.chunk


def test_invalid_plans_are_refused():
    with pytest.raises(UserError, match="overlap"):
        ChunkPlan.from_seconds(16000, 1.0, 0.6, 2)
    with pytest.raises(UserError, match="chunk-seconds"):
        ChunkPlan.from_seconds(16000, 0.0, 0.0, 2)
    plan = ChunkPlan.from_seconds(16000, 1.0, 0.25, 2, align=128)
    assert plan.chunk == 16000 and plan.hop % 128 == 0 and 2 * plan.overlap <= plan.chunk


def _local_model() -> torch.nn.Module:
    """A model with a finite receptive field (two convolutions, 2 x 64 taps)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv1d(1, 4, 65, padding=32),
        torch.nn.Tanh(),
        torch.nn.Conv1d(4, 1, 65, padding=32),
    )
    return net.eval()


def _rel_db(err: np.ndarray, ref: np.ndarray) -> float:
    return float(10 * np.log10((np.sum(err**2) + 1e-30) / np.sum(ref**2)))


def test_chunked_equals_one_pass_for_a_local_model():
    net = _local_model()
    x = voice(np.random.default_rng(0), 150.0, 3.0, SR)

    def fn(b: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(b)[:, None])[:, 0].numpy()

    one = fn(x[None])[0]
    plan = ChunkPlan.from_seconds(SR, 0.5, 0.1, 3)
    chunked = separate_array(x, fn, plan)
    keep = plan.away_from_seams(x.size)
    assert _rel_db(chunked[keep] - one[keep], one[keep]) < -80.0


def test_chunked_generator_matches_one_pass_away_from_seams(tiny_ckpt):  # noqa: F811
    model, cfg = load_generator(tiny_ckpt)
    rng = np.random.default_rng(0)
    x = voice(rng, 120.0, 5.0, SR) + 0.5 * voice(rng, 210.0, 5.0, SR)
    fn = TorchChunkFn(model, voice(rng, 120.0, 1.5, SR), torch.device("cpu"))
    one = fn(x[None])[0]
    plan = ChunkPlan.from_seconds(SR, 2.0, 0.5, 2, align=cfg.stft.hop_length)
    chunked = separate_array(x, fn, plan)
    keep = plan.away_from_seams(x.size)
    assert np.abs(one - x).max() > 1e-2  # the perturbed model is not a pass-through
    assert _rel_db(chunked[keep] - one[keep], one[keep]) < -40.0
    # a clip shorter than one chunk is processed exactly like one pass
    short = x[:SR]
    np.testing.assert_allclose(separate_array(short, fn, plan), fn(short[None])[0], atol=1e-6)


def test_attention_window_makes_chunked_match_one_pass(tmp_path):
    """Global attention sees a different context in a chunk than in one pass; a window
    shorter than the chunk's kept interior reproduces the one-pass output there."""
    rng = np.random.default_rng(1)
    x = voice(rng, 120.0, 6.0, SR) + 0.7 * voice(rng, 230.0, 6.0, SR)
    ref = voice(rng, 120.0, 1.5, SR)
    errors = {}
    for window in (0.0, 0.25):
        cfg = load_config(TINY, [f"model.attention_window_seconds={window}"])
        model = build_generator(cfg).eval()
        torch.manual_seed(0)
        with torch.no_grad():  # strong random attention so its context matters
            for stage in model.backbone.stages:
                stage.block.attn.out.weight.mul_(20.0)
            for p in model.decoder.parameters():
                p.add_(0.05 * torch.randn_like(p))
        fn = TorchChunkFn(model, ref, torch.device("cpu"))
        one = fn(x[None])[0]
        plan = ChunkPlan.from_seconds(SR, 2.0, 0.5, 2, align=cfg.stft.hop_length)
        keep = plan.away_from_seams(x.size)
        chunked = separate_array(x, fn, plan)
        errors[window] = _rel_db(chunked[keep] - one[keep], one[keep])
    assert errors[0.25] < -60.0
    assert errors[0.0] > errors[0.25] + 10.0


def test_away_from_seams_mask():
    plan = ChunkPlan(chunk=100, overlap=20, batch=1)  # hop 80: cross-fades at [80, 100), ...
    keep = plan.away_from_seams(300)
    assert keep[:70].all() and not keep[70:110].any() and keep[110:150].all()
    assert not keep[150:190].any() and keep[190:230].all()


def test_vad_counts_active_speech():
    vad = VadSettings(0.02, 40.0, -70.0, 1.0, 0.3)
    x = np.concatenate([voice(np.random.default_rng(0), 130.0, 1.0, SR), np.zeros(3 * SR)])
    seconds, fraction = active_speech(x.astype(np.float32), SR, vad)
    assert 0.4 < seconds <= 1.0
    assert fraction < 0.3


def test_csv_rows_resolve_relative_paths(tmp_path):
    (tmp_path / "l.csv").write_text("mix,ref,out\n# comment\na.wav, r1.wav;/abs/r2.wav ,o.wav\n")
    (row,) = read_csv_rows(tmp_path / "l.csv", ["mix", "ref", "out"], required=2)
    assert row["mix"] == str(tmp_path / "a.wav")
    assert row["ref"] == f"{tmp_path / 'r1.wav'};/abs/r2.wav"
    assert row["out"] == "o.wav"
    (tmp_path / "bad.csv").write_text("a.wav\n")
    with pytest.raises(UserError, match=r"bad.csv:1"):
        read_csv_rows(tmp_path / "bad.csv", ["mix", "ref", "out"], required=2)


def test_onnx_runner_does_not_import_torch():
    code = (
        "import sys; import hifi_tse.infer.onnx_runner, hifi_tse.infer.separate; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# --------------------------------------------------------------------------- command


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(5)
    target, other = voice(rng, 120.0, 2.5, 44100), voice(rng, 220.0, 2.5, 44100)
    stereo = np.stack([target + 0.6 * other, target + 0.5 * other], axis=1)
    sf.write(d / "mix44k_stereo.wav", stereo, 44100)
    sf.write(d / "mix16k.wav", voice(rng, 120.0, 0.8, SR) + voice(rng, 200.0, 0.8, SR), SR)
    ref = voice(rng, 120.0, 2.0, 22050)
    sf.write(d / "ref.wav", ref, 22050)
    sf.write(d / "ref_a.wav", ref[:22050], 22050)
    sf.write(d / "ref_b.wav", ref[22050:], 22050)
    sf.write(d / "ref_short.wav", np.concatenate([ref[:5000], np.zeros(40000)]), 22050)
    return d


def test_separate_any_rate_stereo_keeps_length_and_rate(tiny_ckpt, clips, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "out.wav"
    code = main(
        ["separate", "--checkpoint", str(tiny_ckpt), "--mix", str(clips / "mix44k_stereo.wav")]
        + ["--ref", str(clips / "ref.wav"), "-o", str(out), "--chunk-seconds", "1.0"]
        + ["--overlap-seconds", "0.25", "--threads", "1"]
    )
    assert code == 0
    info_in, info_out = sf.info(str(clips / "mix44k_stereo.wav")), sf.info(str(out))
    assert info_out.frames == info_in.frames and info_out.samplerate == 44100
    assert info_out.channels == 1
    y, _ = sf.read(out)
    assert np.isfinite(y).all() and np.abs(y).max() > 1e-3
    assert "warning" not in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [out]  # no temporary files left behind


def test_separate_matches_one_pass_and_concatenates_refs(tiny_ckpt, clips, tmp_path):  # noqa: F811
    one_ref, two_refs = tmp_path / "one.wav", tmp_path / "two.wav"
    base = ["separate", "--checkpoint", str(tiny_ckpt), "--mix", str(clips / "mix16k.wav")]
    assert main(base + ["--ref", str(clips / "ref.wav"), "-o", str(one_ref)]) == 0
    refs = ["--ref", str(clips / "ref_a.wav"), "--ref", str(clips / "ref_b.wav")]
    assert main(base + refs + ["-o", str(two_refs)]) == 0
    y1, sr = sf.read(one_ref, dtype="float32")
    y2, _ = sf.read(two_refs, dtype="float32")
    assert sr == SR
    np.testing.assert_allclose(y1, y2, atol=1e-4)  # ref.wav == ref_a ++ ref_b
    from hifi_tse.audio.io import load_audio

    model, _ = load_generator(tiny_ckpt)
    mix, ref = load_audio(clips / "mix16k.wav", SR), load_audio(clips / "ref.wav", SR)
    with torch.no_grad():
        want = model(torch.from_numpy(mix)[None], torch.from_numpy(ref)[None])[0].numpy()
    np.testing.assert_allclose(y1, want, atol=1e-5)  # shorter than a chunk: one pass


def test_separate_warns_on_short_enrollment(tiny_ckpt, clips, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "o.wav"
    args = ["separate", "--checkpoint", str(tiny_ckpt), "--mix", str(clips / "mix16k.wav")]
    assert main(args + ["--ref", str(clips / "ref_short.wav"), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "active speech" in err and "ref_short.wav" in err
    assert out.exists()


def test_separate_batch_modes(tiny_ckpt, clips, tmp_path):  # noqa: F811
    mix_dir = tmp_path / "mixes"
    mix_dir.mkdir()
    for name in ("a.wav", "b.flac"):
        sf.write(mix_dir / name, voice(np.random.default_rng(len(name)), 150.0, 0.7, SR), SR)
    out_dir = tmp_path / "out"
    ck = ["separate", "--checkpoint", str(tiny_ckpt)]
    assert (
        main(
            ck
            + ["--mix-dir", str(mix_dir), "--ref", str(clips / "ref.wav")]
            + ["--out-dir", str(out_dir)]
        )
        == 0
    )
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "a_target.wav",
        "b_target.wav",
        "separate_summary.json",
    ]
    summary = json.loads((out_dir / "separate_summary.json").read_text())
    assert (summary["files"], summary["done"], summary["failed"]) == (2, 2, [])
    (tmp_path / "list.csv").write_text(
        f"mix,ref,out\nmixes/a.wav,{clips / 'ref_a.wav'};{clips / 'ref_b.wav'},x.wav\n"
    )
    out2 = tmp_path / "out2"
    assert main(ck + ["--list", str(tmp_path / "list.csv"), "--out-dir", str(out2)]) == 0
    assert sf.info(str(out2 / "x.wav")).frames == sf.info(str(mix_dir / "a.wav")).frames


# --------------------------------------------------------------------------- bad input


def _bad_inputs(tmp_path, clips, ckpt):
    d = tmp_path
    (d / "text.wav").write_text("this is not audio\n")
    sf.write(d / "empty.wav", np.zeros(0, dtype=np.float32), SR)
    sf.write(d / "zeros.wav", np.zeros(SR, dtype=np.float32), SR)
    nan = voice(np.random.default_rng(0), 130.0, 0.5, SR)
    nan[100] = np.nan
    sf.write(d / "nan.wav", nan, SR, subtype="FLOAT")
    inf = nan.copy()
    inf[100] = np.inf
    sf.write(d / "inf.wav", inf, SR, subtype="FLOAT")
    (d / "garbage.pt").write_bytes(b"\x00\x01 not a checkpoint")
    torch.save({"weights": torch.zeros(3)}, d / "foreign.pt")
    payload = torch.load(ckpt, weights_only=True)
    payload["config"]["model"]["feature_dim"] = 16  # state dict no longer fits
    torch.save(payload, d / "other_arch.pt")
    mix, ref = str(clips / "mix16k.wav"), str(clips / "ref.wav")
    return {
        "missing mix": (["--mix", str(d / "nope.wav"), "--ref", ref], "nope.wav", str(ckpt)),
        "not audio": (["--mix", str(d / "text.wav"), "--ref", ref], "text.wav", str(ckpt)),
        "zero length": (["--mix", str(d / "empty.wav"), "--ref", ref], "empty.wav", str(ckpt)),
        "all-zero ref": (["--mix", mix, "--ref", str(d / "zeros.wav")], "zeros.wav", str(ckpt)),
        "nan mix": (["--mix", str(d / "nan.wav"), "--ref", ref], "nan.wav", str(ckpt)),
        "inf ref": (["--mix", mix, "--ref", str(d / "inf.wav")], "inf.wav", str(ckpt)),
        "garbage ckpt": (["--mix", mix, "--ref", ref], "garbage.pt", str(d / "garbage.pt")),
        "foreign ckpt": (["--mix", mix, "--ref", ref], "foreign.pt", str(d / "foreign.pt")),
        "other arch": (["--mix", mix, "--ref", ref], "other_arch.pt", str(d / "other_arch.pt")),
        "missing ckpt": (["--mix", mix, "--ref", ref], "absent.pt", str(d / "absent.pt")),
    }


def test_bad_inputs_fail_with_one_line_and_no_output(tiny_ckpt, clips, tmp_path, capsys):  # noqa: F811
    cases = _bad_inputs(tmp_path, clips, tiny_ckpt)
    for name, (args, culprit, ckpt) in cases.items():
        out = tmp_path / "out" / f"{name.replace(' ', '_')}.wav"
        code = main(["separate", "--checkpoint", ckpt, *args, "-o", str(out)])
        err = capsys.readouterr().err.strip()
        assert code != 0, name
        assert len(err.splitlines()) == 1, (name, err)
        assert culprit in err, (name, err)
        assert not out.exists(), name
        if out.parent.exists():
            assert not list(out.parent.iterdir()), (name, list(out.parent.iterdir()))


def test_load_generator_prefers_ema_and_takes_architecture_from_checkpoint(tmp_path):
    path = make_checkpoint(tmp_path / "c.pt")
    payload = torch.load(path, weights_only=True)
    payload["model"] = {
        k: v + 1.0 if v.is_floating_point() else v for k, v in payload["ema"].items()
    }
    torch.save(payload, path)
    ema_model, cfg = load_generator(path)
    raw_model, _ = load_generator(path, use_ema=False)
    assert cfg.model.feature_dim == 32 and cfg.audio.sample_rate == SR  # tiny, from the file
    k = "encoder.weight"
    assert torch.equal(ema_model.state_dict()[k], payload["ema"][k])
    assert torch.equal(raw_model.state_dict()[k], payload["model"][k])
    assert not ema_model.training


def test_reference_check_warns_when_mostly_silence(tiny_ckpt, tmp_path):  # noqa: F811
    import soxr

    from hifi_tse.api import EnrollmentWarning, Extractor

    speech = voice(np.random.default_rng(2), 140.0, 4.0, SR)
    wav = np.concatenate([speech, np.zeros(20 * SR, np.float32)])
    vad = VadSettings(0.02, 40.0, -70.0, 1.0, 0.3)
    ex = Extractor.from_checkpoint(tiny_ckpt, threads=1, vad=vad)
    with pytest.warns(EnrollmentWarning, match="mostly silence") as caught:
        enrollment = ex.enroll(wav, SR)
    assert enrollment.waveform.size == 24 * SR
    assert len(caught) == 1
    low = soxr.resample(wav, SR, 8000).astype(np.float32)
    with pytest.warns(EnrollmentWarning, match="mostly silence") as caught:
        ex.enroll(low, 8000)  # resampled, same verdict
    assert len(caught) == 1
