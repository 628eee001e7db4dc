"""The seed's experiment at a trained model's quality: phase-2 fine-tunes of the shipped model.

Each variant continues ``models/demo_model.pt`` (stage 11, whose recipe has phase 2 from the
first step) on the demo corpus with the same seed, data stream, budget and fixed validation
set; only the objective differs:

1. ``legacy_db``  — the seed's raw-dB target-absent term, no amplitude anchor;
2. ``relu``       — the thresholded term, no anchor;
3. ``relu_amp1``  — relu plus the anchor at weight 1;
4. ``default``    — today's objective (relu, anchor at weight 10).

Every validation keeps its checkpoint, so the script can say which one each best-model rule
would keep — the lowest composite validation loss (the seed's rule), the highest TP SI-SDR,
the highest TP SI-SDR inside the healthy level band (ours) — and score those on the test
voices by kind (``--voices``). ``--recover`` then resumes the collapsed ``legacy_db`` run's
last checkpoint under the default objective with ``--reset-optimizer`` and records how fast
the level comes back. Everything goes to ``--out``; ``summary.json`` holds the tables.

    python experiments/over_suppression_shipped.py --minutes 20 --recover 10
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

VARIANTS: dict[str, list[str]] = {
    "legacy_db": ["objective.ta_loss=legacy_db", "objective.lambda_amp=0.0"],
    "relu": ["objective.ta_loss=relu", "objective.lambda_amp=0.0"],
    "relu_amp1": ["objective.ta_loss=relu", "objective.lambda_amp=1.0"],
    "default": ["objective.ta_loss=relu", "objective.lambda_amp=10.0"],
}
UNSAFE = {"legacy_db", "relu", "relu_amp1"}  # the start-up audit refuses these objectives
DEFAULT_OBJECTIVE = VARIANTS["default"]
RECIPE = "recipes/demo_model_stage11"
VALIDATIONS = 12  # validations per run: enough points to draw each curve
NOMINAL_STEPS = 20000  # the schedule the budget stretches or shrinks to the wall clock


def common_overrides(minutes: float) -> list[str]:
    interval = NOMINAL_STEPS // VALIDATIONS
    return [
        f"train.budget_minutes={minutes}",
        f"train.steps={NOMINAL_STEPS}",
        f"train.val_interval={interval}",
        f"train.save_interval={interval}",
        f"train.keep_last={VALIDATIONS + 2}",
        "train.val_examples=240",
        "train.lr=0.00035",
        "mixing.ta_ratio=0.3",  # more target-absent mixtures: where the seed's term acts
    ]


def train(argv: list[str]) -> None:
    from hifi_tse.cli import main

    code = main(argv)
    if code != 0:
        sys.exit(f"hifi-tse {' '.join(argv[:1])} exited {code}")


def run_variant(name: str, args: argparse.Namespace) -> Path:
    run_dir = args.out / name
    if (run_dir / "checkpoint_final.pt").is_file():
        print(f"{name}: reusing finished run {run_dir}")
        return run_dir
    sets = [x for o in common_overrides(args.minutes) + VARIANTS[name] for x in ("--set", o)]
    argv = ["train", "--config", RECIPE, "--data", str(args.corpus), "--out", str(run_dir),
            "--init-from", str(args.start), "--threads", str(args.threads), "--no-tensorboard",
            *sets]  # fmt: skip
    if name in UNSAFE:
        argv.append("--allow-unsafe-loss")  # the point of this run is the unsafe loss
    train(argv)
    return run_dir


def validations(run_dir: Path) -> list[dict]:
    from hifi_tse.train.curves import read_metrics, split_records

    return split_records(read_metrics(run_dir))[1]


def kept_by_rule(rows: list[dict], band: tuple[float, float]) -> dict[str, dict]:
    """The validation row each best-model rule keeps (None when no row qualifies)."""
    healthy = [r for r in rows if band[0] <= r["rms_ratio"] <= band[1]]
    return {
        "composite loss (the seed's rule)": min(rows, key=lambda r: r["loss"], default=None),
        "TP SI-SDR alone": max(rows, key=lambda r: r["tp_si_sdr"], default=None),
        "TP SI-SDR in the level band (ours)": max(
            healthy, key=lambda r: r["tp_si_sdr"], default=None
        ),
    }


def checkpoint_at(run_dir: Path, step: int) -> Path:
    path = run_dir / f"checkpoint_{step:07d}.pt"
    return path if path.is_file() else run_dir / "checkpoint_final.pt"


def score(checkpoint: Path, out: Path, args: argparse.Namespace) -> dict[str, dict]:
    from hifi_tse.eval.cli import eval_options
    from hifi_tse.eval.evaluate import evaluate_checkpoint

    figures = {}
    for voices in args.voices:
        m = evaluate_checkpoint(checkpoint, out / voices, eval_options(), data=args.corpus,
                                split="test", examples=args.examples, seed=args.seed,
                                voices=voices)  # fmt: skip
        figures[voices] = {
            "tp_si_sdri_db": m["tp"]["si_sdri"]["mean"],
            "ta_suppression_db": m["ta"]["suppression_db"]["mean"],
            "rms_ratio": m["tp"]["rms_ratio_of_means"],
        }
    return figures


def recover(args: argparse.Namespace) -> dict:
    """Resume the collapsed legacy_db run's last checkpoint under the default objective."""
    source = args.out / "legacy_db" / "checkpoint_final.pt"
    run_dir = args.out / "recover"
    sets = [x for o in common_overrides(args.recover) + DEFAULT_OBJECTIVE for x in ("--set", o)]
    train(["train", "--config", RECIPE, "--data", str(args.corpus), "--out", str(run_dir),
           "--resume", str(source), "--reset-optimizer", "--reset-patience", "--threads",
           str(args.threads), "--no-tensorboard", *sets])  # fmt: skip
    return {"from": str(source), "validations": validations(run_dir)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, default=REPO / "data" / "demo")
    p.add_argument("--start", type=Path, default=REPO / "models" / "demo_model.pt")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "over_suppression_shipped")
    p.add_argument("--minutes", type=float, default=20.0, help="budget per variant")
    p.add_argument("--recover", type=float, default=0.0, help="minutes of the recovery run")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--voices", nargs="+", default=["unseen-source", "seen-source", "synthetic"])
    p.add_argument("--examples", type=int, default=120)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()

    from hifi_tse.config import Config

    band = (Config().health.rms_ratio_low, Config().health.rms_ratio_high)
    summary: dict = {"band": band, "variants": {}}
    for name in args.variants:
        run_dir = run_variant(name, args)
        rows = validations(run_dir)
        kept = {}
        for rule, row in kept_by_rule(rows, band).items():
            if row is None:
                kept[rule] = None
                continue
            ckpt = checkpoint_at(run_dir, int(row["step"]))
            figures = score(ckpt, args.out / "eval" / name / ckpt.stem, args)
            kept[rule] = {"step": row["step"], "checkpoint": ckpt.name, "test": figures}
        summary["variants"][name] = {"validations": rows, "kept": kept}
        (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    if args.recover > 0:
        summary["recover"] = recover(args)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {args.out / 'summary.json'}")


if __name__ == "__main__":
    main()
