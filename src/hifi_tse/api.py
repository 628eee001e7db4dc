"""Target speaker extraction as a library: arrays in memory in, the enrolled talker out.

::

    from hifi_tse import Extractor

    extractor = Extractor.from_checkpoint("models/demo_model.pt")   # or Extractor.from_onnx
    alice = extractor.enroll([clip1, clip2], sample_rate=44100)      # encoded once
    only_alice = extractor.extract(meeting, sample_rate=44100, enrollment=alice)

Audio is a NumPy array or a torch tensor: ``(L,)`` mono, or 2-D multi-channel with the
shorter axis as channels (``(L, C)`` as soundfile reads, ``(C, L)`` as torch holds it),
downmixed to mono; float in [-1, 1] or integer PCM (scaled by its type's full scale). Any
rate (resampled to the model's and back) and any length (chunked overlap-add, as
``hifi-tse separate`` does); the result has the input's rate and length, ``(L,)`` float32.

Every bad input raises :class:`ExtractionError` with a one-line message; an enrollment with
under ``min_speech_seconds`` of active speech only warns (:class:`EnrollmentWarning`),
since extraction still runs, but may follow the wrong talker. An enrollment belongs to the
extractor that made it (its features are that model's): another extractor refuses it.

Where the target talks in a long recording, from the same pass::

    only_alice, activity = extractor.extract_with_activity(meeting, 44100, alice)
    activity.segments          # (start s, end s, score dB) of each stretch Alice talks
    silent_elsewhere = activity.gate(only_alice, 44100)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hifi_tse.audio.io import resample
from hifi_tse.errors import UserError
from hifi_tse.infer.activity import DEFAULTS as ACTIVITY_DEFAULTS
from hifi_tse.infer.activity import Activity, ActivitySettings, detect_activity, window_similarity
from hifi_tse.infer.separate import ChunkFn, ChunkPlan, VadSettings, active_speech, separate_array

# Defaults: the CLI's (hifi-tse separate) chunking and enrollment check.
CHUNK_SECONDS = 4.0
OVERLAP_SECONDS = 1.0
BATCH_CHUNKS = 2
VAD = VadSettings(
    frame_seconds=0.02,
    threshold_db=40.0,
    floor_db=-70.0,
    min_active_seconds=1.0,
    min_active_fraction=0.3,
)
PAIRS_BATCH = 4  # extract_pairs: mixtures per model call, unless the caller says
MAX_CHANNELS = 64  # a 2-D array's shorter axis above this is not a channel axis
SAMPLE_RATE_RANGE = (1000, 768000)  # accepted input rates, Hz


class ExtractionError(UserError):
    """Bad input to the extraction API (empty, NaN, wrong shape or rate); one line."""


class EnrollmentWarning(UserWarning):
    """The enrollment holds little active speech: extraction may follow the wrong talker."""


@dataclass(frozen=True)
class Enrollment:
    """An enrolled talker: the clips at the model rate and what the backend derived from them.

    ``waveform (L_ref,)`` float32 at ``sample_rate`` (the model's), ``speech_seconds`` of
    active speech found in it; ``chunk_fn`` runs the model with it bound (the enrollment's
    features are computed once, when it is made). ``model`` names the checkpoint or ONNX
    file of the extractor that made it: only that extractor accepts it, since ``chunk_fn``
    runs that extractor's model.
    """

    waveform: np.ndarray
    sample_rate: int
    speech_seconds: float
    chunk_fn: ChunkFn
    model: str = ""
    owner: Any = field(default=None, repr=False, compare=False)  # the extractor's backend


PairsFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``mixtures (B, L)``, enrollments ``(B, L_ref)`` at the model rate -> ``(B, L)`` estimates."""


@dataclass(frozen=True)
class _Backend:
    sample_rate: int
    stft_hop: int
    fixed_chunk: int | None
    make_fn: Callable[[np.ndarray], ChunkFn]
    pairs_fn: PairsFn
    name: str
    model: Any = None  # the PyTorch generator (None for ONNX Runtime)
    device: Any = None
    precision: str = "fp32"


def as_mono(audio: Any, what: str) -> np.ndarray:
    """Array or tensor ``(L,)`` / ``(L, C)`` / ``(C, L)`` -> ``(L,)`` float32; one-line errors."""
    if hasattr(audio, "detach") and hasattr(
        audio, "cpu"
    ):  # a torch tensor, without importing torch
        audio = audio.detach().cpu().numpy()
    try:
        x = np.asarray(audio)
    except Exception as exc:  # noqa: BLE001 - anything that is no array is bad input
        raise ExtractionError(f"{what}: not an array ({type(audio).__name__})") from exc
    if x.dtype.kind in "iu":
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max + 1)
    elif x.dtype.kind != "f":
        raise ExtractionError(f"{what}: expected float or integer samples, got dtype {x.dtype}")
    if x.ndim == 2:
        channel_axis = int(np.argmin(x.shape))
        if x.shape[channel_axis] > MAX_CHANNELS:
            raise ExtractionError(
                f"{what}: expected (L,) or (L, C) audio with C <= {MAX_CHANNELS}, "
                f"got shape {x.shape}"
            )
        x = x.mean(axis=channel_axis)
    elif x.ndim != 1:
        raise ExtractionError(f"{what}: expected (L,) or 2-D (L, C) audio, got shape {x.shape}")
    if x.size == 0:
        raise ExtractionError(f"{what}: empty (zero samples)")
    if not np.isfinite(x).all():
        raise ExtractionError(f"{what}: contains NaN or Inf samples")
    return x.astype(np.float32, copy=False)


def _check_rate(sample_rate: Any, what: str) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise ExtractionError(f"{what}: sample_rate must be an integer in Hz, got {sample_rate!r}")
    lo, hi = SAMPLE_RATE_RANGE
    if not lo <= int(sample_rate) <= hi:
        raise ExtractionError(f"{what}: sample_rate {sample_rate} Hz is outside {lo}-{hi} Hz")
    return int(sample_rate)


def enrollment_waveform(
    clips: Any | Sequence[Any],
    sample_rate: int,
    model_rate: int,
    vad: VadSettings = VAD,
    name: str = "enrollment",
) -> tuple[np.ndarray, float]:
    """One clip or several at ``sample_rate`` -> ``(waveform (L_ref,) float32 at model_rate,
    seconds of active speech)``: checked (ExtractionError for empty, NaN, all-zero or
    wrongly shaped clips), downmixed, resampled and concatenated; warns
    (:class:`EnrollmentWarning`) when they hold under ``vad.min_active_seconds`` of speech
    or are mostly silence."""
    rate = _check_rate(sample_rate, name)
    many = isinstance(clips, (list, tuple))
    parts = []
    for k, clip in enumerate(clips if many else [clips]):
        what = f"{name} clip {k}" if many else name
        x = as_mono(clip, what)
        if not np.any(x):
            raise ExtractionError(f"{what}: all zeros (digital silence)")
        parts.append(resample(x, rate, model_rate))
    if not parts:
        raise ExtractionError(f"{name}: no clips given")
    ref = np.concatenate(parts)
    seconds, fraction = active_speech(ref, model_rate, vad)
    if seconds < vad.min_active_seconds:
        warnings.warn(
            f"{name}: only {seconds:.2f} s of active speech (< {vad.min_active_seconds:g} s); "
            "extraction may follow the wrong talker",
            EnrollmentWarning,
            stacklevel=3,
        )
    elif fraction < vad.min_active_fraction:
        warnings.warn(
            f"{name}: mostly silence ({100 * fraction:.0f} % active frames); extraction "
            "may follow the wrong talker",
            EnrollmentWarning,
            stacklevel=3,
        )
    return ref, seconds


class Extractor:
    """A loaded model (PyTorch or ONNX Runtime) with its chunking; see the module docstring."""

    def __init__(
        self,
        backend: _Backend,
        chunk_seconds: float = CHUNK_SECONDS,
        overlap_seconds: float = OVERLAP_SECONDS,
        batch_chunks: int = BATCH_CHUNKS,
        vad: VadSettings = VAD,
    ) -> None:
        self._backend = backend
        self.vad = vad
        self._ge2e: Any = None  # the speaker check's encoder, loaded on first use
        if backend.fixed_chunk is not None:
            chunk_seconds = backend.fixed_chunk / backend.sample_rate
        plan = ChunkPlan.from_seconds(
            backend.sample_rate, chunk_seconds, overlap_seconds, batch_chunks, backend.stft_hop
        )
        if backend.fixed_chunk is not None and plan.chunk != backend.fixed_chunk:
            plan = ChunkPlan(backend.fixed_chunk, plan.overlap, plan.batch)
        self.plan = plan

    @property
    def sample_rate(self) -> int:
        """The model's rate, Hz (inputs at any rate are resampled to it)."""
        return self._backend.sample_rate

    @property
    def source(self) -> str:
        """The checkpoint or ONNX file this extractor runs."""
        return self._backend.name

    @property
    def model(self) -> Any:
        """The PyTorch generator (None when running an ONNX export)."""
        return self._backend.model

    @property
    def precision(self) -> str:
        """``fp32`` or ``bf16`` (autocast) for the PyTorch model."""
        return self._backend.precision

    @property
    def device(self) -> Any:
        """The torch device of :attr:`model` (None for ONNX Runtime)."""
        return self._backend.device

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str = "cpu",
        *,
        use_ema: bool = True,
        threads: int | None = None,
        precision: str = "fp32",
        **chunking: Any,
    ) -> Extractor:
        """Load a hifi-tse checkpoint (EMA weights unless ``use_ema=False``) on ``device``
        (``cpu``, ``cuda``, ``cuda:N``); ``precision`` ``fp32`` or ``bf16`` (autocast, on
        devices with native bf16); ``chunking``: ``chunk_seconds``, ``overlap_seconds``,
        ``batch_chunks``."""
        import torch

        from hifi_tse.devices import resolve_device
        from hifi_tse.infer.loading import load_generator

        if threads is not None:
            torch.set_num_threads(threads)
        dev = resolve_device(device)
        model, cfg = load_generator(path, device=dev, use_ema=use_ema)
        return cls.from_generator(
            model, cfg, str(dev), precision=precision, name=str(path), **chunking
        )

    @classmethod
    def from_generator(
        cls,
        model: Any,
        cfg: Any,
        device: str = "cpu",
        *,
        precision: str = "fp32",
        name: str = "generator",
        **chunking: Any,
    ) -> Extractor:
        """Wrap a generator already in memory (e.g. just trained) with its ``Config``; it is
        moved to ``device`` and put in eval mode."""
        from hifi_tse.devices import resolve_device
        from hifi_tse.infer.loading import TorchChunkFn, TorchPairsFn, check_precision

        dev = resolve_device(device)
        check_precision(precision, dev)
        model = model.to(dev).eval()

        def make(ref: np.ndarray) -> ChunkFn:
            return TorchChunkFn(model, ref, dev, precision)

        pairs = TorchPairsFn(model, dev, precision)
        rate, hop = cfg.audio.sample_rate, cfg.stft.hop_length
        backend = _Backend(rate, hop, None, make, pairs, name, model, dev, precision)
        return cls(backend, **chunking)

    @classmethod
    def from_onnx(
        cls, path: str | Path, *, threads: int | None = None, **chunking: Any
    ) -> Extractor:
        """Load a model exported by ``hifi-tse export`` (ONNX Runtime; torch is not needed)."""
        from hifi_tse.infer.onnx_runner import OnnxModel

        model = OnnxModel(path, threads=threads)
        fixed = None if model.dynamic else model.chunk_samples
        backend = _Backend(
            model.sample_rate,
            model.stft.hop,
            fixed,
            model.chunk_fn,
            model.separate_pairs,
            str(path),
        )
        return cls(backend, **chunking)

    def enroll(
        self, clips: Any | Sequence[Any], sample_rate: int, *, name: str = "enrollment"
    ) -> Enrollment:
        """Enroll a talker from one clip or several (concatenated) at ``sample_rate`` Hz.

        Raises ExtractionError for bad clips (empty, NaN, all zeros, wrong shape); warns
        (:class:`EnrollmentWarning`) when they hold under ``vad.min_active_seconds`` of
        speech or are mostly silence.
        """
        ref, seconds = enrollment_waveform(clips, sample_rate, self.sample_rate, self.vad, name)
        fn = self._backend.make_fn(ref)
        return Enrollment(ref, self.sample_rate, seconds, fn, self.source, self._backend)

    def check_enrollment(self, enrollment: Any) -> Enrollment:
        """``enrollment`` if this extractor made it; ExtractionError (one line) otherwise."""
        if not isinstance(enrollment, Enrollment):
            got = type(enrollment).__name__
            raise ExtractionError(f"enrollment: expected the result of Extractor.enroll, got {got}")
        if enrollment.owner is not self._backend:
            # Its features (and chunk_fn) are the other model's: running them here would
            # silently extract with the wrong model.
            raise ExtractionError(
                f"enrollment: made by the extractor of {enrollment.model or 'another model'}, "
                f"not by this one ({self.source}); enroll again with this extractor"
            )
        return enrollment

    def extract(
        self, mixture: Any, sample_rate: int, enrollment: Enrollment, *, name: str = "mixture"
    ) -> np.ndarray:
        """The enrolled talker in ``mixture``: ``(L,)`` float32 at ``sample_rate``, the input's
        length (multi-channel input is downmixed first). ``enrollment`` must come from this
        extractor's :meth:`enroll`."""
        rate = _check_rate(sample_rate, name)
        self.check_enrollment(enrollment)
        x = as_mono(mixture, name)
        est = separate_array(resample(x, rate, self.sample_rate), enrollment.chunk_fn, self.plan)
        return self._at_rate(est, rate, x.size)

    def extract_with_activity(
        self,
        mixture: Any,
        sample_rate: int,
        enrollment: Enrollment,
        *,
        settings: ActivitySettings = ACTIVITY_DEFAULTS,
        name: str = "mixture",
    ) -> tuple[np.ndarray, Activity]:
        """:meth:`extract` plus where the target talks (:mod:`hifi_tse.infer.activity`), read
        from the same pass at the model rate: ``((L,) float32 at sample_rate, Activity)``.
        ``settings.speaker_threshold`` adds the GE2E speaker check (resemblyzer's weights)."""
        rate = _check_rate(sample_rate, name)
        self.check_enrollment(enrollment)
        x = as_mono(mixture, name)
        mix = resample(x, rate, self.sample_rate)
        est = separate_array(mix, enrollment.chunk_fn, self.plan)
        similarity_fn = None
        if settings.speaker_threshold is not None:
            encoder = self.speaker_encoder()

            def similarity_fn(candidates: np.ndarray) -> np.ndarray:
                per = settings.frame_seconds  # detect_activity rounds it to whole samples
                per = max(1, round(per * self.sample_rate)) / self.sample_rate
                return window_similarity(
                    encoder, mix, enrollment.waveform, self.sample_rate, candidates, per
                )

        activity = detect_activity(mix, est, self.sample_rate, settings, similarity_fn)
        return self._at_rate(est, rate, x.size), activity

    def speaker_encoder(self) -> Any:
        """The GE2E encoder of the speaker check, loaded once (UserError without weights)."""
        if self._ge2e is None:
            from hifi_tse.speaker.ge2e import GE2EEncoder

            self._ge2e = GE2EEncoder.from_pretrained(device=self.device or "cpu")
        return self._ge2e

    def extract_pairs(
        self,
        mixtures: Sequence[Any],
        references: Sequence[Any],
        sample_rate: int,
        batch_size: int = PAIRS_BATCH,
    ) -> list[np.ndarray]:
        """Each mixture with its own enrollment clip (an evaluation set): estimates ``(L,)``
        float32 at ``sample_rate``, in order. Up to ``batch_size`` neighbours of equal
        lengths run as one batch; mixtures longer than one chunk are chunked. No enrollment
        checks or warnings: the clips are data, not a user's enrollment."""
        if batch_size < 1:
            raise ExtractionError(f"extract_pairs: batch_size must be >= 1, got {batch_size}")
        if len(mixtures) != len(references):
            raise ExtractionError(
                f"extract_pairs: {len(mixtures)} mixtures but {len(references)} enrollments"
            )
        rate = _check_rate(sample_rate, "extract_pairs")
        lengths, mixes, refs = [], [], []
        for i, (mix, ref) in enumerate(zip(mixtures, references)):
            x = as_mono(mix, f"mixture {i}")
            lengths.append(x.size)
            mixes.append(resample(x, rate, self.sample_rate))
            refs.append(resample(as_mono(ref, f"enrollment {i}"), rate, self.sample_rate))
        out: list[np.ndarray] = []
        start = 0
        while start < len(mixes):
            stop = start + 1
            while (
                stop < min(len(mixes), start + batch_size)
                and mixes[stop].size == mixes[start].size
                and refs[stop].size == refs[start].size
            ):
                stop += 1
            if mixes[start].size > self.plan.chunk:
                for mix, ref in zip(mixes[start:stop], refs[start:stop]):
                    out.append(separate_array(mix, self._backend.make_fn(ref), self.plan))
            else:
                out += list(
                    self._backend.pairs_fn(np.stack(mixes[start:stop]), np.stack(refs[start:stop]))
                )
            start = stop
        return [self._at_rate(est, rate, n) for est, n in zip(out, lengths)]

    def _at_rate(self, est: np.ndarray, rate: int, length: int) -> np.ndarray:
        """A model-rate estimate back at ``rate``, ``length`` samples."""
        out = resample(est, self.sample_rate, rate)
        if out.size < length:
            out = np.pad(out, (0, length - out.size))
        return np.ascontiguousarray(out[:length], dtype=np.float32)
