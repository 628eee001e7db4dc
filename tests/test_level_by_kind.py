"""The level of the output (rms_ratio) by kind of enrolled voice and by speech source of the
enrolled target, in validation, the health monitor and ``hifi-tse evaluate``: a model can turn
down the voices it is unsure of while the whole set's level looks right (issue 37)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from eval_fixtures import tiny_ckpt  # noqa: F401
from test_prepare import make_speech_tree, run_prepare, tone, write
from test_real_voices import FILLETS_LIKE, SR, make_game_tree, mixing_config
from torch import nn

from hifi_tse.cli import main
from hifi_tse.config import config_from_dict
from hifi_tse.data.datasets import FixedExampleSet, collate_batch
from hifi_tse.data.layouts import SpeechSource
from hifi_tse.data.store import load_report, speech_source_voices
from hifi_tse.eval.report import build_metrics
from hifi_tse.losses.objective import Objective
from hifi_tse.losses.separation import LOSS_EPS, energy_db, rms, si_sdr
from hifi_tse.train.logging_utils import format_val_line
from hifi_tse.train.monitor import GROUP_MIN_TP_EXAMPLES, HealthMonitor
from hifi_tse.train.validation import validate

pytestmark = pytest.mark.usefixtures("one_thread")

EXAMPLES = 48  # enough TP examples for some groups to pass GROUP_MIN_TP_EXAMPLES
BATCH = 8


class _Comb(nn.Module):
    """A fixed filter of the mixture: an estimate whose level varies from example to example."""

    def forward(self, mix: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return mix - 0.6 * torch.roll(mix, 5, dims=-1)


@pytest.fixture(scope="module")
def three_sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Packs of two real sources (``game``: 6 speakers, ``studio``: 4) and a synthetic one
    (``synth``: 3), all in the train split: per source is then not the same as per kind."""
    tmp = tmp_path_factory.mktemp("three_sources")
    game = make_game_tree(tmp / "game", utts=3)
    studio = make_speech_tree(tmp / "studio", "folder", n_speakers=4, n_utts=3)
    synth = tmp / "synth"
    for s in range(3):
        for u in range(3):
            write(synth / f"voice{s}" / f"u{u}.wav", tone(1.6, SR, 100 + 30 * s, u), SR, "PCM_16")
    run_prepare([SpeechSource(game, "pattern", FILLETS_LIKE, name="game"),
                 SpeechSource(studio, "folder", name="studio"),
                 SpeechSource(synth, "folder", voices="synthetic")],
                tmp / "out")  # fmt: skip
    return tmp / "out"


def _examples(packs: Path) -> FixedExampleSet:
    cfg = mixing_config(0.5)
    cfg.mixing.ta_ratio = 0.25
    return FixedExampleSet(packs, cfg, split="train", seed=3, n=EXAMPLES, phase=2)


@pytest.fixture(scope="module")
def comb_metrics(three_sources: Path) -> dict[str, float]:
    examples = _examples(three_sources)
    batches = [
        collate_batch([examples[i] for i in range(k, k + BATCH)]) for k in range(0, EXAMPLES, BATCH)
    ]
    kinds = speech_source_voices(load_report(three_sources), None)
    objective = Objective(examples.cfg.objective, SR)
    result = validate(_Comb(), batches, objective, examples.cfg, torch.device("cpu"), False, 0,
                      kind_of_source=kinds)  # fmt: skip
    return result.metrics


def test_rms_ratio_per_kind_and_source_is_that_of_the_examples(
    three_sources: Path, comb_metrics: dict[str, float]
) -> None:
    kinds = speech_source_voices(load_report(three_sources), None)
    assert kinds == {"game": "real", "studio": "real", "synth": "synthetic"}
    # Example by example: the groups of the enrolled target, then ratio of mean RMS.
    per: dict[str, dict[str, list[float]]] = {}
    examples = _examples(three_sources)
    for i in range(len(examples)):
        item = examples[i]
        mix = torch.from_numpy(item["mix"])[None]
        est = _Comb()(mix, mix)
        source = item["meta"]["target_speaker"].split("/", 1)[0]
        for group in (kinds[source], f"source/{source}"):
            values = per.setdefault(group, {"est": [], "tgt": [], "sdri": [], "ta": []})
            if item["target_present"]:
                target = torch.from_numpy(item["target"])[None]
                values["est"].append(float(rms(est, LOSS_EPS)))
                values["tgt"].append(float(rms(target, LOSS_EPS)))
                gain = si_sdr(est, target, LOSS_EPS) - si_sdr(mix, target, LOSS_EPS)
                values["sdri"].append(float(gain))
            else:
                values["ta"].append(float(energy_db(est, LOSS_EPS)))
    m = comb_metrics
    assert set(per) == {"real", "synthetic", "source/game", "source/studio", "source/synth"}
    for group, values in per.items():
        assert m[f"{group}/tp_count"] == len(values["est"]) > 0
        assert m[f"{group}/ta_count"] == len(values["ta"])
        ratio = np.mean(values["est"]) / np.mean(values["tgt"])
        assert m[f"{group}/rms_ratio"] == pytest.approx(ratio, rel=1e-5)
        assert math.isfinite(m[f"{group}/rms_ratio_se"]) and m[f"{group}/rms_ratio_se"] > 0
        assert m[f"{group}/tp_si_sdri"] == pytest.approx(np.mean(values["sdri"]), abs=1e-4)
        if values["ta"]:
            assert m[f"{group}/ta_energy_db"] == pytest.approx(np.mean(values["ta"]), abs=1e-4)
        else:
            assert f"{group}/ta_energy_db" not in m
    # Sources split the whole set; two real sources make the real kind; levels differ.
    sources = ("source/game", "source/studio", "source/synth")
    assert sum(m[f"{s}/tp_count"] for s in sources) == m["tp_count"]
    assert m["real/tp_count"] == m["source/game/tp_count"] + m["source/studio/tp_count"]
    assert m["source/synth/rms_ratio"] == pytest.approx(m["synthetic/rms_ratio"], rel=1e-9)
    assert m["source/game/rms_ratio"] != pytest.approx(m["source/studio/rms_ratio"], rel=1e-3)
    # The console line shows the kinds' levels, not the sources'.
    line = format_val_line({"step": 1, **m})
    assert "real/rms_ratio=" in line and "synthetic/rms_ratio=" in line
    assert "source/" not in line


def test_one_kind_of_voice_still_reports_its_sources(three_sources: Path) -> None:
    examples = _examples(three_sources)
    batches = [collate_batch([examples[i] for i in range(BATCH)])]
    objective = Objective(examples.cfg.objective, SR)
    all_real = {"game": "real", "studio": "real", "synth": "real"}
    metrics = validate(_Comb(), batches, objective, examples.cfg, torch.device("cpu"), False, 0,
                       kind_of_source=all_real).metrics  # fmt: skip
    assert not any(k.startswith(("real/", "synthetic/")) for k in metrics)
    assert any(k.startswith("source/") and k.endswith("/rms_ratio") for k in metrics)
    one_source = validate(_Comb(), batches, objective, examples.cfg, torch.device("cpu"), False,
                          0, kind_of_source={"game": "real"})  # fmt: skip
    # nothing to split by source or kind (no meta read); continuous speech is still a group
    groups = {k.split("/", 1)[0] for k in one_source.metrics if "/" in k}
    assert groups == {"continuous"}


def _health(low: float = 0.8, high: float = 1.25) -> HealthMonitor:
    cfg = config_from_dict({"health": {"rms_ratio_low": low, "rms_ratio_high": high}})
    return HealthMonitor(cfg.health, cfg.objective)


def _val(whole: float, **groups: tuple[float, int]) -> dict[str, float]:
    """A validation record: the whole set's rms_ratio and ``group=(rms_ratio, tp_count)``
    (``source_x`` stands for ``source/x``, ``real_continuous`` for ``real/continuous``)."""
    record = {"step": 9, "rms_ratio": whole, "ta_energy_db": -30.0, "tp_si_sdr": 5.0}
    for name, (ratio, count) in groups.items():
        group = name.replace("source_", "source/").replace("_continuous", "/continuous")
        record |= {f"{group}/rms_ratio": ratio, f"{group}/rms_ratio_se": 0.03,
                   f"{group}/tp_count": count}  # fmt: skip
    return record


def test_monitor_warns_when_one_group_leaves_the_band_while_the_whole_is_in() -> None:
    mon, enough = _health(), GROUP_MIN_TP_EXAMPLES
    # The user's report: real voices at 0.68 while the whole set reads 0.92.
    (warning,) = mon.check([_val(0.92, real=(0.68, 40), synthetic=(0.98, 120))])
    assert "real voices" in warning and "0.680" in warning and "0.920" in warning
    assert "step 9" in warning and "[0.8, 1.25]" in warning
    (loud,) = mon.check([_val(0.95, real=(1.02, 40), synthetic=(1.4, 60))])
    assert "synthetic voices" in loud and "too loud" in loud
    # A source held out whole, with enough TP examples, and only then.
    (held,) = mon.check([_val(0.9, source_studio=(0.6, enough), source_game=(0.97, 50))])
    assert "source 'studio'" in held and f"({enough} TP examples)" in held
    assert mon.check([_val(0.9, source_studio=(0.6, enough - 1))]) == []
    # Continuous speech turned down while words-with-pauses keep the kind's level in band.
    (talking,) = mon.check([_val(0.93, real=(0.86, 40), real_continuous=(0.72, enough))])
    assert "continuous speech of real voices is 0.720" in talking
    (every,) = mon.check([_val(0.93, continuous=(0.75, 30))])
    assert "continuous speech of all voices" in every
    assert mon.check([_val(0.93, real_continuous=(0.72, enough - 1))]) == []
    # Not otherwise: every group inside; a group without a figure.
    assert mon.check([_val(0.92, real=(0.85, 40), source_game=(1.2, 40))]) == []
    assert mon.check([_val(0.92, real=(math.nan, 40))]) == []
    # The whole set out of the band: its own warning says it, no group warnings.
    (whole,) = mon.check([_val(0.7, real=(0.6, 40), synthetic=(0.75, 40))])
    assert "validation rms_ratio 0.700 is outside" in whole


def test_monitor_reads_the_groups_validation_reports(comb_metrics: dict[str, float]) -> None:
    """Validation's own keys reach the monitor: a band that the lowest eligible group leaves
    while the whole set stays in warns for exactly the groups below it."""
    m = comb_metrics
    eligible = {
        k.removesuffix("/rms_ratio"): v
        for k, v in m.items()
        if k.endswith("/rms_ratio")
        and m[k.replace("/rms_ratio", "/tp_count")] >= GROUP_MIN_TP_EXAMPLES
    }
    lowest = min(eligible.values())
    assert lowest < m["rms_ratio"]  # the comb's level differs between groups
    low = (lowest + m["rms_ratio"]) / 2
    warnings = _health(low=low, high=10.0).check([{"step": 3, **m}])
    below = [g for g, v in eligible.items() if v < low]
    assert below and len(warnings) == len(below)
    for group in below:
        name = group.removeprefix("source/")
        phrase = f"source '{name}'" if group.startswith("source/") else f"of {name} voices"
        if group.endswith("continuous"):
            kind = group.removesuffix("continuous").rstrip("/") or "all"
            phrase = f"of continuous speech of {kind} voices"
        assert sum(phrase in w for w in warnings) == 1


def _csv_level(rows: list[dict[str, str]]) -> float:
    """TP output RMS / target RMS (ratio of means) of per_example.csv rows."""
    tp = [r for r in rows if r["target_present"] == "True"]
    est, target = ([float(r[k]) for r in tp] for k in ("rms_est", "rms_target"))
    return float(np.mean(est) / np.mean(target))


def test_evaluate_reports_level_by_kind_and_source(
    three_sources: Path,
    tiny_ckpt: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    out = tmp_path / "eval"
    args = ["evaluate", "--checkpoint", str(tiny_ckpt), "--data", str(three_sources),
            "--split", "train", "--examples", "24", "--seed", "1", "--out", str(out),
            "--no-perceptual", "--no-speaker-similarity", "--batch-size", "8"]  # fmt: skip
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    rows = list(csv.DictReader((out / "per_example.csv").open()))
    kinds = {"game": "real", "studio": "real", "synth": "synthetic"}
    assert all(kinds[r["target_source"]] == r["voice_kind"] for r in rows)
    for key, column in (("by_voice_kind", "voice_kind"), ("by_target_source", "target_source")):
        groups = metrics[key]
        assert set(groups) == {r[column] for r in rows} and len(groups) >= 2
        assert sum(g["tp"]["count"] + g["ta"]["count"] for g in groups.values()) == 24
        for name, group in groups.items():
            mine = [r for r in rows if r[column] == name]
            tp = [r for r in mine if r["target_present"] == "True"]
            ta = [float(r["suppression_db"]) for r in mine if r["target_present"] != "True"]
            assert group["tp"]["count"] == len(tp) and group["ta"]["count"] == len(ta)
            if tp:  # the CSV keeps 4 decimals
                level = group["tp"]["rms_ratio_of_means"]
                assert level == pytest.approx(_csv_level(mine), rel=2e-3)
                sdri = np.mean([float(r["si_sdri"]) for r in tp])
                assert group["tp"]["si_sdri"]["mean"] == pytest.approx(sdri, abs=1e-3)
            if ta:
                assert group["ta"]["suppression_db"]["mean"] == pytest.approx(np.mean(ta), abs=1e-3)
    report = (out / "report.md").read_text()
    assert "## By kind of enrolled voice" in report
    assert "## By speech source of the enrolled talker" in report


def test_records_without_sources_have_no_kind_or_source_breakdown() -> None:
    """List mode: no speaker metadata, so no groups (and no report section)."""
    record = {"target_present": True, "target_speaker": None, "target_source": None,
              "voice_kind": None, "rms_est": 0.1, "rms_target": 0.1}  # fmt: skip
    metrics = build_metrics([record], [], {})
    assert metrics["by_voice_kind"] == {} and metrics["by_target_source"] == {}
