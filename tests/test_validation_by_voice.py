"""Validation on a corpus with real and synthetic voices reports TP SI-SDRi, rms_ratio and the
TA output level per kind of enrolled voice and per speech source, beside the whole set's
figures, which still choose the best model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_real_voices import SR, mixing_config, prepare_real_and_synthetic
from test_train_e2e import _cmd, _records
from torch import nn

from hifi_tse.audio.signal import CONTINUOUS_ACTIVITY
from hifi_tse.cli import main
from hifi_tse.data.datasets import FixedExampleSet, collate_batch
from hifi_tse.data.store import load_manifest, load_report, speech_source_voices, write_manifest
from hifi_tse.eval.metrics import target_activity
from hifi_tse.losses.objective import Objective
from hifi_tse.losses.separation import LOSS_EPS, energy_db, rms, si_sdr
from hifi_tse.train.curves import plot_training_curves, read_metrics, split_records, val_series
from hifi_tse.train.logging_utils import format_val_line
from hifi_tse.train.validation import continuous_targets, validate

pytestmark = pytest.mark.usefixtures("one_thread")


class _Comb(nn.Module):
    """A fixed filter of the mixture: an estimate that differs from it, without training."""

    def forward(self, mix: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return mix - 0.6 * torch.roll(mix, 5, dims=-1)


def _validate(out: Path, kind_of_source: dict[str, str] | None) -> dict[str, float]:
    cfg = mixing_config(0.5)
    cfg.mixing.ta_ratio = 0.25
    examples = FixedExampleSet(out, cfg, split="train", seed=3, n=24, phase=2)
    batches = [collate_batch([examples[i] for i in range(k, k + 6)]) for k in range(0, 24, 6)]
    objective = Objective(cfg.objective, SR)
    result = validate(_Comb(), batches, objective, cfg, torch.device("cpu"), False, 0,
                      kind_of_source=kind_of_source)  # fmt: skip
    return result.metrics


def test_per_kind_figures_are_those_of_the_examples_of_each_kind(tmp_path: Path) -> None:
    out = prepare_real_and_synthetic(tmp_path)  # 6 real speakers, 3 synthetic ones
    kinds = speech_source_voices(load_report(out), None)
    metrics = _validate(out, kinds)

    # The same figures computed example by example, the kind taken from the target's source.
    cfg = mixing_config(0.5)
    cfg.mixing.ta_ratio = 0.25
    examples = FixedExampleSet(out, cfg, split="train", seed=3, n=24, phase=2)
    expected: dict[str, dict[str, list[float]]] = {k: {"tp": [], "ta": []} for k in kinds.values()}
    for i in range(len(examples)):
        item = examples[i]
        mix = torch.from_numpy(item["mix"])[None]
        est = _Comb()(mix, mix)
        kind = kinds[item["meta"]["target_speaker"].split("/", 1)[0]]
        if item["target_present"]:
            target = torch.from_numpy(item["target"])[None]
            gain = si_sdr(est, target, LOSS_EPS) - si_sdr(mix, target, LOSS_EPS)
            expected[kind]["tp"].append(float(gain))
        else:
            expected[kind]["ta"].append(float(energy_db(est, LOSS_EPS)))
    for kind, values in expected.items():
        assert len(values["tp"]) > 0 and len(values["ta"]) > 0  # the draw holds both sorts
        assert metrics[f"{kind}/tp_count"] == len(values["tp"])
        assert metrics[f"{kind}/ta_count"] == len(values["ta"])
        assert metrics[f"{kind}/tp_si_sdri"] == pytest.approx(np.mean(values["tp"]), abs=1e-4)
        assert metrics[f"{kind}/ta_energy_db"] == pytest.approx(np.mean(values["ta"]), abs=1e-4)
        assert f"{kind}/tp_si_sdri_se" in metrics
    # The kinds split the whole set: their counts add up, their means weigh to the total.
    n_tp = [metrics[f"{k}/tp_count"] for k in ("real", "synthetic")]
    assert sum(n_tp) == metrics["tp_count"]
    weighted = sum(metrics[f"{k}/tp_si_sdri"] * n for k, n in zip(("real", "synthetic"), n_tp))
    assert weighted / sum(n_tp) == pytest.approx(metrics["tp_si_sdri"], abs=1e-6)
    assert metrics["real/tp_si_sdri"] != pytest.approx(metrics["synthetic/tp_si_sdri"], abs=1e-3)
    line = format_val_line({"step": 7, **metrics})
    assert "real/tp_si_sdri=" in line and "synthetic/ta_energy_db=" in line

    # One kind in the map, or none: no per-kind figures (they would repeat the totals); the
    # two sources are still shown apart.
    one_kind = _validate(out, dict.fromkeys(kinds, "real"))
    assert not any(k.startswith(("real/", "synthetic/")) for k in one_kind)
    assert one_kind["source/game/rms_ratio"] == pytest.approx(metrics["real/rms_ratio"])
    no_map = _validate(out, None)
    assert {k.split("/", 1)[0] for k in no_map if "/" in k} == {"continuous"}


def test_continuous_speech_groups_hold_the_targets_that_speak_throughout(tmp_path: Path) -> None:
    """``continuous`` and ``<kind>/continuous`` are the TP examples whose target activity
    (the evaluation's :func:`target_activity`, NumPy) is at least CONTINUOUS_ACTIVITY."""
    out = prepare_real_and_synthetic(tmp_path)
    kinds = speech_source_voices(load_report(out), None)
    cfg = mixing_config(0.5)
    cfg.mixing.ta_ratio = 0.25
    examples = FixedExampleSet(out, cfg, split="train", seed=3, n=24, phase=2)
    items = [examples[i] for i in range(len(examples))]
    for item in items[::3]:  # a pause over the first half of every third target
        item["target"] = item["target"].copy()
        item["target"][: item["target"].size // 2] = 0.0
    batches = [collate_batch(items[k : k + 6]) for k in range(0, len(items), 6)]
    metrics = validate(_Comb(), batches, Objective(cfg.objective, SR), cfg, torch.device("cpu"),
                       False, 0, kind_of_source=kinds).metrics  # fmt: skip
    levels: dict[str, dict[str, list[float]]] = {}
    for item in items:
        activity = target_activity(item["target"], SR) if item["target_present"] else None
        if activity is None or activity < CONTINUOUS_ACTIVITY:
            continue
        mix = torch.from_numpy(item["mix"])[None]
        est, target = _Comb()(mix, mix), torch.from_numpy(item["target"])[None]
        kind = kinds[item["meta"]["target_speaker"].split("/", 1)[0]]
        for group in ("continuous", f"{kind}/continuous"):
            values = levels.setdefault(group, {"est": [], "tgt": []})
            values["est"].append(float(rms(est, LOSS_EPS)))
            values["tgt"].append(float(rms(target, LOSS_EPS)))
    assert 0 < len(levels["continuous"]["est"]) < metrics["tp_count"]  # a real subset
    assert set(levels) == {"continuous", "real/continuous", "synthetic/continuous"}
    for group, values in levels.items():
        assert metrics[f"{group}/tp_count"] == len(values["est"])
        ratio = np.mean(values["est"]) / np.mean(values["tgt"])
        assert metrics[f"{group}/rms_ratio"] == pytest.approx(ratio, rel=1e-5)
        assert f"{group}/ta_energy_db" not in metrics  # a TA target is silence, never continuous
    # torch on a batch agrees with NumPy example by example, silence included
    flags = continuous_targets(torch.stack([torch.from_numpy(i["target"]) for i in items]), SR)
    expected = [(target_activity(i["target"], SR) or 0.0) >= CONTINUOUS_ACTIVITY for i in items]
    assert flags.tolist() == expected and not all(expected)
    line = format_val_line({"step": 7, **metrics})
    assert "real/continuous/rms_ratio=" in line and "synthetic/continuous/rms_ratio=" in line
    one_kind = format_val_line({"step": 7, "continuous/rms_ratio": 0.9})
    assert "continuous/rms_ratio=0.9" in one_kind


def test_training_logs_validation_per_kind_of_voice(tmp_path: Path) -> None:
    out = prepare_real_and_synthetic(tmp_path)
    # Hold two real speakers and a synthetic one out for validation (a speaker's manifest
    # rows name their packs, so moving rows moves the speaker).
    rows = {s: load_manifest(out, s) for s in ("train", "val")}
    held = {"game/nl-v", "game/nl-m", "synth/voice2"}
    moved = [r for r in rows["train"] if f"{r['source']}/{r['speaker']}" in held]
    write_manifest(out, "train", [r for r in rows["train"] if r not in moved])
    write_manifest(out, "val", rows["val"] + moved)
    run = tmp_path / "run"
    assert (
        main(_cmd(out, run, "train.steps=2", "train.phase1_steps=1", "train.val_interval=2")) == 0
    )
    val = _records(run, "val")[-1]
    groups = ("real", "synthetic", "source/game", "source/synth")
    for group in groups:
        assert val[f"{group}/tp_count"] + val.get(f"{group}/ta_count", 0) > 0
        assert np.isfinite(val[f"{group}/tp_si_sdri"]) and np.isfinite(val[f"{group}/rms_ratio"])
    assert val["real/tp_count"] + val["synthetic/tp_count"] == val["tp_count"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {f"val/{g}/{k}" for g in groups for k in ("tp_si_sdri", "rms_ratio")} <= tags
    (event,) = acc.Scalars("val/source/game/rms_ratio")
    assert event.step == 2 and event.value == pytest.approx(val["source/game/rms_ratio"])
    # The training curves draw the whole set and each kind of voice; a third row per source.
    _, val_records = split_records(read_metrics(run))
    assert [label for label, _ in val_series(val_records, "tp_si_sdri")] == [
        "all",
        "real",
        "synthetic",
    ]
    assert [label for label, _ in val_series(val_records, "rms_ratio", by="source")] == [
        "all",
        "game",
        "synth",
    ]
    png = plot_training_curves(run, tmp_path / "curves.png")
    assert png.stat().st_size > 10_000
    import matplotlib.image

    assert matplotlib.image.imread(png).shape[0] == 3 * 4 * 90  # 3 rows of 4 in at 90 dpi
