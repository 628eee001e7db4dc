"""One training/evaluation example as produced by the mixer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Example:
    """A mixture, its enrollment and its (reverberant) target.

    Attributes:
        mix: ``(L,)`` float32 mixture.
        ref: ``(L_ref,)`` float32 enrollment of the target speaker (another utterance).
        target: ``(L,)`` float32 reverberant target; all zeros when ``target_present`` is
            False.
        target_present: whether the target speaker talks in ``mix`` (TP) or not (TA).
        snr_db: drawn speech-to-noise ratio, dB (``inf`` when no noise was added).
        num_interferers: interfering talkers in ``mix``.
        meta: JSON-able details (speaker / utterance / RIR / noise ids, SIRs, speed factors,
            ``noisy_ref``, phase, step, difficulty) for evaluation breakdowns.
        components: optional ``name -> (L,)`` parts (``speech``, ``noise``, ``interferers``)
            with ``mix == speech + noise``; only kept when the mixer is asked to (tests).
    """

    mix: np.ndarray
    ref: np.ndarray
    target: np.ndarray
    target_present: bool
    snr_db: float
    num_interferers: int
    meta: dict[str, Any]
    components: dict[str, np.ndarray] | None = None

    def to_item(self, index: int) -> dict[str, Any]:
        """The dataset item: NumPy arrays and scalars, collated by ``collate_batch``."""
        return {
            "mix": self.mix,
            "ref": self.ref,
            "target": self.target,
            "target_present": bool(self.target_present),
            "snr_db": float(self.snr_db),
            "num_interferers": int(self.num_interferers),
            "index": int(index),
            "meta": self.meta,
        }
