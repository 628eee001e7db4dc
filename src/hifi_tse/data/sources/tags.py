"""Metadata tags of audio files: who a clip's ARTIST tag says is speaking.

The KDE game packages (ktuberling, klettres, kajongg) name a clip's speaker, where they name
one at all, only in its Vorbis comment ``ARTIST``. libsndfile reads that comment from Ogg
Vorbis / Opus, FLAC and WAV (``INFO``) files, and soundfile's ``copy_metadata`` returns it as
``"artist"``, so no tag library is needed.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import soundfile as sf

ARTIST_KEY = "artist"


def tags(path: str | Path) -> dict[str, str]:
    """Every metadata tag libsndfile reads from ``path`` (lower-case keys, e.g. ``"artist"``,
    ``"title"``); empty when the file has none or cannot be opened (the clip's own read then
    reports it)."""
    try:
        with sf.SoundFile(str(path)) as f:
            return dict(f.copy_metadata())
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError):
        return {}


def artist(path: str | Path) -> str | None:
    """The ARTIST tag of ``path`` with runs of white space made single, or None when absent
    or blank."""
    value = " ".join(tags(path).get(ARTIST_KEY, "").split())
    return value or None


def ascii_name(name: str) -> str:
    """``name`` with accents dropped (``"Eudald Lladó"`` → ``"Eudald Llado"``), so talker ids
    made file-safe keep every letter."""
    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
