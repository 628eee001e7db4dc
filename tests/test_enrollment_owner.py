"""An Enrollment belongs to the Extractor that made it: another one refuses it.

Before this rule an enrollment made by the offline model and passed to the causal one ran
the offline model (its ``chunk_fn`` is bound to the model that enrolled it), silently."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hifi_tse.api import ExtractionError, Extractor

MODELS = Path(__file__).resolve().parent.parent / "models"
SR = 16000


@pytest.fixture(scope="module")
def audio() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(2 * SR) / SR
    voice = 0.1 * np.sin(2 * np.pi * 140 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    mix = (voice + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
    return mix, voice.astype(np.float32)


def test_an_enrollment_is_refused_by_another_extractor(one_thread, audio) -> None:
    mix, ref = audio
    offline = Extractor.from_checkpoint(MODELS / "demo_model.pt", threads=1)
    causal = Extractor.from_checkpoint(MODELS / "demo_causal_model.pt", threads=1)
    alice = offline.enroll(ref, SR)
    assert alice.model == offline.source
    with pytest.raises(ExtractionError, match=r"made by the extractor of .*demo_model\.pt") as e:
        causal.extract(mix, SR, alice)
    assert "\n" not in str(e.value) and "enroll again" in str(e.value)
    with pytest.raises(ExtractionError, match="made by the extractor"):
        causal.extract_with_activity(mix, SR, alice)
    # its own enrollment works, and the two models give different outputs: what the foreign
    # enrollment would have hidden
    own = causal.extract(mix, SR, causal.enroll(ref, SR))
    assert not np.allclose(own, offline.extract(mix, SR, alice), atol=1e-4)
    # another extractor of the same file is another model instance: refused too
    again = Extractor.from_checkpoint(MODELS / "demo_model.pt", threads=1)
    with pytest.raises(ExtractionError, match="not by this one"):
        again.extract(mix, SR, alice)
    with pytest.raises(ExtractionError, match="expected the result of Extractor.enroll"):
        causal.extract(mix, SR, ref)  # a bare array is no enrollment
