"""Real-time extraction: a causal model fed blocks of any size, its state carried between them.

``StreamingExtractor(extractor, enrollment).process(block) -> block`` frames the input as the
offline STFT does (:class:`~hifi_tse.infer.frame_stream.FrameStream`) and runs
:class:`~hifi_tse.infer.streaming_core.StreamingCore` on each run of new frames: the
enrollment's cross-attention keys/values and FiLM parameters are computed once, and the
forward-only time LSTMs' ``(h, c)`` and the causal self-attention's past keys/values are
carried from block to block. So the concatenated output equals the offline causal model's
output on the whole signal, one FFT window (``latency_samples``) later at most.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hifi_tse.errors import UserError
from hifi_tse.infer.frame_stream import FrameStream
from hifi_tse.infer.streaming_core import StreamingCore


class StreamingExtractor:
    """Blocks in, blocks out, for a causal PyTorch model (``model.causal: true``).

    ``process(block)`` takes ``(n,)`` float samples at the model rate (any n, including 0)
    and returns the output samples that became final, ``(m,)`` float32; ``flush()`` ends the
    stream and returns the rest, so that the outputs concatenated have the input's length
    and equal the offline output.
    """

    def __init__(self, extractor: Any, enrollment: Any) -> None:
        model = getattr(extractor, "model", None)
        if model is None:
            raise UserError("streaming needs a PyTorch model (Extractor.from_checkpoint)")
        if not model.backbone.stages[0].block.attn.causal:
            raise UserError(
                f"{extractor.source}: not a causal model (train it with model.causal: true)"
            )
        self.core = StreamingCore(model).eval()
        self.device = extractor.device
        self.bf16 = extractor.precision == "bf16"
        self.sample_rate = extractor.sample_rate
        ref = torch.from_numpy(np.ascontiguousarray(enrollment.waveform, dtype=np.float32))
        ref = ref.to(self.device)[None]
        with torch.inference_mode(), self._autocast():
            spec = torch.view_as_real(model.stft(ref)).contiguous()
            mels = None if model.speaker_embedding is None else model.speaker_embedding.mels(ref)
            self.cues = self.core.enroll(spec, mels)
        self.reset()

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def reset(self) -> None:
        """Start a new stream (same enrollment)."""
        stft = self.core.g.stft
        self.state = self.core.initial_state()
        self.frames = FrameStream(stft.n_fft, stft.win_length, stft.hop_length, self._mask)

    @torch.inference_mode()
    def _mask(self, spec: np.ndarray) -> np.ndarray:
        """Masks of the new frames ``spec (F, Tn)``, carrying the state."""
        x = torch.view_as_real(torch.from_numpy(spec)).to(self.device)[None]
        position = torch.tensor(self.frames.frames, device=self.device)
        with self._autocast():
            mask, *self.state = self.core.step(x, position, *self.cues, *self.state)
        mask = mask[0].float().cpu().numpy()
        return mask[..., 0] + 1j * mask[..., 1]

    @property
    def latency_samples(self) -> int:
        """Algorithmic latency: an input sample's output is final ``n_fft`` samples later."""
        return self.frames.latency_samples

    @property
    def hop(self) -> int:
        return self.frames.hop

    @property
    def received(self) -> int:
        """Input samples received since the stream started."""
        return self.frames.received

    @property
    def emitted(self) -> int:
        """Output samples returned since the stream started."""
        return self.frames.emitted

    def process(self, block: np.ndarray) -> np.ndarray:
        """Feed ``(n,)`` samples at the model rate; returns the output samples now final."""
        try:
            return self.frames.push(block)
        except ValueError as exc:
            raise UserError(f"stream: {exc}") from None

    def flush(self) -> np.ndarray:
        """End of stream: the remaining output (the offline output's tail), after which the
        outputs have the input's length."""
        return self.frames.flush()
