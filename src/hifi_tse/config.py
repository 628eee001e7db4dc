"""Typed configuration: schema, YAML loading, ``--set`` overrides and validation.

Every tunable number of the toolkit lives here; numbers that are fixed by design are named
constants in the module that uses them. Sections are grouped by who reads them: the model
group (``audio``, ``stft``, ``band_split``, ``model``), ``objective`` (the loss),
``mixing`` (mixer, datasets, DataLoader), ``preparation`` (``hifi-tse prepare`` and
``make-demo-corpus``), ``train``, ``gan`` and ``health``. Modules receive the section they
need and never read a key the schema lacks.

Loading rejects unknown keys, wrong types and out-of-range values with a one-line
``ConfigError`` naming the dotted key and what was expected.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A config value is unknown, of the wrong type, or out of range (one-line message)."""


def _f(
    default: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    doc: str = "",
    arch: bool | None = None,
) -> Any:
    """A schema field with an inclusive range and a one-line description (unit included).

    ``arch``: whether the key defines the network, so that a resumed run takes it from the
    checkpoint; None = as its section (see :data:`ARCHITECTURE_SECTIONS`).
    """
    meta = {"lo": lo, "hi": hi, "doc": doc, "arch": arch}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: copy.deepcopy(d), metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------- sections


@dataclass
class AudioConfig:
    sample_rate: int = _f(48000, lo=8000, hi=192000, doc="model sample rate, Hz")
    segment_seconds: float = _f(4.0, lo=0.25, hi=60.0, doc="training mixture length, s")
    ref_seconds: float = _f(4.0, lo=0.25, hi=60.0, doc="enrollment crop length, s")


@dataclass
class StftConfig:
    n_fft: int = _f(2048, lo=16, hi=16384, doc="FFT size, samples")
    win_length: int = _f(960, lo=16, hi=16384, doc="window length, samples")
    hop_length: int = _f(480, lo=4, hi=8192, doc="hop, samples")


@dataclass
class BandRegion:
    upper_hz: float = _f(1000.0, lo=1.0, doc="upper edge of this region, Hz")
    width_bins: int = _f(4, lo=1, hi=4096, doc="band width in this region, STFT bins")


@dataclass
class BandSplitConfig:
    regions: list[BandRegion] = _f(
        [
            BandRegion(upper_hz=1000.0, width_bins=4),
            BandRegion(upper_hz=2000.0, width_bins=8),
            BandRegion(upper_hz=8000.0, width_bins=16),
            BandRegion(upper_hz=24000.0, width_bins=32),
        ],
        doc="band layout: per region (ascending) its upper edge and band width",
    )
    overlap_bins: int = _f(1, lo=0, hi=64, doc="bins shared by neighbouring bands")
    level_features: bool = _f(
        False,
        doc="also feed each band's level (its dB relative to the frame's mean over bands, "
        "and the frame's mean), which the per-band LayerNorm removes",
    )
    bin_shape: bool = _f(
        False,
        doc="also feed each bin's power relative to its band's mean log power (phase-free "
        "fine spectral shape: pitch harmonics, formant slopes); zero-initialised",
    )
    relative_floor_db: float = _f(
        0.0,
        lo=0.0,
        hi=200.0,
        doc="floor of every band's power as the encoder sees it, dB below the loudest band "
        "(of each mixture frame; of the whole enrollment), so rounding noise and dither "
        "cannot steer the model; 0 = off (checkpoints without the key)",
    )


@dataclass
class ModelConfig:
    feature_dim: int = _f(128, lo=4, hi=4096, doc="per-band feature width")
    num_blocks: int = _f(
        6,
        lo=1,
        hi=64,
        doc="GridNet blocks; blocks beyond an --init-from checkpoint's start as the identity",
    )
    lstm_hidden: int = _f(
        256,
        lo=2,
        hi=4096,
        doc="BiLSTM hidden units per direction; above an --init-from checkpoint's, its LSTMs "
        "are embedded in the wider ones (new units live, their output weights at zero)",
    )
    num_heads: int = _f(4, lo=1, hi=64, doc="attention heads (USEF, self-attn, re-injection)")
    reinject_blocks: list[int] = _f(
        [0, 1, 2, 3, 4, 5],
        doc="GridNet blocks preceded by speaker re-injection; one an --init-from checkpoint "
        "lacks starts as the identity",
    )
    attention_window_seconds: float = _f(
        0.0,
        lo=0.0,
        doc="one-sided span of GridNet self-attention across time, s (0 = whole input); "
        "finite: chunked extraction of long files matches one pass away from the seams",
    )
    causal: bool = _f(
        False,
        doc="causal backbone: forward-only time LSTMs, self-attention over past frames; "
        "no look-ahead beyond the STFT window (for streaming)",
    )
    use_usef: bool = _f(True, doc="USEF cross-attention from mixture to reference")
    use_film: bool = _f(True, doc="FiLM from the time-pooled reference")
    grad_checkpoint: bool = _f(True, doc="recompute GridNet blocks in backward", arch=False)
    ref_dropout_prob: float = _f(
        0.1, lo=0.0, hi=1.0, doc="conditioning dropout in training", arch=False
    )
    speaker_embedding: Literal["none", "ge2e"] = _f(
        "none",
        doc="extra FiLM from a frozen GE2E speaker embedding of the enrollment, trained on "
        "real talkers (needs resemblyzer's weights: pip install --no-deps resemblyzer)",
    )
    decoder_hidden: int = _f(128, lo=1, hi=8192, doc="per-band mask MLP hidden width, units")


@dataclass
class ObjectiveConfig:
    """Loss weights and loss hyper-parameters, read by the Objective: the only place they
    are set."""

    lambda_sep: float = _f(1.0, lo=0.0, doc="separation term (-SI-SDR / scene-aware)")
    lambda_phase: float = _f(0.5, lo=0.0, doc="phase-sensitive STFT L1")
    lambda_amp: float = _f(
        10.0,
        lo=0.0,
        doc="TP amplitude anchor; holds a blind common gain near exp(-4.34 ta_weight / lambda_amp)",
    )
    lambda_adv: float = _f(1.0, lo=0.0, doc="LS-GAN generator term (GAN phase only)")
    lambda_fm: float = _f(2.0, lo=0.0, doc="feature matching (GAN phase only)")
    ta_weight: float = _f(0.1, lo=0.0, hi=1.0, doc="share of the TA term in scene-aware loss")
    ta_target_db: float = _f(-30.0, lo=-120.0, hi=0.0, doc="TA energy below which no loss, dB")
    ta_loss: Literal["relu", "legacy_db"] = _f(
        "relu", doc="TA term: relu(energy_db - target_db), or the seed's raw-dB bug"
    )
    phase_resolutions: list[list[int]] = _f(
        [[512, 240, 50], [1024, 600, 120], [2048, 1200, 240]],
        doc="phase loss STFTs [n_fft, win, hop] at 48 kHz; scaled with sample_rate",
    )


@dataclass
class MixingConfig:
    """The mixing recipe and its data loading: what the mixer, the datasets and the
    DataLoader read (see data/mixer.py)."""

    ta_ratio: float = _f(0.2, lo=0.0, hi=1.0, doc="P(target absent) in phase 2")
    speed_perturb: bool = _f(
        True,
        doc="training only: resample each talker by a random speed factor, shared by the "
        "target and its enrollment (each factor acts as a new voice)",
    )
    synthetic_share: float = _f(
        0.0,
        lo=0.0,
        hi=1.0,
        doc="training only, corpora with real and synthetic voices: P(a talker is a "
        "synthetic voice); 0 = every speaker equally likely",
    )
    channel_prob: float = _f(
        0.0,
        lo=0.0,
        hi=1.0,
        doc="training only: P(a mixture goes through a random recording chain: high-pass, "
        "low-pass, peaking EQ; the target with it), drawn again for its enrollment",
    )
    dense_target_prob: float = _f(
        0.0,
        lo=0.0,
        hi=1.0,
        doc="training only: P(a target-present crop is the target utterance's window with "
        "the most active speech frames, not a uniform one)",
    )
    num_interferers: list[int] = _f([1, 3], doc="interfering talkers, inclusive range")
    snr_db: list[float] = _f([-5.0, 15.0], doc="speech-to-noise ratio range, dB")
    sir_db: list[float] = _f([-5.0, 5.0], doc="target-to-each-interferer ratio range, dB")
    rir_prob: float = _f(1.0, lo=0.0, hi=1.0, doc="P(reverberate each talker)")
    max_rir_seconds: float = _f(
        1.0, lo=0.01, hi=10.0, doc="RIRs are cropped to this (simulated ones made this long), s"
    )
    noisy_ref_prob: float = _f(0.5, lo=0.0, hi=1.0, doc="final P(noisy reference)")
    noisy_ref_ramp: list[int] = _f([0, 1], doc="steps [start, end] of the 0 -> prob ramp")
    easy_steps: int = _f(0, lo=0, doc="steps of the easy-to-hard curriculum (0 = off)")
    easy_snr_db: list[float] = _f([10.0, 20.0], doc="SNR range at the curriculum start, dB")
    num_workers: int = _f(2, lo=0, hi=256, doc="DataLoader workers per process")
    seed: int = _f(
        1234, lo=0, doc="base seed of training mixtures (and prepare's default RIR seed)"
    )


@dataclass
class PreparationConfig:
    """Corpus preparation: what ``hifi-tse prepare`` and ``make-demo-corpus`` read (their
    command-line flags override)."""

    min_seconds: float = _f(4.0, lo=0.0, hi=3600.0, doc="shorter speech files are skipped, s")
    val_ratio: float = _f(0.05, lo=0.0, hi=0.5, doc="share of speakers/noise/RIRs for val")
    test_ratio: float = _f(0.05, lo=0.0, hi=0.5, doc="share of speakers/noise/RIRs for test")
    # voice variants (prepare --voice-variants): pitch/formant-shifted training speakers
    variant_pitch_range: list[float] = _f([0.7, 1.45], doc="F0 ratio range of voice variants")
    variant_formant_range: list[float] = _f(
        [0.86, 1.16], doc="formant (vocal-tract) ratio range of voice variants"
    )
    variant_utterances: int = _f(40, lo=2, doc="utterances rendered per voice variant")
    # simulated RIRs (shoebox image method + Sabine-decay late tail)
    sim_rt60: list[float] = _f([0.1, 0.9], doc="RT60 range of simulated rooms, s")
    sim_max_order: int = _f(12, lo=0, hi=200, doc="image-method reflection order cap")


@dataclass
class TrainConfig:
    steps: int = _f(500000, lo=1, doc="total optimiser steps")
    phase1_steps: int = _f(200000, lo=0, doc="target-present-only steps")
    batch_size: int = _f(2, lo=1, hi=4096, doc="examples per process per micro-batch")
    grad_accum_steps: int = _f(1, lo=1, hi=1024, doc="micro-batches per optimiser step")
    lr: float = _f(1e-3, lo=0.0, hi=1.0, doc="peak learning rate")
    min_lr: float = _f(1e-5, lo=0.0, hi=1.0, doc="learning rate at the end of cosine decay")
    warmup_steps: int = _f(5000, lo=0, doc="linear warm-up, optimiser steps")
    grad_clip: float = _f(5.0, lo=0.0, doc="max gradient norm (0 = off)")
    ema_decay: float = _f(0.999, lo=0.0, hi=1.0, doc="EMA decay per optimiser step")
    bf16: bool = _f(
        True,
        doc="bf16 autocast on CUDA and on CPUs with native bf16 (AVX-512 BF16, AMX); "
        "losses in fp32",
    )
    log_interval: int = _f(100, lo=1, doc="console/TensorBoard logging, steps")
    save_interval: int = _f(5000, lo=1, doc="checkpoint interval, steps")
    keep_last: int = _f(5, lo=1, doc="rotating checkpoints kept")
    val_interval: int = _f(5000, lo=1, doc="validation interval, steps")
    val_examples: int = _f(400, lo=1, doc="size of the fixed validation set")
    val_batch_size: int = _f(4, lo=1, doc="validation batch size")
    val_audio_examples: int = _f(3, lo=0, doc="validation examples logged as audio")
    patience: int = _f(10, lo=1, doc="validations without improvement before stopping")
    budget_minutes: float = _f(
        0.0,
        lo=0.0,
        doc="wall-clock budget, min (0 = off): the schedule position follows elapsed time, "
        "train.steps and every step-valued key then place points in a nominal schedule, "
        "and the run ends when the budget is spent",
    )
    seed: int = _f(0, lo=0, doc="model init / torch seed")


@dataclass
class GanConfig:
    enabled: bool = _f(False, doc="run the GAN fine-tuning phase")
    start_step: int = _f(0, lo=0, doc="first step of the GAN phase")
    disc_warmup_steps: int = _f(1000, lo=0, doc="discriminator-only steps")
    ramp_steps: int = _f(1000, lo=0, doc="adversarial weight ramp 0 -> 1, steps")
    lr: float = _f(2e-4, lo=0.0, hi=1.0, doc="discriminator learning rate")
    periods: list[int] = _f([2, 3, 5, 7, 11], doc="multi-period discriminator periods", arch=True)
    num_scales: int = _f(3, lo=1, hi=8, doc="multi-scale discriminator scales", arch=True)
    channels: int = _f(32, lo=1, hi=1024, doc="discriminator base channels", arch=True)


@dataclass
class HealthConfig:
    rms_ratio_low: float = _f(0.8, lo=0.0, doc="healthy rms_ratio band, lower edge")
    rms_ratio_high: float = _f(1.25, lo=0.0, doc="healthy rms_ratio band, upper edge")
    trend_window: int = _f(3, lo=2, doc="validations inspected for a downward rms trend")
    trend_min_drop: float = _f(
        0.05, lo=0.0, doc="rms_ratio fall over the trend window that counts as a trend, ratio"
    )
    ta_energy_margin_db: float = _f(10.0, lo=0.0, doc="warn when TA energy < target - margin")


@dataclass
class Config:
    audio: AudioConfig = field(default_factory=AudioConfig)
    stft: StftConfig = field(default_factory=StftConfig)
    band_split: BandSplitConfig = field(default_factory=BandSplitConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    mixing: MixingConfig = field(default_factory=MixingConfig)
    preparation: PreparationConfig = field(default_factory=PreparationConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    health: HealthConfig = field(default_factory=HealthConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Sections whose keys define the network (unless a field says otherwise): on resume they come
# from the checkpoint, whatever the config file says.
ARCHITECTURE_SECTIONS = ("audio", "stft", "band_split", "model")


def architecture_keys() -> list[str]:
    """Dotted keys that define the network (model and discriminator): the schema's marks."""
    keys = []
    for section in dataclasses.fields(Config):
        cls = typing.get_type_hints(Config)[section.name]
        for fld in dataclasses.fields(cls):
            arch = fld.metadata.get("arch")
            if arch or (arch is None and section.name in ARCHITECTURE_SECTIONS):
                keys.append(f"{section.name}.{fld.name}")
    return keys


# --------------------------------------------------------------------------- building

_PAIR_KEYS = {
    "mixing.num_interferers",
    "mixing.snr_db",
    "mixing.sir_db",
    "mixing.noisy_ref_ramp",
    "mixing.easy_snr_db",
    "preparation.sim_rt60",
}


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is None and hasattr(tp, "__name__"):
        return tp.__name__
    return str(tp).replace("typing.", "").replace("hifi_tse.config.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp``; returns the typed value or raises."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, key)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: expected one of {list(choices)}, got {value!r}")
        return value
    if origin in (list, typing.List):  # noqa: UP006
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{key}: union types are not supported in the schema")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads exponent forms without a dot ("1e-4") as strings
            try:
                number = float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
            if not math.isfinite(number):
                raise ConfigError(f"{key}: expected a finite number, got {value!r}")
            value = number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported schema type {_type_name(tp)}")


# Keys that left the schema: options measured without a gain (docs/benchmarks.md names the
# last commit that had them) and settings that became constants or command-line flags, under
# the names they had then. Configs, recipes and checkpoints written before carry every key,
# so a retired key still loads when it holds the value that is today's fixed behaviour; any
# other value asked for something that no longer exists, and is an error saying what
# replaced it.
RETIRED_KEYS: dict[str, tuple[Any, str]] = {
    "band_split.level_floor_db": (-100.0, "fixed at -100 dB"),
    "model.film_pooling": ("mean", "FiLM pools the reference by its mean"),
    "model.mask_limit": (0.0, "the mask is uncapped"),
    "model.presence_gain": (False, "no per-frame presence gain"),
    "model.speaker_classes": (0, "no auxiliary speaker classifier; see model.speaker_embedding"),
    "model.norm_eps": (1e-5, "fixed: NORM_EPS in models/generator.py"),
    "loss_weights.lambda_speaker": (0.0, "no auxiliary speaker classifier"),
    "loss_weights.lambda_mrstft": (0.0, "no multi-resolution STFT loss"),
    "loss_weights.mrstft_resolutions": (
        [[512, 240, 50], [1024, 600, 120], [2048, 1200, 240]],
        "no multi-resolution STFT loss",
    ),
    "loss_weights.amp_only_below": (False, "the amplitude anchor is two-sided"),
    "loss_weights.legacy_floor_db": (-40.0, "the legacy_db TA term keeps the seed's -40 dB"),
    "loss_weights.audit_min_gain": (1e-3, "hifi-tse audit-loss --min-gain"),
    "loss_weights.audit_tolerance": (1e-3, "hifi-tse audit-loss --tolerance"),
    "loss_weights.audit_examples": (32, "hifi-tse audit-loss --examples"),
    "loss_weights.eps": (1e-8, "fixed: LOSS_EPS in losses/separation.py"),
    "loss_weights.amp_min_ratio": (
        0.05,
        "fixed by ARCHITECTURE.md invariant 2: AMP_MIN_RATIO in losses/objective.py",
    ),
    "data.min_rms_db": (-90.0, "fixed at -90 dB"),
    "data.sim_wall_margin": (0.5, "fixed at 0.5 m"),
    "data.sim_tail_window_ms": (10.0, "fixed at 10 ms"),
    "data.peak_norm": (0.9, "fixed: PEAK_NORM in data/mixer.py"),
    "data.clip_peak": (0.95, "fixed: CLIP_PEAK in data/mixer.py"),
    "data.noise_prob": (1.0, "every mixture is noisy when the corpus has noise"),
    "data.speed_range": ([0.9, 1.1], "fixed: SPEED_RANGE in data/mixer.py"),
    "data.ref_snr_db": ([5.0, 20.0], "fixed: REF_SNR_DB in data/mixer.py"),
    "data.pack_files": (2000, "fixed: PACK_FILES in data/prepare.py"),
    "data.sim_room_min": ([3.0, 3.0, 2.4], "fixed: SIM_ROOM_MIN_M in data/rir.py"),
    "data.sim_room_max": ([10.0, 8.0, 4.0], "fixed: SIM_ROOM_MAX_M in data/rir.py"),
    "train.betas": ([0.9, 0.999], "fixed: ADAMW_BETAS in train/setup.py"),
    "train.weight_decay": (0.01, "fixed: ADAMW_WEIGHT_DECAY in train/setup.py"),
    "train.max_nonfinite": (20, "fixed: MAX_NONFINITE_STEPS in train/trainer.py"),
    "train.val_seed": (20240601, "fixed: VAL_SEED in data/datasets.py"),
}

# Sections are named after who reads them; before, ``loss_weights`` held the objective's keys
# and ``data`` both the mixing and the preparation keys. Configs, recipes, checkpoints and
# ``--set`` overrides written with those names load through this table (old -> new key).
RENAMED_KEYS: dict[str, str] = {
    **{
        f"loss_weights.{key}": f"objective.{key}"
        for key in (
            "lambda_sep", "lambda_phase", "lambda_amp", "lambda_adv", "lambda_fm",
            "ta_weight", "ta_target_db", "ta_loss", "phase_resolutions",
        )
    },
    **{
        f"data.{key}": f"mixing.{key}"
        for key in (
            "ta_ratio", "speed_perturb", "num_interferers", "snr_db", "sir_db", "rir_prob",
            "max_rir_seconds", "noisy_ref_prob", "noisy_ref_ramp", "easy_steps", "easy_snr_db",
            "num_workers", "seed",
        )
    },
    **{
        f"data.{key}": f"preparation.{key}"
        for key in (
            "min_seconds", "val_ratio", "test_ratio", "variant_pitch_range",
            "variant_formant_range", "variant_utterances", "sim_rt60", "sim_max_order",
        )
    },
}  # fmt: skip
# old section -> the sections its keys went to
_RENAMED_SECTIONS: dict[str, list[str]] = {
    section: sorted(
        {n.split(".")[0] for o, n in RENAMED_KEYS.items() if o.startswith(f"{section}.")}
    )
    for section in {o.split(".")[0] for o in RENAMED_KEYS}
}


def current_key(dotted: str) -> str:
    """The name ``dotted`` (``section.key``) has in today's schema: the new name of a key of a
    renamed section (:data:`RENAMED_KEYS`), else ``dotted`` itself."""
    return RENAMED_KEYS.get(dotted, dotted)


def _is_fixed_value(value: Any, fixed: Any) -> bool:
    if isinstance(fixed, float) and isinstance(value, str):
        try:  # YAML 1.1 reads exponent forms without a dot ("1e-5") as strings
            value = float(value)
        except ValueError:
            return False
    return value == fixed


def _drop_retired(data: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``data`` without retired keys that hold today's fixed value; ConfigError otherwise."""
    kept = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}"
        if dotted not in RETIRED_KEYS:
            kept[key] = value
            continue
        fixed, replacement = RETIRED_KEYS[dotted]
        if not _is_fixed_value(value, fixed):
            raise ConfigError(
                f"{dotted}: removed from the config (expected {fixed!r} if present, got "
                f"{value!r}; now: {replacement})"
            )
    return kept


def migrate_layout(data: dict[str, Any]) -> dict[str, Any]:
    """A config mapping in today's layout: retired keys (at their fixed value) dropped and
    the keys of renamed sections moved to their new names (:data:`RENAMED_KEYS`).

    A mapping already in today's layout comes back equal, less its retired keys. Raises
    ConfigError (one line) for a retired key at another value, an unknown key of a renamed
    section, or a key given under both its old and its new name.
    """
    out: dict[str, Any] = {}
    given_as: dict[str, str] = {}  # new dotted key -> the name it was given under
    for section, body in data.items():
        if not isinstance(body, dict):
            out[section] = body  # not a section: _build names the problem
            continue
        if section not in _RENAMED_SECTIONS:
            out.setdefault(section, {})
        for key, value in _drop_retired(body, section).items():
            old = f"{section}.{key}"
            new = current_key(old)
            if new == old and section in _RENAMED_SECTIONS:
                raise ConfigError(
                    f"{old}: unknown key (the {section} keys are now under "
                    f"{' and '.join(_RENAMED_SECTIONS[section])})"
                )
            if new in given_as:
                raise ConfigError(f"{new}: given twice (as {given_as[new]} and as {old}); keep one")
            given_as[new] = old
            new_section, new_key = new.split(".")
            out.setdefault(new_section, {})[new_key] = value
    return out


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            dotted = f"{prefix}.{key}" if prefix else key
            raise ConfigError(f"{dotted}: unknown key (expected one of {sorted(names)})")
    kwargs = {}
    for name, fld in names.items():
        dotted = f"{prefix}.{name}" if prefix else name
        if name in data:
            value = _coerce(data[name], hints[name], dotted)
        elif fld.default is not dataclasses.MISSING:
            value = fld.default
        elif fld.default_factory is not dataclasses.MISSING:
            value = fld.default_factory()
        else:  # pragma: no cover - every field has a default
            raise ConfigError(f"{dotted}: missing")
        lo, hi = fld.metadata.get("lo"), fld.metadata.get("hi")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if lo is not None and value < lo:
                raise ConfigError(f"{dotted}: expected >= {lo}, got {value}")
            if hi is not None and value > hi:
                raise ConfigError(f"{dotted}: expected <= {hi}, got {value}")
        kwargs[name] = value
    return cls(**kwargs)


def _check_cross(cfg: Config) -> None:
    """Constraints spanning several keys."""
    for dotted in _PAIR_KEYS:
        section, name = dotted.split(".")
        pair = getattr(getattr(cfg, section), name)
        if len(pair) != 2 or pair[0] > pair[1]:
            raise ConfigError(f"{dotted}: expected [low, high] with low <= high, got {pair}")
    if cfg.stft.win_length > cfg.stft.n_fft:
        raise ConfigError(
            f"stft.win_length: expected <= stft.n_fft ({cfg.stft.n_fft}), got {cfg.stft.win_length}"
        )
    if cfg.stft.hop_length > cfg.stft.win_length:
        raise ConfigError(
            f"stft.hop_length: expected <= stft.win_length ({cfg.stft.win_length}), "
            f"got {cfg.stft.hop_length}"
        )
    if cfg.model.feature_dim % cfg.model.num_heads:
        raise ConfigError(
            f"model.num_heads: expected a divisor of model.feature_dim "
            f"({cfg.model.feature_dim}), got {cfg.model.num_heads}"
        )
    for i, block in enumerate(cfg.model.reinject_blocks):
        if not 0 <= block < cfg.model.num_blocks:
            raise ConfigError(
                f"model.reinject_blocks[{i}]: expected 0..{cfg.model.num_blocks - 1}, got {block}"
            )
    edges = [r.upper_hz for r in cfg.band_split.regions]
    if not cfg.band_split.regions or edges != sorted(edges):
        raise ConfigError(f"band_split.regions: expected ascending upper_hz, got {edges}")
    for i, res in enumerate(cfg.objective.phase_resolutions):
        if len(res) != 3:
            raise ConfigError(
                f"objective.phase_resolutions[{i}]: expected [n_fft, win, hop], got {res}"
            )
    if cfg.train.phase1_steps > cfg.train.steps:
        raise ConfigError(
            f"train.phase1_steps: expected <= train.steps ({cfg.train.steps}), "
            f"got {cfg.train.phase1_steps}"
        )
    if cfg.train.min_lr > cfg.train.lr:
        raise ConfigError(
            f"train.min_lr: expected <= train.lr ({cfg.train.lr}), got {cfg.train.min_lr}"
        )
    if cfg.health.rms_ratio_low >= cfg.health.rms_ratio_high:
        raise ConfigError("health.rms_ratio_low: expected < health.rms_ratio_high")


def config_from_dict(data: dict[str, Any] | None) -> Config:
    """Build and validate a :class:`Config` from a nested mapping (missing keys default;
    older layouts migrated by :func:`migrate_layout`)."""
    cfg = _build(Config, migrate_layout(data or {}))
    _check_cross(cfg)
    return cfg


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected section.key=value")
    key, raw = item.split("=", 1)
    path = key.strip().split(".")
    if len(path) < 2 or not all(path):
        raise ConfigError(f"--set {item!r}: expected section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"{key}: value {raw!r} is not valid YAML ({exc.problem})") from None
    return path, value


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (values parsed as YAML) to a nested mapping.

    The mapping is migrated to today's layout first and old key names in ``overrides`` are
    renamed (:data:`RENAMED_KEYS`), so ``data.ta_ratio=0.3`` and ``mixing.ta_ratio=0.3`` set
    the same key whichever layout the mapping was written in.
    """
    data = migrate_layout(copy.deepcopy(data))
    for item in overrides or []:
        path, value = _parse_override(item)
        path = [*current_key(".".join(path[:2])).split("."), *path[2:]]
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{'.'.join(path)}: {part} is not a section")
            node = child
        node[path[-1]] = value
    return data


BUILTIN_CONFIG_DIR = Path(__file__).resolve().parent / "assets" / "configs"


def builtin_configs() -> list[str]:
    """Names of the configs shipped inside the package (``hifi_tse``, ``tiny``, ``demo``)."""
    return sorted(p.stem for p in BUILTIN_CONFIG_DIR.glob("*.yaml"))


def resolve_config_path(path: str | Path) -> Path:
    """``path`` itself when it is a file, else the built-in config of that name (with or
    without ``.yaml``; ``recipes/NAME`` for a recipe of the shipped models), so
    ``--config demo`` works from any folder after ``pip install``."""
    path = Path(path)
    if path.is_file():
        return path
    builtin = BUILTIN_CONFIG_DIR / path.parent / f"{path.stem}.yaml"
    named = not path.is_absolute() and ".." not in path.parts and len(path.parts) <= 2
    if named and path.suffix in ("", ".yaml") and builtin.is_file():
        return builtin
    raise ConfigError(
        f"{path}: config file not found (built-in configs: {', '.join(builtin_configs())})"
    )


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (a file, or a built-in name such as ``demo``; the defaults when
    ``path`` is None) and apply overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = resolve_config_path(path)
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at top level")
        data = loaded or {}
    return config_from_dict(apply_overrides(data, overrides))


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    from hifi_tse.utils import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def schema_rows() -> list[tuple[str, str, Any, str]]:
    """(dotted key, type, default, description) for every leaf key: the config reference."""
    rows: list[tuple[str, str, Any, str]] = []
    defaults = Config()
    for section in dataclasses.fields(Config):
        cls = typing.get_type_hints(Config)[section.name]
        hints = typing.get_type_hints(cls)
        for fld in dataclasses.fields(cls):
            default = getattr(getattr(defaults, section.name), fld.name)
            if dataclasses.is_dataclass(default):
                default = dataclasses.asdict(default)
            elif isinstance(default, list) and default and dataclasses.is_dataclass(default[0]):
                default = [dataclasses.asdict(d) for d in default]
            rows.append(
                (
                    f"{section.name}.{fld.name}",
                    _type_name(hints[fld.name]),
                    default,
                    fld.metadata.get("doc", ""),
                )
            )
    return rows
