"""Auxiliary speaker classifier on the enrollment's encoder features (training only).

Target speaker extraction fails first by confusing voices: on a target-absent mixture the
model has to notice that no voice in it matches the enrollment. The separation objective
teaches that only through whole mixtures; a classifier that names the enrolled speaker
among the training speakers gives the shared band-split encoder a direct, dense signal to
keep speaker identity in its features (as SpEx+ does with its speaker encoder). The logits
are only used by the training objective; inference never computes them.
"""

from __future__ import annotations

import torch
from torch import nn

from hifi_tse.models.conditioning import mean_std_pool


class SpeakerClassifier(nn.Module):
    """``(K, B, S, D)`` reference features -> ``(B, classes)`` logits.

    Statistics pooling (as in x-vector speaker embeddings): each band's features are
    summarised by their mean and standard deviation over the reference frames. The standard
    deviation matters here: the encoder is linear in the per-frame normalised complex
    spectrum, whose phase turns from frame to frame, so the time mean alone keeps little
    beyond the level features. The bands are laid side by side and a rank-``D`` linear map
    (two linear layers, ``2 K D -> D -> classes``) scores every training speaker; the
    bottleneck keeps the head small when there are many bands and many speakers.
    """

    def __init__(self, num_bands: int, dim: int, classes: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.norm = nn.LayerNorm(2 * num_bands * dim, eps=eps)
        self.embed = nn.Linear(2 * num_bands * dim, dim)
        self.out = nn.Linear(dim, classes)

    def forward(self, ref_features: torch.Tensor) -> torch.Tensor:
        """``ref_features (K, B, S, D)`` -> logits ``(B, classes)`` float32."""
        pooled = mean_std_pool(ref_features, self.eps)  # (K, B, 2D)
        pooled = pooled.transpose(0, 1).flatten(1)  # (B, 2 K D)
        return self.out(self.embed(self.norm(pooled))).float()
