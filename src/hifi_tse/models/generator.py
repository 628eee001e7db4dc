"""The HiFi-TSE generator: mixture + enrollment -> target waveform.

    mix (B, L) ─STFT─▶ (B, F, T) ─band-split─▶ (K, B, T, D) ─USEF(ref)─▶ FiLM(ref)
        ─▶ GridNet blocks (re-injection of ref before the listed blocks)
        ─▶ band-merge decoder: complex mask (B, F, T)
        ─× mixture spectrum─▶ iSTFT ─▶ (B, L)
    ref (B, L_ref) ─STFT─▶ the same band-split encoder ─▶ (K, B, S, D)
        [─▶ frozen GE2E embedding (B, 256) ─▶ a second FiLM: model.speaker_embedding]

The mask starts as 1 + 0j and FiLM as the identity, so an
untrained generator returns the mixture: training starts from pass-through rather than from
silence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hifi_tse.audio.stft import Stft
from hifi_tse.config import Config
from hifi_tse.models.band_split import (
    FEATURE_FLOOR_DB,
    BandMergeDecoder,
    BandSplitEncoder,
    band_layout,
)
from hifi_tse.models.conditioning import FiLM, ReferenceAttention, drop_reference
from hifi_tse.models.gridnet import GridNet
from hifi_tse.models.speaker_embedding import GE2EConditioning

# LayerNorm variance floor, (feature units)^2: the usual value, far below the variance of any
# trained feature; a trained model's outputs depend on it, so it is fixed, not set per run.
NORM_EPS = 1e-5


def attention_window_frames(cfg: Config) -> int:
    """``model.attention_window_seconds`` in STFT frames (0 = global; a set window >= 1)."""
    seconds = cfg.model.attention_window_seconds
    if seconds <= 0:
        return 0
    return max(1, round(seconds * cfg.audio.sample_rate / cfg.stft.hop_length))


@dataclass(frozen=True)
class ReferenceCues:
    """What the generator takes from an enrollment, computed once and reused for every
    mixture (:meth:`Generator.reference_cues`): band features ``(K, B, S, D)`` and, with
    ``model.speaker_embedding``, the GE2E mel features ``(B, T_mel, 40)``."""

    features: torch.Tensor
    mels: torch.Tensor | None

    def expand(self, batch: int) -> ReferenceCues:
        """The cues of a batch-1 enrollment repeated over ``batch`` mixtures (no copy)."""
        mels = None if self.mels is None else self.mels.expand(batch, -1, -1)
        return ReferenceCues(self.features.expand(-1, batch, -1, -1), mels)


class Generator(nn.Module):
    """Target speaker extractor ``forward(mix (B, L), ref (B, L_ref)) -> (B, L)`` float32.

    ``L`` and ``L_ref`` are arbitrary (they need not match nor be hop multiples).
    """

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        m = cfg.model
        self.stft = Stft(cfg.stft)
        self.layout = band_layout(cfg.audio.sample_rate, cfg.stft.n_fft, cfg.band_split)
        num_bins = self.stft.num_bins
        bs = cfg.band_split
        self.encoder = BandSplitEncoder(
            self.layout,
            num_bins,
            m.feature_dim,
            NORM_EPS,
            FEATURE_FLOOR_DB if bs.level_features else None,
            FEATURE_FLOOR_DB if bs.bin_shape else None,
            bs.relative_floor_db if bs.relative_floor_db > 0 else None,
        )
        self.usef = ReferenceAttention(m.feature_dim, m.num_heads, NORM_EPS) if m.use_usef else None
        self.film = FiLM(m.feature_dim) if m.use_film else None
        self.backbone = GridNet(
            m.feature_dim,
            m.lstm_hidden,
            m.num_heads,
            m.num_blocks,
            m.reinject_blocks,
            NORM_EPS,
            m.grad_checkpoint,
            attention_window_frames(cfg),
            m.causal,
        )
        self.decoder = BandMergeDecoder(
            self.layout, num_bins, m.feature_dim, m.decoder_hidden, NORM_EPS
        )
        self.speaker_embedding = (
            GE2EConditioning(cfg.audio.sample_rate, m.feature_dim)
            if m.speaker_embedding == "ge2e"
            else None
        )
        self.ref_dropout_prob = m.ref_dropout_prob

    @property
    def num_bands(self) -> int:
        return len(self.layout)

    def encode_reference(self, ref: torch.Tensor) -> torch.Tensor:
        """``ref (B, L_ref)`` -> reference features ``(K, B, S, D)`` (before dropout)."""
        # Encoded in one piece: the encoder's relative floor takes the whole clip's level.
        return self.encoder(self._stft(ref), whole_clip=True)

    def reference_cues(self, ref: torch.Tensor) -> ReferenceCues:
        """``ref (B, L_ref)`` -> the :class:`ReferenceCues` that :meth:`forward` can reuse."""
        mels = None
        if self.speaker_embedding is not None:
            with torch.no_grad():
                mels = self.speaker_embedding.mels(ref)
        return ReferenceCues(self.encode_reference(ref), mels)

    def _stft(self, wav: torch.Tensor) -> torch.Tensor:
        # The STFT and the mask product stay in float32 even under bf16 autocast.
        with torch.autocast(device_type=wav.device.type, enabled=False):
            return self.stft(wav.float())

    def forward(
        self,
        mix: torch.Tensor,
        ref: torch.Tensor | None,
        cues: ReferenceCues | None = None,
    ) -> torch.Tensor:
        """``mix (B, L)``, ``ref (B, L_ref)`` float -> estimate ``(B, L)`` float32.

        ``cues`` (from :meth:`reference_cues`, batch B) replace ``ref``: the enrollment is
        then not encoded again.
        """
        if cues is None:
            if ref is None or mix.dim() != 2 or ref.dim() != 2 or mix.shape[0] != ref.shape[0]:
                raise ValueError(
                    f"Generator expects mix (B, L) and ref (B, L_ref) with the same B, got "
                    f"{tuple(mix.shape)} and {None if ref is None else tuple(ref.shape)}"
                )
            cues = self.reference_cues(ref)
        elif mix.dim() != 2 or cues.features.shape[1] != mix.shape[0]:
            raise ValueError(
                f"Generator expects mix (B, L) and cues of batch B, got {tuple(mix.shape)} "
                f"and features {tuple(cues.features.shape)}"
            )
        length = mix.shape[-1]
        spec = self._stft(mix)  # (B, F, T) complex64
        r = drop_reference(cues.features, self.ref_dropout_prob, self.training)
        x = self.conditioned_features(spec, r, cues.mels)
        x = self.backbone(x, r)
        mask = self.decoder(x)
        with torch.autocast(device_type=mix.device.type, enabled=False):
            return self.stft.inverse(spec * mask, length)

    # The frame-wise parts around the backbone (they see one frame at a time, so a streaming
    # runner calls them on any run of frames).
    def conditioned_features(
        self, spec: torch.Tensor, ref_features: torch.Tensor, mels: torch.Tensor | None
    ) -> torch.Tensor:
        """``spec (B, F, T)`` complex -> band features ``(K, B, T, D)`` after USEF and FiLM."""
        return self.condition(self.encoder(spec), ref_features, mels)

    def condition(
        self, x: torch.Tensor, ref_features: torch.Tensor, mels: torch.Tensor | None
    ) -> torch.Tensor:
        """Mixture features ``(K, B, T, D)`` -> the same after USEF, FiLM and the GE2E FiLM."""
        if self.usef is not None:
            x = self.usef(x, ref_features)
        if self.film is not None:
            x = self.film(x, ref_features)
        if self.speaker_embedding is not None:
            x = self.speaker_embedding.forward_mels(x, mels)
        return x


def build_generator(cfg: Config) -> Generator:
    """The generator described by ``cfg`` (architecture from ``cfg.model`` / stft / bands)."""
    return Generator(cfg)
