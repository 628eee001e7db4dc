"""Streaming equals the offline causal model, block size whatever it is."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eval_fixtures import SR, tiny_ckpt, tiny_config, tiny_onnx, voice  # noqa: F401

import hifi_tse
from hifi_tse.checkpoints import save_generator_checkpoint
from hifi_tse.errors import UserError
from hifi_tse.infer.frame_stream import DEFAULT_BLOCK_HOPS
from hifi_tse.infer.streaming import StreamingExtractor
from hifi_tse.models.generator import build_generator

# Run first in a child interpreter: any import of torch there fails.
NO_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this process")
sys.meta_path.insert(0, _NoTorch())
"""


def causal_checkpoint(tmp_path, window_seconds: float = 0.0):
    cfg = tiny_config()
    cfg.model.causal = True
    cfg.model.attention_window_seconds = window_seconds
    torch.manual_seed(0)
    model = build_generator(cfg).eval()
    with torch.no_grad():  # a mask that depends on the features (not pass-through)
        model.decoder.out_weight.normal_(std=0.1)
    path = tmp_path / "causal.pt"
    save_generator_checkpoint(path, model, cfg, step=1)
    return path, model


@pytest.mark.parametrize(("window", "blocks"), [(0.0, [160, 1, 999, 4000]), (0.1, [317])])
def test_streamed_output_equals_the_offline_causal_output(tmp_path, window, blocks) -> None:
    path, model = causal_checkpoint(tmp_path, window)
    rng = np.random.default_rng(0)
    mix = (voice(rng, 130.0, 1.3, SR) + voice(rng, 210.0, 1.3, SR)).astype(np.float32)
    ref = voice(rng, 130.0, 1.0, SR)
    ex = hifi_tse.Extractor.from_checkpoint(path, threads=1)
    enrollment = ex.enroll(ref, SR)
    with torch.inference_mode():
        offline = model(torch.from_numpy(mix)[None], torch.from_numpy(ref)[None])[0].numpy()
    stream = StreamingExtractor(ex, enrollment)
    outs, pos, k = [], 0, 0
    while pos < mix.size:
        n = blocks[k % len(blocks)]
        outs.append(stream.process(mix[pos : pos + n]))
        # Output is final one FFT window after the input that made it, never later.
        assert stream.emitted >= stream.received - stream.latency_samples - stream.hop
        pos, k = pos + n, k + 1
    outs.append(stream.flush())
    got = np.concatenate(outs)
    assert got.shape == offline.shape
    assert np.abs(got - offline).max() <= 1e-4
    # a new stream with the same enrollment starts afresh
    stream.reset()
    again = np.concatenate([stream.process(mix), stream.flush()])
    assert np.abs(again - offline).max() <= 1e-4


def test_streaming_refuses_an_offline_model(tmp_path) -> None:
    cfg = tiny_config()
    path = tmp_path / "offline.pt"
    save_generator_checkpoint(path, build_generator(cfg), cfg, step=1)
    ex = hifi_tse.Extractor.from_checkpoint(path, threads=1)
    rng = np.random.default_rng(0)
    with pytest.raises(UserError, match="not a causal model"):
        StreamingExtractor(ex, ex.enroll(voice(rng, 130.0, 1.0, SR), SR))


@pytest.mark.parametrize(
    ("rate", "backend"), [(SR, "checkpoint"), (48000, "checkpoint"), (SR, "onnx")]
)
def test_stream_cli_pipes_pcm_through_the_causal_model(tmp_path, rate, backend) -> None:
    import subprocess
    import sys

    import soundfile as sf
    import soxr

    from hifi_tse.cli import main

    path, model = causal_checkpoint(tmp_path, 0.1 if backend == "onnx" else 0.0)
    if backend == "onnx":  # the torch-free runner, in a process where torch cannot load
        onnx = tmp_path / "causal.onnx"
        export = ["export", "--checkpoint", str(path), "--format", "onnx-streaming"]
        assert main(export + ["-o", str(onnx)]) == 0
        path = onnx
    run_cli = (
        NO_TORCH if backend == "onnx" else "import sys\n"
    ) + "from hifi_tse.cli import main\n"
    rng = np.random.default_rng(3)
    mix16 = (0.5 * (voice(rng, 130.0, 1.2, SR) + voice(rng, 210.0, 1.2, SR))).astype(np.float32)
    ref = voice(rng, 130.0, 1.2, SR)
    sf.write(tmp_path / "ref.wav", ref, SR, subtype="FLOAT")
    mix = mix16 if rate == SR else soxr.resample(mix16, SR, rate).astype(np.float32)
    pcm = np.round(mix * 32768).clip(-32768, 32767).astype("<i2")
    done = subprocess.run(
        [sys.executable, "-c", run_cli + "sys.exit(main(sys.argv[1:]))", "stream",
         f"--{backend}", str(path), "--ref", str(tmp_path / "ref.wav"), "--rate", str(rate),
         "--threads", "1"],
        input=pcm.tobytes(), capture_output=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    # tiny config: 16 ms window, default block half the 8 ms hop
    assert "latency 20 ms (FFT window 16 ms + block 4 ms)" in done.stderr.decode()
    out = np.frombuffer(done.stdout, dtype="<i2").astype(np.float32) / 32768
    assert abs(out.size - pcm.size) <= 2  # the input's length
    if rate == SR:  # bit for bit the offline model's output, up to the 16-bit rounding
        with torch.inference_mode():
            x = torch.from_numpy(pcm.astype(np.float32) / 32768)[None]
            offline = model(x, torch.from_numpy(ref)[None])[0].numpy()
        assert np.abs(out - offline).max() <= 2 / 32768
    else:
        assert np.sqrt(np.mean(out**2)) > 1e-3  # audio came through the resamplers


def test_streaming_in_bf16_follows_the_fp32_stream(tmp_path) -> None:
    from hifi_tse.devices import cpu_has_native_bf16

    if not cpu_has_native_bf16():
        pytest.skip("no native bf16 on this CPU")
    path, _ = causal_checkpoint(tmp_path)
    rng = np.random.default_rng(5)
    mix = (voice(rng, 130.0, 1.0, SR) + voice(rng, 210.0, 1.0, SR)).astype(np.float32)
    ref = voice(rng, 130.0, 1.2, SR)
    outs = []
    for precision in ("fp32", "bf16"):
        ex = hifi_tse.Extractor.from_checkpoint(path, threads=1, precision=precision)
        s = StreamingExtractor(ex, ex.enroll(ref, SR))
        outs.append(np.concatenate([s.process(mix[:5000]), s.process(mix[5000:]), s.flush()]))
    snr = 10 * np.log10(np.sum(outs[0] ** 2) / np.sum((outs[0] - outs[1]) ** 2))
    assert 20 < snr < 200


def test_onnx_streaming_export_runs_without_torch_and_equals_the_offline_model(tmp_path) -> None:
    """hifi-tse export --format onnx-streaming: the torch-free streamer (state in, state out)
    gives the offline causal model's output, for blocks of any size."""
    import subprocess
    import sys

    from hifi_tse.cli import main

    path, model = causal_checkpoint(tmp_path, window_seconds=0.1)
    out = tmp_path / "causal.onnx"
    assert (
        main(["export", "--checkpoint", str(path), "--format", "onnx-streaming", "-o", str(out)])
        == 0
    )
    assert (tmp_path / "causal.enroll.onnx").is_file()
    rng = np.random.default_rng(2)
    mix = (voice(rng, 130.0, 1.3, SR) + voice(rng, 210.0, 1.3, SR)).astype(np.float32)
    ref = voice(rng, 130.0, 1.0, SR)
    np.save(tmp_path / "mix.npy", mix)
    np.save(tmp_path / "ref.npy", ref)
    # A fresh interpreter that refuses to import torch runs the export.
    script = (
        NO_TORCH
        + f"""
import numpy as np
from hifi_tse.infer.onnx_streaming import OnnxStreamer
s = OnnxStreamer({str(out)!r}, threads=1)
s.enroll(np.load({str(tmp_path / "ref.npy")!r}))
mix = np.load({str(tmp_path / "mix.npy")!r})
outs, pos = [], 0
for n in [160, 1, 999, 4000] * 10:
    outs.append(s.process(mix[pos : pos + n])); pos += n
outs.append(s.flush())
np.save({str(tmp_path / "got.npy")!r}, np.concatenate(outs))
"""
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    got = np.load(tmp_path / "got.npy")
    with torch.inference_mode():
        offline = model(torch.from_numpy(mix)[None], torch.from_numpy(ref)[None])[0].numpy()
    assert got.shape == offline.shape
    assert np.abs(got - offline).max() <= 1e-4


def test_onnx_streaming_export_needs_a_finite_attention_window(tmp_path) -> None:
    from hifi_tse.cli import main

    path, _ = causal_checkpoint(tmp_path, window_seconds=0.0)
    args = ["export", "--checkpoint", str(path), "--format", "onnx-streaming"]
    assert main(args + ["-o", str(tmp_path / "c.onnx")]) == 2
    assert not (tmp_path / "c.onnx").exists()


def test_onnx_streamer_refuses_an_offline_export(tiny_onnx) -> None:  # noqa: F811
    from hifi_tse.infer.onnx_streaming import OnnxStreamer

    with pytest.raises(UserError, match="not a hifi-tse ONNX export of format .*streaming"):
        OnnxStreamer(tiny_onnx)


def test_the_shipped_causal_model_streams_as_it_extracts_offline() -> None:
    """models/demo_causal_model.pt: causal with a one-second attention window, 40 ms of
    latency with its default blocks, and its stream equals its offline output."""
    from hifi_tse.demo import ASSETS

    ex = hifi_tse.Extractor.from_checkpoint(ASSETS / "demo_causal_model.pt", threads=1)
    model = ex.model
    assert model.backbone.stages[0].block.attn.causal
    assert model.backbone.stages[0].block.attn.window == 16000 // model.stft.hop_length
    rng = np.random.default_rng(6)
    mix = (voice(rng, 130.0, 1.5, 16000) + voice(rng, 210.0, 1.5, 16000)).astype(np.float32)
    ref = voice(rng, 130.0, 2.0, 16000)
    stream = StreamingExtractor(ex, ex.enroll(ref, 16000))
    block = int(stream.hop * DEFAULT_BLOCK_HOPS)  # the stream CLI's default
    assert 1000 * (stream.latency_samples + block) / 16000 == 40.0
    got = np.concatenate(
        [stream.process(mix[i : i + block]) for i in range(0, mix.size, block)] + [stream.flush()]
    )
    with torch.inference_mode():
        offline = model(torch.from_numpy(mix)[None], torch.from_numpy(ref)[None])[0].numpy()
    assert np.abs(got - offline).max() <= 1e-4
