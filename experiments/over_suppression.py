"""The over-suppression experiment: the same demo run four ways.

1. ``legacy_db``  — the seed's bug: the target-absent term is a raw (clamped) dB value, so
   a quieter output always lowers the loss; no amplitude anchor (``lambda_amp = 0``);
2. ``relu``       — the thresholded term ``relu(energy_db - ta_target_db)``, still no anchor;
3. ``relu_amp``   — relu plus the TP amplitude loss at ``lambda_amp = 1`` (the first default);
4. ``relu_amp10``  — relu plus the amplitude loss at ``lambda_amp = 10`` (the default now:
   ``hifi-tse audit-loss`` puts the blind gain of weight 1 at 0.65, of weight 10 at 0.96).

A fifth run of the recorded results, the one-sided anchor (``amp_only_below``), needs
commit 6b56eb1 or earlier: the option left the code without a measured gain.

Every run has the same seed, data stream and step schedule; only the loss differs. Phase 2
(target absent allowed) starts early so the runs spend most of their budget where the bug
acts. Writes a table per validation step and a plot into
``docs/history/over_suppression_mechanism.md`` (``docs/over_suppression.md`` summarises it).

    python experiments/over_suppression.py --minutes 10
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
    "relu_amp": ["objective.ta_loss=relu", "objective.lambda_amp=1.0"],
    "relu_amp10": ["objective.ta_loss=relu", "objective.lambda_amp=10.0"],
}
# The variants whose objective the start-up audit refuses (the point of running them).
UNSAFE = {"legacy_db", "relu", "relu_amp"}
# Shared by all runs: an early phase 2 with a generous share of target-absent mixtures.
COMMON = [
    "train.steps=900",
    "train.phase1_steps=250",
    "train.val_interval=100",
    "train.val_examples=64",
    "mixing.easy_steps=250",
    "mixing.ta_ratio=0.3",
    # the architecture of the runs made first (before demo.yaml gained these options)
    "band_split.level_features=false",
]


def train_variant(name: str, args: argparse.Namespace) -> Path:
    from hifi_tse.cli import main

    run_dir = args.out / name
    if (run_dir / "checkpoint_final.pt").is_file() and not args.rerun:
        print(f"{name}: reusing finished run {run_dir}")
        return run_dir
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    sets = [x for o in COMMON + VARIANTS[name] for x in ("--set", o)]
    argv = [
        "train",
        "--config",
        str(args.config),
        "--data",
        str(args.corpus),
        "--out",
        str(run_dir),
        "--max-minutes",
        str(args.minutes),
        "--threads",
        str(args.threads),
        "--no-tensorboard",
        *sets,
    ]
    if name in UNSAFE:
        argv.append("--allow-unsafe-loss")  # the point of this run is the unsafe loss
    code = main(argv)
    if code != 0:
        sys.exit(f"{name}: training exited {code}")
    return run_dir


def val_rows(run_dir: Path) -> list[dict]:
    from hifi_tse.train.curves import read_metrics, split_records

    return split_records(read_metrics(run_dir))[1]


def display_path(path: Path) -> str:
    """``path`` relative to the repository when it is inside it."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def write_doc(runs: dict[str, Path], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hifi_tse.config import load_config

    cfg = load_config(args.config, COMMON)
    rows = {name: val_rows(path) for name, path in runs.items()}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = (
        ("tp_si_sdr", "TP SI-SDR (dB)"),
        ("rms_ratio", "rms_ratio"),
        ("ta_energy_db", "TA energy (dB)"),
    )
    for ax, (key, label) in zip(axes, panels):
        for name, records in rows.items():
            ax.plot([r["step"] for r in records], [r[key] for r in records], "o-", ms=3, label=name)
        ax.axvline(cfg.train.phase1_steps, color="grey", ls=":", lw=1)
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[1].axhspan(cfg.health.rms_ratio_low, cfg.health.rms_ratio_high, color="g", alpha=0.08)
    axes[2].axhline(cfg.objective.ta_target_db, color="r", ls="--", lw=1)
    axes[0].legend()
    fig.tight_layout()
    png = args.doc.with_suffix(".png")
    fig.savefig(png, dpi=90)
    plt.close(fig)

    lines = [
        "# The over-suppression experiment",
        "",
        "The same demo run five ways (`experiments/over_suppression.py"
        f"`): `{display_path(args.config)}` with "
        f"`{' '.join(COMMON)}`, {cfg.train.steps} steps each on CPU (1 thread), phase 2 from "
        f"step {cfg.train.phase1_steps}. Validation: the fixed set of "
        f"{cfg.train.val_examples} mixtures (held-out voices), EMA weights.",
        "",
        "- `legacy_db`: `objective.ta_loss=legacy_db lambda_amp=0` (the seed's bug)",
        "- `relu`: `ta_loss=relu lambda_amp=0` (change 1 of the seed only)",
        "- `relu_amp`: `ta_loss=relu lambda_amp=1` (the first default)",
        "- `relu_amp10`: `ta_loss=relu lambda_amp=10` (the default now)",
        "",
        f"![curves]({png.name})",
        "",
    ]
    for name, records in rows.items():
        lines += [
            f"## {name}",
            "",
            "| step | phase | TP SI-SDR (dB) | rms_ratio | TA energy (dB) |",
            "|---|---|---|---|---|",
        ]
        for r in records:
            phase = 1 if r["step"] < cfg.train.phase1_steps else 2
            lines.append(
                f"| {r['step']} | {phase} | {r['tp_si_sdr']:.2f} ± {r['tp_si_sdr_se']:.2f} | "
                f"{r['rms_ratio']:.3f} | {r['ta_energy_db']:.1f} |"
            )
        lines.append("")
    summary = {
        name: {k: records[-1][k] for k in ("step", "tp_si_sdr", "rms_ratio", "ta_energy_db")}
        for name, records in rows.items()
        if records
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    lines += ["## Last validation of each run", "", "```", json.dumps(summary, indent=2), "```"]
    if args.conclusion:
        lines += ["", "## What it shows", "", args.conclusion]
    args.doc.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.doc} and {png}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, default=REPO / "data" / "demo")
    p.add_argument(
        "--config",
        type=Path,
        default=REPO / "experiments" / "over_suppression.yaml",
        help="base config (default: configs/demo.yaml of the day the runs were measured)",
    )
    p.add_argument("--out", type=Path, default=REPO / "runs" / "over_suppression")
    p.add_argument(
        "--doc", type=Path, default=REPO / "docs" / "history" / "over_suppression_mechanism.md"
    )
    p.add_argument("--minutes", type=float, default=30.0, help="time cap per run (steps rule)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--rerun", action="store_true", help="retrain finished runs")
    p.add_argument("--doc-only", action="store_true", help="rewrite the doc from finished runs")
    p.add_argument("--conclusion", default="", help="a closing paragraph for the doc")
    args = p.parse_args()
    if not (args.corpus / "manifest_train.jsonl").is_file():
        from hifi_tse.cli import main as cli

        cli(["make-demo-corpus", "--out", str(args.corpus), "--quiet"])
    runs = {}
    for name in args.variants:
        runs[name] = args.out / name if args.doc_only else train_variant(name, args)
    write_doc(runs, args)


if __name__ == "__main__":
    main()
