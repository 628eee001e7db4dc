"""Run an exported hifi-tse ONNX model with ONNX Runtime — no torch import anywhere here.

The exported graph is the generator's *spectral core* (see :mod:`hifi_tse.infer.export`):
``mix_spec (B, F, T, 2)``, ``ref_spec (1, F, S, 2)`` → complex ratio mask ``(B, F, T, 2)``
(real, imaginary last). The STFT and iSTFT around it are computed here in NumPy with exactly
the framing of :class:`hifi_tse.audio.stft.Stft` (periodic Hann window of ``win_length``
centred in ``n_fft``, hop ``hop_length``, zero centre padding, window-square normalised
overlap-add). The model's ``metadata_props`` give the rate, the framing and the chunk and
enrollment lengths used at export; when ``dynamic`` is ``1`` (the usual TorchScript export)
any chunk and enrollment length runs, so results equal PyTorch's; otherwise chunks are
zero-padded and enrollments tiled / cropped to the exported lengths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hifi_tse.errors import UserError
from hifi_tse.infer.frame_stream import hann_window, normalise
from hifi_tse.infer.separate import ChunkFn
from hifi_tse.speaker.frontend import enrollment_mels

ONNX_FORMAT = "hifi-tse-onnx-spectral-core"
META_KEYS = ("sample_rate", "chunk_samples", "ref_samples", "n_fft", "win_length", "hop_length")


def open_session(path: Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session on ``path`` (``threads`` intra-op threads); UserError with
    one line when onnxruntime or the file is missing or the file is no loadable model."""
    if not Path(path).is_file():
        raise UserError(f"{path}: ONNX model not found")
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("--onnx needs onnxruntime (pip install onnxruntime)") from None
    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # ORT raises its own Fail / InvalidGraph / InvalidProtobuf
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise UserError(f"{path}: not a loadable ONNX model ({reason})") from None


def checked_metadata(
    session: Any, path: Path, fmt: str, int_keys: tuple[str, ...]
) -> tuple[dict[str, str], dict[str, int]]:
    """The session's metadata, and its ``int_keys`` as integers; UserError (one line) when
    the file is no hifi-tse export of format ``fmt`` or lacks a key."""
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get("format") != fmt:
        raise UserError(f"{path}: not a hifi-tse ONNX export of format {fmt} (hifi-tse export)")
    try:
        return meta, {k: int(meta[k]) for k in int_keys}
    except (KeyError, ValueError):
        raise UserError(f"{path}: ONNX metadata lacks one of {', '.join(int_keys)}") from None


class NumpyStft:
    """STFT / iSTFT matching ``torch.stft(center=True, pad_mode="constant")`` / ``torch.istft``."""

    def __init__(self, n_fft: int, win_length: int, hop_length: int) -> None:
        self.n_fft, self.hop = n_fft, hop_length
        self.window = hann_window(n_fft, win_length)

    def num_frames(self, length: int) -> int:
        return 1 + length // self.hop

    def forward(self, wav: np.ndarray) -> np.ndarray:
        """``wav (B, L)`` → ``(B, F, T, 2)`` float32 (real, imag)."""
        pad = self.n_fft // 2
        x = np.pad(wav.astype(np.float64), ((0, 0), (pad, pad)))
        frames = self.num_frames(wav.shape[1])
        idx = np.arange(frames)[:, None] * self.hop + np.arange(self.n_fft)[None, :]
        spec = np.fft.rfft(x[:, idx] * self.window, axis=-1)  # (B, T, F)
        out = np.stack([spec.real, spec.imag], axis=-1).transpose(0, 2, 1, 3)
        return np.ascontiguousarray(out, dtype=np.float32)

    def inverse(self, spec: np.ndarray, length: int) -> np.ndarray:
        """``(B, F, T, 2)`` → ``(B, length)`` float32 (window-square normalised overlap-add)."""
        batch, _, frames, _ = spec.shape
        z = spec[..., 0].astype(np.float64) + 1j * spec[..., 1].astype(np.float64)
        frames_td = np.fft.irfft(z.transpose(0, 2, 1), n=self.n_fft, axis=-1) * self.window
        total = self.n_fft + self.hop * (frames - 1)
        out = np.zeros((batch, total))
        env = np.zeros(total)
        for t in range(frames):  # T is a few hundred per chunk; the work per frame is vectorised
            out[:, t * self.hop : t * self.hop + self.n_fft] += frames_td[:, t]
            env[t * self.hop : t * self.hop + self.n_fft] += self.window**2
        start = self.n_fft // 2
        out = normalise(out[:, start : start + length], env[start : start + length])
        if out.shape[1] < length:
            out = np.pad(out, ((0, 0), (0, length - out.shape[1])))
        return out.astype(np.float32)


class OnnxModel:
    """An exported spectral core plus its framing; ``chunk_fn(ref)`` gives a ChunkFn."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        path = Path(path)
        self.session = open_session(path, threads)
        meta, values = checked_metadata(self.session, path, ONNX_FORMAT, META_KEYS)
        self.path = path
        self.sample_rate = values["sample_rate"]
        self.chunk_samples = values["chunk_samples"]
        self.ref_samples = values["ref_samples"]
        self.stft = NumpyStft(values["n_fft"], values["win_length"], values["hop_length"])
        self.dynamic = meta.get("dynamic") == "1"
        # Models with GE2E conditioning take the enrollment's mels as a third input.
        self.ge2e = meta.get("speaker_embedding", "none") == "ge2e"

    def fit_reference(self, ref: np.ndarray) -> np.ndarray:
        """Fixed-shape exports: tile a short enrollment / crop a long one to ``ref_samples``."""
        ref = np.asarray(ref, dtype=np.float32)
        if self.dynamic:
            return ref
        if ref.size < self.ref_samples:
            ref = np.tile(ref, -(-self.ref_samples // ref.size))
        return ref[: self.ref_samples]

    def mask(
        self, mix_spec: np.ndarray, ref_spec: np.ndarray, ref_mels: np.ndarray | None = None
    ) -> np.ndarray:
        """Run the core on ``(B, F, T, 2)`` with ``(1, F, S, 2)`` (and the GE2E mels
        ``(1, T_mel, 40)`` when the model has them) → mask ``(B, F, T, 2)``."""
        refs = {"ref_spec": ref_spec}
        if self.ge2e:
            if ref_mels is None:
                raise ValueError("this model needs the enrollment's GE2E mels")
            refs["ref_mels"] = ref_mels
        if self.dynamic:
            feeds = {k: np.repeat(v, mix_spec.shape[0], axis=0) for k, v in refs.items()}
            return self.session.run(None, {"mix_spec": mix_spec, **feeds})[0]
        rows = [self.session.run(None, {"mix_spec": m[None], **refs})[0] for m in mix_spec]
        return np.concatenate(rows, axis=0)

    def separate_chunks(
        self, chunks: np.ndarray, ref_spec: np.ndarray, ref_mels: np.ndarray | None = None
    ) -> np.ndarray:
        """``(B, n)`` → ``(B, n)``; fixed-shape exports zero-pad short chunks."""
        batch, n = chunks.shape
        width = n if self.dynamic else self.chunk_samples
        if n > width:
            raise ValueError(f"chunk of {n} samples > exported {self.chunk_samples}")
        x = np.zeros((batch, width), dtype=np.float32)
        x[:, :n] = chunks
        spec = self.stft.forward(x)
        m = self.mask(spec, ref_spec, ref_mels)
        re = spec[..., 0] * m[..., 0] - spec[..., 1] * m[..., 1]
        im = spec[..., 0] * m[..., 1] + spec[..., 1] * m[..., 0]
        est = self.stft.inverse(np.stack([re, im], axis=-1), width)
        return est[:, :n]

    def separate_pairs(self, mixtures: np.ndarray, references: np.ndarray) -> np.ndarray:
        """``mixtures (B, n)``, one enrollment per row ``(B, L_ref)`` -> ``(B, n)``."""
        return np.concatenate(
            [self.chunk_fn(ref)(mix[None]) for mix, ref in zip(mixtures, references)]
        )

    def chunk_fn(self, ref: np.ndarray) -> ChunkFn:
        """Bind an enrollment ``(L_ref,)`` at the model rate: returns ``(B, n) -> (B, n)``."""
        fitted = self.fit_reference(ref)
        ref_spec = self.stft.forward(fitted[None])
        ref_mels = enrollment_mels(fitted, self.sample_rate)[None] if self.ge2e else None

        def fn(chunks: np.ndarray) -> np.ndarray:
            return self.separate_chunks(chunks, ref_spec, ref_mels)

        return fn
