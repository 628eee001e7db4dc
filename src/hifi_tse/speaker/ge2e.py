"""GE2E speaker encoder (Wan et al., 2018) running the weights shipped in the ``resemblyzer`` wheel.

This is our own implementation of what resemblyzer 0.1.4's ``VoiceEncoder.embed_utterance``
computes; only the weights file ``resemblyzer/pretrained.pt`` is taken from the package, which
therefore need only be installed (``pip install --no-deps resemblyzer``), never imported, so
neither librosa nor webrtcvad is needed at run time.

Pipeline for one utterance of 16 kHz mono float audio (full scale ±1):

1. optional volume normalisation: scaled *up* to -30 dBFS RMS, never down (on by default);
2. split into 160-frame (1.6 s) partial windows, 1.3 windows per second, the last one kept
   only if at least 75 % of it is real audio; the audio is zero-padded to the last window's end;
3. power (not log) mel spectrogram, 40 Slaney bands over 0-8 kHz, 25 ms Hann window, 10 ms hop,
   centred frames with zero padding: ``(T, 40)`` with ``T = L // 160 + 1``;
4. each window through a 3-layer LSTM(40 → 256); the top layer's last hidden state → linear
   (256 → 256) → ReLU → L2 normalisation;
5. the mean of the window embeddings, L2-normalised again: ``(256,)``, every entry >= 0.

Difference from the package: its ``preprocess_wav`` also cuts long silences with webrtcvad
before embedding. That trim is **not** done here, so audio with long pauses gives an embedding
that differs from ``embed_utterance(preprocess_wav(wav))``; trim such audio beforehand if that
matters. On audio without long pauses the two agree to float32 rounding.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hifi_tse.audio.io import resample, to_mono
from hifi_tse.errors import UserError
from hifi_tse.speaker.frontend import (  # noqa: F401 - re-exported for the encoder's users
    FMAX_HZ,
    FMIN_HZ,
    HOP,
    N_FFT,
    N_MELS,
    SAMPLE_RATE,
    TARGET_DBFS,
    hz_to_mel,
    mel_filterbank,
    mel_to_hz,
    normalize_volume,
)
from hifi_tse.utils import installed_data_file

# Network sizes and windowing, from resemblyzer 0.1.4 ``hparams.py`` (partials_n_frames,
# model_*).
PARTIAL_FRAMES = 160  # 1.6 s of frames per partial window
HIDDEN_SIZE = 256
EMBED_SIZE = 256
NUM_LAYERS = 3
# Defaults of ``VoiceEncoder.embed_utterance`` (rate, min_coverage).
PARTIALS_PER_SECOND = 1.3
MIN_COVERAGE = 0.75

WEIGHTS_DIST = "resemblyzer"
WEIGHTS_FILE = "resemblyzer/pretrained.pt"
INSTALL_HINT = "pip install --no-deps resemblyzer"


def partial_starts(
    n_samples: int, rate: float = PARTIALS_PER_SECOND, min_coverage: float = MIN_COVERAGE
) -> np.ndarray:
    """First mel frame of each partial window over ``n_samples`` of 16 kHz audio: ``(P,)`` int64.

    Windows are ``PARTIAL_FRAMES`` long and ``round(SAMPLE_RATE / rate / HOP)`` frames apart
    (77 frames for 1.3 windows/s) and together reach past the last frame; the last one is then
    dropped if less than ``min_coverage`` of its span is real audio, unless it is the only one
    (``P >= 1`` always). Windows may run past the audio: zero-pad it to
    ``(starts[-1] + PARTIAL_FRAMES) * HOP`` samples before taking the mel spectrogram.
    """
    if not 0.0 < min_coverage <= 1.0:
        raise ValueError(f"min_coverage must be in (0, 1], got {min_coverage}")
    step = int(np.round(SAMPLE_RATE / rate / HOP))
    if not 0 < step <= PARTIAL_FRAMES:
        raise ValueError(
            f"rate {rate} windows/s gives a step of {step} frames; it must be 1..{PARTIAL_FRAMES}"
        )
    n_frames = n_samples // HOP + 1  # centred frames
    starts = np.arange(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step, dtype=np.int64)
    coverage = (n_samples - starts[-1] * HOP) / (PARTIAL_FRAMES * HOP)
    if coverage < min_coverage and len(starts) > 1:
        starts = starts[:-1]
    return starts


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two equal-length 1-D vectors, in [-1, 1]; 0.0 if either is all zeros."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"cosine: vectors differ in length ({a.size} vs {b.size})")
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / denom if denom > 0.0 else 0.0


def default_weights_path(dist_name: str = WEIGHTS_DIST) -> Path:
    """Path of ``resemblyzer/pretrained.pt`` inside the installed ``dist_name`` distribution.

    Found through the distribution's metadata, so the package's own (heavy) imports never run.
    Raises UserError, with the install command, when the distribution or the file is missing.
    """
    return installed_data_file(
        dist_name, WEIGHTS_FILE, "GE2E speaker encoder weights", INSTALL_HINT
    )


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read the ``lstm.*`` and ``linear.*`` tensors of a resemblyzer checkpoint on the CPU.

    ``weights_only=True``: the file is a plain tensor dict, so no pickled code needs to run.
    Raises UserError naming the file when it is missing, unreadable or has no ``model_state``.
    """
    if not path.is_file():
        raise UserError(
            f"{path}: GE2E speaker encoder weights not found (the default ones come with: "
            f"{INSTALL_HINT})"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: not a readable torch checkpoint ({reason})") from None
    state = checkpoint.get("model_state") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise UserError(f"{path}: not a resemblyzer checkpoint (no 'model_state' dict)")
    # The checkpoint also holds the GE2E loss's similarity scale and bias, unused at inference.
    return {k: v for k, v in state.items() if k.startswith(("lstm.", "linear."))}


def _prepare(wav: np.ndarray, sample_rate: int, volume_norm: bool) -> np.ndarray:
    """Validate one utterance and bring it to 16 kHz mono float32 ``(L,)``, volume-normalised."""
    wav = np.asarray(wav)
    if wav.ndim not in (1, 2):
        raise UserError(f"speaker encoder: expected (L,) or (L, C) audio, got shape {wav.shape}")
    if wav.size == 0:
        raise UserError("speaker encoder: audio is empty (zero samples)")
    if not np.issubdtype(wav.dtype, np.floating):
        raise UserError(f"speaker encoder: expected float audio in [-1, 1], got {wav.dtype}")
    if not np.isfinite(wav).all():
        raise UserError("speaker encoder: audio contains NaN or Inf samples")
    if sample_rate <= 0:
        raise UserError(f"speaker encoder: sample rate must be positive, got {sample_rate}")
    wav = resample(to_mono(wav).astype(np.float32, copy=False), int(sample_rate), SAMPLE_RATE)
    if wav.size == 0:  # a handful of samples at a high rate can resample to nothing
        raise UserError("speaker encoder: audio is too short to embed")
    return normalize_volume(wav) if volume_norm else wav


class GE2EEncoder(nn.Module):
    """GE2E LSTM speaker encoder with the resemblyzer layout; build it with :meth:`from_pretrained`.

    The mel filterbank and STFT window are buffers, so ``.to(device)`` moves the whole front end;
    they are left out of the state dict, which holds exactly the checkpoint's ``lstm.*`` and
    ``linear.*`` tensors.
    """

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(N_MELS, HIDDEN_SIZE, NUM_LAYERS, batch_first=True)
        self.linear = nn.Linear(HIDDEN_SIZE, EMBED_SIZE)
        self.register_buffer("window", torch.hann_window(N_FFT, periodic=True), persistent=False)
        filters = torch.from_numpy(mel_filterbank().astype(np.float32))
        self.register_buffer("mel_basis", filters, persistent=False)

    @classmethod
    def from_pretrained(
        cls, path: Path | None = None, device: str | torch.device = "cpu"
    ) -> GE2EEncoder:
        """Encoder with weights from ``path`` (default: the installed resemblyzer's), in eval mode.

        Raises UserError (one line) when the weights are missing, unreadable or do not fit.
        """
        path = default_weights_path() if path is None else Path(path)
        state = load_weights(path)
        model = cls()
        expected = model.state_dict()
        missing = sorted(set(expected) - set(state))
        misshapen = sorted(
            k for k in expected if k in state and state[k].shape != expected[k].shape
        )
        if missing or misshapen:
            raise UserError(
                f"{path}: not GE2E encoder weights (missing {len(missing)} tensors, "
                f"{len(misshapen)} of the wrong shape, e.g. {(missing + misshapen)[0]})"
            )
        model.load_state_dict(state)
        return model.to(device).eval()

    @property
    def device(self) -> torch.device:
        """Device the weights and front end live on."""
        return self.mel_basis.device

    def mel(self, wav: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Power mel spectrogram of ``(L,)`` 16 kHz float audio: ``(L // 160 + 1, 40)`` float32.

        Power (squared magnitude), not log: that is what the pretrained LSTM was trained on.
        Returned on :attr:`device`.
        """
        x = torch.as_tensor(wav, dtype=torch.float32, device=self.device)
        spec = torch.stft(
            x,
            n_fft=N_FFT,
            hop_length=HOP,
            win_length=N_FFT,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()  # (n_fft // 2 + 1, T)
        return (self.mel_basis @ power).T

    def embed_partials(self, mels: torch.Tensor) -> torch.Tensor:
        """Embed partial windows ``(B, 160, 40)`` of power mels → ``(B, 256)``, unit L2 norm.

        Differentiable (no ``no_grad`` here), so it can sit inside a training loss.
        """
        _, (hidden, _) = self.lstm(mels)
        return F.normalize(torch.relu(self.linear(hidden[-1])), dim=1)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`embed_partials`."""
        return self.embed_partials(mels)

    @torch.inference_mode()
    def embed_batch(
        self, wavs: Sequence[np.ndarray], sample_rate: int, *, volume_norm: bool = True
    ) -> np.ndarray:
        """Utterance embeddings of ``N`` clips at ``sample_rate`` Hz: ``(N, 256)`` float32.

        Each clip is ``(L,)`` (or ``(L, C)``, averaged to mono) float audio; clips may differ in
        length. The partial windows of all clips go through the LSTM in one batch. Raises
        UserError for an empty list or any empty / NaN / Inf clip.
        """
        if len(wavs) == 0:
            raise UserError("speaker encoder: no utterances to embed")
        windows, counts = [], []
        offsets = torch.arange(PARTIAL_FRAMES, device=self.device)
        for wav in wavs:
            audio = _prepare(wav, sample_rate, volume_norm)
            starts = partial_starts(audio.size)
            # Padding to the last window's end (not beyond) keeps the final frames identical to
            # the package's; longer audio is kept whole for the same reason.
            end = int(starts[-1] + PARTIAL_FRAMES) * HOP
            if end > audio.size:
                audio = np.pad(audio, (0, end - audio.size))
            mel = self.mel(audio)
            index = torch.as_tensor(starts, device=self.device)[:, None] + offsets
            windows.append(mel[index])  # (P, 160, 40)
            counts.append(len(starts))
        partials = self.embed_partials(torch.cat(windows))
        owner = torch.repeat_interleave(
            torch.arange(len(wavs), device=self.device),
            torch.as_tensor(counts, device=self.device),
        )
        # Sum then normalise: same direction as the mean, one scatter for every clip.
        sums = torch.zeros(len(wavs), EMBED_SIZE, device=self.device).index_add_(0, owner, partials)
        return F.normalize(sums, dim=1).cpu().numpy()

    def embed_utterance(
        self, wav: np.ndarray, sample_rate: int, *, volume_norm: bool = True
    ) -> np.ndarray:
        """Embedding of one ``(L,)`` clip at ``sample_rate`` Hz: ``(256,)`` float32, unit norm.

        Resampled to 16 kHz when needed. Raises UserError on empty, NaN or Inf input.
        """
        return self.embed_batch([wav], sample_rate, volume_norm=volume_norm)[0]
