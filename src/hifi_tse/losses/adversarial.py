"""LS-GAN losses and feature matching for HiFi-GAN style discriminators.

Discriminator outputs are ``list[tuple[logits, list[feature maps]]]``: one entry per
sub-discriminator (multi-period and multi-scale), as returned by
``hifi_tse.models.discriminator.Discriminators.forward``. Losses are summed over
sub-discriminators (and over layers for feature matching), the HiFi-GAN convention; the
weights ``lambda_adv`` / ``lambda_fm`` live in the config and are applied by ``Objective``.

GAN order (one object, two methods): first ``discriminator_loss`` on outputs computed from
``fake.detach()``, then the generator side on outputs computed from the live ``fake``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

DiscOutputs = list[tuple[Tensor, list[Tensor]]]


@dataclass
class AdversarialInputs:
    """What the generator's adversarial terms need for one step.

    Attributes:
        real_outputs: discriminator outputs on the clean target (no gradient needed).
        fake_outputs: discriminator outputs on the live generator output.
        scale: adversarial ramp multiplier in [0, 1] (``schedules.adv_scale_at``).
    """

    real_outputs: DiscOutputs
    fake_outputs: DiscOutputs
    scale: float


def _check_outputs(real: DiscOutputs, fake: DiscOutputs) -> None:
    if len(real) != len(fake) or not real:
        raise TypeError(
            f"discriminator outputs differ in length or are empty: {len(real)} real, "
            f"{len(fake)} fake sub-discriminators"
        )


def lsgan_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> tuple[Tensor, Tensor]:
    """LS-GAN discriminator terms: ``mean((D(real) - 1)^2)`` and ``mean(D(fake)^2)``."""
    return (real_logits.float() - 1.0).pow(2).mean(), fake_logits.float().pow(2).mean()


def lsgan_generator_loss(fake_logits: Tensor) -> Tensor:
    """LS-GAN generator term ``mean((D(fake) - 1)^2)``: fakes are pushed towards 'real' (1)."""
    return (fake_logits.float() - 1.0).pow(2).mean()


def feature_matching_loss(real_features: list[Tensor], fake_features: list[Tensor]) -> Tensor:
    """Sum over layers of ``mean|f_real - f_fake|``; real features are detached."""
    if len(real_features) != len(fake_features):
        raise TypeError(
            f"feature lists differ in length: {len(real_features)} vs {len(fake_features)}"
        )
    total = torch.zeros((), device=fake_features[0].device) if fake_features else torch.zeros(())
    for fr, ff in zip(real_features, fake_features):
        total = total + (fr.detach().float() - ff.float()).abs().mean()
    return total


class GANLoss:
    """LS-GAN discriminator loss and generator-side adversarial + feature-matching terms."""

    def discriminator_loss(
        self, real_outputs: DiscOutputs, fake_outputs: DiscOutputs
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Discriminator loss, summed over sub-discriminators.

        Args:
            real_outputs: outputs on real audio (target 1).
            fake_outputs: outputs on ``fake.detach()`` (target 0).

        Returns:
            ``(loss, terms)`` with detached scalars ``disc``, ``disc_real``, ``disc_fake``.
        """
        _check_outputs(real_outputs, fake_outputs)
        real_total = fake_total = None
        for (real_logits, _), (fake_logits, _) in zip(real_outputs, fake_outputs):
            r, f = lsgan_discriminator_loss(real_logits, fake_logits)
            real_total = r if real_total is None else real_total + r
            fake_total = f if fake_total is None else fake_total + f
        loss = real_total + fake_total
        terms = {
            "disc": loss.detach(),
            "disc_real": real_total.detach(),
            "disc_fake": fake_total.detach(),
        }
        return loss, terms

    def generator_terms(
        self, real_outputs: DiscOutputs, fake_outputs: DiscOutputs
    ) -> tuple[Tensor, Tensor]:
        """Generator-side ``(adv, fm)`` scalars, each summed over sub-discriminators."""
        _check_outputs(real_outputs, fake_outputs)
        adv = fm = None
        for (_, real_feats), (fake_logits, fake_feats) in zip(real_outputs, fake_outputs):
            a = lsgan_generator_loss(fake_logits)
            f = feature_matching_loss(real_feats, fake_feats)
            adv = a if adv is None else adv + a
            fm = f if fm is None else fm + f
        return adv, fm
