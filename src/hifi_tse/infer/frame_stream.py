"""Blocks of samples in, finished samples out: the STFT framing and overlap-add of streaming.

:class:`FrameStream` cuts the input into the frames of :class:`hifi_tse.audio.stft.Stft`
(centred frames with zero padding: frame ``t`` covers input samples ``[t H - N/2, t H + N/2)``,
hop ``H``, FFT size ``N``), hands each run of new spectra to a *mask function* that carries
whatever state the model needs, and overlap-adds the masked frames. An output sample is
final once no later frame overlaps it, so the concatenated output equals the offline
``iSTFT(STFT(x) * mask)`` of the whole signal, ``N`` samples (one FFT window) later at most.

NumPy only: the PyTorch streamer and the torch-free ONNX streamer share it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# Overlap-add envelope below this counts as empty (torch.istft's NOLA tolerance).
NOLA_TOLERANCE = 1e-11
# A stream's default block, in hops: frames run once per hop, so a shorter block buys
# latency (the output of a frame leaves once its block is in), not work.
DEFAULT_BLOCK_HOPS = 0.5

MaskFn = Callable[[np.ndarray], np.ndarray]
"""``spec (F, Tn) complex64`` of new frames -> complex mask ``(F, Tn)``, in frame order."""


def hann_window(n_fft: int, win_length: int) -> np.ndarray:
    """The periodic Hann window of ``win_length`` centred in ``n_fft`` (as torch.stft pads
    a short window), ``(n_fft,)`` float64."""
    n = np.arange(win_length)
    window = np.zeros(n_fft, dtype=np.float64)
    left = (n_fft - win_length) // 2
    window[left : left + win_length] = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / win_length)
    return window


def normalise(num: np.ndarray, env: np.ndarray) -> np.ndarray:
    """Overlap-add sum / window-square envelope, 1 where no window covers a sample."""
    return num / np.where(env > NOLA_TOLERANCE, env, 1.0)


class FrameStream:
    """Streaming STFT -> mask -> iSTFT for one signal; see the module docstring.

    ``push(block)`` takes ``(n,)`` samples (any n, including 0) and returns the output
    samples that became final, ``(m,)`` float32; ``flush()`` ends the signal and returns the
    rest, so that all outputs together have the input's length.
    """

    def __init__(self, n_fft: int, win_length: int, hop: int, mask_fn: MaskFn) -> None:
        self.n_fft, self.hop = n_fft, hop
        self.window = hann_window(n_fft, win_length)
        self.mask_fn = mask_fn
        # Input from signal position -N/2 (the centre padding) not yet consumed by a frame.
        self.pending = np.zeros(n_fft // 2, dtype=np.float64)
        self.frames = 0  # frames processed
        self.received = 0  # input samples received
        self.emitted = 0  # output samples returned
        self.ola = np.zeros(n_fft)  # overlap-add sum from frame `frames`' start on
        self.env = np.zeros(n_fft)

    @property
    def latency_samples(self) -> int:
        """Algorithmic latency: an input sample's output is final at most ``n_fft`` samples
        later (plus the wait for the block that completes its last frame)."""
        return self.n_fft

    def _run_frames(self, frames: np.ndarray) -> np.ndarray:
        """Frames ``(Tn, N)`` of input -> the output samples they finish (overlap-add)."""
        spec = np.fft.rfft(frames * self.window, axis=-1).T.astype(np.complex64)  # (F, Tn)
        masked = spec * np.asarray(self.mask_fn(spec))
        est = np.fft.irfft(masked.T, n=self.n_fft, axis=-1) * self.window  # (Tn, N)
        t = est.shape[0]
        total = self.n_fft + self.hop * (t - 1)
        num = np.zeros(total)
        env = np.zeros(total)
        num[: self.n_fft] += self.ola
        env[: self.n_fft] += self.env
        idx = np.arange(t)[:, None] * self.hop + np.arange(self.n_fft)[None, :]
        np.add.at(num, idx, est)
        np.add.at(env, idx, np.broadcast_to(self.window**2, est.shape))
        done = self.hop * t  # samples before the next frame's start get no more frames
        self.ola = np.zeros(self.n_fft)
        self.env = np.zeros(self.n_fft)
        rest = num[done : done + self.n_fft]
        self.ola[: rest.size] = rest
        self.env[: rest.size] = env[done : done + self.n_fft]
        self.frames += t
        return normalise(num[:done], env[:done])

    def _consume(self, final: bool) -> np.ndarray:
        """Run every frame the pending input completes; return the output now final."""
        if final:  # the offline STFT has 1 + L // H frames
            n_frames = 1 + self.received // self.hop - self.frames
        elif self.pending.size < self.n_fft:
            n_frames = 0
        else:
            n_frames = 1 + (self.pending.size - self.n_fft) // self.hop
        if n_frames <= 0:
            return np.zeros(0, dtype=np.float32)
        need = (n_frames - 1) * self.hop + self.n_fft
        buf = self.pending
        if buf.size < need:
            buf = np.pad(buf, (0, need - buf.size))
        idx = np.arange(n_frames)[:, None] * self.hop + np.arange(self.n_fft)[None, :]
        out = self._run_frames(buf[idx])
        self.pending = self.pending[n_frames * self.hop :]
        # `out` starts at the first processed frame's start, signal position frame*H - N/2;
        # samples before position 0 are the centre padding.
        start = (self.frames - n_frames) * self.hop - self.n_fft // 2
        out = out[max(0, self.emitted - start) :]
        if final:
            out = out[: self.received - self.emitted]
        self.emitted += out.size
        return out.astype(np.float32)

    def push(self, block: np.ndarray) -> np.ndarray:
        """Feed ``(n,)`` samples; returns the output samples now final, ``(m,)`` float32."""
        x = np.asarray(block, dtype=np.float32).reshape(-1)
        if not np.isfinite(x).all():
            raise ValueError("block contains NaN or Inf samples")
        self.pending = np.concatenate([self.pending, x.astype(np.float64)])
        self.received += x.size
        return self._consume(final=False)

    def flush(self) -> np.ndarray:
        """End of signal: the remaining output, after which the outputs have the input's
        length."""
        out = self._consume(final=True)
        left = self.received - self.emitted
        if left > 0:  # the last frames' tails, which no later frame will overlap now
            tail = normalise(self.ola[:left], self.env[:left]).astype(np.float32)
            out = np.concatenate([out, tail])
            self.emitted = self.received
        return out
