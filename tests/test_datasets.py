"""Datasets: purity in (seed, rank, index), worker-count independence, schedules in workers."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from test_prepare import SR, build_corpus
from torch.utils.data import DataLoader

from hifi_tse.config import Config, config_from_dict
from hifi_tse.data.datasets import FixedExampleSet, InfiniteSampler, MixtureDataset, collate_batch


@pytest.fixture(scope="module")
def packs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_corpus(tmp_path_factory.mktemp("ds"), n_speakers=8, n_utts=3, val_ratio=0.25)


def make_cfg(data: dict | None = None, train: dict | None = None) -> Config:
    d = {"max_rir_seconds": 0.2}
    d.update(data or {})
    return config_from_dict(
        {
            "audio": {"sample_rate": SR, "segment_seconds": 0.5, "ref_seconds": 0.5},
            "mixing": d,
            "train": {"steps": 100, "phase1_steps": 0, **(train or {})},
        }
    )


def batches(ds, indices, workers: int, batch_size: int = 4) -> list[dict]:
    loader = DataLoader(
        ds, batch_size=batch_size, sampler=indices, num_workers=workers, collate_fn=collate_batch
    )
    return list(loader)


def assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for k in ("mix", "ref", "target", "target_present", "snr_db", "num_interferers", "index"):
            assert torch.equal(x[k], y[k]), k
        assert x["meta"] == y["meta"]


def test_fixed_set_same_with_0_and_2_workers_and_ta_share(packs: Path) -> None:
    cfg = make_cfg({"ta_ratio": 0.2})
    ds = FixedExampleSet(packs, cfg, split="val", seed=7, n=10)
    assert len(ds) == 10
    b0 = batches(ds, range(10), 0)
    b2 = batches(ds, range(10), 2)
    assert_same(b0, b2)
    present = torch.cat([b["target_present"] for b in b0])
    assert int((~present).sum()) == 2  # exactly ta_ratio of the set is target absent
    speakers = {m["target_speaker"] for b in b0 for m in b["meta"]}
    train_speakers = {
        m["target_speaker"]
        for b in batches(MixtureDataset(packs, cfg), range(16), 0)
        for m in b["meta"]
    }
    assert speakers and not speakers & train_speakers  # val speakers are unseen in training
    # item i depends on (seed, i) only: a shorter set agrees on its prefix
    short = FixedExampleSet(packs, cfg, split="val", seed=7, n=3)
    np.testing.assert_array_equal(short[2]["mix"], ds[2]["mix"])
    other = FixedExampleSet(packs, cfg, split="val", seed=8, n=3)
    assert not np.array_equal(other[0]["mix"], ds[0]["mix"])
    assert all(
        FixedExampleSet(packs, cfg, "val", seed=7, n=5, phase=1)[i]["target_present"]
        for i in range(5)
    )


def test_speed_perturbation_reaches_training_examples_only(packs: Path) -> None:
    perturbed, plain = make_cfg({"speed_perturb": True}), make_cfg({"speed_perturb": False})
    for i in range(3):
        a = FixedExampleSet(packs, perturbed, split="val", seed=7, n=3)[i]
        b = FixedExampleSet(packs, plain, split="val", seed=7, n=3)[i]
        for k in ("mix", "ref", "target"):
            np.testing.assert_array_equal(a[k], b[k])
    speeds = [MixtureDataset(packs, perturbed)[i]["meta"]["speed"]["ref"] for i in range(4)]
    assert all(0.9 <= f <= 1.1 for f in speeds) and len(set(speeds)) == 4


def test_fixed_set_cache_written_once_and_matches(packs: Path, tmp_path: Path) -> None:
    cfg = make_cfg()
    cache = tmp_path / "val_cache.h5"
    live = FixedExampleSet(packs, cfg, split="val", seed=3, n=5)
    cached = FixedExampleSet(packs, cfg, split="val", seed=3, n=5, cache_path=cache)
    assert cache.is_file() and not list(tmp_path.glob(".*tmp*"))
    for i in range(5):
        a, b = live[i], cached[i]
        for k in ("mix", "ref", "target"):
            np.testing.assert_array_equal(a[k], b[k])
        assert a["meta"] == b["meta"] and a["target_present"] == b["target_present"]
    assert_same(batches(cached, range(5), 0), batches(cached, range(5), 2))
    mtime = cache.stat().st_mtime_ns
    FixedExampleSet(packs, cfg, split="val", seed=3, n=5, cache_path=cache)
    assert cache.stat().st_mtime_ns == mtime  # reused
    FixedExampleSet(packs, make_cfg({"snr_db": [0.0, 1.0]}), "val", seed=3, n=5, cache_path=cache)
    assert cache.stat().st_mtime_ns != mtime  # config changed: rebuilt


def test_fixed_set_cache_is_rebuilt_when_the_mixer_format_changes(
    packs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hifi_tse.data.datasets as datasets

    cfg = make_cfg()
    cache = tmp_path / "val_cache.h5"
    FixedExampleSet(packs, cfg, split="val", seed=3, n=3, cache_path=cache)
    mtime = cache.stat().st_mtime_ns
    FixedExampleSet(packs, cfg, split="val", seed=3, n=3, cache_path=cache)
    assert cache.stat().st_mtime_ns == mtime
    # Code that draws other examples bumps the version: the old cache is never reused.
    monkeypatch.setattr(datasets, "MIXER_FORMAT_VERSION", datasets.MIXER_FORMAT_VERSION + 1)
    FixedExampleSet(packs, cfg, split="val", seed=3, n=3, cache_path=cache)
    assert cache.stat().st_mtime_ns != mtime


def test_mixture_dataset_pure_in_seed_rank_index(packs: Path) -> None:
    cfg = make_cfg()
    ds = MixtureDataset(packs, cfg, rank=0, examples_per_step=4)
    sampler = InfiniteSampler(start_index=8)
    idx = list(itertools.islice(iter(sampler), 8))
    assert idx == list(range(8, 16))
    b0 = batches(ds, idx, 0)
    b2 = batches(ds, idx, 2)
    assert_same(b0, b2)
    again = MixtureDataset(packs, cfg, rank=0, examples_per_step=4)
    np.testing.assert_array_equal(again[9]["mix"], b0[0]["mix"][1].numpy())
    other_rank = MixtureDataset(packs, cfg, rank=1, examples_per_step=4)
    assert not np.array_equal(other_rank[9]["mix"], again[9]["mix"])
    b = b0[0]
    assert b["mix"].shape == (4, SR // 2) and b["ref"].shape == (4, SR // 2)
    assert b["mix"].dtype == torch.float32 and b["target_present"].dtype == torch.bool
    assert b["snr_db"].dtype == torch.float32 and b["num_interferers"].dtype == torch.int64
    assert b["index"].tolist() == [8, 9, 10, 11] and len(b["meta"]) == 4


def test_noisy_ref_ramp_and_phase_reach_workers(packs: Path) -> None:
    cfg = make_cfg(
        {"noisy_ref_prob": 1.0, "noisy_ref_ramp": [10, 20], "ta_ratio": 1.0},
        {"phase1_steps": 15},
    )
    ds = MixtureDataset(packs, cfg, examples_per_step=1)
    early, late = list(range(0, 6)), list(range(25, 31))
    out = batches(ds, early + late, 2, batch_size=3)
    metas = [m for b in out for m in b["meta"]]
    assert [m["noisy_ref"] for m in metas] == [False] * 6 + [True] * 6
    present = torch.cat([b["target_present"] for b in out]).tolist()
    assert present == [True] * 6 + [False] * 6  # phase 1 (TP only) then phase 2 at ta_ratio 1
    assert [m["step"] for m in metas] == early + late
