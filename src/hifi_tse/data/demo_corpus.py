"""Offline demo corpus: synthetic multi-speaker speech, noise clips and simulated rooms.

``build_demo_corpus`` writes, on CPU and without any download,

* ``raw/speech/<voice_id>/<voice_id>_NNN.wav``: ``num_voices`` synthetic talkers, each a
  distinct libespeak-ng voice (English accent × voice variant × pitch × pitch range × rate),
  followed by a per-voice vocal-tract scale (resampling) and spectral tilt, each speaking
  ``sentences_per_voice`` sentences of about 2–6 s;
* ``raw/noise/*.wav``: coloured noise (white / pink / brown), babble summed from held-out
  voices that are never speakers, and mains hum (50 / 60 Hz with harmonics);
* ``raw/voices.json``: the settings of every voice,
* with ``real_voices``, the real recorded voices of :mod:`hifi_tse.data.real_voices` (voice
  actors' dialogue, held-out real talkers for validation and test, pitch/formant voice
  variants of the real training talkers),

then packs them with :func:`hifi_tse.data.prepare.prepare_corpus` (the same code as real
corpora), which also simulates the RIRs, so ``out`` becomes a packs dir.

Reproducibility: every random choice is drawn from ``seed``. libespeak-ng keeps state across
calls and is only bit-reproducible for the same call sequence in a fresh process, so each
voice is synthesised in its own freshly started worker process (``maxtasksperchild=1``,
``forkserver``/``spawn``: never a fork of a parent that has already used the library).
Variants with breath noise are left out of the voice lists: synthesising every shipped
variant in 8 fresh processes gave differing output for exactly the breath-noise ones (f2,
f3, f5, sandro, victor, whisper, whisperf), which points at state the library does not
initialise. Worker processes are started fresh, so scripts that call
:func:`build_demo_corpus` need the usual ``if __name__ == "__main__":`` guard.

Re-running is cheap: a voice whose folder holds a ``.done.json`` marker matching its settings
is not synthesised again, the noise folder has the same kind of marker, and prepare reuses
finished packs.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hifi_tse.audio.io import resample, save_audio
from hifi_tse.config import Config
from hifi_tse.data import espeak
from hifi_tse.data.layouts import SpeechSource
from hifi_tse.data.real_voices import find_real_voices
from hifi_tse.errors import UserError
from hifi_tse.utils import atomic_write_text, file_digest  # noqa: F401 - file_digest re-exported

# --------------------------------------------------------------------------- defaults
DEFAULT_SEED = 1234
DEFAULT_VOICES = 64
DEFAULT_SENTENCES = 30
DEFAULT_SAMPLE_RATE = 16000  # demo models run at 16 kHz
DEFAULT_SIMULATE_RIRS = 120
SAMPLE_RATE_RANGE = (8000, 192000)  # as AudioConfig.sample_rate, Hz
MIN_VOICES = 2  # a mixture needs a target and an interferer
MIN_SENTENCES = 2  # the enrollment must be another utterance of the target
MIN_SPEECH_SECONDS = 1.5  # prepare's min_seconds: shorter files would be skipped, s
# Held-out voices wanted in each of val and test, and the largest share either may take.
HELD_OUT_VOICES = 8
MAX_EVAL_SHARE = 0.2
# Pitch/formant variants made of each real training talker (new training voices).
DEFAULT_VOICE_VARIANTS = 6
SYNTHETIC_SOURCE = "speech"  # source name of the espeak voices in the packs

# --------------------------------------------------------------------------- voice design
# English accents shipped with espeak-ng (files under espeak-ng-data/lang/gmw).
ACCENTS = (
    "en-US",
    "en",
    "en-GB-x-rp",
    "en-GB-scotland",
    "en-029",
    "en-US-nyc",
    "en-GB-x-gbclan",
    "en-GB-x-gbcwmd",
)
# Human-sounding variants (files in espeak-ng-data/voices/!v) grouped by pitch register.
# Left out: robot/echo effects (robosoft*, UniRobot, Demonic, RicishayMax*, iven, iven2),
# Storm/Tweaky/"Mr serious", and every variant with breath noise (f2, f3, f5, sandro,
# victor, whisper, whisperf, Alicia, Reed, caleb): their output differs between fresh
# processes, so it would not be reproducible from the seed.
HIGH_VARIANTS = (
    "f1",
    "f4",
    "Andrea",
    "Annie",
    "anika",
    "aunty",
    "belinda",
    "linda",
    "grandma",
    "shelby",
    "steph",
    "steph2",
    "steph3",
    "zac",
)
LOW_VARIANTS = (
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "m8",
    "Alex",
    "Andy",
    "AnxiousAndy",
    "Denis",
    "Diogo",
    "Gene",
    "Gene2",
    "Henrique",
    "Hugo",
    "Jacky",
    "Lee",
    "Marco",
    "Mario",
    "Michael",
    "Mike",
    "Nguyen",
    "antonio",
    "boris",
    "croak",
    "david",
    "ed",
    "edward",
    "grandpa",
    "gustave",
    "ian",
    "iven3",
    "iven4",
    "john",
    "kaukovalta",
    "klatt",
    "klatt2",
    "klatt3",
    "marcelo",
    "max",
    "michel",
    "miguel",
    "mike2",
    "norbert",
    "pablo",
    "paul",
    "pedro",
    "quincy",
    "rob",
    "robert",
    "travis",
)
PITCH_RANGE = (25, 75)  # espeakPITCH, 50 = the variant's own base pitch
INTONATION_RANGE = (30, 85)  # espeakRANGE
RATE_WPM_RANGE = (135, 195)  # espeakRATE, words per minute
VOLUME = 70  # espeakVOLUME; 100 clips some klatt variants before normalisation
# Vocal-tract scale: the 22050 Hz output is read as 22050·scale Hz, which moves every formant
# (and F0) by ``scale`` and the duration by 1/scale.
TRACT_SCALE_RANGE = (0.94, 1.06)
# Spectral tilt: y[n] = x[n] + c·x[n-1]; c > 0 darkens, c < 0 brightens.
TILT_RANGE = (-0.35, 0.35)
PAD_SECONDS = (0.05, 0.35)  # silence added before and after each utterance, s
PEAK_LEVEL = 0.9  # utterance and noise clip peak after normalisation
UTTERANCE_SECONDS = (2.0, 6.0)  # wanted utterance length, s (sentences are chosen to fit)
TRIM_DB = -45.0  # espeak's own lead/trail silence below this (re peak) is trimmed, dB
TRIM_FRAME_SECONDS = 0.01
# An utterance is spoken again (deterministically) when it leaves UTTERANCE_SECONDS (at
# another rate) or reaches CLIP_LEVEL (espeak saturates int16 for some variants; softer).
MAX_RETRIES = 4
CLIP_LEVEL = 0.99  # |sample| treated as saturated, full scale = 1
CLIP_BACKOFF = 0.6  # volume factor per clipped attempt

# --------------------------------------------------------------------------- noise design
NOISE_SECONDS = 10.0  # length of each noise clip, s
# Clips per kind; the kinds are interleaved in file-name order so prepare's name-sorted
# val/test split gets a mix of kinds (see _noise_plan).
NOISE_COUNTS = {"babble": 10, "white": 5, "pink": 6, "brown": 5, "hum": 6}
COLOUR_EXPONENT = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power ∝ 1/f^exponent
COLOUR_EXPONENT_JITTER = 0.15
COLOUR_FLOOR_HZ = 20.0  # below this the 1/f shaping stays flat (no DC blow-up), Hz
BABBLE_VOICES = 12  # held-out voices (never speakers) that make up the babble
BABBLE_SENTENCES = 12  # sentences each babble voice speaks
# Babble voices use indices from here on: their settings, sentences and render streams are
# disjoint from those of the speakers (voice indices stay below it).
BABBLE_INDEX_OFFSET = 100000
BABBLE_TALKERS = (4, 8)  # talkers summed per babble clip, inclusive
HUM_FUNDAMENTALS_HZ = (50.0, 60.0)
HUM_HARMONICS = (4, 12)  # number of harmonics, inclusive
HUM_DECAY = (0.6, 1.6)  # harmonic h has amplitude h^-decay
HUM_DRIFT_HZ = 0.3  # slow random drift of the fundamental, Hz
HUM_NOISE_DB = -35.0  # broadband floor under the hum, dB re hum RMS

# Separate random streams: changing one part never shifts another.
_STREAM_VOICE = 1
_STREAM_SENTENCES = 2
_STREAM_RENDER = 3
_STREAM_NOISE = 4
_STREAM_ASSIGN = 5
_MARKER = ".done.json"
_FORMAT_VERSION = 1  # bump when the rendering changes, so old markers are not trusted

SENTENCES = (
    "The early train to the coast leaves from platform four.",
    "Please remember to water the tomatoes before you go out.",
    "My grandmother kept every letter she ever received.",
    "Could you pass me the salt and the black pepper?",
    "The museum will be closed for repairs until next spring.",
    "We watched the storm roll in across the open fields.",
    "Nobody expected the quiet student to win the debate.",
    "The recipe calls for two cups of flour and some honey.",
    "A small boat drifted slowly past the old lighthouse.",
    "Turn left at the bakery and walk straight for five minutes.",
    "The children built a castle out of cardboard boxes.",
    "I think the meeting has been moved to Thursday afternoon.",
    "Her bicycle has a bright red bell and a wicker basket.",
    "The engineers tested the bridge with heavy trucks all night.",
    "Do you know where I left my reading glasses?",
    "The orchestra tuned their instruments before the concert began.",
    "Fresh snow covered the mountain road this morning.",
    "He painted the fence green to match the garden gate.",
    "Our neighbours are moving to a farm in the north.",
    "The library lends out telescopes as well as books.",
    "Wild horses still roam freely across the northern hills.",
    "She answered every question with a calm and steady voice.",
    "The kettle whistled just as the phone started ringing.",
    "Most of the apples fell during the windy night.",
    "Can we finish this chapter before the break?",
    "The pilot announced a short delay because of fog.",
    "A curious fox wandered into the empty parking lot.",
    "They rebuilt the old mill using the original stones.",
    "Every summer the town holds a festival by the lake.",
    "I would rather walk than wait for the next bus.",
    "The doctor said the results would arrive within a week.",
    "Thin clouds drifted across the pale evening sky.",
    "Our team finally solved the puzzle after three long hours.",
    "Why does the radio always lose signal in this tunnel?",
    "The baker rises at four to prepare the morning bread.",
    "Several ships waited outside the harbour for calmer seas.",
    "He keeps a notebook full of sketches and strange ideas.",
    "The garden looks wonderful after all that rain.",
    "Please close the window before the birds fly in.",
    "The new bridge shortened the journey by almost an hour.",
    "Her favourite song reminds her of long summer evenings.",
    "The students planted a row of oak trees along the river.",
    "It took the whole afternoon to sort out the old photographs.",
    "A loud knock at the door woke everyone in the house.",
    "The market sells cheese, olives and fresh bread on Saturdays.",
    "Would you like your coffee with milk or without?",
    "The climbers reached the summit just before sunset.",
    "Our cat sleeps all day and hunts moths at night.",
    "The committee will announce its decision on Monday.",
    "Bright lanterns lit the narrow streets of the old town.",
    "I forgot to bring the charger for my laptop again.",
    "The river flooded the meadow after a week of rain.",
    "She learned to play the violin when she was seven.",
    "The ferry carries cars and passengers across the bay.",
    "Everyone agreed that the soup needed a little more salt.",
    "The old clock in the hall stopped at midnight.",
    "How many chairs do we need for the dinner party?",
    "A gentle breeze carried the smell of the sea inland.",
    "The factory closed, but the workers opened a cooperative.",
    "He fixed the leaking tap with a rubber band and some tape.",
    "The owls called to each other across the dark valley.",
    "We should check the weather before we start the hike.",
    "Thousands of birds gather on the lake every autumn.",
    "The letter arrived three weeks after it was posted.",
    "Her brother repairs old radios in a tiny workshop.",
    "The path becomes steep and rocky near the waterfall.",
    "Is there a pharmacy open near the station tonight?",
    "The actors rehearsed the final scene one more time.",
    "A stack of unread newspapers sat beside the armchair.",
    "The farmers hoped for rain after the long dry summer.",
    "Our train was cancelled, so we shared a taxi instead.",
    "The painter mixed blue and yellow to make a soft green.",
    "Silver fish darted between the rocks in the shallow stream.",
    "The hotel offers breakfast on the terrace in summer.",
    "He whistled a cheerful tune while washing the dishes.",
    "The scientists measured the temperature every hour.",
    "Let me know when you have finished reading the report.",
    "The little dog barked at its own reflection in the window.",
    "A heavy fog settled over the harbour before dawn.",
    "The choir sang softly in the candlelit chapel.",
)


@dataclass(frozen=True)
class VoiceSpec:
    """A synthetic talker: espeak settings plus post-processing (all drawn from the seed).

    Attributes:
        voice_id: folder / speaker name, e.g. ``voice007`` (``babble03`` for babble voices).
        settings: espeak language, variant, pitch, range, rate, volume.
        tract_scale: formant and F0 scale from resampling (dimensionless, ~1).
        tilt: first-order tilt coefficient ``c`` in ``y[n] = x[n] + c·x[n-1]``.
    """

    voice_id: str
    settings: espeak.VoiceSettings
    tract_scale: float
    tilt: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["espeak_name"] = self.settings.espeak_name
        return d


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def voice_spec(seed: int, index: int, voice_id: str | None = None) -> VoiceSpec:
    """The voice with ``index`` (0-based) for ``seed``: a pure function of both.

    Even indices draw from the high-register variants, odd ones from the low-register ones,
    so the corpus is balanced; variants and accents walk seed-shuffled lists so that a
    variant is reused only after every other one of its register, and then with another
    accent.
    """
    order = _rng(seed, _STREAM_ASSIGN)
    high = [HIGH_VARIANTS[i] for i in order.permutation(len(HIGH_VARIANTS))]
    low = [LOW_VARIANTS[i] for i in order.permutation(len(LOW_VARIANTS))]
    accents = [ACCENTS[i] for i in order.permutation(len(ACCENTS))]
    variants = high if index % 2 == 0 else low
    j = index // 2
    cycle = j // len(variants)
    variant = variants[j % len(variants)]
    accent = accents[(j + cycle * (1 + index % 2)) % len(accents)]
    rng = _rng(seed, _STREAM_VOICE, index)
    settings = espeak.VoiceSettings(
        language=accent,
        variant=variant,
        pitch=int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
        pitch_range=int(rng.integers(INTONATION_RANGE[0], INTONATION_RANGE[1] + 1)),
        rate=int(rng.integers(RATE_WPM_RANGE[0], RATE_WPM_RANGE[1] + 1)),
        volume=VOLUME,
    )
    return VoiceSpec(
        voice_id=voice_id or f"voice{index:03d}",
        settings=settings,
        tract_scale=round(float(rng.uniform(*TRACT_SCALE_RANGE)), 4),
        tilt=round(float(rng.uniform(*TILT_RANGE)), 4),
    )


def voice_sentences(seed: int, index: int, count: int) -> list[str]:
    """``count`` distinct sentences for voice ``index`` (a seeded draw from SENTENCES)."""
    if count > len(SENTENCES):
        raise UserError(f"--sentences: expected at most {len(SENTENCES)} per voice, got {count}")
    pick = _rng(seed, _STREAM_SENTENCES, index).choice(len(SENTENCES), size=count, replace=False)
    return [SENTENCES[i] for i in pick]


# --------------------------------------------------------------------------- rendering


def _trim(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """Cut espeak's leading/trailing silence (frames below TRIM_DB re the peak)."""
    frame = max(1, int(TRIM_FRAME_SECONDS * sample_rate))
    n = len(wav) // frame
    if n == 0:
        return wav
    energy = (wav[: n * frame].reshape(n, frame) ** 2).mean(axis=1)
    peak = float(energy.max())
    if peak <= 0.0:
        return wav
    loud = np.flatnonzero(10.0 * np.log10(energy / peak + 1e-20) > TRIM_DB)
    return wav[loud[0] * frame : (loud[-1] + 1) * frame]


def render_utterance(
    text: str, spec: VoiceSpec, rng: np.random.Generator, sample_rate: int
) -> np.ndarray:
    """Speak ``text`` as ``spec``: ``(L,)`` float32 at ``sample_rate``, peak PEAK_LEVEL.

    espeak output (22050 Hz) → trim → re-speak at another rate if the length leaves
    UTTERANCE_SECONDS → tilt → resample as if recorded at 22050·tract_scale Hz → pads →
    peak normalisation. Not reproducible unless the process's call sequence is (see module
    docstring).
    """
    settings = spec.settings
    # Length of the spoken part (pads excluded) that keeps the padded file in range, s.
    lo, hi = UTTERANCE_SECONDS[0], UTTERANCE_SECONDS[1] - 2 * PAD_SECONDS[1]
    for _ in range(MAX_RETRIES + 1):
        wav, sr = espeak.synthesize(text, settings)
        changes: dict[str, int] = {}
        if float(np.abs(wav).max()) >= CLIP_LEVEL:  # saturated inside espeak: speak softer
            changes["volume"] = max(1, int(settings.volume * CLIP_BACKOFF))
        wav = _trim(wav, sr)
        seconds = len(wav) / sr / spec.tract_scale
        if not lo <= seconds <= hi:
            # Length scales inversely with words per minute; aim for the middle of the range.
            rate = round(settings.rate * seconds / (0.5 * (lo + hi)))
            rate = int(np.clip(rate, *espeak.RATE_WPM_RANGE))
            if rate != settings.rate:
                changes["rate"] = rate
        if not changes:
            break
        settings = dataclasses.replace(settings, **changes)
    if spec.tilt:
        wav = wav.copy()
        wav[1:] += spec.tilt * wav[:-1]
    wav = resample(wav, int(round(sr * spec.tract_scale)), sample_rate)
    lead, trail = (int(rng.uniform(*PAD_SECONDS) * sample_rate) for _ in range(2))
    wav = np.concatenate(
        [np.zeros(lead, np.float32), wav.astype(np.float32), np.zeros(trail, np.float32)]
    )
    return _peak_normalise(wav)


def _peak_normalise(wav: np.ndarray) -> np.ndarray:
    peak = float(np.abs(wav).max()) if wav.size else 0.0
    return (wav * (PEAK_LEVEL / peak)).astype(np.float32) if peak > 0 else wav


@dataclass(frozen=True)
class _VoiceJob:
    spec: VoiceSpec
    sentences: tuple[str, ...]
    sample_rate: int
    seed: int
    index: int
    out_dir: str | None  # None: return the audio (babble) instead of writing WAVs


def _marker_payload(job: _VoiceJob) -> dict[str, Any]:
    return {
        "format": _FORMAT_VERSION,
        "voice": job.spec.to_dict(),
        "sentences": list(job.sentences),
        "sample_rate": job.sample_rate,
        "seed": job.seed,
    }


def _marker_matches(folder: Path, payload: dict[str, Any]) -> dict[str, Any] | None:
    """The marker's content when it exists and was written for ``payload``; else None."""
    marker = folder / _MARKER
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return data if data.get("job") == payload else None


def _run_voice(job: _VoiceJob) -> tuple[str, list[float], list[np.ndarray] | None]:
    """Worker (fresh process): synthesise one voice; (voice_id, durations s, audio or None)."""
    rng = _rng(job.seed, _STREAM_RENDER, job.index)
    wavs = [render_utterance(t, job.spec, rng, job.sample_rate) for t in job.sentences]
    durations = [round(len(w) / job.sample_rate, 4) for w in wavs]
    if job.out_dir is None:
        return job.spec.voice_id, durations, wavs
    folder = Path(job.out_dir)
    if folder.exists():
        shutil.rmtree(folder)  # stale files of other settings must not survive
    for k, wav in enumerate(wavs):
        save_audio(folder / f"{job.spec.voice_id}_{k:03d}.wav", wav, job.sample_rate, "PCM_16")
    marker = {"job": _marker_payload(job), "durations": durations}
    atomic_write_text(folder / _MARKER, json.dumps(marker, indent=1) + "\n")
    return job.spec.voice_id, durations, None


def _context() -> mp.context.BaseContext:
    """Fresh worker processes that never inherit a used libespeak-ng (see module docstring)."""
    methods = mp.get_all_start_methods()
    if "forkserver" in methods:
        ctx = mp.get_context("forkserver")
        # The server imports this module once; each worker is a cheap fork of the server,
        # which itself never touches libespeak-ng.
        ctx.set_forkserver_preload([__name__])
        return ctx
    return mp.get_context("spawn")


def _run_jobs(
    jobs: list[_VoiceJob], workers: int
) -> list[tuple[str, list[float], list[np.ndarray] | None]]:
    if not jobs:
        return []
    with _context().Pool(max(1, min(workers, len(jobs))), maxtasksperchild=1) as pool:
        return pool.map(_run_voice, jobs, chunksize=1)


def synthesize_voices(
    speech_dir: Path,
    seed: int,
    num_voices: int,
    sentences_per_voice: int,
    sample_rate: int,
    workers: int,
) -> dict[str, Any]:
    """Write ``speech_dir/<voice_id>/*.wav`` for every voice; reuse completed voice folders.

    Returns ``{"voices": [spec dicts], "durations": {voice_id: [s, ...]}, "synthesised": n,
    "reused": n}``.
    """
    _check_counts(num_voices, sentences_per_voice, sample_rate)
    specs = [voice_spec(seed, k) for k in range(num_voices)]
    _, data_path = espeak.library_and_data_paths()
    for spec in specs:
        espeak.validate_voice(spec.settings, data_path)
    durations: dict[str, list[float]] = {}
    todo: list[_VoiceJob] = []
    for k, spec in enumerate(specs):
        job = _VoiceJob(
            spec=spec,
            sentences=tuple(voice_sentences(seed, k, sentences_per_voice)),
            sample_rate=sample_rate,
            seed=seed,
            index=k,
            out_dir=str(speech_dir / spec.voice_id),
        )
        done = _marker_matches(speech_dir / spec.voice_id, _marker_payload(job))
        if done is not None and len(list((speech_dir / spec.voice_id).glob("*.wav"))) == len(
            job.sentences
        ):
            durations[spec.voice_id] = done["durations"]
        else:
            todo.append(job)
    for voice_id, durs, _ in _run_jobs(todo, workers):
        durations[voice_id] = durs
    # Voice folders of a previous, larger build are not speakers of this one.
    wanted = {s.voice_id for s in specs}
    if speech_dir.is_dir():
        for folder in speech_dir.iterdir():
            if folder.is_dir() and folder.name not in wanted:
                shutil.rmtree(folder)
    return {
        "voices": [s.to_dict() for s in specs],
        "durations": {s.voice_id: durations[s.voice_id] for s in specs},
        "synthesised": len(todo),
        "reused": num_voices - len(todo),
    }


# --------------------------------------------------------------------------- noise


def coloured_noise(
    rng: np.random.Generator, num_samples: int, sample_rate: int, exponent: float
) -> np.ndarray:
    """``(L,)`` float32 Gaussian noise with power spectrum ∝ 1/f^exponent, peak PEAK_LEVEL."""
    spectrum = np.fft.rfft(rng.standard_normal(num_samples))
    freqs = np.fft.rfftfreq(num_samples, 1.0 / sample_rate)
    # Amplitude ∝ f^(-exponent/2) so that power ∝ f^-exponent; flat below the floor.
    shape = (np.maximum(freqs, COLOUR_FLOOR_HZ) / COLOUR_FLOOR_HZ) ** (-0.5 * exponent)
    shape[0] = 0.0  # no DC offset
    wav = np.fft.irfft(spectrum * shape, n=num_samples)
    return _peak_normalise(wav.astype(np.float32))


def hum_noise(rng: np.random.Generator, num_samples: int, sample_rate: int) -> np.ndarray:
    """``(L,)`` float32 mains hum: 50 or 60 Hz and harmonics, slow drift, faint noise floor."""
    f0 = float(rng.choice(HUM_FUNDAMENTALS_HZ))
    n_harm = int(rng.integers(HUM_HARMONICS[0], HUM_HARMONICS[1] + 1))
    decay = float(rng.uniform(*HUM_DECAY))
    # Slow drift of the fundamental: a random walk smoothed to well below 1 Hz.
    walk = np.cumsum(rng.standard_normal(num_samples)) / np.sqrt(sample_rate)
    walk = walk - walk.mean()
    walk *= HUM_DRIFT_HZ / max(float(np.abs(walk).max()), 1e-9)
    phase0 = 2.0 * np.pi * np.cumsum(f0 + walk) / sample_rate  # (L,) fundamental phase
    h = np.arange(1, n_harm + 1)
    h = h[h * f0 < 0.45 * sample_rate]
    amps = h.astype(np.float64) ** -decay * rng.uniform(0.5, 1.0, size=h.size)
    offsets = rng.uniform(0.0, 2.0 * np.pi, size=h.size)
    wav = (amps[:, None] * np.sin(h[:, None] * phase0[None, :] + offsets[:, None])).sum(axis=0)
    rms = float(np.sqrt((wav**2).mean()))
    wav = wav + rms * 10.0 ** (HUM_NOISE_DB / 20.0) * rng.standard_normal(num_samples)
    return _peak_normalise(wav.astype(np.float32))


def babble_noise(
    rng: np.random.Generator, streams: list[np.ndarray], num_samples: int
) -> np.ndarray:
    """``(L,)`` float32: several talkers (equal RMS, random offsets) summed, peak PEAK_LEVEL."""
    n_talkers = int(rng.integers(BABBLE_TALKERS[0], BABBLE_TALKERS[1] + 1))
    n_talkers = min(n_talkers, len(streams))
    out = np.zeros(num_samples, np.float64)
    for k in rng.choice(len(streams), size=n_talkers, replace=False):
        s = streams[int(k)]
        reps = int(np.ceil((num_samples + len(s)) / len(s)))
        tiled = np.tile(s, reps)
        start = int(rng.integers(0, len(s)))
        seg = tiled[start : start + num_samples].astype(np.float64)
        out += seg / max(float(np.sqrt((seg**2).mean())), 1e-9)
    return _peak_normalise(out.astype(np.float32))


def _noise_plan() -> list[tuple[str, str, int]]:
    """(file stem, kind, index) of every clip, in file-name order.

    prepare_corpus gives the last files by name to val and the ones before to test, so the
    kinds are spread evenly along the order (clip i of a kind with n clips sits at
    (i + 0.5) / n): every tail of the list, and so every split, mixes the kinds.
    """
    clips = [
        ((i + 0.5) / n, k, kind, i)
        for k, (kind, n) in enumerate(NOISE_COUNTS.items())
        for i in range(n)
    ]
    clips.sort()
    return [(f"n{j:03d}_{kind}{i:02d}", kind, i) for j, (_, _, kind, i) in enumerate(clips)]


def synthesize_noise(noise_dir: Path, seed: int, sample_rate: int, workers: int) -> dict[str, Any]:
    """Write ``noise_dir/*.wav`` (coloured, babble, hum); reuse a complete folder.

    Returns ``{"clips": {kind: count}, "seconds": clip length, "reused": bool}``.
    """
    plan = _noise_plan()
    babble_specs = [
        voice_spec(seed, BABBLE_INDEX_OFFSET + k, f"babble{k:02d}") for k in range(BABBLE_VOICES)
    ]
    payload = {
        "format": _FORMAT_VERSION,
        "seed": seed,
        "sample_rate": sample_rate,
        "plan": [p[0] for p in plan],
        "seconds": NOISE_SECONDS,
        "babble_voices": [s.to_dict() for s in babble_specs],
    }
    summary = {"clips": dict(NOISE_COUNTS), "seconds": NOISE_SECONDS}
    if _marker_matches(noise_dir, payload) is not None and len(
        list(noise_dir.glob("*.wav"))
    ) == len(plan):
        return {**summary, "reused": True}
    if noise_dir.exists():
        shutil.rmtree(noise_dir)
    streams: list[np.ndarray] = []
    if NOISE_COUNTS.get("babble", 0):
        _, data_path = espeak.library_and_data_paths()
        jobs = []
        for k, spec in enumerate(babble_specs):
            espeak.validate_voice(spec.settings, data_path)
            index = BABBLE_INDEX_OFFSET + k
            jobs.append(
                _VoiceJob(
                    spec=spec,
                    sentences=tuple(voice_sentences(seed, index, BABBLE_SENTENCES)),
                    sample_rate=sample_rate,
                    seed=seed,
                    index=index,
                    out_dir=None,
                )
            )
        streams = [np.concatenate(w) for _, _, w in _run_jobs(jobs, workers) if w]
    num = int(round(NOISE_SECONDS * sample_rate))
    for stem, kind, i in plan:
        rng = _rng(seed, _STREAM_NOISE, list(NOISE_COUNTS).index(kind), i)
        if kind == "babble":
            wav = babble_noise(rng, streams, num)
        elif kind == "hum":
            wav = hum_noise(rng, num, sample_rate)
        else:
            exponent = COLOUR_EXPONENT[kind] + rng.uniform(-1, 1) * COLOUR_EXPONENT_JITTER
            wav = coloured_noise(rng, num, sample_rate, max(0.0, exponent))
        save_audio(noise_dir / f"{stem}.wav", wav, sample_rate, "PCM_16")
    atomic_write_text(noise_dir / _MARKER, json.dumps({"job": payload}, indent=1) + "\n")
    return {**summary, "reused": False}


# --------------------------------------------------------------------------- whole build


def _check_counts(num_voices: int, sentences_per_voice: int, sample_rate: int) -> None:
    if num_voices < MIN_VOICES:
        raise UserError(f"--voices: expected at least {MIN_VOICES}, got {num_voices}")
    if sentences_per_voice < MIN_SENTENCES:
        raise UserError(
            f"--sentences: expected at least {MIN_SENTENCES} per voice, got {sentences_per_voice}"
        )
    if sentences_per_voice > len(SENTENCES):
        raise UserError(
            f"--sentences: expected at most {len(SENTENCES)} per voice, got {sentences_per_voice}"
        )
    if not SAMPLE_RATE_RANGE[0] <= sample_rate <= SAMPLE_RATE_RANGE[1]:
        raise UserError(
            f"--sample-rate: expected {SAMPLE_RATE_RANGE[0]}..{SAMPLE_RATE_RANGE[1]} Hz, "
            f"got {sample_rate}"
        )
    if num_voices >= BABBLE_INDEX_OFFSET:
        raise UserError(f"--voices: expected fewer than {BABBLE_INDEX_OFFSET}, got {num_voices}")


def eval_share(num_voices: int) -> float:
    """val (and test) share of voices: HELD_OUT_VOICES each, at most MAX_EVAL_SHARE."""
    return min(MAX_EVAL_SHARE, HELD_OUT_VOICES / num_voices)


def build_demo_corpus(
    out: Path,
    seed: int = DEFAULT_SEED,
    num_voices: int = DEFAULT_VOICES,
    sentences_per_voice: int = DEFAULT_SENTENCES,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    workers: int = 1,
    simulate_rirs: int = DEFAULT_SIMULATE_RIRS,
    *,
    cfg: Config | None = None,
    progress: bool = True,
    real_voices: bool = False,
    voice_variants: int = DEFAULT_VOICE_VARIANTS,
    real_roots: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Synthesise the demo corpus into ``out/raw`` and pack it into ``out`` (a packs dir).

    ``workers`` <= 0 means one per CPU core. ``cfg`` (its ``preparation`` section and
    ``mixing.max_rir_seconds``) defaults to ``Config()``; ``progress`` shows prepare's progress
    bar. ``real_voices`` adds the installed real sources (``real_roots`` overrides their
    locations: keyword arguments of :func:`hifi_tse.data.real_voices.find_real_voices`),
    with ``voice_variants`` pitch/formant variants of each real training talker.

    Returns a summary: voices, utterances, speech hours, noise clips, RIRs, per-split counts
    (from the prepare report), seconds taken and the prepare report itself.
    """
    from hifi_tse.data.prepare import prepare_corpus  # heavy imports only when packing

    t0 = time.perf_counter()
    out = Path(out)
    workers = workers if workers > 0 else (os.cpu_count() or 1)
    if simulate_rirs < 0:
        raise UserError(f"--simulate-rirs: expected >= 0, got {simulate_rirs}")
    raw = out / "raw"
    speech = synthesize_voices(
        raw / "speech", seed, num_voices, sentences_per_voice, sample_rate, workers
    )
    noise = synthesize_noise(raw / "noise", seed, sample_rate, workers)
    atomic_write_text(
        raw / "voices.json", json.dumps({"seed": seed, "voices": speech["voices"]}, indent=1)
    )
    t_synth = time.perf_counter() - t0
    share = eval_share(num_voices)
    speech_sources = [SpeechSource(raw / SYNTHETIC_SOURCE, "folder", voices="synthetic")]
    real = None
    if real_voices:
        real = _find_real(raw, sample_rate, voice_variants, workers, real_roots, progress)
        speech_sources += real.sources
    report = prepare_corpus(
        speech=speech_sources,
        noise=[raw / "noise"],
        rir=[],
        simulate_rirs=simulate_rirs,
        out=out,
        sample_rate=sample_rate,
        min_seconds=MIN_SPEECH_SECONDS,
        val_ratio=share,
        test_ratio=share,
        workers=workers,
        seed=seed,
        cfg=cfg,
        progress=progress,
        # float32: the demo corpus is small, and its recorded figures were measured on it
        storage="float32",
    )
    return _summary(
        out,
        seed,
        sample_rate,
        num_voices,
        simulate_rirs,
        speech,
        noise,
        report,
        real,
        t_synth,
        time.perf_counter() - t0,
    )


def _find_real(
    raw: Path,
    sample_rate: int,
    voice_variants: int,
    workers: int,
    real_roots: dict[str, Any] | None,
    progress: bool,
) -> Any:
    """The installed real sources (staged into ``raw``); says which were found."""
    real = find_real_voices(
        raw,
        sample_rate,
        MIN_SPEECH_SECONDS,
        voice_variants,
        **{"workers": workers, **(real_roots or {})},
    )
    if progress:
        print(real.found, flush=True)
    return real


def _summary(
    out: Path,
    seed: int,
    sample_rate: int,
    num_voices: int,
    simulate_rirs: int,
    speech: dict[str, Any],
    noise: dict[str, Any],
    report: dict[str, Any],
    real: Any,
    t_synth: float,
    seconds: float,
) -> dict[str, Any]:
    """What build_demo_corpus returns (see there)."""
    all_durations = [d for durs in speech["durations"].values() for d in durs]
    return {
        "out": str(out),
        "seed": seed,
        "sample_rate": sample_rate,
        "voices": num_voices,
        "utterances": len(all_durations),
        "speech_hours": round(sum(all_durations) / 3600.0, 4),
        "utterance_seconds": [round(min(all_durations), 3), round(max(all_durations), 3)],
        "voices_synthesised": speech["synthesised"],
        "voices_reused": speech["reused"],
        "noise_clips": sum(noise["clips"].values()),
        "noise_by_kind": noise["clips"],
        "noise_reused": noise["reused"],
        "rirs": simulate_rirs,
        "splits": report["splits"],
        "real_voices": _real_summary(report) if real is not None else None,
        "real_missing": real.missing if real is not None else "",
        "real_found": real.found if real is not None else "",
        "real_packages": real.summary.get("packages", {}) if real is not None else {},
        "synthesis_seconds": round(t_synth, 2),
        "seconds": round(seconds, 2),
        "report": report,
    }


def _real_summary(report: dict[str, Any]) -> dict[str, Any]:
    """Real talkers per split (voice variants counted apart) from a prepare report."""
    real_sources = {s["name"] for s in report["sources"] if s.get("voices") == "real"}
    return {
        "sources": sorted(real_sources),
        "speakers": {
            split: sum(n for src, n in c["speakers_by_source"].items() if src in real_sources)
            for split, c in report["splits"].items()
        },
        "variant_speakers": report["splits"]["train"]["variant_speakers"],
    }
