"""Export a causal generator's streaming form to ONNX: state in, state out.

Two graphs, both from :class:`~hifi_tse.infer.streaming_core.StreamingCore`:

- ``NAME.enroll.onnx``: ``ref_spec (1, F, S, 2)`` (+ ``ref_mels (1, T_mel, 40)`` with GE2E
  conditioning) -> the cues (``StreamingCore.cue_names``), once per enrollment;
- ``NAME.onnx``: ``spec (1, F, Tn, 2)``, ``position`` (int64, the first new frame's index in
  the stream), the cues and the state (``StreamingCore.state_names``) -> ``mask (1, F, Tn,
  2)`` and the next state (the same names with ``next_`` in front).

Tn (frames per call) and S stay dynamic. The self-attention cache has a fixed size, so the
model needs a finite ``model.attention_window_seconds``. :mod:`hifi_tse.infer.onnx_streaming`
runs the pair without torch; its STFT framing and overlap-add are the PyTorch streamer's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from hifi_tse.config import Config
from hifi_tse.errors import UserError
from hifi_tse.infer.export import OPSET, quiet_exporter, write_metadata
from hifi_tse.infer.onnx_streaming import STREAMING_FORMAT, enroll_path
from hifi_tse.infer.streaming_core import StreamingCore
from hifi_tse.utils import atomic_path


class _Enroll(nn.Module):
    def __init__(self, core: StreamingCore) -> None:
        super().__init__()
        self.core = core

    def forward(self, ref_spec: torch.Tensor, *mels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.core.enroll(ref_spec, mels[0] if mels else None))


class _Step(nn.Module):
    def __init__(self, core: StreamingCore) -> None:
        super().__init__()
        self.core = core

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.core.step(*args)


def _export(module: nn.Module, args: tuple, path: Path, inputs: list, outputs: list, axes: dict):
    with quiet_exporter():
        try:
            torch.onnx.export(
                module,
                args,
                str(path),
                dynamo=False,
                opset_version=OPSET,
                input_names=inputs,
                output_names=outputs,
                dynamic_axes=axes,
            )
        except Exception as exc:  # the exporter raises many types
            first = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise UserError(f"{path}: streaming ONNX export failed ({first})") from None


@torch.no_grad()
def export_streaming_onnx(
    model: nn.Module, cfg: Config, out_path: Path, step: int | None = None
) -> dict[str, str]:
    """Write the step graph to ``out_path`` and the enrollment graph beside it (atomically
    each). Returns the metadata."""
    model = model.eval().cpu()
    core = StreamingCore(model, for_export=True).eval()
    if core.window <= 0:
        raise UserError(
            "streaming ONNX export needs a finite model.attention_window_seconds (the "
            "self-attention cache has a fixed size); this model attends to all past frames"
        )
    gen = torch.Generator().manual_seed(0)
    ref_wav = 0.1 * torch.randn(1, cfg.stft.n_fft * 4, generator=gen)
    ref_spec = torch.view_as_real(model.stft(ref_wav)).contiguous()
    mels = (model.speaker_embedding.mels(ref_wav),) if model.speaker_embedding else ()
    cues = core.enroll(ref_spec, mels[0] if mels else None)
    cue_names, state_names = core.cue_names(), core.state_names()
    meta = {
        "format": STREAMING_FORMAT,
        "version": "1",
        "sample_rate": str(cfg.audio.sample_rate),
        "n_fft": str(cfg.stft.n_fft),
        "win_length": str(cfg.stft.win_length),
        "hop_length": str(cfg.stft.hop_length),
        "window_frames": str(core.window),
        "checkpoint_step": str(step if step is not None else -1),
        "speaker_embedding": cfg.model.speaker_embedding,
        "cues": ",".join(cue_names),
        "state": ",".join(state_names),
    }
    out_path = Path(out_path)
    ref_inputs = ["ref_spec"] + (["ref_mels"] if mels else [])
    ref_axes = {"ref_spec": {2: "ref_frames"}, "ref_mels": {1: "mel_frames"}}
    with atomic_path(enroll_path(out_path)) as tmp:
        _export(
            _Enroll(core), (ref_spec, *mels), tmp, ref_inputs, cue_names,
            {k: v for k, v in ref_axes.items() if k in ref_inputs} | _cue_axes(cue_names),
        )  # fmt: skip
        write_metadata(tmp, meta)
    spec = torch.view_as_real(model.stft(ref_wav)[..., :3]).contiguous()
    position = torch.tensor(5, dtype=torch.int64)
    args = (spec, position, *cues, *core.initial_state())
    inputs = ["spec", "position", *cue_names, *state_names]
    outputs = ["mask", *(f"next_{n}" for n in state_names)]
    axes = {"spec": {2: "frames"}, "mask": {2: "frames"}} | _cue_axes(cue_names)
    with atomic_path(out_path) as tmp:
        _export(_Step(core), args, tmp, inputs, outputs, axes)
        write_metadata(tmp, meta | {"enroll_graph": enroll_path(out_path).name})
    return meta


def _cue_axes(names: list[str]) -> dict[str, dict[int, str]]:
    """The enrollment's length is free: keys and values ``(K, heads, S, d)``."""
    return {n: {2: "ref_frames"} for n in names if n.endswith(("_keys", "_values"))}


def verify_streaming_export(model: nn.Module, path: Path, seconds: float = 1.0) -> float:
    """Max abs difference between the ONNX streamer (blocks of a third of a hop) and the
    offline PyTorch model on a random signal (float)."""
    from hifi_tse.infer.onnx_streaming import OnnxStreamer

    streamer = OnnxStreamer(path)
    rng = np.random.default_rng(0)
    mix = (0.1 * rng.standard_normal(int(seconds * streamer.sample_rate))).astype(np.float32)
    ref = (0.1 * rng.standard_normal(int(seconds * streamer.sample_rate))).astype(np.float32)
    streamer.enroll(ref)
    block = max(1, streamer.hop // 3)
    got = np.concatenate(
        [streamer.process(mix[i : i + block]) for i in range(0, mix.size, block)]
        + [streamer.flush()]
    )
    with torch.inference_mode():
        want = model(torch.from_numpy(mix)[None], torch.from_numpy(ref)[None])[0].numpy()
    return float(np.abs(got - want).max())
