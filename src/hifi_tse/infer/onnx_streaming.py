"""Real-time extraction with ONNX Runtime alone — no torch import anywhere here.

Runs the pair of graphs ``hifi-tse export --format onnx-streaming`` writes (see
:mod:`hifi_tse.infer.streaming_export`)::

    streamer = OnnxStreamer("causal.onnx", threads=1)   # also loads causal.enroll.onnx
    streamer.enroll(clip)                                # (L,) float32 at the model rate
    out = streamer.process(block)                        # any block size; flush() at the end

The STFT framing and overlap-add are :class:`~hifi_tse.infer.frame_stream.FrameStream`'s,
the same as the PyTorch :class:`~hifi_tse.infer.streaming.StreamingExtractor`'s, so both
equal the offline causal model's output, one FFT window later at most.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hifi_tse.errors import UserError
from hifi_tse.infer.frame_stream import FrameStream
from hifi_tse.infer.onnx_runner import NumpyStft, checked_metadata, open_session
from hifi_tse.speaker.frontend import enrollment_mels

STREAMING_FORMAT = "hifi-tse-onnx-streaming"
META_KEYS = ("sample_rate", "n_fft", "win_length", "hop_length", "window_frames")


def enroll_path(step_path: Path) -> Path:
    """Where the enrollment graph of the step graph ``step_path`` lives: ``NAME.enroll.onnx``."""
    step_path = Path(step_path)
    return step_path.with_name(f"{step_path.stem}.enroll.onnx")


class OnnxStreamer:
    """A streaming ONNX export with its state: ``enroll`` once, then ``process`` blocks."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        path = Path(path)
        self.step_session = open_session(path, threads)
        meta, values = checked_metadata(self.step_session, path, STREAMING_FORMAT, META_KEYS)
        self.path = path
        self.enroll_session = open_session(path.with_name(meta["enroll_graph"]), threads)
        self.sample_rate = values["sample_rate"]
        self.n_fft, self.win_length = values["n_fft"], values["win_length"]
        self.hop = values["hop_length"]
        self.ge2e = meta.get("speaker_embedding", "none") == "ge2e"
        self.cue_names = meta["cues"].split(",") if meta["cues"] else []
        self.state_names = meta["state"].split(",")
        self.stft = NumpyStft(self.n_fft, self.win_length, self.hop)
        shapes = {i.name: i.shape for i in self.step_session.get_inputs()}
        self.initial_state = [np.zeros(shapes[n], dtype=np.float32) for n in self.state_names]
        self.cues: list[np.ndarray] | None = None

    def enroll(self, ref: np.ndarray) -> None:
        """Set the enrollment ``(L_ref,)`` float at the model rate (and start a new stream)."""
        ref = np.ascontiguousarray(ref, dtype=np.float32).reshape(-1)
        if ref.size == 0 or not np.isfinite(ref).all():
            raise UserError("enrollment: expected finite samples, got none or NaN/Inf")
        feeds = {"ref_spec": self.stft.forward(ref[None])}
        if self.ge2e:
            feeds["ref_mels"] = enrollment_mels(ref, self.sample_rate)[None]
        self.cues = self.enroll_session.run(self.cue_names, feeds)
        self.reset()

    def reset(self) -> None:
        """Start a new stream with the same enrollment."""
        self.state = [s.copy() for s in self.initial_state]
        self.frames = FrameStream(self.n_fft, self.win_length, self.hop, self._mask)

    @property
    def latency_samples(self) -> int:
        return self.n_fft

    def _mask(self, spec: np.ndarray) -> np.ndarray:
        feeds = {
            "spec": np.stack([spec.real, spec.imag], axis=-1)[None].astype(np.float32),
            "position": np.array(self.frames.frames, dtype=np.int64),
            **dict(zip(self.cue_names, self.cues)),
            **dict(zip(self.state_names, self.state)),
        }
        mask, *self.state = self.step_session.run(None, feeds)
        return mask[0, ..., 0] + 1j * mask[0, ..., 1]

    def process(self, block: np.ndarray) -> np.ndarray:
        """Feed ``(n,)`` samples at the model rate; returns the output samples now final."""
        if self.cues is None:
            raise UserError("stream: enroll a talker first (OnnxStreamer.enroll)")
        try:
            return self.frames.push(block)
        except ValueError as exc:
            raise UserError(f"stream: {exc}") from None

    def flush(self) -> np.ndarray:
        """End of stream: the rest of the output (the outputs then have the input's length)."""
        if self.cues is None:
            raise UserError("stream: enroll a talker first (OnnxStreamer.enroll)")
        return self.frames.flush()
