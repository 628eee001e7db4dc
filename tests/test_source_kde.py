"""The KDE game sources (ktuberling, klettres, kajongg): layouts, ARTIST tags, talker ids,
their clip rules and staging, on small fixtures written here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_sources_staging import voiced

from hifi_tse.data.sources import kajongg, klettres, ktuberling, tags
from hifi_tse.data.sources.base import ClipRules, judge_clip, search_prefixes, stage_source
from hifi_tse.errors import UserError

SR = 16000  # staging rate


def write(path: Path, wav: np.ndarray, rate: int, artist: str | None = None) -> None:
    """Write ``wav`` (format from the suffix), with an ARTIST tag when given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".ogg": ("OGG", "VORBIS"), ".wav": ("WAV", "PCM_16")}[path.suffix]
    with sf.SoundFile(path, "w", rate, 1, format=fmt[0], subtype=fmt[1]) as f:
        if artist is not None:
            f.artist = artist
        f.write(wav)


def word(seed: int, rate: int = 22050, f0: float = 140.0) -> np.ndarray:
    return voiced(1.0, rate, f0, seed)


# --- tags ------------------------------------------------------------------------------------


def test_artist_tag_read_normalised_and_absent(tmp_path: Path) -> None:
    write(tmp_path / "a.ogg", word(0), 22050, artist="  Eudald   Lladó ")
    write(tmp_path / "b.wav", word(1), 22050)
    (tmp_path / "c.ogg").write_bytes(b"not audio")
    assert tags.artist(tmp_path / "a.ogg") == "Eudald Lladó"
    assert tags.ascii_name("Eudald Lladó") == "Eudald Llado"
    assert tags.artist(tmp_path / "b.wav") is None
    assert tags.artist(tmp_path / "c.ogg") is None  # unreadable: staging reports it later


# --- ktuberling ------------------------------------------------------------------------------


def theme(root: Path, code: str, sounds: dict[str, str]) -> None:
    """A ``<code>.soundtheme``: game sound name -> file (relative to the sounds folder)."""
    lines = "".join(f'  <sound name="{n}" file="{f}"/>\n' for n, f in sounds.items())
    text = f'<?xml version="1.0"?>\n<language code="{code}">\n{lines}</language>\n'
    (root / f"{code}{ktuberling.THEME_SUFFIX}").write_text(text, encoding="utf-8")


def ktuberling_fixture(tmp_path: Path) -> Path:
    """Catalan clips tagged by two spellings of one name and another child; Russian untagged
    in two playgrounds (two voices); French potato at 8 and 44.1 kHz; Serbian sharing a
    Russian file's bytes; Ukrainian Robin Hood (left out); Nynorsk (left out); a clipped
    clip; a file no theme plays and one a theme names but the package lacks."""
    root = tmp_path / ktuberling.SOUNDS_DIR
    root.mkdir(parents=True)
    write(root / "ca/pilota.ogg", word(1), 22050, artist="Bernat")
    write(root / "ca/camell.ogg", word(2), 22050, artist="Bernat Mas")
    write(root / "ca/frare.ogg", word(3), 22050, artist="Orestes")
    theme(
        root,
        "ca",
        {
            "ball": "ca/pilota.ogg",
            "egypt_camel": "ca/camell.ogg",
            "frier-tux": "ca/frare.ogg",
            "hat": "ca/missing.ogg",
        },
    )
    write(root / "ru/verblyud.ogg", word(4), 44100)
    write(root / "ru/mashina.ogg", word(5), 44100)
    write(root / "ru/shlyapa.ogg", np.clip(word(6, 44100) * 5, -1, 1), 44100)  # clipped
    write(root / "ru/unlisted.ogg", word(7), 44100)
    theme(
        root,
        "ru",
        {"egypt_camel": "ru/verblyud.ogg", "tv_car": "ru/mashina.ogg", "hat": "ru/shlyapa.ogg"},
    )
    (root / "sr").mkdir()
    (root / "sr/kamila.ogg").write_bytes((root / "ru/verblyud.ogg").read_bytes())
    theme(root, "sr", {"egypt_camel": "sr/kamila.ogg"})
    write(root / "fr/chapeau.wav", word(8, 8000), 8000)
    write(root / "fr/patate_nez.wav", word(9, 44100), 44100)
    theme(root, "fr", {"hat": "fr/chapeau.wav", "nose": "fr/patate_nez.wav"})
    write(root / "uk/tux-bow.ogg", word(10), 44100)
    write(root / "uk/bow.ogg", word(11), 44100)
    theme(root, "uk", {"tux-bow": "uk/tux-bow.ogg", "bow": "uk/bow.ogg"})
    write(root / "nn/ball.ogg", word(12), 48000, artist="Karl Ove Hufthammer")
    theme(root, "nn", {"ball": "nn/ball.ogg"})
    return tmp_path


def test_ktuberling_playgrounds() -> None:
    assert ktuberling.playground("egypt_camel") == "egypt"
    assert ktuberling.playground("robot_workshop_arm") == "robot_workshop"
    assert ktuberling.playground("frier-tux") == ktuberling.ROBIN
    assert ktuberling.playground("tux-apple") == ktuberling.ROBIN
    assert ktuberling.playground("moustache") == ktuberling.POTATO


def test_ktuberling_talkers_from_tags_playgrounds_rates(tmp_path: Path) -> None:
    prefix = ktuberling_fixture(tmp_path)
    root = ktuberling.find([prefix])
    assert root == prefix / ktuberling.SOUNDS_DIR
    talkers = {c.name: c.talker for c in ktuberling.clips(root)}
    assert talkers == {
        "ca/camell.ogg": "ca-Bernat Mas",
        "ca/pilota.ogg": "ca-Bernat Mas",  # "Bernat" is "Bernat Mas" (GE2E 0.94)
        "ca/frare.ogg": "ca-Orestes",
        "fr/chapeau.wav": "fr-b",  # the 8 kHz potato voice
        "fr/patate_nez.wav": "fr",
        "ru/mashina.ogg": "ru-b",  # tv: the second Russian voice
        "ru/shlyapa.ogg": "ru",
        "ru/verblyud.ogg": "ru",  # sr/kamila.ogg is the same bytes: listed once
        "uk/bow.ogg": "uk",  # uk/tux-bow.ogg: Robin Hood holds both voices, left out
    }  # nn: text-to-speech, left out; ru/unlisted.ogg: no theme plays it
    wav, rate = next(c for c in ktuberling.clips(root) if c.name == "fr/chapeau.wav").read()
    assert rate == 8000 and wav.ndim == 1 and wav.dtype == np.float32


def test_ktuberling_bad_theme_is_one_line(tmp_path: Path) -> None:
    root = tmp_path / "sounds"
    root.mkdir()
    (root / "xx.soundtheme").write_text("<language code='xx'><sound name='a'/>")
    with pytest.raises(UserError, match="xx.soundtheme: not a readable"):
        list(ktuberling.clips(root))
    theme(root, "xx", {"a": "../../etc/passwd"})
    with pytest.raises(UserError, match="outside the sounds folder"):
        list(ktuberling.clips(root))


def test_ktuberling_stages_and_drops_clipped(tmp_path: Path) -> None:
    root = ktuberling.find([ktuberling_fixture(tmp_path)])
    report = stage_source(ktuberling.SOURCE, root, tmp_path / "out", SR)
    assert report["clips"] == 9 and report["kept"] == 8
    assert report["dropped"] == {"clipped": 1}
    assert report["clips_by_talker"]["ktuberling-ca_Bernat_Mas"] == 2
    assert (tmp_path / "out" / "ktuberling-ru_b" / "0000.wav").is_file()
    saved = json.loads((tmp_path / "out" / "stage_report.json").read_text())
    assert saved["talkers"] == 7


# --- klettres --------------------------------------------------------------------------------


def padded(seed: int, seconds: float, pad: float = 0.8, rate: int = 44100) -> np.ndarray:
    """A syllable of ``seconds`` between ``pad`` s of silence each side, as klettres ships."""
    silence = np.zeros(int(pad * rate), dtype=np.float32)
    return np.concatenate([silence, voiced(seconds, rate, 120.0, seed), silence])


def klettres_fixture(tmp_path: Path) -> Path:
    """Two languages: xx (letters, syllables, one clipped), de (two voices by set), and
    the left-out Danish files and Malayalam letters."""
    root = tmp_path / klettres.DATA_DIR
    for k, name in enumerate(("xx/alpha/a.ogg", "xx/alpha/b.ogg", "xx/syllab/ba.ogg")):
        write(root / name, padded(k, 0.6), 44100)
    write(root / "xx/syllab/short.ogg", padded(9, 0.2), 44100)  # 0.2 s: kept
    write(root / "xx/syllab/loud.ogg", np.clip(padded(3, 0.6) * 6, -1, 1), 44100)
    write(root / "de/alpha/a.ogg", padded(4, 0.6), 44100)
    write(root / "de/syllab/ba.ogg", padded(5, 0.6), 44100)
    write(root / "da/syllab/ad-23.ogg", padded(6, 0.6), 44100)
    write(root / "ml/alpha/a.ogg", padded(7, 0.6), 44100)
    (root / "xx/sounds.xml").write_text("<klettres/>")
    return tmp_path


def test_klettres_talkers_and_left_out(tmp_path: Path) -> None:
    root = klettres.find([klettres_fixture(tmp_path)])
    talkers = {c.name: c.talker for c in klettres.clips(root)}
    assert talkers == {
        "de/alpha/a.ogg": "de",
        "de/syllab/ba.ogg": "de-b",  # German letters and syllables: two voices
        "xx/alpha/a.ogg": "xx",
        "xx/alpha/b.ogg": "xx",
        "xx/syllab/ba.ogg": "xx",
        "xx/syllab/loud.ogg": "xx",
        "xx/syllab/short.ogg": "xx",
    }


def test_klettres_trims_padding_keeps_short_drops_clipped(tmp_path: Path) -> None:
    root = klettres.find([klettres_fixture(tmp_path)])
    short = padded(9, 0.2)
    assert judge_clip(short, 44100, ClipRules()).reason == "near_silent"  # the default
    assert judge_clip(short, 44100, klettres.RULES).reason is None
    report = stage_source(klettres.SOURCE, root, tmp_path / "out", SR)
    assert report["dropped"] == {"clipped": 1} and report["kept"] == 6
    # xx: four clips of 0.6 + 0.6 + 0.6 + 0.2 s speech (2.0 s), shipped with 1.6 s of
    # silence each; staged they keep 0.05 s pads and 0.2 s gaps only.
    seconds = report["seconds_by_talker"]["klettres-xx"]
    assert 2.0 < seconds < 2.0 + 4 * 2 * 0.05 + 3 * 0.2 + 0.1


# --- kajongg ---------------------------------------------------------------------------------


def quiet_call(seed: int, rate: int = 44100) -> np.ndarray:
    """A 0.5 s word peaking near -44 dBFS and fading by 20 dB, over a -75 dBFS noise floor,
    as kajongg's quietest are."""
    rng = np.random.default_rng(seed)
    speech = voiced(0.5, rate, 150.0, seed, level=10 ** (-44 / 20))
    speech *= np.geomspace(1.0, 0.1, len(speech)).astype(np.float32)
    silence = np.zeros(int(0.1 * rate), dtype=np.float32)
    wav = np.concatenate([silence, speech, silence])
    return (wav + rng.normal(0, 10 ** (-75 / 20), wav.shape)).astype(np.float32)


def kajongg_fixture(tmp_path: Path) -> Path:
    """English voices male1 (tagged Wolfgang) and male2 (untagged), German de/male1 (tagged
    Wolfgang): one person in two languages."""
    root = tmp_path / kajongg.VOICES_DIR
    for k, (folder, who) in enumerate(
        (("male1", "Wolfgang"), ("male2", None), ("de/male1", "Wolfgang"))
    ):
        for n in range(2):
            write(root / folder / f"c{n}.ogg", quiet_call(10 * k + n), 44100, artist=who)
    (root / "male1" / "md5sum").write_text("0123 c0.ogg\n")
    return tmp_path


def test_kajongg_talkers_by_tag_across_languages(tmp_path: Path) -> None:
    root = kajongg.find([kajongg_fixture(tmp_path)])
    talkers = {c.name: c.talker for c in kajongg.clips(root)}
    assert talkers == {
        "de-male1/c0.ogg": "Wolfgang",
        "de-male1/c1.ogg": "Wolfgang",
        "male1/c0.ogg": "Wolfgang",
        "male1/c1.ogg": "Wolfgang",
        "male2/c0.ogg": "male2",
        "male2/c1.ogg": "male2",
    }


def test_kajongg_quiet_words_kept(tmp_path: Path) -> None:
    call = quiet_call(0)
    assert judge_clip(call, 44100, ClipRules()).reason == "near_silent"  # the -60 dBFS floor
    assert judge_clip(call, 44100, kajongg.RULES).reason is None
    root = kajongg.find([kajongg_fixture(tmp_path)])
    report = stage_source(kajongg.SOURCE, root, tmp_path / "out", SR)
    assert report["kept"] == 6 and report["dropped"] == {}
    assert sorted(report["clips_by_talker"].items()) == [
        ("kajongg-Wolfgang", 4),
        ("kajongg-male2", 2),
    ]
    wav, _ = sf.read(tmp_path / "out" / "kajongg-male2" / "0000.wav")
    assert -26 < 20 * np.log10(np.sqrt(np.mean(wav**2))) < -20  # levelled up from ~-50 dBFS


# --- installation ----------------------------------------------------------------------------


@pytest.mark.parametrize("module", [ktuberling, klettres, kajongg])
def test_not_installed(tmp_path: Path, module: object) -> None:
    assert module.find([tmp_path]) is None  # type: ignore[attr-defined]


INSTALLED = {
    ktuberling: ("ktuberling-data", 1561, 33),
    klettres: ("klettres-data", 1769, 21),
    kajongg: ("kajongg", 335, 5),
}


@pytest.mark.parametrize("module", list(INSTALLED), ids=lambda m: m.__name__.rsplit(".")[-1])
def test_installed_listing(module: object) -> None:
    package, count, talkers = INSTALLED[module]  # type: ignore[index]
    root = module.find(search_prefixes())  # type: ignore[attr-defined]
    if root is None:
        pytest.skip(f"{package} is not installed or extracted (make real-voices)")
    listed = list(module.clips(root))  # type: ignore[attr-defined]
    assert len(listed) == count and len({c.talker for c in listed}) == talkers
    assert len({c.name for c in listed}) == count
