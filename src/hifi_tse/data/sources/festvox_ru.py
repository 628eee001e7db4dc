"""festvox-ru: the recordings behind Festival's Russian unit-selection voice.

The Debian package ``festvox-ru`` installs the ``msu_ru_nsh_clunits`` voice of the Festival
speech synthesiser, and with it the prompts it was built from: read Russian sentences, one
WAV file each (16 kHz, 16-bit mono, 3.8-18.0 s, 620 files, 99.5 minutes) in
``usr/share/festival/voices/russian/msu_ru_nsh_clunits/wav/ru_NNNN.wav``. The voice's other
folders (``lab``, ``mcep``, ``festival``) hold labels and features, not audio.

Talker: one. The voice is named after its one reader (``nsh``: Nickolay V. Shmyrev, the
author named in the package's copyright) and a unit-selection voice is recorded by a single
talker, so every clip is talker ``nsh``. The clips are whole sentences, so they are not
joined (``join=False``).

Licence, as ``usr/share/doc/festvox-ru/copyright`` states it for ``Files: *`` (the
recordings included): "BSD-like", Copyright (c) 2005 Nickolay V. Shmyrev; use, copying,
modification and distribution are allowed provided the notice is kept, modifications are
marked, the authors' names are kept and not used to endorse derived works.

Measured (``stage_source`` at 16 kHz, default rules): 620 clips, 620 kept, none dropped;
one talker, 90.6 minutes after trimming the files' leading and trailing silence.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from pathlib import Path

from hifi_tse.audio.io import read_audio
from hifi_tse.data.sources.base import Clip, VoiceSource, locate

VOICE_DIR = "usr/share/festival/voices/russian/msu_ru_nsh_clunits"
WAV_DIR = f"{VOICE_DIR}/wav"
TALKER = "nsh"  # the voice's one reader, as its name says


def find(prefixes: Sequence[Path]) -> Path | None:
    """The voice's ``wav`` folder below the first of ``prefixes`` that has it, else None."""
    return locate(WAV_DIR, prefixes)


def clips(root: Path) -> Iterator[Clip]:
    """Every ``*.wav`` directly in ``root`` (the ``wav`` folder), by name, all talker ``nsh``."""
    for path in sorted(Path(root).glob("*.wav")):
        yield Clip(TALKER, path.stem, functools.partial(read_audio, str(path)))


SOURCE = VoiceSource(
    name="festvox_ru",
    package="festvox-ru",
    licence="BSD-like (Copyright 2005 Nickolay V. Shmyrev; keep the notice, mark changes)",
    description="one Russian talker reading sentences (Festival unit-selection voice prompts)",
    find=find,
    clips=clips,
    join=False,
)
