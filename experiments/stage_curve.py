"""The shipped model's stages on one set of draws: how the real-voice figures grew, and with what.

Scores every shipped export from stage 8 (espeak voices only) to stage 14 on the same test
draws (held-out talkers of the unseen source, of the seen sources, and synthetic voices) and
on the training split (the talkers each stage could have trained on), then prints the tables
of docs/demo_model.md, "What limits the unseen-source figure", and draws its figure. A stage's
export is read from the commit that shipped it (``git show``), so the curve needs only the
repository and the demo corpus:

    python experiments/stage_curve.py --data data/demo --out runs/stage_curve \
        [--probe "runs/s21pa=as shipped" "runs/s21pb=LSTM 96"]

``--probe RUN[=LABEL]`` adds the validation curves of ``experiments/fit_probe.py`` runs to the
figure.
Evaluations already in ``--out`` are reused, so a second call only redraws.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from hifi_tse.eval.compare import paired_differences, read_examples

REPO = Path(__file__).resolve().parents[1]

# stage -> (commit that shipped its export, path of the export in that commit, real training
# talkers; docs/demo_model.md, "Stages and their recipes").
STAGES: dict[int, tuple[str, str, int]] = {
    8: ("286c15d", "models/demo_model.pt", 0),
    9: ("c3ef605", "src/hifi_tse/assets/demo_model.pt", 12),
    10: ("aa140b7", "src/hifi_tse/assets/demo_model.pt", 12),
    11: ("2b5fa99", "src/hifi_tse/assets/demo_model.pt", 12),
    12: ("603e693", "src/hifi_tse/assets/demo_model.pt", 141),
    13: ("c8f9dca", "src/hifi_tse/assets/demo_model.pt", 141),
    14: ("afd15e2", "src/hifi_tse/assets/demo_model.pt", 141),
}
TEST_KINDS = ("unseen-source", "seen-source", "synthetic")
# The decision draws of the post-stage-14 arms (docs/demo_model.md): 200 mixtures per kind
# each, half target-absent.
TEST_SEEDS = (31, 43)
TEST_EXAMPLES = 200
TRAIN_SEED = 31
TRAIN_EXAMPLES = 400
TA_RATIO = 0.5
REFERENCE_STAGE = 14
UNSEEN_TARGET_DB = 5.0  # issue 35's unseen-source TP SI-SDRi target, drawn on the figure
VARIANT_MARK = "~v"  # pitch/formant variants of a real training talker: "<talker>~vNN"


def export_of(stage: int, out: Path) -> Path:
    commit, path, _ = STAGES[stage]
    target = out / "exports" / f"stage{stage}.pt"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        blob = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{commit}:{path}"], check=True, capture_output=True
        ).stdout
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(blob)
        tmp.replace(target)
    return target


def evaluate(
    checkpoint: Path,
    data: Path,
    split: str,
    voices: str,
    seed: int,
    n: int,
    out: Path,
    wrong_reference: bool,
    threads: int,
) -> Path:
    table = out / "per_example.csv"
    if table.is_file():
        return table
    cmd = [
        sys.executable,
        "-m",
        "hifi_tse",
        "evaluate",
        "--checkpoint",
        str(checkpoint),
        "--data",
        str(data),
        "--split",
        split,
        "--voices",
        voices,
        "--seed",
        str(seed),
        "--examples",
        str(n),
        "--mix-set",
        f"mixing.ta_ratio={TA_RATIO}",
        "--no-perceptual",
        "--threads",
        str(threads),
        "--out",
        str(out),
    ]
    if wrong_reference:
        cmd.append("--wrong-reference")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return table


def print_header(*columns: str) -> None:
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))


def present(rows: Iterable[dict[str, str]], key: str = "si_sdri") -> np.ndarray:
    return np.array([float(r[key]) for r in rows if r["target_present"] == "True" and r[key]])


def mean_se(values: np.ndarray) -> tuple[float, float]:
    if len(values) < 2:
        return float(np.mean(values)), float("nan")
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


Rows = dict[str, dict[str, str]]  # evaluate's per_example.csv rows by "<seed>/<example name>"


def decision_tables(out: Path) -> dict[str, dict[int, Rows]]:
    """kind -> stage -> the rows of both seeds' draws (``hifi-tse compare`` pairs them)."""
    return {
        kind: {
            stage: {
                f"{seed}/{name}": row
                for seed in TEST_SEEDS
                for name, row in read_examples(out / f"test{seed}/stage{stage}/{kind}").items()
            }
            for stage in STAGES
        }
        for kind in TEST_KINDS
    }


def print_test_table(tables: dict[str, dict[int, Rows]]) -> None:
    """TP SI-SDRi of every kind (paired against the reference stage), then the unseen
    source's suppression, level and wrong-reference drop and the seen sources' level."""
    print_header(
        "stage",
        "real training talkers",
        *(f"{kind}: TP SI-SDRi, dB (vs {REFERENCE_STAGE})" for kind in TEST_KINDS),
        "unseen: TA supp., dB",
        "unseen / seen rms_ratio",
        "unseen: wrong-ref. drop, dB",
    )
    for stage, (_, _, talkers) in STAGES.items():
        cells = []
        for kind in TEST_KINDS:
            value, se = mean_se(present(tables[kind][stage].values()))
            if stage == REFERENCE_STAGE:
                cells.append(f"{value:.2f} ± {se:.2f}")
                continue
            paired = paired_differences(tables[kind][REFERENCE_STAGE], tables[kind][stage])
            gain = paired["all"]["si_sdri"]
            cells.append(
                f"{value:.2f} ± {se:.2f} ({gain['difference']:+.2f} ± {gain['difference_sem']:.2f})"
            )
        unseen = list(tables["unseen-source"][stage].values())
        seen = list(tables["seen-source"][stage].values())
        suppression = np.mean(
            [float(r["suppression_db"]) for r in unseen if r["target_present"] == "False"]
        )
        drop = np.mean(present(unseen)) - np.mean(present(unseen, "si_sdri_wrong"))
        levels = [np.mean(present(rows, "rms_ratio")) for rows in (unseen, seen)]
        cells += [
            f"{suppression:.1f}",
            f"{levels[0]:.2f} / {levels[1]:.2f}",
            f"{drop:.1f}",
        ]
        print(f"| {stage} | {talkers} | " + " | ".join(cells) + " |")


def train_figures(out: Path) -> dict[str, dict[int, tuple[float, float]]]:
    """group -> stage -> (TP SI-SDRi, SE) on the training split."""
    figures: dict[str, dict[int, tuple[float, float]]] = {
        "recorded": {},
        "variants": {},
        "synthetic": {},
    }
    for stage in STAGES:
        real = list(read_examples(out / f"train{TRAIN_SEED}/stage{stage}/real").values())
        synthetic = read_examples(out / f"train{TRAIN_SEED}/stage{stage}/synthetic").values()
        figures["recorded"][stage] = mean_se(
            present([r for r in real if VARIANT_MARK not in r["target_speaker"]])
        )
        figures["variants"][stage] = mean_se(
            present([r for r in real if VARIANT_MARK in r["target_speaker"]])
        )
        figures["synthetic"][stage] = mean_se(present(synthetic))
    return figures


def print_train_table(figures: dict[str, dict[int, tuple[float, float]]]) -> None:
    print()
    print_header(
        "stage",
        "real training talkers, as recorded",
        "their pitch/formant variants",
        "synthetic training voices",
    )
    for stage in STAGES:
        cells = [f"{figures[g][stage][0]:.2f} ± {figures[g][stage][1]:.2f}" for g in figures]
        print(f"| {stage} | " + " | ".join(cells) + " |")


def print_source_table(tables: dict[str, dict[int, Rows]], first: int) -> None:
    """Paired TP SI-SDRi gain from stage ``first`` to the reference stage per test source."""
    print()
    print_header("test source", "TP n", f"stage {first}", f"stage {REFERENCE_STAGE}", "paired gain")
    real_kinds = ("unseen-source", "seen-source")
    before = {f"{k}/{name}": row for k in real_kinds for name, row in tables[k][first].items()}
    after = {
        f"{k}/{name}": row for k in real_kinds for name, row in tables[k][REFERENCE_STAGE].items()
    }
    groups = paired_differences(before, after, group_by="target_source")
    for group, metrics in sorted(groups.items()):
        if group == "all":
            continue
        gain = metrics["si_sdri"]
        print(
            f"| {group.split('=', 1)[1]} | {gain['n']} | {gain['baseline']:.2f} | "
            f"{gain['candidate']:.2f} | {gain['difference']:+.2f} ± {gain['difference_sem']:.2f} |"
        )


def plot(
    tables: dict[str, dict[int, Rows]],
    figures: dict[str, dict[int, tuple[float, float]]],
    probes: list[tuple[Path, str]],
    png: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hifi_tse.train.curves import read_metrics, split_records, val_series

    panels = 2 if probes else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.2), squeeze=False)
    ax = axes[0][0]
    stages = list(STAGES)
    for kind in TEST_KINDS:
        points = [mean_se(present(tables[kind][s].values())) for s in stages]
        ax.errorbar(
            stages,
            [p[0] for p in points],
            yerr=[p[1] for p in points],
            marker="o",
            capsize=2,
            label=f"test: {kind}",
        )
    for group in ("recorded", "synthetic"):
        points = [figures[group][s] for s in stages]
        ax.errorbar(
            stages,
            [p[0] for p in points],
            yerr=[p[1] for p in points],
            marker="s",
            ls="--",
            capsize=2,
            label=f"train split: {'real' if group == 'recorded' else group}",
        )
    ax.axhline(UNSEEN_TARGET_DB, color="k", lw=0.8, ls=":", label="unseen-source target")
    ax.set_xticks(stages, [f"{s}\n{STAGES[s][2]} real" for s in stages])
    ax.set_xlabel("shipped stage (real training talkers)")
    ax.set_ylabel("TP SI-SDRi, dB")
    ax.set_title("every shipped stage on the same draws")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if probes:
        ax = axes[0][1]
        for (run, name), style in zip(probes, ("-", "--", ":", "-.")):
            _, val = split_records(read_metrics(run))
            for label, points in val_series(val, "tp_si_sdri"):
                if label == "all":
                    continue
                steps, values, errors = zip(*points)
                ax.errorbar(
                    steps,
                    values,
                    yerr=errors,
                    ls=style,
                    marker="o",
                    ms=3,
                    capsize=2,
                    label=f"{name}: {label}",
                )
        ax.set_xlabel("step")
        ax.set_ylabel("TP SI-SDRi on the training mixtures themselves, dB")
        ax.set_title("fit probe: the training mixtures it is scored on (first 240)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / "data/demo")
    parser.add_argument("--out", type=Path, default=REPO / "runs/stage_curve")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--probe", nargs="*", default=[], help="fit-probe runs, RUN[=LABEL]")
    parser.add_argument("--png", type=Path, default=None, help="default: OUT/stage_curve.png")
    args = parser.parse_args(argv)
    for stage in STAGES:
        checkpoint = export_of(stage, args.out)
        for seed in TEST_SEEDS:
            for kind in TEST_KINDS:
                evaluate(
                    checkpoint,
                    args.data,
                    "test",
                    kind,
                    seed,
                    TEST_EXAMPLES,
                    args.out / f"test{seed}/stage{stage}/{kind}",
                    True,
                    args.threads,
                )
        for voices in ("real", "synthetic"):
            evaluate(
                checkpoint,
                args.data,
                "train",
                voices,
                TRAIN_SEED,
                TRAIN_EXAMPLES,
                args.out / f"train{TRAIN_SEED}/stage{stage}/{voices}",
                False,
                args.threads,
            )
    tables = decision_tables(args.out)
    figures = train_figures(args.out)
    print_test_table(tables)
    print_train_table(figures)
    print_source_table(tables, first=11)
    probes = [
        (Path(run), label or Path(run).name)
        for run, _, label in (item.partition("=") for item in args.probe)
    ]
    plot(tables, figures, probes, args.png or args.out / "stage_curve.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
