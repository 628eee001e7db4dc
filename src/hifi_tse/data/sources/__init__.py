"""Real-voice sources: one module per corpus or package, each exposing ``SOURCE``.

:func:`all_sources` lists them in the order the demo corpus stages them. The shared staging
(quality rules, joining, speaker folders) is in :mod:`hifi_tse.data.sources.base`.
"""

from __future__ import annotations

from importlib import import_module

from hifi_tse.data.sources.base import VoiceSource

SOURCE_MODULES = (
    "amazon_queen",
    "steel_sky",
    "ktuberling",
    "klettres",
    "tuxpaint",
    "hedgewars",
    "festvox_ru",
    "kajongg",
)


def all_sources() -> list[VoiceSource]:
    """Every source module's ``SOURCE``, in :data:`SOURCE_MODULES` order."""
    return [import_module(f"{__name__}.{name}").SOURCE for name in SOURCE_MODULES]
