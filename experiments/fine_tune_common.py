"""What the fine-tune experiments share (``over_suppression_shipped.py``,
``gan_vs_plain.py``): their common command-line arguments and test scoring that reuses the
scores an earlier invocation wrote."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TEST_VOICES = ["unseen-source", "seen-source", "synthetic"]
NOMINAL_STEPS = 20000  # the schedule the budget stretches or shrinks to the wall clock


def budget_schedule(minutes: float, validations: int) -> list[str]:
    """``--set`` overrides: a ``minutes`` wall-clock budget over the nominal schedule, with
    ``validations`` validations and numbered checkpoints evenly through it."""
    interval = NOMINAL_STEPS // validations
    return [
        f"train.budget_minutes={minutes}",
        f"train.steps={NOMINAL_STEPS}",
        f"train.val_interval={interval}",
        f"train.save_interval={interval}",
    ]


def add_fine_tune_arguments(
    p: argparse.ArgumentParser, out_name: str, minutes: float, minutes_help: str, threads: int
) -> None:
    """Corpus, starting model, output folder, budget, threads and the test draws."""
    p.add_argument("--corpus", type=Path, default=REPO / "data" / "demo")
    p.add_argument("--start", type=Path, default=REPO / "models" / "demo_model.pt")
    p.add_argument("--out", type=Path, default=REPO / "runs" / out_name)
    p.add_argument("--minutes", type=float, default=minutes, help=minutes_help)
    p.add_argument("--threads", type=int, default=threads)
    p.add_argument("--voices", nargs="+", default=TEST_VOICES)
    p.add_argument("--examples", type=int, default=120)
    p.add_argument("--seed", type=int, default=7)


def test_metrics(
    checkpoint: Path,
    out: Path,
    voices: str,
    args: argparse.Namespace,
    opts: Any,
    mix: tuple[str, ...] = (),
) -> dict[str, Any]:
    """``evaluate``'s metrics of ``checkpoint`` on the test draws of one voice kind, written
    under ``out/voices``; read back instead when an earlier invocation scored them (the
    same draws)."""
    done = out / voices / "metrics.json"
    if done.is_file():
        return json.loads(done.read_text())
    from hifi_tse.eval.evaluate import evaluate_checkpoint

    return evaluate_checkpoint(checkpoint, out / voices, opts, data=args.corpus, split="test",
                               examples=args.examples, seed=args.seed, voices=voices,
                               mix_overrides=mix)  # fmt: skip


def level_figures(metrics: dict[str, Any]) -> dict[str, float]:
    """TP SI-SDRi, TA suppression (dB) and the TP level (rms_ratio of means)."""
    return {
        "tp_si_sdri_db": metrics["tp"]["si_sdri"]["mean"],
        "ta_suppression_db": metrics["ta"]["suppression_db"]["mean"],
        "rms_ratio": metrics["tp"]["rms_ratio_of_means"],
    }
