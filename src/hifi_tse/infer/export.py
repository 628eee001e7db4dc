"""Export a generator to ONNX as its *spectral core*, with STFT/iSTFT left to the runner.

Why the core only: ``torch.istft`` exports to a graph ONNX Runtime rejects (a ScatterND with
int32 indices) and the TorchScript exporter has no complex dtype at all. So the graph is::

    mix_spec (B, F, T, 2), ref_spec (B, F, S, 2)  ->  mask (B, F, T, 2)     (real, imag last)

and :mod:`hifi_tse.infer.onnx_runner` wraps it with a NumPy STFT of identical framing.

:class:`SpectralCore` runs the generator's band-split encoder and mask decoder on real
``(..., 2)`` tensors (the same arithmetic as ``BandSplitEncoder.forward`` /
``BandMergeDecoder.forward`` after ``view_as_real`` / before ``view_as_complex``, times the
optional per-frame presence gain), with the
decoder's overlap-add of shared bins written as a matmul with a one-hot matrix: the
exporters turn ``index_add`` with repeated indices into a last-write-wins scatter, which
silently drops the overlap. The conditioning and GridNet modules are called as they are.
Exported with the TorchScript exporter (``dynamo=False``), LSTMs become ONNX LSTM nodes and
attention stays ``scaled_dot_product_attention``, so batch, T and S all stay dynamic; the
chunk and enrollment lengths used at export are recorded in ``metadata_props``
(sample_rate, chunk_samples, ref_samples, n_fft, win_length, hop_length, dynamic).
When that export fails (a future model change), the dynamo exporter is tried with fixed T
and S (it unrolls LSTMs over time).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hifi_tse.config import Config
from hifi_tse.errors import UserError
from hifi_tse.infer.onnx_runner import ONNX_FORMAT, OnnxModel
from hifi_tse.utils import atomic_path

OPSET = 17  # LayerNormalization (17) and everything SDPA decomposes into


def decode_real(dec: nn.Module, x: torch.Tensor, merge: torch.Tensor) -> torch.Tensor:
    """``BandMergeDecoder.forward`` -> mask ``(B, F, T, 2)``; ``merge (K*Wmax, F+1)`` one-hot.

    The overlap-add of shared bins is a one-hot matmul here: ``index_add`` exports wrongly.
    """
    b = dec.bands
    k, batch, frames = x.shape[0], x.shape[1], x.shape[2]
    dim = int(dec.norm_weight.shape[-1])  # a Python int keeps LayerNorm's shape static
    h = nn.functional.layer_norm(x.reshape(k, batch * frames, dim), (dim,), eps=dec.eps)
    h = h * dec.norm_weight + dec.norm_bias
    h = torch.tanh(torch.baddbmm(dec.hidden_bias, h, dec.hidden_weight))  # (K, N, H)
    weight = b.pad_rows(dec.out_weight).transpose(1, 2)  # (K, H, C)
    bias = b.pad_rows(dec.out_bias[:, None]).view(k, 1, b.coef_dim)
    m = torch.baddbmm(bias, h, weight).float()  # (K, N, C)
    m = m.view(k, batch, frames, b.max_width, 2).permute(1, 0, 3, 2, 4)
    m = m.reshape(batch, k * b.max_width, frames, 2)
    full = torch.einsum("bctr,cf->bftr", m, merge)
    return full[:, : b.num_bins] * b.inv_bin_count[None, :, None, None]


class SpectralCore(nn.Module):
    """The generator between STFT and iSTFT, on real tensors.

    ``forward(mix_spec (B, F, T, 2), ref_spec (B, F, S, 2)) -> mask (B, F, T, 2)`` float32;
    the generator's output is ``iSTFT(mix_spec * mask)`` (complex product). Eval mode only
    (no conditioning dropout).
    """

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.g = generator
        bands = generator.decoder.bands
        merge = nn.functional.one_hot(bands.scatter_idx, bands.num_bins + 1).float()
        self.register_buffer("merge", merge, persistent=False)  # (K*Wmax, F+1)

    def forward(
        self, mix_spec: torch.Tensor, ref_spec: torch.Tensor, ref_mels: torch.Tensor | None = None
    ) -> torch.Tensor:
        g = self.g
        x = g.encoder.forward_real(mix_spec)  # (K, B, T, D)
        r = g.encoder.forward_real(ref_spec, whole_clip=True)  # (K, B, S, D)
        x = g.backbone(g.condition(x, r, ref_mels), r)
        return decode_real(g.decoder, x, self.merge)


def _spec(model: nn.Module, wav: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(model.stft(wav)).contiguous()


@torch.no_grad()  # parameters must trace as constants; the caller's grad mode is kept
def export_onnx(
    model: nn.Module,
    cfg: Config,
    out_path: Path,
    chunk_samples: int,
    ref_samples: int,
    step: int | None = None,
) -> dict[str, str]:
    """Export ``model``'s spectral core for ``chunk_samples``-long chunks and a
    ``ref_samples``-long enrollment to ``out_path`` (atomically). Returns the metadata."""
    model = model.eval().cpu()
    core = SpectralCore(model).eval()
    gen = torch.Generator().manual_seed(0)
    mix = _spec(model, torch.randn(2, chunk_samples, generator=gen))
    ref_wav = torch.randn(2, ref_samples, generator=gen)
    inputs: tuple[torch.Tensor, ...] = (mix, _spec(model, ref_wav))
    if model.speaker_embedding is not None:
        inputs += (model.speaker_embedding.mels(ref_wav),)
    meta = {
        "format": ONNX_FORMAT,
        "version": "1",
        "sample_rate": str(cfg.audio.sample_rate),
        "chunk_samples": str(chunk_samples),
        "ref_samples": str(ref_samples),
        "n_fft": str(cfg.stft.n_fft),
        "win_length": str(cfg.stft.win_length),
        "hop_length": str(cfg.stft.hop_length),
        "checkpoint_step": str(step if step is not None else -1),
        "speaker_embedding": cfg.model.speaker_embedding,
    }
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        dynamic = _export(core, inputs, tmp)
        meta["dynamic"] = "1" if dynamic else "0"
        write_metadata(tmp, meta)
    return meta


def write_metadata(path: Path, meta: dict[str, str]) -> None:
    """Replace the ONNX file's ``metadata_props`` with ``meta`` (what the runners read)."""
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """The exporters' warnings, registry notes and prints silenced (their failures are
    turned into one-line errors by the callers)."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _export(core: nn.Module, args: tuple[torch.Tensor, ...], path: Path) -> bool:
    """Export ``core``; returns True when batch, T and S are dynamic (TorchScript exporter),
    False for the fixed-shape dynamo fallback. A third input is the enrollment's GE2E mels."""
    input_names = ["mix_spec", "ref_spec", "ref_mels"][: len(args)]
    names = {"input_names": input_names, "output_names": ["mask"]}
    axes = {
        "mix_spec": {0: "batch", 2: "frames"},
        "ref_spec": {0: "batch", 2: "ref_frames"},
        "ref_mels": {0: "batch", 1: "mel_frames"},
        "mask": {0: "batch", 2: "frames"},
    }
    errors: list[str] = []
    with quiet_exporter():
        try:
            torch.onnx.export(
                core,
                args,
                str(path),
                dynamo=False,
                opset_version=OPSET,
                dynamic_axes={k: v for k, v in axes.items() if k in input_names + ["mask"]},
                **names,
            )
            return True
        except Exception as exc:  # the exporters raise many types; try the other one
            errors.append(f"TorchScript exporter: {type(exc).__name__}: {exc}".splitlines()[0])
        try:
            first = tuple(a[:1] for a in args)
            torch.onnx.export(core, first, str(path), dynamo=True, **names)
            return False
        except Exception as exc:
            errors.append(f"dynamo exporter: {type(exc).__name__}: {exc}".splitlines()[0])
    raise UserError(f"{path}: ONNX export failed ({'; '.join(errors)})")


def verify_export(model: nn.Module, onnx_path: Path, sample_rate: int, seed: int = 0) -> float:
    """Max abs difference between PyTorch and ONNX Runtime on one random chunk (float)."""
    runner = OnnxModel(onnx_path)
    gen = np.random.default_rng(seed)
    mix = (0.1 * gen.standard_normal((1, runner.chunk_samples))).astype(np.float32)
    ref = (0.1 * gen.standard_normal(runner.ref_samples)).astype(np.float32)
    est = runner.chunk_fn(ref)(mix)
    with torch.inference_mode():
        expected = model(torch.from_numpy(mix), torch.from_numpy(ref)[None]).numpy()
    return float(np.abs(est - expected).max())
