"""Frozen GE2E speaker embedding of the enrollment as extra conditioning.

``model.speaker_embedding: ge2e``:

    ref (B, L_ref) at the model rate ─[decimate to 16 kHz]─▶ volume floor ─▶ power mel
        (25 ms / 10 ms, 40 bands) ─▶ GE2E LSTM (frozen) ─▶ e (B, 256), unit norm
        ─▶ Linear (zero-initialised) ─▶ (gamma, beta) ─▶ x * (1 + gamma) + beta

The encoder was trained on thousands of real talkers (resemblyzer's weights, loaded with
:mod:`hifi_tse.speaker.ge2e`), so it brings a notion of "same voice" that a model trained on
a few talkers cannot learn. Its weights are part of the generator's state (saved in
checkpoints and ONNX exports) but never trained: only the projection learns. The projection
starts at zero, so switching the option on for a trained model (``--init-from``) starts from
exactly that model.

The whole enrollment goes through the LSTM in one sequence (the package averages 1.6 s
windows; for the 2-4 s enrollments of training the two agree closely), so the path stays
one static graph for ONNX.
"""

from __future__ import annotations

import torch
from torch import nn

from hifi_tse.models.conditioning import FiLM
from hifi_tse.speaker import ge2e
from hifi_tse.speaker.frontend import decimation_filter


class GE2EConditioning(nn.Module):
    """FiLM from a frozen GE2E embedding of the enrollment waveform.

    Args:
        sample_rate: the model's rate, Hz; a multiple of 16000.
        dim: feature width D of the band features it modulates.
    """

    def __init__(self, sample_rate: int, dim: int) -> None:
        super().__init__()
        if sample_rate % ge2e.SAMPLE_RATE:
            raise ValueError(
                f"model.speaker_embedding=ge2e: audio.sample_rate must be a multiple of "
                f"{ge2e.SAMPLE_RATE} Hz, got {sample_rate}"
            )
        self.factor = sample_rate // ge2e.SAMPLE_RATE
        self.encoder = ge2e.GE2EEncoder()
        self.encoder.requires_grad_(False)
        # 1 once pretrained weights are in (from the package or a checkpoint): a model must
        # never train or run on a randomly initialised speaker encoder.
        self.register_buffer("pretrained", torch.zeros(()))
        if self.factor > 1:
            taps = torch.from_numpy(decimation_filter(self.factor)).view(1, 1, -1)
            self.register_buffer("decimator", taps, persistent=False)
        self.proj = nn.Linear(ge2e.EMBED_SIZE, 2 * dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def load_pretrained(self) -> None:
        """Load resemblyzer's weights (UserError with one line when they are not installed)."""
        self.encoder.load_state_dict(ge2e.load_weights(ge2e.default_weights_path()))
        self.pretrained.fill_(1.0)

    def train(self, mode: bool = True) -> GE2EConditioning:
        super().train(mode)
        self.encoder.eval()  # frozen: always in inference behaviour
        return self

    def embed(self, ref: torch.Tensor) -> torch.Tensor:
        """``ref (B, L_ref)`` float at the model rate -> GE2E embeddings ``(B, 256)``."""
        return self.encoder.embed_partials(self.mels(ref))

    def mels(self, ref: torch.Tensor) -> torch.Tensor:
        """``ref (B, L_ref)`` at the model rate -> the encoder's power mels ``(B, T, 40)``
        (:func:`hifi_tse.speaker.frontend.enrollment_mels` is the NumPy twin)."""
        x = ref.float()
        if self.factor > 1:
            pad = self.decimator.shape[-1] // 2
            x = nn.functional.conv1d(x[:, None], self.decimator, stride=self.factor, padding=pad)[
                :, 0
            ]
        # The encoder was trained on audio raised to -30 dBFS (never lowered).
        rms = x.square().mean(dim=1, keepdim=True).clamp_min(1e-12).sqrt()
        target = 10.0 ** (ge2e.TARGET_DBFS / 20.0)
        x = x * torch.clamp(target / rms, min=1.0)
        spec = torch.stft(
            x,
            n_fft=ge2e.N_FFT,
            hop_length=ge2e.HOP,
            win_length=ge2e.N_FFT,
            window=self.encoder.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()  # (B, F, T)
        return torch.matmul(self.encoder.mel_basis, power).transpose(1, 2)  # (B, T, 40)

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """``x (K, B, T, D)`` band features, ``ref (B, L_ref)`` waveform -> ``(K, B, T, D)``."""
        with torch.no_grad(), torch.autocast(device_type=ref.device.type, enabled=False):
            mels = self.mels(ref)
        return self.forward_mels(x, mels)

    def forward_mels(self, x: torch.Tensor, mels: torch.Tensor) -> torch.Tensor:
        """As :meth:`forward` from the enrollment's mels ``(B, T_mel, 40)`` (the ONNX graph's
        input: its STFT runs outside the graph, as the generator's does)."""
        return FiLM.modulate(x, self.params(mels))

    def params(self, mels: torch.Tensor) -> torch.Tensor:
        """The enrollment's mels ``(B, T_mel, 40)`` -> ``(gamma, beta)`` side by side,
        ``(1, B, 1, 2D)`` (they broadcast over bands and frames)."""
        with torch.no_grad(), torch.autocast(device_type=mels.device.type, enabled=False):
            emb = self.encoder.embed_partials(mels.float())
        return self.proj(emb.to(self.proj.weight.dtype))[None, :, None, :]
