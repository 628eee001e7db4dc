"""Real-time extraction: a causal model fed blocks of any size, its state carried between them.

``StreamingExtractor(extractor, enrollment).process(block) -> block`` runs the generator one
run of STFT frames at a time: the frame-wise parts (band-split encoder, USEF, FiLM, mask
decoder) see only the new frames; the backbone's forward-only time LSTMs carry their
``(h, c)`` and its causal self-attention keeps the keys and values of past frames (the last
``model.attention_window_seconds`` of them, or all); the iSTFT's overlap-add keeps the
frames' unfinished tails. So the concatenated output equals the offline model's output on
the whole signal, delayed by :attr:`StreamingExtractor.latency_samples`.

Framing is that of :class:`hifi_tse.audio.stft.Stft` (centred frames, zero padding): frame
``t`` covers input samples ``[t H - N/2, t H + N/2)`` (hop ``H``, FFT size ``N``). An output
sample is final once no later frame overlaps it, so the algorithmic latency is one FFT
window, ``N`` samples, plus the wait for a whole hop of input.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hifi_tse.errors import UserError
from hifi_tse.infer.onnx_runner import NOLA_TOLERANCE
from hifi_tse.models.attention import _merge_heads


def _envelope(env: torch.Tensor) -> torch.Tensor:
    """The overlap-add normaliser, 1 where no window covers a sample (as torch.istft)."""
    return torch.where(env > NOLA_TOLERANCE, env, 1.0)


class _BackboneState:
    """Per stage: the time LSTM's ``(h, c)`` and the self-attention's cached keys / values."""

    def __init__(self, num_stages: int) -> None:
        self.lstm: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * num_stages
        self.keys: list[torch.Tensor | None] = [None] * num_stages
        self.values: list[torch.Tensor | None] = [None] * num_stages


def _attend(attn: Any, x: torch.Tensor, state: _BackboneState, i: int) -> torch.Tensor:
    """Causal self-attention of new frames ``x (N, Tn, D)`` over the cached and new frames."""
    n, t, d = x.shape
    qkv = attn.qkv(x).view(n, t, 3, attn.heads, d // attn.heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    if state.keys[i] is not None:
        k = torch.cat([state.keys[i], k], dim=2)
        v = torch.cat([state.values[i], v], dim=2)
    past = k.shape[2] - t
    # Query j (absolute position past + j) sees keys at positions <= its own, and with a
    # window only the last `window` before it.
    lag = (past + torch.arange(t, device=x.device))[:, None] - torch.arange(
        k.shape[2], device=x.device
    )[None, :]
    mask = lag >= 0
    if attn.window > 0:
        mask &= lag <= attn.window
        keep = attn.window
        state.keys[i], state.values[i] = k[:, :, -keep:], v[:, :, -keep:]
    else:
        state.keys[i], state.values[i] = k, v
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return attn.out(_merge_heads(y))


def _backbone_step(
    backbone: Any, x: torch.Tensor, ref: torch.Tensor, state: _BackboneState
) -> torch.Tensor:
    """The GridNet stages on new frames ``x (K, B, Tn, D)`` with carried state."""
    for i, stage in enumerate(backbone.stages):
        x = stage.first_half(x, ref)  # re-injection + the across-bands LSTM: frame-wise
        k, b, t, d = x.shape
        block = stage.block
        h = x.reshape(k * b, t, d)
        out, state.lstm[i] = block.inter.lstm(block.inter.norm(h), state.lstm[i])
        h = h + block.inter.proj(out)
        h = h + _attend(block.attn, block.attn_norm(h), state, i)
        x = h.view(k, b, t, d)
    return x


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
        self.model = model
        self.device = extractor.device
        self.bf16 = extractor.precision == "bf16"
        stft = model.stft
        self.n_fft, self.hop = stft.n_fft, stft.hop_length
        # torch.stft centres a short window inside the FFT frame.
        window = torch.zeros(self.n_fft)
        left = (self.n_fft - stft.win_length) // 2
        window[left : left + stft.win_length] = stft.window.cpu()
        self.window = window.to(self.device)
        ref = torch.from_numpy(np.ascontiguousarray(enrollment.waveform, dtype=np.float32))
        with torch.inference_mode():
            self.cues = model.reference_cues(ref.to(self.device)[None])
        self.sample_rate = extractor.sample_rate
        self.reset()

    @property
    def latency_samples(self) -> int:
        """Algorithmic latency: an input sample's output is final ``n_fft`` samples later."""
        return self.n_fft

    def reset(self) -> None:
        """Start a new stream (same enrollment)."""
        self.state = _BackboneState(len(self.model.backbone.stages))
        # Input from signal position -N/2 (the centre padding) not yet consumed by a frame.
        self.pending = np.zeros(self.n_fft // 2, dtype=np.float32)
        self.frames = 0  # frames processed
        self.received = 0  # input samples received
        self.emitted = 0  # output samples returned
        self.ola = torch.zeros(self.n_fft, device=self.device)  # from frame `frames`' start
        self.env = torch.zeros(self.n_fft, device=self.device)

    @torch.inference_mode()
    def _run_frames(self, frames: np.ndarray) -> np.ndarray:
        """Frames ``(Tn, N)`` of input -> finished output samples (overlap-add)."""
        x = torch.from_numpy(frames).to(self.device)
        spec = torch.fft.rfft(x * self.window, dim=-1).T[None]  # (1, F, Tn)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            feats = self.model.conditioned_features(spec, self.cues.features, self.cues.mels)
            feats = _backbone_step(self.model.backbone, feats, self.cues.features, self.state)
            mask = self.model.decoder(feats).to(torch.complex64)  # (1, F, Tn)
        est = torch.fft.irfft((spec * mask)[0].T, n=self.n_fft, dim=-1) * self.window
        t = est.shape[0]
        total = self.n_fft + self.hop * (t - 1)
        num = torch.zeros(total, device=self.device)
        env = torch.zeros(total, device=self.device)
        num[: self.n_fft] += self.ola
        env[: self.n_fft] += self.env
        idx = (torch.arange(t, device=self.device)[:, None] * self.hop) + torch.arange(
            self.n_fft, device=self.device
        )
        num.index_add_(0, idx.reshape(-1), est.reshape(-1))
        env.index_add_(0, idx.reshape(-1), self.window.square().repeat(t))
        done = self.hop * t  # samples before the next frame's start get no more frames
        out = num[:done] / _envelope(env[:done])
        self.ola = num[done : done + self.n_fft].clone()
        self.env = env[done : done + self.n_fft].clone()
        if self.ola.numel() < self.n_fft:
            pad = self.n_fft - self.ola.numel()
            self.ola = F.pad(self.ola, (0, pad))
            self.env = F.pad(self.env, (0, pad))
        self.frames += t
        return out.cpu().numpy()

    def _consume(self, final: bool) -> np.ndarray:
        """Run every frame the pending input completes; return the output now final."""
        n_frames = (
            0
            if self.pending.size < self.n_fft
            else 1 + (self.pending.size - self.n_fft) // self.hop
        )
        if final:  # the offline STFT has 1 + L // H frames
            n_frames = 1 + self.received // self.hop - self.frames
        if n_frames <= 0:
            return np.zeros(0, dtype=np.float32)
        need = (n_frames - 1) * self.hop + self.n_fft
        buf = self.pending
        if buf.size < need:
            buf = np.pad(buf, (0, need - buf.size))
        idx = np.arange(n_frames)[:, None] * self.hop + np.arange(self.n_fft)[None, :]
        out = self._run_frames(np.ascontiguousarray(buf[idx], dtype=np.float32))
        self.pending = self.pending[n_frames * self.hop :]
        # `out` starts at the first processed frame's start, signal position frame*H - N/2;
        # samples before position 0 are the centre padding.
        start = (self.frames - n_frames) * self.hop - self.n_fft // 2
        skip = max(0, self.emitted - start)
        out = out[skip:]
        limit = self.received - self.emitted if final else out.size
        out = out[:limit]
        self.emitted += out.size
        return out.astype(np.float32, copy=False)

    def process(self, block: np.ndarray) -> np.ndarray:
        """Feed ``(n,)`` samples at the model rate; returns the output samples now final."""
        x = np.asarray(block, dtype=np.float32).reshape(-1)
        if not np.isfinite(x).all():
            raise UserError("stream: block contains NaN or Inf samples")
        self.pending = np.concatenate([self.pending, x])
        self.received += x.size
        return self._consume(final=False)

    def flush(self) -> np.ndarray:
        """End of stream: the remaining output (the offline output's tail), after which the
        outputs have the input's length."""
        out = self._consume(final=True)
        left = self.received - self.emitted
        if left > 0:  # the last frames' tails, which no later frame will overlap now
            tail = self.ola[:left] / _envelope(self.env[:left])
            out = np.concatenate([out, tail.cpu().numpy().astype(np.float32)])
            self.emitted = self.received
        return out
