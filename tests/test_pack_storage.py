"""Pack storages (float32 / int16 / FLAC) on real packs written by ``prepare_corpus``."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf
from test_prepare import SR, make_noise_tree, run_prepare, tone, write

from hifi_tse.cli import main as cli_main
from hifi_tse.config import config_from_dict
from hifi_tse.data.datasets import FixedExampleSet
from hifi_tse.data.mixer import Sources, mix_example
from hifi_tse.data.store import STORAGES, PackReader, load_manifest, load_report
from hifi_tse.errors import UserError

FULL_16 = 2**15  # 16-bit full scale: x * FULL_16 is integral on the 16-bit grid
FULL_24 = 2**23
CROP = 4000  # samples


def speech_tree(root: Path, sr: int, subtype: str, gain: float = 1.0, channels: int = 1) -> Path:
    """3 speakers x 2 utterances (vctk layout) of 1.5 s at ``sr``; ``gain`` > 1 with a float
    subtype gives peaks above full scale, with a PCM subtype full-scale clipping."""
    for s in range(3):
        spk = f"p{225 + s}"
        for u in range(2):
            x = gain * tone(1.5, sr, 100.0 + 30 * s, seed=10 * s + u, channels=channels)
            if subtype.startswith("PCM"):
                x = np.clip(x, -1.0, 1.0)  # touches both ends of the integer range
            write(root / "wav48" / spk / f"{spk}_{u:03d}.wav", x, sr, subtype)
    return root


def step_tol(peak: float, bits: int) -> float:
    """Largest error of a ``bits``-bit round trip scaled to ``peak``: half a step, plus the
    float32 rounding of ``q * scale``."""
    return 0.5 * peak / (2 ** (bits - 1) - 1) + 2 * float(np.spacing(np.float32(peak)))


def prepare_all(tmp: Path, speech: Path, noise: list[Path]) -> dict[str, Path]:
    """The same sources packed once per storage: storage → packs dir."""
    outs = {}
    for storage in STORAGES:
        out = tmp / f"packs_{storage}"
        report = run_prepare([(speech, None)], out, noise=noise, storage=storage)
        assert report["storage"] == storage and load_report(out)["storage"] == storage
        outs[storage] = out
    return outs


def all_rows(packs: Path) -> list[dict]:
    return [r for s in ("train", "val", "test") for r in load_manifest(packs, s)]


def pack_storage(path: Path) -> str | None:
    with h5py.File(path, "r") as f:
        return f.attrs.get("storage")


def test_16_bit_sources_at_the_pack_rate_are_lossless(tmp_path: Path) -> None:
    # Loud: clipped to [-1, 1] before 16-bit quantisation, so -32768 and 32767 both occur.
    speech = speech_tree(tmp_path / "speech", SR, "PCM_16", gain=4.0)
    outs = prepare_all(tmp_path, speech, [make_noise_tree(tmp_path / "noise")])
    rows = all_rows(outs["float32"])
    assert len(rows) == 9
    for storage in ("int16", "flac"):
        assert all_rows(outs[storage]) == rows  # same manifest rows, packs and keys
    readers = {s: PackReader(o) for s, o in outs.items()}
    for r in rows:
        ref = readers["float32"].read(r["pack"], r["key"])
        assert ref.dtype == np.float32 and len(ref) == r["num_samples"]
        for storage in ("int16", "flac"):
            x = readers[storage].read(r["pack"], r["key"])
            assert x.dtype == np.float32
            np.testing.assert_array_equal(x, ref)
        assert readers["int16"].storage(r["pack"]) == "int16"
    r = next(r for r in rows if r["kind"] == "speech")
    loud = readers["float32"].read(r["pack"], r["key"])
    assert loud.min() == -1.0 and loud.max() == (FULL_16 - 1) / FULL_16
    # The on-disk form: int16 with scale exactly 2**-15; FLAC streams are 16-bit.
    with h5py.File(outs["int16"] / r["pack"], "r") as f:
        assert f[r["key"]].dtype == np.int16 and f[r["key"]].attrs["scale"] == 1.0 / FULL_16
    with h5py.File(outs["flac"] / r["pack"], "r") as f:
        ds = f[r["key"]]
        assert ds.dtype == np.uint8 and ds.attrs["frames"] == r["num_samples"]
        assert sf.info(io.BytesIO(ds[()].tobytes())).subtype == "PCM_16"
    for storage, out in outs.items():
        assert {pack_storage(p) for p in (out / "packs").rglob("*.h5")} == {storage}


def test_resampled_audio_above_full_scale_round_trips_within_its_quantisation(
    tmp_path: Path,
) -> None:
    # Float WAV at 22.05 kHz with peaks ~2: resampled to 16 kHz it is off any PCM grid.
    speech = speech_tree(tmp_path / "speech", 22050, "FLOAT", gain=5.0)
    outs = prepare_all(tmp_path, speech, [])
    readers = {s: PackReader(o) for s, o in outs.items()}
    bits = {"int16": 16, "flac": 24}
    for r in all_rows(outs["float32"]):
        ref = readers["float32"].read(r["pack"], r["key"])
        peak = float(np.max(np.abs(ref)))
        assert peak > 1.0  # the case that would clip as plain PCM
        for storage, b in bits.items():
            x = readers[storage].read(r["pack"], r["key"])
            with h5py.File(outs[storage] / r["pack"], "r") as f:
                scale = float(f[r["key"]].attrs["scale"])
            assert scale == pytest.approx(peak / (2 ** (b - 1) - 1), rel=1e-6)
            assert len(x) == len(ref) and float(np.max(np.abs(x - ref))) <= step_tol(peak, b)
            assert float(np.max(np.abs(x))) == pytest.approx(peak, rel=1e-4)  # no clipping


def test_24_bit_sources_at_the_pack_rate_are_lossless_as_flac(tmp_path: Path) -> None:
    speech = speech_tree(tmp_path / "speech", SR, "PCM_24")
    outs = prepare_all(tmp_path, speech, [])
    readers = {s: PackReader(o) for s, o in outs.items()}
    for r in all_rows(outs["float32"]):
        ref = readers["float32"].read(r["pack"], r["key"])
        np.testing.assert_array_equal(readers["flac"].read(r["pack"], r["key"]), ref)
        x = readers["int16"].read(r["pack"], r["key"])  # 24 → 16 bits: within half a step
        assert float(np.max(np.abs(x - ref))) <= step_tol(float(np.max(np.abs(ref))), 16)
    r = all_rows(outs["flac"])[0]
    with h5py.File(outs["flac"] / r["pack"], "r") as f:
        ds = f[r["key"]]
        assert ds.attrs["scale"] == 1.0 / FULL_24
        assert sf.info(io.BytesIO(ds[()].tobytes())).subtype == "PCM_24"


def read_in_forked_child(reader: PackReader, row: dict, start: int, length: int) -> bool:
    """Whether a forked child (a DataLoader worker) reads the same crop as this process,
    through its own handles rather than the inherited ones."""
    want = reader.read(row["pack"], row["key"], start, length)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        ok = reader._pid != os.getpid()
        x = reader.read(row["pack"], row["key"], start, length)
        ok = ok and reader._pid == os.getpid() and np.array_equal(x, want)
        os.write(w, b"1" if ok else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    ok = os.read(r, 1) == b"1"
    os.close(r)
    os.close(w)
    return ok


def test_crops_equal_the_slice_of_the_full_read_for_every_storage(tmp_path: Path) -> None:
    speech = speech_tree(tmp_path / "speech", 44100, "PCM_24", gain=2.0, channels=2)
    outs = prepare_all(tmp_path, speech, [make_noise_tree(tmp_path / "noise")])
    rng = np.random.default_rng(0)
    for storage, out in outs.items():
        reader = PackReader(out)
        # A pickled reader (a spawned DataLoader worker) opens its own handles.
        clone = pickle.loads(pickle.dumps(reader))
        for r in all_rows(out):
            full = reader.read(r["pack"], r["key"])
            n = len(full)
            assert n == r["num_samples"] == reader.num_samples(r["pack"], r["key"])
            starts = [0, 1, n - CROP, n - 10, n] + [int(s) for s in rng.integers(0, n, 6)]
            for start in starts:
                for length in (1, 37, CROP, None):
                    want = full[start:] if length is None else full[start : start + length]
                    got = reader.read(r["pack"], r["key"], start, length)
                    assert got.dtype == np.float32, storage
                    np.testing.assert_array_equal(got, want, err_msg=f"{storage} {start}")
            np.testing.assert_array_equal(clone.read(r["pack"], r["key"], 5, CROP), full[5:][:CROP])
        assert clone.storage(all_rows(out)[0]["pack"]) == storage
        assert read_in_forked_child(reader, all_rows(out)[-1], 7, CROP), storage
        reader.close()
        clone.close()


def test_packs_without_a_storage_attribute_load_as_float32(tmp_path: Path) -> None:
    speech = speech_tree(tmp_path / "speech", SR, "PCM_16")
    out = tmp_path / "packs"
    noise = [make_noise_tree(tmp_path / "noise")]
    run_prepare([(speech, None)], out, noise=noise, storage="float32")
    rows = all_rows(out)
    before = {(r["pack"], r["key"]): PackReader(out).read(r["pack"], r["key"]) for r in rows}
    packs = sorted((out / "packs").rglob("*.h5"))
    for p in packs:  # as written before storages existed
        with h5py.File(p, "r+") as f:
            del f.attrs["storage"]
            f.attrs["version"] = 1
    reader = PackReader(out)
    for r in rows:
        assert reader.storage(r["pack"]) == "float32"
        np.testing.assert_array_equal(
            reader.read(r["pack"], r["key"], 3, 100), before[r["pack"], r["key"]][3:103]
        )
    # float32 plans kept their old digest: such packs are reused, not rewritten.
    mtimes = {p: p.stat().st_mtime_ns for p in packs}
    again = run_prepare([(speech, None)], out, noise=noise)  # no --storage: keeps float32
    assert again["packs_written"] == 0 and again["packs_reused"] == len(packs)
    assert all(p.stat().st_mtime_ns == mtimes[p] for p in packs)


def test_another_storage_changes_the_plan_and_rewrites_the_packs(tmp_path: Path) -> None:
    speech = speech_tree(tmp_path / "speech", SR, "PCM_16")
    noise = [make_noise_tree(tmp_path / "noise")]
    out = tmp_path / "packs"
    first = run_prepare([(speech, None)], out, noise=noise)
    assert first["storage"] == "int16"  # the default for a new packs folder
    n_packs = first["packs_written"]
    assert n_packs >= 2 and first["packs_reused"] == 0
    manifest = (out / "manifest_train.jsonl").read_text()
    ref = {(r["pack"], r["key"]): PackReader(out).read(r["pack"], r["key"]) for r in all_rows(out)}
    for storage, written, expected in (
        ("int16", 0, "int16"),
        ("flac", n_packs, "flac"),
        ("float32", n_packs, "float32"),
        # no --storage: a re-run keeps the packs' storage instead of converting to the default
        (None, 0, "float32"),
    ):
        report = run_prepare([(speech, None)], out, noise=noise, storage=storage)
        assert report["packs_written"] == written and report["packs_reused"] == n_packs - written
        assert report["storage"] == expected
        storage = expected
        assert {pack_storage(p) for p in (out / "packs").rglob("*.h5")} == {storage}
        assert (out / "manifest_train.jsonl").read_text() == manifest
        reader = PackReader(out)
        for (pack, key), x in ref.items():
            np.testing.assert_array_equal(reader.read(pack, key), x)  # 16-bit: lossless
        reader.close()


def test_validation_cache_fingerprint_follows_the_storage(tmp_path: Path) -> None:
    speech = speech_tree(tmp_path / "speech", SR, "PCM_16")
    outs = prepare_all(tmp_path, speech, [make_noise_tree(tmp_path / "noise")])
    cfg = config_from_dict({"audio": {"sample_rate": SR}})
    prints = {
        s: FixedExampleSet(o, cfg, split="train", n=1)._fingerprint() for s, o in outs.items()
    }
    assert len(set(prints.values())) == len(STORAGES)  # same manifests, other samples


def test_unknown_storage_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    speech = speech_tree(tmp_path / "speech", SR, "PCM_16")
    with pytest.raises(UserError) as err:
        run_prepare([(speech, None)], tmp_path / "out", storage="int8")
    msg = str(err.value)
    assert "\n" not in msg and all(s in msg for s in STORAGES) and "int8" in msg
    argv = ["prepare", "--speech", str(speech), "--out", str(tmp_path / "o"), "--storage", "mp3"]
    with pytest.raises(SystemExit) as exit_info:
        cli_main(argv)
    assert exit_info.value.code == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "--storage" in ln and "mp3" in ln]
    assert len(lines) == 1 and all(s in lines[0] for s in STORAGES)


def test_cli_prepare_int16_then_mix(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    speech = speech_tree(tmp_path / "speech", 22050, "PCM_24", gain=2.0)
    noise = make_noise_tree(tmp_path / "noise")
    config = tmp_path / "small.yaml"
    config.write_text(
        f"audio: {{sample_rate: {SR}, segment_seconds: 1.0, ref_seconds: 0.75}}\n"
        "data: {max_rir_seconds: 0.2, sim_rt60: [0.1, 0.3]}\n"
    )
    out = tmp_path / "packs"
    argv = ["prepare", "--speech", f"{speech}:vctk", "--noise", str(noise), "--out", str(out)]
    argv += ["--config", str(config), "--simulate-rirs", "2", "--val-ratio", "0"]
    argv += ["--test-ratio", "0", "--min-seconds", "1", "--workers", "1", "--quiet"]
    assert cli_main(argv + ["--storage", "int16"]) == 0
    assert "packs (int16)" in capsys.readouterr().out
    assert load_report(out)["storage"] == "int16"
    assert {pack_storage(p) for p in (out / "packs").rglob("*.h5")} == {"int16"}
    with h5py.File(next((out / "packs" / "speech").rglob("*.h5")), "r") as f:
        assert f["audio/000000"].dtype == np.int16
    cfg = config_from_dict(
        {
            "audio": {"sample_rate": SR, "segment_seconds": 1.0, "ref_seconds": 0.75},
            "mixing": {"max_rir_seconds": 0.2, "rir_prob": 1.0},
        }
    )
    sources = Sources(out, "train", SR)
    assert len(sources.speakers) == 3 and sources.noise and len(sources.rirs) == 2
    ex = mix_example(cfg, sources, np.random.default_rng(0), phase=1, step=None)
    assert ex.mix.dtype == np.float32 and ex.mix.shape == (SR,) and ex.ref.shape == (3 * SR // 4,)
    assert np.isfinite(ex.mix).all() and float(np.max(np.abs(ex.mix))) > 0
    assert float(np.max(np.abs(ex.target))) > 0  # phase 1: the target is present


@pytest.mark.parametrize("storage", STORAGES)
def test_prepare_train_evaluate_end_to_end(
    storage: str, tmp_path: Path, one_thread: None, capsys: pytest.CaptureFixture
) -> None:
    """Each storage through the user's three commands: packs, a short run, its scores."""
    import json

    from conftest import TINY_SR, write_synthetic_corpus
    from test_train_e2e import _cmd

    speech, noise = write_synthetic_corpus(tmp_path / "corpus")
    packs = tmp_path / "packs"
    argv = ["prepare", "--speech", f"{speech}:folder", "--noise", str(noise), "--out", str(packs)]
    argv += ["--sample-rate", str(TINY_SR), "--simulate-rirs", "2", "--min-seconds", "0.5"]
    argv += ["--val-ratio", "0.25", "--test-ratio", "0.125", "--workers", "1", "--quiet"]
    assert cli_main([*argv, "--storage", storage]) == 0
    assert {pack_storage(p) for p in (packs / "packs").rglob("*.h5")} == {storage}
    run = tmp_path / "run"
    sets = ("train.steps=2", "train.phase1_steps=1", "train.val_interval=2")
    assert cli_main(_cmd(packs, run, *sets)) == 0
    out = tmp_path / "eval"
    evaluate = ["evaluate", "--checkpoint", str(run / "checkpoint_final.pt"), "--data", str(packs)]
    evaluate += ["--examples", "4", "--out", str(out), "--no-perceptual"]
    assert cli_main([*evaluate, "--no-speaker-similarity"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tp"]["count"] + metrics["ta"]["count"] == 4
    assert np.isfinite(metrics["tp"]["si_sdr"]["mean"])
    capsys.readouterr()
