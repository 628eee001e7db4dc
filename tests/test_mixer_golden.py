"""Golden hashes of mixer output: the data contract (the RNG call order) pinned.

Any change to what :func:`hifi_tse.data.mixer.mix_example` draws or computes changes these
hashes. When that is intended, bump :data:`hifi_tse.data.mixer.MIXER_FORMAT_VERSION` (so
validation caches built by the old code are not reused) and update the hashes here.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from hifi_tse.config import load_config
from hifi_tse.data.datasets import TRAIN_STREAM, example_rng
from hifi_tse.data.mixer import MIXER_FORMAT_VERSION, Sources, mix_example

# (seed, index, target present, augment, step) -> sha1 of the rounded example.
CASES = [
    (0, 0, True, True, 0),
    (0, 1, False, True, 400),
    (1, 2, True, True, None),
    (1, 3, False, False, None),
    (2, 4, True, False, None),
    (2, 5, True, True, 50),
]
GOLDEN = {
    (0, 0): "81df173820bf347384f9172a06d398f5bdd24d34",
    (0, 1): "a896400c6006362c1d3fc62071c7c273323ca510",
    (1, 2): "b6686acb89a179704338576d3a91277fb1300b90",
    (1, 3): "3875fac1604fbfd7b70de6a80896779a1d0568a2",
    (2, 4): "a1a5f6afadb090dffb55ed6ad544b1177b5f325f",
    (2, 5): "63773b0789e744b6c6cfc089553eb5372cb3555a",
}
MIXER_VERSION_OF_GOLDEN = 1


def example_digest(example) -> str:
    """sha1 of mix, enrollment and target rounded to 1e-5 full scale, and the draw's facts."""
    h = hashlib.sha1()
    for x in (example.mix, example.ref, example.target):
        h.update(np.round(np.asarray(x, dtype=np.float64) * 1e5).astype(np.int64).tobytes())
    meta = example.meta
    keys = ("target_speaker", "interferer_speakers", "num_interferers", "noise_id", "rir_ids",
            "noisy_ref", "target_present")  # fmt: skip
    facts = {k: meta[k] for k in keys}
    facts["snr"] = None if meta["snr_db"] is None else round(meta["snr_db"], 4)
    facts["sir"] = [None if s is None else round(s, 4) for s in meta["sir_db"]]
    facts["speed"] = {k: v if not isinstance(v, float) else round(v, 6)
                      for k, v in meta["speed"].items() if k != "interferers"}  # fmt: skip
    h.update(json.dumps(facts, sort_keys=True).encode())
    return h.hexdigest()


def golden_config():
    from eval_fixtures import TINY

    cfg = load_config(TINY)
    d = cfg.mixing
    # Every augmentation on: speed perturbation, reverberation, noise, noisy enrollments,
    # the easy-to-hard curriculum and its ramps.
    d.speed_perturb, d.rir_prob, d.noisy_ref_prob = True, 0.8, 0.6  # noise: always
    d.easy_steps, d.noisy_ref_ramp = 200, [0, 300]
    return cfg


def digests(packs) -> dict[tuple[int, int], str]:
    cfg = golden_config()
    sources = Sources(packs, "train", cfg.audio.sample_rate)
    out = {}
    for seed, index, present, augment, step in CASES:
        rng = example_rng(seed, TRAIN_STREAM, 0, index)
        ex = mix_example(cfg, sources, rng, phase=2, step=step, target_present=present,
                         augment=augment)  # fmt: skip
        out[(seed, index)] = example_digest(ex)
    return out


def test_mixer_output_matches_the_golden_hashes(tiny_packs) -> None:
    assert MIXER_FORMAT_VERSION == MIXER_VERSION_OF_GOLDEN, (
        "the mixer format version changed: regenerate GOLDEN for the new examples"
    )
    got = digests(tiny_packs)
    assert got == GOLDEN, f"mixer output changed: {got}"


def test_golden_cases_cover_tp_ta_and_every_augmentation(tiny_packs) -> None:
    cfg = golden_config()
    sources = Sources(tiny_packs, "train", cfg.audio.sample_rate)
    seen = {"ta": False, "speed": False, "rir": False, "noise": False, "noisy_ref": False}
    for seed, index, present, augment, step in CASES:
        rng = example_rng(seed, TRAIN_STREAM, 0, index)
        meta = mix_example(cfg, sources, rng, phase=2, step=step, target_present=present,
                           augment=augment).meta  # fmt: skip
        seen["ta"] |= not meta["target_present"]
        seen["speed"] |= meta["speed"]["target"] != 1.0
        seen["rir"] |= any(meta["rir_ids"]["interferers"]) or bool(meta["rir_ids"]["target"])
        seen["noise"] |= meta["noise_id"] is not None
        seen["noisy_ref"] |= meta["noisy_ref"]
    assert all(seen.values()), seen


if __name__ == "__main__":  # regenerate: python tests/test_mixer_golden.py PACKS_DIR
    import sys
    from pathlib import Path

    print(json.dumps({f"{k[0]},{k[1]}": v for k, v in digests(Path(sys.argv[1])).items()}))
