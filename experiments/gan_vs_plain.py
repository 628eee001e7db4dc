"""The GAN phase measured: a HiFi-GAN fine-tune of the shipped model against a plain
continuation at equal CPU time.

Every arm continues ``models/demo_model.pt`` (stage 12) on the demo corpus with its recipe,
the same seed, data stream, learning rate and wall-clock budget; a pass trains a plain arm
and a GAN arm side by side on one thread each (so neither gets more of the machine than the
other). A GAN arm turns the discriminators on from the first step (a discriminator-only
warm-up, then the adversarial and feature-matching terms ramp in), so it spends part of its
budget on them and takes fewer generator steps: ``gan`` with HiFi-GAN's discriminators,
``gan_light`` with discriminators 8x narrower, sized to the 0.33 M-parameter generator.
Each arm's checkpoint kept by the trainer's own rule (``checkpoint_best.pt``) and the
starting model are scored on the test voices by kind, on the same draws: SI-SDRi, TA
suppression, rms_ratio, PESQ-WB, and the no-reference DNSMOS P.835 / personalised P.835 /
P.808 of mixture and estimate.
``summary.json`` and ``summary.md`` in ``--out`` hold the tables.

    python experiments/gan_vs_plain.py --minutes 12 --threads 1 --examples 80
    python experiments/gan_vs_plain.py --minutes 10 --threads 1 --examples 80 \
        --arms plain_b gan_light --voices unseen-source synthetic
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from fine_tune_common import add_fine_tune_arguments, budget_schedule, level_figures, test_metrics

RECIPE = "recipes/demo_model_stage12"
VALIDATIONS = 6
# Discriminator-only for the first 5 % of the budget, adversarial weight ramped over 10 %.
_GAN = ["gan.enabled=true", "gan.start_step=0", "gan.disc_warmup_steps=1000",
        "gan.ramp_steps=2000"]  # fmt: skip
ARMS: dict[str, list[str]] = {
    "plain": [],
    "gan": _GAN,  # HiFi-GAN's discriminators (gan.channels 32: 32..1024 channels)
    # The same run again beside gan_light, so each GAN arm has a plain arm that shared the
    # machine with it; the two plain arms also show what the wall-clock schedule alone moves.
    "plain_b": [],
    "gan_light": [*_GAN, "gan.channels=4"],  # 4..128 channels: sized to the 0.33 M generator
}
DNSMOS_KEYS = ("ovrl", "sig", "bak", "povrl", "pbak", "p808")


def overrides(minutes: float, lr: float) -> list[str]:
    return [*budget_schedule(minutes, VALIDATIONS), f"train.lr={lr}", "train.warmup_steps=200"]


def train_arms(args: argparse.Namespace) -> dict[str, Path]:
    """Train every arm not yet finished, side by side on ``--threads`` threads each: both
    arms share the machine for the same wall clock, so neither gets more CPU than the other."""
    runs = {name: args.out / name for name in args.arms}
    procs = {}
    for name, run_dir in runs.items():
        if (run_dir / "checkpoint_final.pt").is_file():
            print(f"{name}: reusing finished run {run_dir}")
            continue
        sets = [x for o in overrides(args.minutes, args.lr) + ARMS[name] for x in ("--set", o)]
        argv = [sys.executable, "-m", "hifi_tse", "train", "--config", RECIPE,
                "--data", str(args.corpus), "--out", str(run_dir), "--init-from",
                str(args.start), "--threads", str(args.threads), "--no-tensorboard",
                *sets]  # fmt: skip
        args.out.mkdir(parents=True, exist_ok=True)
        log = (run_dir.parent / f"{name}.log").open("w")
        procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    for name, proc in procs.items():
        if proc.wait() != 0:
            sys.exit(f"hifi-tse train ({name}) exited {proc.returncode}: see {name}.log")
    return runs


def steps_done(run_dir: Path) -> int:
    """Generator optimiser steps the arm took in its budget."""
    import torch

    ckpt = torch.load(run_dir / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    return int(ckpt["train_state"]["step"])


def score(checkpoint: Path, out: Path, args: argparse.Namespace) -> dict[str, dict]:
    """Test figures of ``checkpoint`` per voice kind (means over the kind's draws)."""
    from hifi_tse.eval.cli import eval_options
    from hifi_tse.eval.dnsmos import MIX_SUFFIX, PREFIX

    figures = {}
    for voices in args.voices:
        m = test_metrics(checkpoint, out, voices, args, eval_options(dnsmos=True))
        tp_quality = m["dnsmos"]["tp"]
        row = {**level_figures(m), "pesq_wb": m["tp"]["pesq"]["mean"]}
        for key in DNSMOS_KEYS:
            row[key] = tp_quality[f"{PREFIX}{key}"]["mean"]
            row[f"{key}_mix"] = tp_quality[f"{PREFIX}{key}{MIX_SUFFIX}"]["mean"]
        figures[voices] = row
    return figures


def markdown(summary: dict) -> str:
    head = "| voices | model | steps | TP SI-SDRi dB | TA supp. dB | rms_ratio | PESQ-WB |"
    head += "".join(f" {k} |" for k in DNSMOS_KEYS)
    lines = [head, "|" + "---|" * (7 + len(DNSMOS_KEYS))]
    for voices in summary["voices"]:
        first = next(iter(summary["models"].values()))["test"][voices]
        mix = "".join(f" {first[f'{k}_mix']:.2f} |" for k in DNSMOS_KEYS)
        lines.append(f"| {voices} | (mixture) | | | | | |{mix}")
        for name, entry in summary["models"].items():
            r = entry["test"][voices]
            dns = "".join(f" {r[k]:.2f} |" for k in DNSMOS_KEYS)
            lines.append(
                f"| {voices} | {name} | {entry['steps']} | {r['tp_si_sdri_db']:.2f} | "
                f"{r['ta_suppression_db']:.1f} | {r['rms_ratio']:.2f} | {r['pesq_wb']:.2f} |{dns}"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_fine_tune_arguments(p, "gan_vs_plain", 15.0, "budget per arm", 1)  # threads per arm
    p.add_argument("--lr", type=float, default=1.5e-4)
    p.add_argument(
        "--arms",
        nargs="+",
        default=["plain", "gan"],
        choices=list(ARMS),
        help="arms trained side by side in this pass (finished ones are reused)",
    )
    args = p.parse_args()

    summary: dict = {"voices": args.voices, "minutes": args.minutes, "models": {}}
    train_arms(args)
    # Every finished arm, this pass's and earlier passes', in ARMS order.
    runs = {n: args.out / n for n in ARMS if (args.out / n / "checkpoint_final.pt").is_file()}
    summary["models"]["start (stage 12)"] = {
        "steps": 0,
        "test": score(args.start, args.out / "eval" / "start", args),
    }
    for name, run_dir in runs.items():
        summary["models"][name] = {
            "steps": steps_done(run_dir),
            "test": score(run_dir / "checkpoint_best.pt", args.out / "eval" / name, args),
        }
        (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    (args.out / "summary.md").write_text(markdown(summary))
    print(markdown(summary))


if __name__ == "__main__":
    main()
