"""ctypes binding to libespeak-ng: text → 22050 Hz mono speech, one voice setting at a time.

The library comes from the ``espeakng-loader`` wheel (Linux x86_64), with a fallback to the
system ``libespeak-ng`` found by :func:`ctypes.util.find_library` on other platforms.

Facts that shape this module:

* libespeak-ng holds ONE global voice per process and is not thread-safe, so every call goes
  through a process-wide lock and selects its voice afresh.
* Output is bit-identical only for the same sequence of calls in a fresh process (the
  synthesiser keeps state such as the flutter phase and the noise generator across calls).
  Callers that need reproducible audio (the demo corpus) synthesise each voice in its own
  freshly started worker process.
* An unknown variant name after ``+`` is silently ignored by the library, so variant and
  language names are validated here against the data folder and raise :class:`UserError`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hifi_tse.errors import UserError

# --------------------------------------------------------------------------- C constants
# Values from espeak-ng's speak_lib.h; named here so the calls below read as the C API does.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # return an error instead of calling exit() on a bad data path
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_EE_OK = 0
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
_PARAM_RANGE = 4
_PARAM_WORDGAP = 7
_BUFFER_MS = 200  # length of the chunks handed to the synth callback, ms
_INT16_FULL_SCALE = 32768.0

# Valid ranges of the settings (speak_lib.h documents them); checked before calling the C side.
RATE_WPM_RANGE = (80, 450)
PERCENT_RANGE = (0, 100)
VOLUME_RANGE = (0, 200)
WORDGAP_RANGE = (0, 100)  # extra pause between words, units of 10 ms at the default rate

# int cb(short *wav, int numsamples, espeak_EVENT *events); events are not used here.
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


@dataclass(frozen=True)
class VoiceSettings:
    """One synthetic talker.

    Attributes:
        language: espeak language file name, e.g. ``"en-US"`` (accent).
        variant: file name in ``espeak-ng-data/voices/!v`` (formants, pitch base, breath, ...),
            or ``""`` for the language's default voice.
        pitch: espeakPITCH, 0..100 (50 = the variant's own base pitch).
        pitch_range: espeakRANGE, 0..100 (0 = monotone, 50 = normal intonation).
        rate: espeakRATE, words per minute (80..450; 175 is espeak's default).
        volume: espeakVOLUME, 0..200 (100 = normal; lower avoids clipping in klatt variants).
        word_gap: espeakWORDGAP, extra pause between words in 10 ms units (0..100).
    """

    language: str
    variant: str
    pitch: int
    pitch_range: int
    rate: int
    volume: int
    word_gap: int = 0

    @property
    def espeak_name(self) -> str:
        """The name passed to ``espeak_SetVoiceByName``: ``language[+variant]``."""
        return f"{self.language}+{self.variant}" if self.variant else self.language


# --------------------------------------------------------------------------- locating files


def _loader_paths() -> tuple[str | None, Path | None]:
    """(library path, data path) from the espeakng-loader wheel, or (None, None)."""
    try:
        import espeakng_loader
    except ImportError:
        return None, None
    lib = Path(espeakng_loader.get_library_path())
    try:
        data = Path(espeakng_loader.get_data_path())
    except RuntimeError:
        data = None
    return (str(lib) if lib.exists() else None), data


def _system_data_path() -> Path | None:
    """espeak-ng-data of a system install (used with the system library)."""
    for candidate in (
        "/usr/share/espeak-ng-data",
        "/usr/lib/x86_64-linux-gnu/espeak-ng-data",
        "/usr/local/share/espeak-ng-data",
        "/opt/homebrew/share/espeak-ng-data",
    ):
        if Path(candidate).is_dir():
            return Path(candidate)
    return None


@functools.lru_cache(maxsize=1)
def library_and_data_paths() -> tuple[str, Path]:
    """Locate libespeak-ng and its espeak-ng-data folder; UserError when neither is found."""
    lib, data = _loader_paths()
    if lib is None:
        lib = ctypes.util.find_library("espeak-ng")
        data = _system_data_path()
    if lib is None:
        raise UserError(
            "libespeak-ng: not found (install the espeakng-loader wheel on Linux x86_64, "
            "or the system espeak-ng package elsewhere)"
        )
    if data is None or not data.is_dir():
        raise UserError(f"espeak-ng-data: folder not found for library {lib}")
    return lib, data


def available_variants(data_path: Path | None = None) -> list[str]:
    """Sorted variant names shipped in ``espeak-ng-data/voices/!v``."""
    data_path = data_path or library_and_data_paths()[1]
    folder = data_path / "voices" / "!v"
    return sorted(p.name for p in folder.iterdir() if p.is_file())


def available_languages(data_path: Path | None = None) -> list[str]:
    """Sorted language file names under ``espeak-ng-data/lang`` (e.g. ``en-US``)."""
    data_path = data_path or library_and_data_paths()[1]
    return sorted(p.name for p in (data_path / "lang").rglob("*") if p.is_file())


def _check_range(name: str, value: int, bounds: tuple[int, int]) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"espeak voice {name}: expected an integer, got {value!r}")
    if not bounds[0] <= value <= bounds[1]:
        raise UserError(f"espeak voice {name}: expected {bounds[0]}..{bounds[1]}, got {value}")


def validate_voice(voice: VoiceSettings, data_path: Path | None = None) -> None:
    """Raise UserError unless the language, variant and every numeric setting are valid.

    The library itself accepts an unknown variant silently (and speaks with the default
    voice), which would quietly merge two "different" talkers; hence the explicit check.
    """
    data_path = data_path or library_and_data_paths()[1]
    languages = {name.lower(): name for name in available_languages(data_path)}
    if voice.language.lower() not in languages:
        raise UserError(
            f"espeak voice language: unknown {voice.language!r} "
            f"(expected a file name under {data_path / 'lang'}, e.g. 'en-US')"
        )
    if voice.variant and voice.variant not in available_variants(data_path):
        raise UserError(
            f"espeak voice variant: unknown {voice.variant!r} "
            f"(expected a file name in {data_path / 'voices' / '!v'})"
        )
    _check_range("pitch", voice.pitch, PERCENT_RANGE)
    _check_range("pitch_range", voice.pitch_range, PERCENT_RANGE)
    _check_range("rate", voice.rate, RATE_WPM_RANGE)
    _check_range("volume", voice.volume, VOLUME_RANGE)
    _check_range("word_gap", voice.word_gap, WORDGAP_RANGE)


# --------------------------------------------------------------------------- the engine


class _Engine:
    """The process-wide libespeak-ng instance (created on first use)."""

    def __init__(self) -> None:
        lib_path, data_path = library_and_data_paths()
        try:
            lib = ctypes.CDLL(lib_path)
        except OSError as exc:
            raise UserError(f"{lib_path}: cannot load libespeak-ng ({exc})") from None
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        sample_rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS,
            _BUFFER_MS,
            str(data_path).encode(),
            _INITIALIZE_DONT_EXIT,
        )
        if sample_rate <= 0:
            raise UserError(f"{data_path}: espeak_Initialize failed (code {sample_rate})")
        self.lib = lib
        self.data_path = data_path
        self.sample_rate = int(sample_rate)
        self._chunks: list[np.ndarray] = []
        # Keep a reference: ctypes would free the trampoline while C still points at it.
        self._callback = _SYNTH_CALLBACK(self._on_audio)
        lib.espeak_SetSynthCallback(self._callback)
        self._voice: VoiceSettings | None = None

    def _on_audio(self, wav: ctypes._Pointer, num_samples: int, _events: int) -> int:
        if wav and num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0  # 0 = keep synthesising

    def _set_voice(self, voice: VoiceSettings) -> None:
        if voice == self._voice:
            return
        validate_voice(voice, self.data_path)
        code = self.lib.espeak_SetVoiceByName(voice.espeak_name.encode())
        if code != _EE_OK:
            raise UserError(f"espeak voice {voice.espeak_name!r}: not found (code {code})")
        # Selecting a voice resets rate/pitch, so the parameters follow the voice.
        for param, value in (
            (_PARAM_RATE, voice.rate),
            (_PARAM_VOLUME, voice.volume),
            (_PARAM_PITCH, voice.pitch),
            (_PARAM_RANGE, voice.pitch_range),
            (_PARAM_WORDGAP, voice.word_gap),
        ):
            code = self.lib.espeak_SetParameter(param, value, 0)
            if code != _EE_OK:
                raise UserError(f"espeak parameter {param}={value}: rejected (code {code})")
        self._voice = voice

    def synthesize(self, text: str, voice: VoiceSettings) -> np.ndarray:
        self._set_voice(voice)
        data = text.encode("utf-8") + b"\0"
        buf = ctypes.create_string_buffer(data, len(data))
        self._chunks = []
        code = self.lib.espeak_Synth(buf, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if code != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed (code {code}) for {text[:40]!r}")
        chunks, self._chunks = self._chunks, []
        if not chunks:
            return np.zeros(0, dtype=np.float32)
        return (np.concatenate(chunks).astype(np.float32) / _INT16_FULL_SCALE).astype(np.float32)


_ENGINE: _Engine | None = None
_LOCK = threading.Lock()


def _engine() -> _Engine:
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Engine()
    return _ENGINE


def sample_rate() -> int:
    """Native output rate of libespeak-ng (22050 Hz for the shipped voices)."""
    with _LOCK:
        return _engine().sample_rate


def synthesize(text: str, voice: VoiceSettings) -> tuple[np.ndarray, int]:
    """Speak ``text`` with ``voice``: ``((L,) float32 in [-1, 1), sample rate in Hz)``.

    Raises UserError for an invalid voice (unknown language/variant, out-of-range setting).
    Not bit-reproducible across calls within one process; see the module docstring.
    """
    if not text.strip():
        raise UserError("espeak text: expected a non-empty sentence")
    with _LOCK:
        engine = _engine()
        return engine.synthesize(text, voice), engine.sample_rate
