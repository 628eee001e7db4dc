"""The seed's experiment at a trained model's quality: phase-2 fine-tunes of the shipped model.

Each variant continues ``models/demo_model.pt`` (stage 12, whose recipe has phase 2 from the
first step and the encoder's relative floor on) on the demo corpus with the same seed, data
stream, budget and fixed validation set; only the objective differs:

1. ``legacy_db``  — the seed's raw-dB target-absent term, no amplitude anchor;
2. ``relu``       — the thresholded term, no anchor;
3. ``relu_amp1``  — relu plus the anchor at weight 1;
4. ``default``    — today's objective (relu, anchor at weight 10).

Every validation keeps its checkpoint, so the script can say which one each best-model rule
would keep — the lowest composite validation loss (the seed's rule), the highest TP SI-SDR,
the highest TP SI-SDR with the whole set's level in the healthy band, and with each voice
kind's level in it too (the trainer's rule) — and score those on the test
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

from fine_tune_common import (
    NOMINAL_STEPS,
    REPO,
    add_fine_tune_arguments,
    budget_schedule,
    level_figures,
    test_metrics,
)

VARIANTS: dict[str, list[str]] = {
    "legacy_db": ["objective.ta_loss=legacy_db", "objective.lambda_amp=0.0"],
    "relu": ["objective.ta_loss=relu", "objective.lambda_amp=0.0"],
    "relu_amp1": ["objective.ta_loss=relu", "objective.lambda_amp=1.0"],
    "default": ["objective.ta_loss=relu", "objective.lambda_amp=10.0"],
}
UNSAFE = {"legacy_db", "relu", "relu_amp1"}  # the start-up audit refuses these objectives
DEFAULT_OBJECTIVE = VARIANTS["default"]
RECIPE = "recipes/demo_model_stage12"
VALIDATIONS = 12  # validations per run: enough points to draw each curve
RECOVER_VALIDATIONS = 8  # validations in the recovery run's own budget


def common_overrides(minutes: float) -> list[str]:
    return [
        *budget_schedule(minutes, VALIDATIONS),
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
    from hifi_tse.train.validation import levels_in_band

    whole = [r for r in rows if band[0] <= r["rms_ratio"] <= band[1]]
    by_kind = [r for r in rows if levels_in_band(r, band)]
    return {
        "composite loss (the seed's rule)": min(rows, key=lambda r: r["loss"], default=None),
        "TP SI-SDR alone": max(rows, key=lambda r: r["tp_si_sdr"], default=None),
        "TP SI-SDR, whole set in the band": max(whole, key=lambda r: r["tp_si_sdr"], default=None),
        "TP SI-SDR, each kind in the band (ours)": max(
            by_kind, key=lambda r: r["tp_si_sdr"], default=None
        ),
    }


def checkpoint_at(run_dir: Path, step: int) -> Path:
    path = run_dir / f"checkpoint_{step:07d}.pt"
    return path if path.is_file() else run_dir / "checkpoint_final.pt"


def score(
    checkpoint: Path, out: Path, args: argparse.Namespace, mix: tuple[str, ...] = ()
) -> dict[str, dict]:
    """Test figures per voice kind; ``mix``: mixing overrides (the start model's own
    settings differ from the runs', so it is scored on the runs' mixtures)."""
    from hifi_tse.eval.cli import eval_options

    return {
        voices: level_figures(test_metrics(checkpoint, out, voices, args, eval_options(), mix))
        for voices in args.voices
    }


def recover(args: argparse.Namespace) -> dict:
    """Resume the collapsed legacy_db run's last checkpoint under the default objective."""
    source = args.out / "legacy_db" / "checkpoint_final.pt"
    run_dir = args.out / "recover"
    if (run_dir / "checkpoint_final.pt").is_file():
        return {"from": str(source), "validations": validations(run_dir)}
    # --resume keeps the budget the collapsed run spent, so the budget is its plus ours, and
    # the validation interval puts RECOVER_VALIDATIONS validations in our part of it.
    total = args.minutes + args.recover
    interval = int(NOMINAL_STEPS * args.recover / total / RECOVER_VALIDATIONS)
    overrides = common_overrides(total) + [f"train.val_interval={interval}",
                                           f"train.save_interval={interval}"]  # fmt: skip
    sets = [x for o in overrides + DEFAULT_OBJECTIVE for x in ("--set", o)]
    train(["train", "--config", RECIPE, "--data", str(args.corpus), "--out", str(run_dir),
           "--resume", str(source), "--reset-optimizer", "--reset-patience", "--threads",
           str(args.threads), "--no-tensorboard", *sets])  # fmt: skip
    return {"from": str(source), "validations": validations(run_dir)}


PANELS = (
    ("tp_si_sdr", "TP SI-SDR (dB)"),
    ("rms_ratio", "rms_ratio (all voices)"),
    ("real/rms_ratio", "rms_ratio (real voices)"),
    ("ta_energy_db", "TA energy (dB)"),
)


def plot(summary: dict, png: Path) -> None:
    """Validation curves of every variant (and the recovery run) in one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {name: v["validations"] for name, v in summary["variants"].items()}
    if summary.get("recover"):
        curves["legacy_db → default (recover)"] = summary["recover"]["validations"]
    fig, axes = plt.subplots(1, len(PANELS), figsize=(18, 4))
    for ax, (key, label) in zip(axes, PANELS):
        for name, rows in curves.items():
            points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
            if points:
                ax.plot(*zip(*points), "o-", ms=3, label=name)
        ax.set_title(label)
        ax.set_xlabel("step (from the shipped model)")
        ax.grid(alpha=0.3)
    for ax in axes[1:3]:
        ax.axhspan(*summary["band"], color="g", alpha=0.08)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=80)
    plt.close(fig)


TABLE_HEAD = (
    "| step | TP SI-SDR dB | rms_ratio | real rms_ratio | synthetic rms_ratio | TA energy dB "
    "| validation loss |"
)


def _cell(row: dict, key: str, fmt: str) -> str:
    value = row.get(key)
    return "" if value is None else format(value, fmt)


def _test_cells(test: dict, summary: dict) -> str:
    """``SI-SDRi / TA suppression / rms_ratio | ...`` per voice kind, closing the row."""
    cells = [
        f"{t['tp_si_sdri_db']:.2f} / {t['ta_suppression_db']:.1f} / {t['rms_ratio']:.2f}"
        for t in (test[v] for v in summary["voices"])
    ]
    return " | ".join(cells) + " |"


def markdown(summary: dict) -> str:
    """The seed's table per variant, the checkpoint each rule keeps, and its test figures."""
    lines = []
    runs = dict(summary["variants"])
    if summary.get("recover"):
        runs["recover"] = {"validations": summary["recover"]["validations"], "kept": {}}
    for name, entry in runs.items():
        lines += [f"### {name}", "", TABLE_HEAD, "|---|---|---|---|---|---|---|"]
        for r in entry["validations"]:
            lines.append(
                f"| {r['step']} | {r['tp_si_sdr']:.2f} ± {r['tp_si_sdr_se']:.2f} | "
                f"{r['rms_ratio']:.3f} | {_cell(r, 'real/rms_ratio', '.3f')} | "
                f"{_cell(r, 'synthetic/rms_ratio', '.3f')} | {r['ta_energy_db']:.1f} | "
                f"{r['loss']:.2f} |"
            )
        lines.append("")
    lines += ["### The checkpoint each best-model rule keeps, on the test voices", "",
              "| objective | rule | step | " + " | ".join(
                  f"{v}: SI-SDRi dB / TA supp. dB / rms_ratio" for v in summary["voices"]) + " |",
              "|---|---|---|" + "---|" * len(summary["voices"])]  # fmt: skip
    if summary.get("start"):
        lines.append(
            "| start (the shipped model) | | 0 | " + _test_cells(summary["start"], summary)
        )
    for name, entry in summary["variants"].items():
        for rule, kept in entry["kept"].items():
            if kept is None:
                lines.append(
                    f"| {name} | {rule} | none in the band |" + " |" * len(summary["voices"])
                )
                continue
            lines.append(
                f"| {name} | {rule} | {kept['step']} | " + _test_cells(kept["test"], summary)
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_fine_tune_arguments(p, "over_suppression_shipped", 20.0, "budget per variant", 2)
    p.add_argument("--recover", type=float, default=0.0, help="minutes of the recovery run")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--figure", type=Path, default=REPO / "docs" / "over_suppression_shipped.png")
    args = p.parse_args()

    from hifi_tse.config import Config

    band = (Config().health.rms_ratio_low, Config().health.rms_ratio_high)
    summary: dict = {"band": band, "voices": args.voices, "variants": {}}
    run_mixing = tuple(o for o in common_overrides(args.minutes) if o.startswith("mixing."))
    summary["start"] = score(args.start, args.out / "eval" / "start", args, run_mixing)
    for name in args.variants:
        run_dir = run_variant(name, args)
        rows = validations(run_dir)
        kept, scored = {}, {}
        for rule, row in kept_by_rule(rows, band).items():
            if row is None:
                kept[rule] = None
                continue
            ckpt = checkpoint_at(run_dir, int(row["step"]))
            if ckpt not in scored:  # rules that keep the same checkpoint share its scores
                scored[ckpt] = score(ckpt, args.out / "eval" / name / ckpt.stem, args)
            kept[rule] = {"step": row["step"], "checkpoint": ckpt.name, "test": scored[ckpt]}
        summary["variants"][name] = {"validations": rows, "kept": kept}
        (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    if args.recover > 0:
        summary["recover"] = recover(args)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    (args.out / "summary.md").write_text(markdown(summary))
    plot(summary, args.figure)
    print(f"wrote {args.out / 'summary.json'}, summary.md and {args.figure}")


if __name__ == "__main__":
    main()
