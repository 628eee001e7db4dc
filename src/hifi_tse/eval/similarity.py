"""Speaker similarity of extracted speech: GE2E embeddings' cosine, no clean target needed.

``estimate ↔ enrollment`` says whether the output sounds like the enrolled talker;
``mixture ↔ enrollment`` is the same for the input, so the difference is what extraction
added; ``estimate ↔ target`` (when a clean target exists) checks the output against the
talker's true voice in this mixture. The encoder (:mod:`hifi_tse.speaker.ge2e`) was trained
on thousands of real talkers, so the figures apply to a user's own recordings.
Target-absent outputs are near silence, whose embedding means nothing: they get no score.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from hifi_tse.errors import UserError

LOG = logging.getLogger("hifi_tse.eval")
SIMILARITY_KEYS = ("spk_sim", "spk_sim_mix", "spk_sim_target")


class SpeakerSimilarity:
    """Scores batches of estimates with one frozen GE2E encoder (loaded once)."""

    def __init__(self, device: str = "cpu") -> None:
        from hifi_tse.speaker.ge2e import GE2EEncoder

        self.encoder = GE2EEncoder.from_pretrained(device=device)

    @classmethod
    def try_load(cls, device: str = "cpu") -> SpeakerSimilarity | None:
        """The scorer, or None (with one warning line) when the encoder's weights are missing."""
        try:
            return cls(device)
        except UserError as exc:
            LOG.warning("speaker similarity skipped: %s", exc)
            return None

    def score(
        self,
        estimates: Sequence[np.ndarray],
        mixtures: Sequence[np.ndarray],
        enrollments: Sequence[np.ndarray],
        targets: Sequence[np.ndarray | None],
        sample_rate: int,
    ) -> list[dict[str, float | None]]:
        """Per example ``spk_sim``, ``spk_sim_mix`` and ``spk_sim_target`` (cosines in [-1, 1]).

        All clips are ``(L,)`` float32 at ``sample_rate`` Hz; a target of None (target absent,
        or no clean target in the list) leaves its score None. Estimates of target-absent
        examples are passed as None too and get no scores.
        """
        clips: list[np.ndarray] = []
        slots: list[dict[str, int]] = []
        for est, mix, ref, tgt in zip(estimates, mixtures, enrollments, targets):
            slot: dict[str, int] = {}
            named = (("est", est), ("mix", mix), ("ref", ref), ("tgt", tgt))
            for name, clip in named:
                if clip is not None and np.any(clip):
                    slot[name] = len(clips)
                    clips.append(np.asarray(clip, dtype=np.float32))
            slots.append(slot)
        emb = self.encoder.embed_batch(clips, sample_rate) if clips else np.zeros((0, 1))

        def cos(slot: dict[str, int], a: str, b: str) -> float | None:
            if a not in slot or b not in slot:
                return None
            return float(np.dot(emb[slot[a]], emb[slot[b]]))

        return [
            {
                "spk_sim": cos(slot, "est", "ref"),
                "spk_sim_mix": cos(slot, "mix", "ref"),
                "spk_sim_target": cos(slot, "est", "tgt"),
            }
            for slot in slots
        ]
