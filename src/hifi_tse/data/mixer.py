"""Dynamic mixing: one TP or TA example from packed speech, noise and RIRs.

:func:`mix_example` is a pure function of ``(cfg, sources, rng, phase, step)``: every random
choice is drawn from the ``rng`` passed in, in a fixed order, so the same seed gives the same
example in any process. The recipe (numbers from ``cfg.audio`` / ``cfg.mixing`` and the
constants below):

1. Target speaker and two different utterances of theirs (one for the mixture, one for the
   enrollment). TA (target absent) with probability ``ta_ratio`` in phase >= 2, never in
   phase 1.
   Speakers are equally likely, or in training, with ``synthetic_share`` > 0, drawn so that
   a talker is a synthetic voice with that probability (when the split has both kinds).
2. Each talker (target and 1-3 interferers from other distinct speakers) is rendered alike:
   a random crop of ``segment + RIR length`` samples (before speed perturbation, only that
   slice is read from HDF5; in training, with probability ``dense_target_prob``, the
   target's crop is instead the window of its utterance with the most active speech), speed
   perturbation (training only; one factor per talker, which the enrollment shares), peak
   normalisation to ``PEAK_NORM``,
   convolution with a random RIR (probability ``rir_prob``) and a crop of the last
   ``segment`` samples, so every output sample has its full reverberation history (real
   reverb tails at the segment start). The training target is the reverberant target.
3. Interferers are scaled to a per-interferer SIR drawn from ``sir_db`` relative to the
   target (TA: relative to the first interferer, which keeps its level).
4. A noise clip (looped or cropped to the segment) is added at an SNR drawn from ``snr_db``
   relative to the sum of all speech in the mixture.
5. The enrollment is sped up or down by its talker's factor (a resampled voice is another
   voice: pitch and formants move together, so a target perturbed apart from its enrollment
   would no longer match it), cropped to ``ref_seconds`` and peak-normalised; with probability
   ``noisy_ref_prob_at(step)`` it is reverberated and noised at an SNR drawn from ``REF_SNR_DB``.
6. Training only, with probability ``channel_prob``: the mixture and its target (and the
   other parts, when they are returned) go through one random recording chain
   (data/channel.py), rescaled together to the mixture's RMS before it; the enrollment, with
   the same probability, through a chain of its own, rescaled to its RMS before it.
7. If the mixture peak exceeds ``CLIP_PEAK``, mixture and target are scaled together so the
   mixture peak is ``PEAK_NORM``.

Easy-to-hard curriculum: at ``difficulty_at(step) == 0`` the interferer count is the low end
of ``num_interferers`` and the SNR range is ``easy_snr_db``; both move linearly to the full
recipe as the difficulty reaches 1.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hifi_tse.audio.signal import (
    active_frames,
    activity_frame,
    convolve_valid,
    db_to_power,
    gain_for_ratio,
    loop_to_length,
    mix_at_snr,
    pad_to,
    peak_normalise,
    speed_perturb,
)
from hifi_tse.config import Config
from hifi_tse.data.channel import apply_chain, draw_chain
from hifi_tse.data.example import Example
from hifi_tse.data.store import (
    PackReader,
    load_manifest,
    load_report,
    manifest_path,
    selected_sources,
    speech_source_voices,
)
from hifi_tse.errors import UserError
from hifi_tse.schedules import PHASE_TP_TA, difficulty_at, noisy_ref_prob_at

# Version of what mix_example draws for a given (recipe, sources, rng): bumped with every
# change of its output, so validation caches from older code are rebuilt (the golden hashes
# of tests/test_mixer_golden.py pin each version).
MIXER_FORMAT_VERSION = 1
# Power floor of the SNR/SIR gain computation, dB: keeps a silent source from asking for an
# infinite gain, far below any recorded speech or noise.
MIN_RMS_DB = -90.0
# Every utterance is peak-normalised to this before reverberation, and a mixture or enrollment
# whose peak passes CLIP_PEAK is scaled back to it: headroom below full scale, so no example
# clips when written as fixed-point audio.
PEAK_NORM = 0.9
CLIP_PEAK = 0.95
# Speed-perturbation factors (training only): +-10 % keeps voices natural while each factor
# acts as a new voice.
SPEED_RANGE = (0.9, 1.1)
# SNR range of a noisy enrollment, dB: enrollments are cleaner than the mixtures they select
# from, as a user's enrollment recording is.
REF_SNR_DB = (5.0, 20.0)
# Probability of adding noise to a mixture when the split has noise clips: always. The draw
# stays, as part of the RNG order that is the data contract (tests/test_mixer_golden.py).
NOISE_PROB = 1.0


@dataclass(frozen=True)
class Clip:
    """A packed utterance, noise clip or RIR: where it is and how long."""

    speaker: str  # "source/speaker" for speech, "" otherwise
    uid: str  # "source/utterance id", unique in the corpus
    pack: str
    key: str
    num_samples: int


class Sources:
    """The clips of one split, grouped for sampling, and a lazy per-process pack reader.

    Speakers are ``source/speaker`` strings (two corpora may reuse an id), sorted, each with
    at least two utterances (``prepare`` guarantees it). ``voices`` (``"real"`` or
    ``"synthetic"``) keeps only the speakers of sources with that tag in the prepare report
    (untagged sources count as real recordings), for figures on one kind of voice;
    ``"unseen-source"`` / ``"seen-source"`` keep the real sources held out whole / the
    others (:func:`hifi_tse.data.store.selected_sources`).
    """

    def __init__(
        self, packs_dir: Path, split: str, sample_rate: int, voices: str | None = None
    ) -> None:
        self.packs_dir = Path(packs_dir)
        self.split = split
        self.voices = voices
        report = load_report(self.packs_dir)
        kind_of_source = speech_source_voices(report, voices)
        kept_sources = selected_sources(report, voices)
        if int(report["sample_rate"]) != sample_rate:
            raise UserError(
                f"{self.packs_dir}: packs are at {report['sample_rate']} Hz, the config's "
                f"audio.sample_rate is {sample_rate} Hz (re-run prepare with --sample-rate)"
            )
        by_speaker: dict[str, list[Clip]] = defaultdict(list)
        self.noise: list[Clip] = []
        self.rirs: list[Clip] = []
        for r in load_manifest(self.packs_dir, split):
            uid = f"{r['source']}/{r['utterance']}"
            if r["kind"] == "speech":
                if r["source"] not in kept_sources:
                    continue
                spk = f"{r['source']}/{r['speaker']}"
                by_speaker[spk].append(Clip(spk, uid, r["pack"], r["key"], r["num_samples"]))
            elif r["kind"] == "noise":
                self.noise.append(Clip("", uid, r["pack"], r["key"], r["num_samples"]))
            elif r["kind"] == "rir":
                self.rirs.append(Clip("", uid, r["pack"], r["key"], r["num_samples"]))
        self.speakers: list[str] = sorted(s for s, u in by_speaker.items() if len(u) >= 2)
        self.utterances: list[list[Clip]] = [by_speaker[s] for s in self.speakers]
        # (S,) bool: which speakers are synthetic voices (untagged sources count as real)
        self.is_synthetic = np.array(
            [kind_of_source.get(s.split("/", 1)[0]) == "synthetic" for s in self.speakers]
        )
        if len(self.speakers) < 2:
            which = f"{voices} " if voices else ""
            raise UserError(
                f"{manifest_path(self.packs_dir, split)}: {len(self.speakers)} {which}speaker(s) "
                f"with 2+ utterances; mixing needs at least 2 (use more speakers or other ratios)"
            )
        self.reader = PackReader(self.packs_dir)

    def speaker_probabilities(self, synthetic_share: float) -> np.ndarray | None:
        """P(drawing each speaker) so that a draw is a synthetic voice with probability
        ``synthetic_share`` (uniform within each kind); None (every speaker equally likely)
        when the share is 0 or the split holds only one kind of voice."""
        n_synthetic = int(self.is_synthetic.sum())
        if synthetic_share <= 0.0 or n_synthetic in (0, len(self.speakers)):
            return None
        real_share = 1.0 - synthetic_share
        return np.where(
            self.is_synthetic,
            synthetic_share / n_synthetic,
            real_share / (len(self.speakers) - n_synthetic),
        )


def _read_crop(sources: Sources, clip: Clip, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``length``-sample slice of ``clip`` (all of it when shorter); reads only it."""
    start = int(rng.integers(0, clip.num_samples - length + 1)) if clip.num_samples > length else 0
    return sources.reader.read(clip.pack, clip.key, start, length)


def _read_dense_crop(
    sources: Sources, clip: Clip, length: int, sample_rate: int, rng: np.random.Generator
) -> np.ndarray:
    """The ``length``-sample slice of ``clip`` with the most active speech frames
    (:func:`hifi_tse.audio.signal.active_frames`), ties broken at random; all of it when
    shorter. Reads the whole clip (utterances are seconds long)."""
    if clip.num_samples <= length:
        return sources.reader.read(clip.pack, clip.key, 0, length)
    x = sources.reader.read(clip.pack, clip.key, 0, clip.num_samples)
    frame = activity_frame(sample_rate)
    active = active_frames(x, sample_rate)
    window = length // frame
    last_start = (x.size - length) // frame  # slices start on frame boundaries
    if not active.any() or window < 1 or last_start < 1:
        start = int(rng.integers(0, x.size - length + 1))
        return x[start : start + length]
    counts = np.concatenate([[0], np.cumsum(active)])
    per_start = counts[window : window + last_start + 1] - counts[: last_start + 1]
    best = np.flatnonzero(per_start == per_start.max())
    start = int(best[int(rng.integers(best.size))]) * frame
    return x[start : start + length]


def _render_talker(
    cfg: Config,
    sources: Sources,
    clip: Clip,
    length: int,
    rng: np.random.Generator,
    *,
    factor: float,
    reverb_prob: float,
    dense: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """One talker's ``(length,)`` float32 contribution: crop (``dense``: the window with the
    most active speech, else a uniform one), speed ``factor`` (1 = none), peak-norm, RIR,
    crop."""
    d, sr = cfg.mixing, cfg.audio.sample_rate
    h, rir_id = None, None
    if sources.rirs and rng.random() < reverb_prob:
        rir = sources.rirs[int(rng.integers(len(sources.rirs)))]
        h = sources.reader.read(rir.pack, rir.key, 0, int(round(d.max_rir_seconds * sr)))
        rir_id = rir.uid
    tail = len(h) - 1 if h is not None else 0
    need = length + tail  # samples after speed perturbation: reverb history + segment
    # Before speed perturbation ``factor`` times as many samples are needed; +1 covers the
    # resampler's rounding of the output length.
    raw_length = int(math.ceil(need * factor)) + 1
    raw = (
        _read_dense_crop(sources, clip, raw_length, sr, rng)
        if dense
        else _read_crop(sources, clip, raw_length, rng)
    )
    x = peak_normalise(speed_perturb(raw, factor, sr), PEAK_NORM)
    if len(x) >= need:
        x = x[:need]
    else:
        # Short utterance: zero-pad, preferably starting after the reverb-history region so
        # the whole utterance lands in the kept segment.
        lo = min(tail, need - len(x))
        x = pad_to(x, need, int(rng.integers(lo, need - len(x) + 1)))
    y = convolve_valid(x, h) if h is not None else x
    return y.astype(np.float32, copy=False), {"uid": clip.uid, "speed": factor, "rir": rir_id}


def _noise_segment(
    sources: Sources, length: int, rng: np.random.Generator
) -> tuple[np.ndarray, str]:
    """A ``(length,)`` noise segment: a random crop, or the clip looped from a random phase."""
    clip = sources.noise[int(rng.integers(len(sources.noise)))]
    x = _read_crop(sources, clip, length, rng)
    if len(x) < length:
        x = loop_to_length(x, length, int(rng.integers(len(x))))
    return x, clip.uid


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def _speed_factor(cfg: Config, rng: np.random.Generator, augment: bool) -> float:
    """A talker's speed factor: drawn from ``SPEED_RANGE`` when perturbing, else 1."""
    return float(rng.uniform(*SPEED_RANGE)) if augment and cfg.mixing.speed_perturb else 1.0


@dataclass
class _Scene:
    """Stage 1 of :func:`mix_example`: who talks and which utterances (no audio yet)."""

    target_present: bool
    num_interferers: int
    speakers: np.ndarray  # (1 + num_interferers,) speaker indices, the target first
    target_utterance: int  # index among the target speaker's utterances
    ref_utterance: int
    difficulty: float  # easy-to-hard position, 0..1
    noisy_ref_prob: float


@dataclass
class _Talkers:
    """Stage 2: the target and interferer signals at the segment length, reverberated."""

    target: np.ndarray
    target_info: dict[str, Any]
    target_factor: float  # speed factor of the target talker, shared by the enrollment
    interferers: list[np.ndarray]
    interferer_infos: list[dict[str, Any]]


@dataclass
class _Enrollment:
    """Stage 5: the enrollment clip and how it was degraded."""

    ref: np.ndarray
    info: dict[str, Any]
    noisy: bool
    snr_db: float | None
    noise_id: str | None


def _draw_scene(
    cfg: Config,
    sources: Sources,
    rng: np.random.Generator,
    phase: int,
    step: int | None,
    target_present: bool | None,
    augment: bool,
) -> _Scene:
    d = cfg.mixing
    difficulty = 1.0 if step is None else difficulty_at(step, d)
    p_noisy_ref = d.noisy_ref_prob if step is None else noisy_ref_prob_at(step, d)
    if phase < PHASE_TP_TA:
        if target_present is False:
            raise ValueError("mix_example: target-absent examples are not allowed in phase 1")
        target_present = True
    elif target_present is None:
        target_present = bool(rng.random() >= d.ta_ratio)
    n_lo, n_hi = d.num_interferers
    n_hi_now = n_lo + int(round(difficulty * (n_hi - n_lo)))
    n_int = int(rng.integers(n_lo, n_hi_now + 1))
    if not target_present:
        n_int = max(n_int, 1)  # a TA mixture still has someone talking
    n_int = min(n_int, len(sources.speakers) - 1)
    weights = sources.speaker_probabilities(d.synthetic_share) if augment else None
    if weights is None:
        speakers = rng.choice(len(sources.speakers), size=1 + n_int, replace=False)
    else:
        if np.count_nonzero(weights) < 1 + n_int:
            raise UserError(
                f"mixing.synthetic_share={d.synthetic_share}: {sources.split} holds "
                f"{np.count_nonzero(weights)} speaker(s) of the kind it asks for, a mixture "
                f"needs {1 + n_int}"
            )
        speakers = rng.choice(len(sources.speakers), size=1 + n_int, replace=False, p=weights)
    i_tgt, i_ref = rng.choice(len(sources.utterances[int(speakers[0])]), size=2, replace=False)
    return _Scene(target_present, n_int, speakers, int(i_tgt), int(i_ref), difficulty, p_noisy_ref)


def _render_talkers(
    cfg: Config,
    sources: Sources,
    scene: _Scene,
    rng: np.random.Generator,
    length: int,
    augment: bool,
) -> _Talkers:
    d = cfg.mixing
    # One factor for the target talker, shared by its enrollment (drawn for TA too).
    target_factor = _speed_factor(cfg, rng, augment)
    target = np.zeros(length, dtype=np.float32)
    t_info: dict[str, Any] = {"uid": None, "speed": None, "rir": None}
    if scene.target_present:
        clip = sources.utterances[int(scene.speakers[0])][scene.target_utterance]
        # Drawn only when enabled, so that recipes without it keep their random stream.
        dense = augment and d.dense_target_prob > 0.0 and rng.random() < d.dense_target_prob
        target, t_info = _render_talker(
            cfg,
            sources,
            clip,
            length,
            rng,
            factor=target_factor,
            reverb_prob=d.rir_prob,
            dense=bool(dense),
        )
    interferers, i_infos = [], []
    for s in scene.speakers[1:]:
        utts = sources.utterances[int(s)]
        clip = utts[int(rng.integers(len(utts)))]  # drawn before the talker's speed factor
        y, info = _render_talker(
            cfg,
            sources,
            clip,
            length,
            rng,
            factor=_speed_factor(cfg, rng, augment),
            reverb_prob=d.rir_prob,
        )
        interferers.append(y)
        i_infos.append(info)
    return _Talkers(target, t_info, target_factor, interferers, i_infos)


def _set_interferer_levels(
    cfg: Config, talkers: _Talkers, target_present: bool, rng: np.random.Generator, floor: float
) -> list[float | None]:
    """Scale each interferer to a drawn SIR against the target (TA: against the first
    interferer, which keeps its level); returns the SIRs, dB (None for that anchor)."""
    interferers = talkers.interferers
    anchor = talkers.target if target_present else interferers[0]
    sirs: list[float | None] = []
    for k in range(len(interferers)):
        if not target_present and k == 0:
            sirs.append(None)
            continue
        sir = float(rng.uniform(*cfg.mixing.sir_db))
        interferers[k] = interferers[k] * gain_for_ratio(anchor, interferers[k], sir, floor)
        sirs.append(sir)
    return sirs


def _add_noise(
    cfg: Config,
    sources: Sources,
    speech: np.ndarray,
    difficulty: float,
    rng: np.random.Generator,
    floor: float,
) -> tuple[np.ndarray, np.ndarray, float, str | None]:
    """Noise at an SNR relative to ALL speech in the mixture (TA: the interferer sum):
    ``(mix, noise, snr_db, noise_id)``; no noise gives ``snr_db = inf``.

    SNR_dB = 10 log10(P_speech / P_noise_scaled), with P = mean square over the segment.
    mix_at_snr scales the noise by g = sqrt(P_speech / (P_noise * 10^(SNR_dB / 10))), so the
    realised SNR equals the drawn value exactly (before the clip guard, which scales speech
    and noise together and keeps the ratio).
    """
    d = cfg.mixing
    snr_lo = _lerp(d.easy_snr_db[0], d.snr_db[0], difficulty)
    snr_hi = _lerp(d.easy_snr_db[1], d.snr_db[1], difficulty)
    if sources.noise and rng.random() < NOISE_PROB:
        snr_db = float(rng.uniform(snr_lo, snr_hi))
        clip, noise_id = _noise_segment(sources, len(speech), rng)
        mix, noise = mix_at_snr(speech, clip, snr_db, floor)
        return mix, noise, snr_db, noise_id
    return speech.astype(np.float32, copy=True), np.zeros_like(speech), math.inf, None


def _render_enrollment(
    cfg: Config,
    sources: Sources,
    scene: _Scene,
    target_factor: float,
    rng: np.random.Generator,
    ref_length: int,
    floor: float,
) -> _Enrollment:
    """Another utterance of the target speaker, optionally reverberant and noisy."""
    noisy_ref = bool(rng.random() < scene.noisy_ref_prob)
    clip = sources.utterances[int(scene.speakers[0])][scene.ref_utterance]
    ref, r_info = _render_talker(
        cfg,
        sources,
        clip,
        ref_length,
        rng,
        factor=target_factor,
        reverb_prob=1.0 if noisy_ref else 0.0,
    )
    ref_snr_db, ref_noise_id = None, None
    if noisy_ref and sources.noise:
        ref_snr_db = float(rng.uniform(*REF_SNR_DB))
        ref_noise, ref_noise_id = _noise_segment(sources, ref_length, rng)
        ref, _ = mix_at_snr(ref, ref_noise, ref_snr_db, floor)
    return _Enrollment(_clip_guard(ref), r_info, noisy_ref, ref_snr_db, ref_noise_id)


def _clip_gain(x: np.ndarray) -> float:
    """The gain that brings ``x`` back to a ``PEAK_NORM`` peak when its peak passes
    ``CLIP_PEAK``, else 1."""
    peak = float(np.max(np.abs(x)))
    return PEAK_NORM / peak if peak > CLIP_PEAK else 1.0


def _clip_guard(x: np.ndarray) -> np.ndarray:
    """``x`` scaled by :func:`_clip_gain` (itself when no scaling is needed)."""
    gain = _clip_gain(x)
    return x * gain if gain != 1.0 else x


def _through_channel(
    parts: np.ndarray, prob: float, rng: np.random.Generator, sample_rate: int, floor: float
) -> tuple[np.ndarray, dict[str, object] | None]:
    """With probability ``prob``, ``parts`` (K, L) float32 (row 0 the mixture, or the
    enrollment alone) through one random recording chain, scaled together so row 0 keeps its
    RMS; returns the parts and the chain's facts (None when none was drawn)."""
    if rng.random() >= prob:
        return parts, None
    chain = draw_chain(rng, sample_rate)
    filtered = apply_chain(parts, chain, sample_rate)
    gain = gain_for_ratio(parts[0], filtered[0], 0.0, floor)  # row 0 keeps its power
    return filtered * np.float32(gain), chain.describe()


def _recording_chains(
    cfg: Config,
    parts: np.ndarray,
    enrollment: _Enrollment,
    rng: np.random.Generator,
    channels: dict[str, dict[str, object] | None],
    floor: float,
) -> np.ndarray:
    """Stage 6: ``parts`` (K, L) (the mixture first) through one chain and the enrollment
    through another, each with probability ``channel_prob``; returns the parts, replaces
    ``enrollment.ref`` and records each chain's facts in ``channels`` ("mix", "ref")."""
    prob, sr = cfg.mixing.channel_prob, cfg.audio.sample_rate
    parts, channels["mix"] = _through_channel(parts, prob, rng, sr, floor)
    ref, channels["ref"] = _through_channel(enrollment.ref[None], prob, rng, sr, floor)
    enrollment.ref = _clip_guard(ref[0])
    return parts


def _meta(
    sources: Sources,
    scene: _Scene,
    talkers: _Talkers,
    enrollment: _Enrollment,
    sirs: list[float | None],
    noise: tuple[float, str | None],
    gain: float,
    phase: int,
    step: int | None,
) -> dict[str, Any]:
    """The example's facts (the data contract's ``meta``)."""
    snr_db, noise_id = noise
    i_infos, r_info = talkers.interferer_infos, enrollment.info
    return {
        "target_present": bool(scene.target_present),
        "target_speaker": sources.speakers[int(scene.speakers[0])],
        "target_utterance": talkers.target_info["uid"],
        "ref_utterance": r_info["uid"],
        "interferer_speakers": [sources.speakers[int(s)] for s in scene.speakers[1:]],
        "interferer_utterances": [i["uid"] for i in i_infos],
        "num_interferers": scene.num_interferers,
        "sir_db": sirs,
        "snr_db": None if math.isinf(snr_db) else snr_db,
        "noise_id": noise_id,
        "rir_ids": {
            "target": talkers.target_info["rir"],
            "interferers": [i["rir"] for i in i_infos],
            "ref": r_info["rir"],
        },
        "speed": {
            "target": talkers.target_factor,
            "ref": r_info["speed"],
            "interferers": [i["speed"] for i in i_infos],
        },
        "noisy_ref": enrollment.noisy,
        "ref_snr_db": enrollment.snr_db,
        "ref_noise_id": enrollment.noise_id,
        "gain": gain,
        "phase": int(phase),
        "step": step,
        "difficulty": scene.difficulty,
    }


def mix_example(
    cfg: Config,
    sources: Sources,
    rng: np.random.Generator,
    *,
    phase: int,
    step: int | None,
    target_present: bool | None = None,
    keep_components: bool = False,
    augment: bool = True,
) -> Example:
    """Draw one example (see the module docstring for the recipe).

    The stages run in a fixed order, and their draws from ``rng`` in that order are the
    data contract (pinned by ``tests/test_mixer_golden.py``): the scene, the talkers, the
    interferer levels, the noise, the enrollment, the recording chains (training only), then the
    clip guard.

    Args:
        cfg: full config; ``cfg.audio`` and ``cfg.mixing`` are read.
        sources: clips of the split to mix from.
        rng: the only source of randomness.
        phase: curriculum phase (1 = TP only; >= 2 adds TA with probability ``ta_ratio``).
        step: optimiser step for the noisy-reference ramp and the difficulty curriculum;
            None = the end of both schedules (fixed validation / test sets).
        target_present: force TP (True) or TA (False) instead of drawing it; TA is refused
            in phase 1.
        keep_components: also return ``speech`` / ``noise`` / ``interferers`` parts.
        augment: apply the training-only recipe (speed perturbation, recording chains and
            the ``synthetic_share`` speaker weighting); False for fixed validation / test sets,
            which hold the corpus's voices as recorded and every speaker equally often.

    Returns:
        Example with ``mix`` and ``target`` of ``segment_seconds`` and ``ref`` of
        ``ref_seconds`` (float32, exact lengths).
    """
    sr = cfg.audio.sample_rate
    length = int(round(cfg.audio.segment_seconds * sr))
    floor = db_to_power(MIN_RMS_DB)
    scene = _draw_scene(cfg, sources, rng, phase, step, target_present, augment)
    talkers = _render_talkers(cfg, sources, scene, rng, length, augment)
    sirs = _set_interferer_levels(cfg, talkers, scene.target_present, rng, floor)
    target, interferers = talkers.target, talkers.interferers
    speech = target + np.sum(interferers, axis=0, dtype=np.float32) if interferers else target
    mix, noise, snr_db, noise_id = _add_noise(cfg, sources, speech, scene.difficulty, rng, floor)
    ref_length = int(round(cfg.audio.ref_seconds * sr))
    enrollment = _render_enrollment(
        cfg, sources, scene, talkers.target_factor, rng, ref_length, floor
    )
    # The mixture's signals are filtered and scaled together from here on; the parts besides
    # the mixture and the target only when returned (a chain costs time per row).
    rows = [mix, target, *([speech, noise, *interferers] if keep_components else [])]
    parts = np.stack(rows).astype(np.float32, copy=False)
    channels: dict[str, dict[str, object] | None] = {"mix": None, "ref": None}
    if augment and cfg.mixing.channel_prob > 0.0:
        parts = _recording_chains(cfg, parts, enrollment, rng, channels, floor)
    # Clip guard: scale everything in the mixture together so ratios (SNR, SIR) survive.
    gain = _clip_gain(parts[0])
    if gain != 1.0:
        parts = parts * np.float32(gain)
    mix, target = parts[0], parts[1]
    meta = _meta(sources, scene, talkers, enrollment, sirs, (snr_db, noise_id), gain, phase, step)
    meta["channel"] = channels
    components = None
    if keep_components:  # (K, L) rows: speech, noise, then each interferer
        components = {"speech": parts[2], "noise": parts[3], "interferers": parts[4:]}
    return Example(
        mix=mix.astype(np.float32, copy=False),
        ref=enrollment.ref.astype(np.float32, copy=False),
        target=target.astype(np.float32, copy=False),
        target_present=bool(scene.target_present),
        snr_db=snr_db,
        num_interferers=scene.num_interferers,
        meta=meta,
        components=components,
    )
