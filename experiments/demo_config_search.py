"""Search for the demo config that learns most per CPU-minute.

Each variant is ``configs/demo.yaml`` plus a few ``--set`` overrides, trained for the step
schedule ``make demo`` uses (15 minutes at ~80 steps/min: 1200 steps, phase 2 from step 360)
with a denser validation so the curves can be compared. Runs can go side by side
(``--parallel``): compare variants by step when they share an architecture (same cost per
step), and by the measured seconds per step otherwise. Writes a table per variant to
``runs/demo_search/summary.md`` (copied into ``docs/benchmarks.md`` by hand).

    python experiments/demo_config_search.py --variants base scaled --parallel 2
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# What `hifi-tse demo --minutes 15` sets, plus a denser validation for the curves.
COMMON = [
    "train.steps=1200",
    "train.phase1_steps=360",
    "train.val_interval=150",
    "train.val_examples=64",
    "mixing.num_workers=0",
    # the starting point of the search; variants switch these on
    "band_split.level_features=false",
]
# The data and learning-rate schedules sized to the 1200-step budget instead of 8000 steps.
SCALED = [
    "mixing.easy_steps=600",
    "mixing.noisy_ref_ramp=[600,1200]",
    "train.warmup_steps=100",
]
# Variants of options that have since left the code (last in commit 6b56eb1):
# FiLM mean+std pooling and the one-sided amplitude anchor (docs/benchmarks.md).
VARIANTS: dict[str, list[str]] = {
    "base": [],
    "scaled": SCALED,
    "scaled_lr4e-3": [*SCALED, "train.lr=0.004", "train.min_lr=0.0004"],
    "scaled_level": [*SCALED, "band_split.level_features=true"],
    "scaled_level_1block_f64": [
        *SCALED,
        "band_split.level_features=true",
        "model.num_blocks=1",
        "model.reinject_blocks=[0]",
        "model.feature_dim=64",
        "model.lstm_hidden=64",
    ],
    "scaled_level_phase1_600": [
        *SCALED,
        "band_split.level_features=true",
        "train.phase1_steps=600",
    ],
    "scaled_phase1_600": [*SCALED, "train.phase1_steps=600"],
    "scaled_seg1.5_b11": [*SCALED, "audio.segment_seconds=1.5", "train.batch_size=11"],
    "scaled_1block_f64": [
        *SCALED,
        "model.num_blocks=1",
        "model.reinject_blocks=[0]",
        "model.feature_dim=64",
        "model.lstm_hidden=64",
    ],
}


def command(name: str, args: argparse.Namespace) -> list[str]:
    sets = [x for o in COMMON + VARIANTS[name] for x in ("--set", o)]
    return [
        sys.executable,
        "-m",
        "hifi_tse",
        "train",
        "--config",
        str(args.config),
        "--data",
        str(args.corpus),
        "--out",
        str(args.out / name),
        "--threads",
        "1",
        "--no-tensorboard",
        *sets,
    ]


def run_all(names: list[str], args: argparse.Namespace) -> None:
    pending = list(names)
    running: list[tuple[str, subprocess.Popen]] = []
    while pending or running:
        while pending and len(running) < args.parallel:
            name = pending.pop(0)
            if (args.out / name / "checkpoint_final.pt").is_file() and not args.rerun:
                print(f"{name}: reusing finished run")
                continue
            if (args.out / name).exists():
                import shutil

                shutil.rmtree(args.out / name)
            (args.out).mkdir(parents=True, exist_ok=True)
            log = open(args.out / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
            print(f"{name}: started")
            running.append((name, subprocess.Popen(command(name, args), stdout=log, stderr=log)))
        name, proc = running.pop(0)
        if proc.wait() != 0:
            print(f"{name}: training exited {proc.returncode}; see {args.out / name}.log")
        else:
            print(f"{name}: done")


def summarise(names: list[str], args: argparse.Namespace) -> str:
    from hifi_tse.train.curves import read_metrics, split_records

    lines = ["# Demo config search", ""]
    lines += [
        "| variant | overrides | s/step | val TP SI-SDRi (dB) by step | last TA energy (dB) |"
    ]
    lines += ["|---|---|---|---|---|"]
    for name in names:
        run = args.out / name
        if not (run / "metrics.jsonl").is_file():
            continue
        train, val = split_records(read_metrics(run))
        step_time = statistics.median(r["step_time"] for r in train) if train else float("nan")
        curve = ", ".join(f"{r['step']}: {r['tp_si_sdri']:.2f}" for r in val)
        last = val[-1] if val else {}
        lines.append(
            f"| {name} | `{' '.join(VARIANTS[name]) or '(demo.yaml)'}` | {step_time:.2f} | "
            f"{curve} | {last.get('ta_energy_db', float('nan')):.1f} "
            f"(rms {last.get('rms_ratio', float('nan')):.2f}) |"
        )
    text = "\n".join(lines) + "\n"
    (args.out / "summary.md").write_text(text)
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, default=REPO / "data" / "demo")
    p.add_argument("--config", type=Path, default=REPO / "configs" / "demo.yaml")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "demo_search")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--parallel", type=int, default=1, help="runs side by side (1 thread each)")
    p.add_argument("--rerun", action="store_true", help="retrain finished runs")
    p.add_argument("--summary-only", action="store_true", help="only tabulate finished runs")
    args = p.parse_args()
    if not args.summary_only:
        run_all(args.variants, args)
    print(summarise(args.variants, args))


if __name__ == "__main__":
    main()
