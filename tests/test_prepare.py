"""Corpus preparation on real generated audio trees (WAV 16/24-bit, FLAC, 44.1 kHz stereo)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf

from hifi_tse.cli import main as cli_main
from hifi_tse.config import Config, config_from_dict
from hifi_tse.data.layouts import (
    SpeechSource,
    detect_layout,
    list_audio_files,
    parse_source,
    scan_speech,
)
from hifi_tse.data.prepare import prepare_corpus, split_ids
from hifi_tse.data.rir import simulate_rir
from hifi_tse.data.store import PackReader, load_manifest
from hifi_tse.errors import UserError

SR = 16000
FORMATS = [  # (suffix, subtype, sample rate, channels): a mix of what corpora ship
    (".wav", "PCM_16", 16000, 1),
    (".wav", "PCM_24", 44100, 2),
    (".flac", "PCM_16", 44100, 1),
    (".wav", "FLOAT", 22050, 1),
]


def tone(seconds: float, sr: int, f0: float, seed: int, channels: int = 1) -> np.ndarray:
    """A voiced-like test signal: harmonics of ``f0`` with a syllable-rate envelope."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 5))
    x = 0.2 * x * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(2, 5) * t))
    x = x + 0.01 * rng.standard_normal(len(t))
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def write(path: Path, x: np.ndarray, sr: int, subtype: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, sr, subtype=subtype)


def make_speech_tree(
    root: Path, layout: str, n_speakers: int = 4, n_utts: int = 3, seconds: float = 1.5
) -> Path:
    """A small corpus in ``layout`` with rotating file formats; returns ``root``."""
    for s in range(n_speakers):
        for u in range(n_utts):
            suffix, subtype, sr, ch = FORMATS[(s + u) % len(FORMATS)]
            spk = f"p{225 + s}"
            rel = {
                "vctk": f"wav48/{spk}/{spk}_{u:03d}",
                "ears": f"{spk}/emo_style{u}_freeform",
                "librispeech": f"{100 + s}/{2000 + s}/{100 + s}-{2000 + s}-{u:04d}",
                "dns": f"book_{u:05d}_chp_0001_reader_{1000 + s:05d}_{u}",
                "folder": f"talker_{s}/take{u}",
            }[layout]
            x = tone(seconds, sr, 90.0 + 25 * s, seed=100 * s + u, channels=ch)
            write(root / (rel + suffix), x, sr, subtype)
    return root


def make_noise_tree(root: Path, n: int = 3, seconds: float = 2.0) -> Path:
    rng = np.random.default_rng(7)
    for k in range(n):
        write(root / f"noise_{k}.flac", 0.05 * rng.standard_normal(int(seconds * SR)), SR, "PCM_16")
    return root


def build_corpus(
    tmp: Path,
    n_speakers: int = 6,
    n_utts: int = 3,
    val_ratio: float = 0.0,
    test_ratio: float = 0.0,
    simulate_rirs: int = 3,
    seconds: float = 1.5,
) -> Path:
    """Speech (vctk layout) + noise + a few short simulated RIRs at 16 kHz → packs dir."""
    speech = make_speech_tree(tmp / "speech", "vctk", n_speakers, n_utts, seconds)
    noise = make_noise_tree(tmp / "noise")
    out = tmp / "packs"
    prepare_corpus(
        [(speech, None)],
        [noise],
        [],
        simulate_rirs,
        out,
        SR,
        1.0,
        val_ratio,
        test_ratio,
        1,
        0,
        cfg=_cfg(max_rir_seconds=0.2, sim_rt60=[0.1, 0.3]),
        progress=False,
    )
    return out


def _cfg(max_rir_seconds: float = 1.0, **preparation) -> Config:
    """A config with ``mixing.max_rir_seconds`` and ``preparation`` keys set."""
    return config_from_dict(
        {"mixing": {"max_rir_seconds": max_rir_seconds}, "preparation": preparation}
    )


def run_prepare(speech: list, out: Path, **kw) -> dict:
    args = dict(
        noise=[],
        rir=[],
        simulate_rirs=0,
        out=out,
        sample_rate=SR,
        min_seconds=1.0,
        val_ratio=0.0,
        test_ratio=0.0,
        workers=1,
        seed=0,
        progress=False,
    )
    args.update(kw)
    return prepare_corpus(speech, **args)


@pytest.mark.parametrize("layout", ["vctk", "librispeech", "dns", "ears", "folder"])
def test_each_layout_detected_and_packed(tmp_path: Path, layout: str) -> None:
    root = make_speech_tree(tmp_path / "corpus", layout)
    files = list_audio_files(root)
    assert detect_layout(root, files) == layout
    report = run_prepare([(root, None)], tmp_path / "out")
    rows = load_manifest(tmp_path / "out", "train")
    assert report["sources"][0]["layout"] == layout
    assert len(rows) == 12 and len({r["speaker"] for r in rows}) == 4
    reader = PackReader(tmp_path / "out")
    for r in rows:
        x = reader.read(r["pack"], r["key"])
        assert x.dtype == np.float32 and x.ndim == 1
        # every format (44.1 kHz stereo 24-bit included) is resampled to 16 kHz
        assert abs(len(x) - 1.5 * SR) <= 2 and r["num_samples"] == len(x)
        assert abs(r["duration"] - 1.5) < 1e-3
        assert Path(r["path"]).is_file()


def test_explicit_layout_and_parse_source(tmp_path: Path) -> None:
    root = make_speech_tree(tmp_path / "c", "vctk", n_speakers=2)
    assert parse_source(f"{root}:folder") == SpeechSource(root, "folder")
    assert parse_source(str(root)) == SpeechSource(root, None)
    layout, files = scan_speech(root, "folder")  # first-level folder = "wav48"
    assert layout == "folder" and {f.speaker for f in files} == {"wav48"}
    with pytest.raises(UserError, match="does not fit layout 'librispeech'"):
        scan_speech(root, "librispeech")


def test_ambiguous_or_flat_layout_is_refused_in_one_line(tmp_path: Path) -> None:
    amb = tmp_path / "amb"
    for spk in ("p001", "p002"):
        for u in range(2):
            write(amb / spk / f"{spk}_reader_0000{u}_x.wav", tone(1.2, SR, 100, u), SR, "PCM_16")
    with pytest.raises(UserError) as err:
        run_prepare([(amb, None)], tmp_path / "o1")
    msg = str(err.value)
    assert "\n" not in msg and "ambiguous" in msg and "vctk" in msg and "dns" in msg
    flat = tmp_path / "flat"
    for u in range(3):
        write(flat / f"utt{u}.wav", tone(1.2, SR, 100, u), SR, "PCM_16")
    with pytest.raises(UserError, match="librispeech") as err:
        run_prepare([(flat, None)], tmp_path / "o2")
    assert "\n" not in str(err.value)


def test_folder_without_audio_is_refused_in_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "readme.txt").write_text("no audio here")
    with pytest.raises(UserError, match="no audio files") as err:
        run_prepare([(empty, None)], tmp_path / "out")
    assert "\n" not in str(err.value)
    # the CLI prints it as one line and exits 2
    assert cli_main(["prepare", "--speech", str(empty), "--out", str(tmp_path / "o")]) == 2


def test_bad_files_reported_short_skipped_small_speakers_excluded(tmp_path: Path) -> None:
    root = make_speech_tree(tmp_path / "c", "vctk", n_speakers=3)
    spk = root / "wav48" / "p225"
    (spk / "p225_900.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")  # corrupt header
    write(spk / "p225_901.wav", np.zeros(0), SR, "PCM_16")  # zero-length
    nan = tone(1.5, SR, 100, 1).astype(np.float32)
    nan[100:200] = np.nan
    write(spk / "p225_902.wav", nan, SR, "FLOAT")  # NaN samples
    write(spk / "p225_903.wav", tone(0.5, SR, 100, 2), SR, "PCM_16")  # too short
    lonely = root / "wav48" / "p999"  # one usable utterance only
    write(lonely / "p999_000.wav", tone(1.5, SR, 300, 3), SR, "PCM_16")
    report = run_prepare([(root, None)], tmp_path / "out", workers=2)
    on_disk = json.loads((tmp_path / "out" / "prepare_report.json").read_text())
    assert on_disk["errors"] == report["errors"]
    reasons = {Path(e["path"]).name: e["reason"] for e in report["errors"]}
    assert set(reasons) == {"p225_900.wav", "p225_901.wav", "p225_902.wav"}
    assert "unreadable" in reasons["p225_900.wav"]
    assert "empty" in reasons["p225_901.wav"]
    assert "NaN" in reasons["p225_902.wav"]
    assert report["skipped_short"] == 1
    assert [e["speaker"] for e in report["excluded_speakers"]] == ["p999"]
    rows = load_manifest(tmp_path / "out", "train")
    assert len(rows) == 9 and "p999" not in {r["speaker"] for r in rows}


def test_splits_deterministic_disjoint_by_speaker(tmp_path: Path) -> None:
    root = make_speech_tree(tmp_path / "c", "librispeech", n_speakers=10, n_utts=2, seconds=1.1)
    noise = make_noise_tree(tmp_path / "noise", n=6, seconds=1.0)
    outs = []
    for k in range(2):  # 1 then 2 worker processes: identical output
        out = tmp_path / f"out{k}"
        run_prepare(
            [(root, None)], out, noise=[noise], val_ratio=0.2, test_ratio=0.2, workers=1 + k
        )
        outs.append(out)
    speakers = {}
    for split in ("train", "val", "test"):
        texts = [(o / f"manifest_{split}.jsonl").read_text() for o in outs]
        assert texts[0] == texts[1]  # deterministic
        rows = load_manifest(outs[0], split)
        speakers[split] = {r["speaker"] for r in rows if r["kind"] == "speech"}
        assert {r["split"] for r in rows} <= {split}
        assert sum(r["kind"] == "noise" for r in rows) >= 1
    assert speakers["val"] == {"108", "109"} and speakers["test"] == {"106", "107"}
    assert len(speakers["train"]) == 6
    row = load_manifest(outs[0], "val")[0]
    a, b = (PackReader(o).read(row["pack"], row["key"]) for o in outs)
    np.testing.assert_array_equal(a, b)
    assert not (speakers["train"] & speakers["val"]) and not (speakers["val"] & speakers["test"])


def test_split_ids_rules() -> None:
    ids = [f"s{i:02d}" for i in range(20)]
    s = split_ids(ids, 0.05, 0.05, 2, 2)
    assert [i for i in ids if s[i] == "val"] == ["s18", "s19"]
    assert [i for i in ids if s[i] == "test"] == ["s16", "s17"]
    s = split_ids(["a", "b", "c"], 0.05, 0.05, 1, 1)
    assert sorted(s.values()) == ["test", "train", "val"]
    assert set(split_ids(["a", "b"], 0.0, 0.0, 1, 1).values()) == {"train"}


def test_measured_rirs_and_simulated_rirs(tmp_path: Path) -> None:
    root = make_speech_tree(tmp_path / "c", "vctk", n_speakers=2)
    rirs = tmp_path / "rirs"
    for k in range(3):
        h = np.zeros(int(0.1 * SR))
        h[10] = 0.5
        h[40:] = 0.05 * np.random.default_rng(k).standard_normal(len(h) - 40)
        write(rirs / f"room{k}.wav", h, SR, "FLOAT")
    run_prepare([(root, None)], tmp_path / "m", rir=[rirs], val_ratio=0.1, test_ratio=0.1)
    rows = [r for s in ("train", "val", "test") for r in load_manifest(tmp_path / "m", s)]
    rir_rows = [r for r in rows if r["kind"] == "rir"]
    assert sorted(r["split"] for r in rir_rows) == ["test", "train", "val"]
    reader = PackReader(tmp_path / "m")
    h = reader.read(rir_rows[0]["pack"], rir_rows[0]["key"])
    assert h[0] == pytest.approx(1.0) and np.max(np.abs(h)) == pytest.approx(1.0)
    cfg = _cfg(max_rir_seconds=0.25, sim_rt60=[0.2, 0.3])
    kw = dict(simulate_rirs=3, cfg=cfg, seed=5)
    run_prepare([(root, None)], tmp_path / "s1", **kw)
    run_prepare([(root, None)], tmp_path / "s2", **kw)
    sims = [
        [r for r in load_manifest(tmp_path / d, "train") if r["kind"] == "rir"]
        for d in ("s1", "s2")
    ]
    assert len(sims[0]) == 3 and sims[0] == sims[1]  # seeded: the same rooms
    for r in sims[0]:
        h = PackReader(tmp_path / "s1").read(r["pack"], r["key"])
        assert 0.2 <= r["sim"]["rt60"] <= 0.3 and len(h) <= 0.25 * SR
        assert np.max(np.abs(h)) == pytest.approx(1.0) and abs(h[0]) == pytest.approx(1.0)
    with pytest.raises(UserError, match="not both"):
        run_prepare([(root, None)], tmp_path / "x", rir=[rirs], simulate_rirs=2)


def test_interrupted_prepare_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hifi_tse.data.prepare as prepare_module

    root = make_speech_tree(tmp_path / "c", "vctk", n_speakers=4, n_utts=3)
    out = tmp_path / "out"
    monkeypatch.setattr(prepare_module, "PACK_FILES", 4)  # 12 files -> 3 speech packs
    first = run_prepare([(root, None)], out)
    packs = sorted((out / "packs").rglob("*.h5"))
    assert first["packs_written"] == 3 and len(packs) == 3
    manifest = (out / "manifest_train.jsonl").read_text()
    mtimes = {p: p.stat().st_mtime_ns for p in packs}
    # simulate a crash in the middle of the second pack: it is gone, a tmp file is left
    victim = packs[1]
    victim.unlink()
    stale = victim.parent / f".{victim.stem}.abc123.tmp.h5"
    stale.write_bytes(b"half-written")
    os.sync()
    second = run_prepare([(root, None)], out)
    assert second["packs_written"] == 1 and second["packs_reused"] == 2
    assert victim.is_file() and not stale.exists()
    for p in packs:
        if p != victim:
            assert p.stat().st_mtime_ns == mtimes[p]  # untouched
    assert (out / "manifest_train.jsonl").read_text() == manifest
    reader = PackReader(out)
    for r in load_manifest(out, "train"):
        assert len(reader.read(r["pack"], r["key"])) == r["num_samples"]
    with h5py.File(victim, "r") as f:
        assert f.attrs["format"] == "hifi-tse-pack"
    # a different sample rate changes every pack's plan: all are redone
    third = run_prepare([(root, None)], out, sample_rate=8000)
    assert third["packs_written"] == 3 and third["packs_reused"] == 0


def test_reader_reads_a_slice_and_reopens_after_fork(tmp_path: Path) -> None:
    root = make_speech_tree(tmp_path / "c", "vctk", n_speakers=2)
    run_prepare([(root, None)], tmp_path / "out")
    row = load_manifest(tmp_path / "out", "train")[0]
    reader = PackReader(tmp_path / "out")
    full = reader.read(row["pack"], row["key"])
    np.testing.assert_array_equal(reader.read(row["pack"], row["key"], 100, 50), full[100:150])
    assert len(reader.read(row["pack"], row["key"], len(full) - 10, 50)) == 10
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: inherited handles must not be reused
        ok = reader._pid != os.getpid()
        x = reader.read(row["pack"], row["key"], 0, 10)
        ok = ok and reader._pid == os.getpid() and np.array_equal(x, full[:10])
        os.write(w, b"1" if ok else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(r, 1) == b"1"


def test_cli_prepare_writes_manifests(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = make_speech_tree(tmp_path / "c", "ears", n_speakers=3)
    out = tmp_path / "out"
    argv = ["prepare", "--speech", f"{root}:ears", "--out", str(out), "--sample-rate", "16000"]
    argv += ["--min-seconds", "1", "--val-ratio", "0", "--test-ratio", "0", "--workers", "1"]
    assert cli_main(argv + ["--quiet"]) == 0
    assert "3 speakers, 9 utterances" in capsys.readouterr().out
    assert all((out / f"manifest_{s}.jsonl").is_file() for s in ("train", "val", "test"))


def test_simulated_rir_redraws_rooms_too_large_for_a_dry_rt60(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import hifi_tse.data.rir as rir_module

    # Sabine: a 6 x 5 x 3 m room cannot be drier than ~0.115 s: such draws are redrawn
    monkeypatch.setattr(rir_module, "SIM_ROOM_MIN_M", (6.0, 5.0, 3.0))
    monkeypatch.setattr(rir_module, "SIM_ROOM_MAX_M", (7.0, 6.0, 3.5))
    cfg = _cfg(sim_rt60=[0.1, 0.2]).preparation
    for seed in range(4):
        h, info = simulate_rir(np.random.default_rng(seed), SR, cfg, 0.2)
        assert len(h) <= 0.2 * SR and abs(h[0]) == pytest.approx(1.0)
        assert 0.115 <= info["rt60"] <= 0.2 and all(np.array(info["room"]) >= [6.0, 5.0, 3.0])
    with pytest.raises(ValueError, match="sim_rt60"):
        simulate_rir(np.random.default_rng(0), SR, _cfg(sim_rt60=[0.01, 0.01]).preparation, 1.0)


def test_file_and_folder_with_the_same_name(tmp_path: Path) -> None:
    root = tmp_path / "c"
    for rel in ("spk0/a.wav", "spk0/a/b.wav", "spk1/x.wav", "spk1/y.flac"):
        write(root / rel, tone(1.2, SR, 120, len(rel)), SR, "PCM_16")
    run_prepare([(root, None)], tmp_path / "out")
    rows = load_manifest(tmp_path / "out", "train")
    assert sorted(r["utterance"] for r in rows) == ["spk0/a", "spk0/a/b", "spk1/x", "spk1/y"]
    assert len({(r["pack"], r["key"]) for r in rows}) == 4
