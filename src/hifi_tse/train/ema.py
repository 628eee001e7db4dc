"""Exponential moving average of the generator's weights.

The EMA copy is a full module (same class, same state-dict keys as the trained model), so
validation, the best and the final checkpoints can use it directly.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps ``shadow = decay * shadow + (1 - decay) * param`` after every optimiser step.

    Floating-point buffers are averaged like parameters; integer buffers (counters) are copied.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current weights of ``model`` (the unwrapped generator) into the average."""
        ema_state = self.module.state_dict()
        float_ema, float_new = [], []
        for name, value in model.state_dict().items():
            shadow = ema_state[name]
            if shadow.is_floating_point():
                float_ema.append(shadow)
                float_new.append(value.detach())
            else:
                shadow.copy_(value)
        if float_ema:
            # shadow += (1 - decay) * (new - shadow)
            torch._foreach_lerp_(float_ema, float_new, 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
