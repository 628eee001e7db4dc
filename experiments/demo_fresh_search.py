"""Search for what lifts the 15-minute `make demo` run on the held-out test voices.

Each variant is ``configs/demo.yaml`` with exactly the schedule ``hifi-tse demo`` sets for its
default budget (``budget_overrides``: 15 min x 90 steps/min = 1350 steps, phase 2 from the
half), plus a few ``--set`` overrides. Each run is then scored the way the demo report scores
it: ``checkpoint_best.pt`` on 120 test mixtures, seed 7, with the wrong-reference check.
Runs use 1 torch thread and fixed steps, so a variant with the same cost per step is compared
by what it learns in the demo's step budget. Writes ``runs/demo_fresh_search/summary.md``.

    python experiments/demo_fresh_search.py --variants base ta_w0.3

Equal wall clock, as ``hifi-tse demo`` trains (its time-budgeted schedule), scored on the real
and the synthetic test voices apart: ``--minutes``, e.g. the mixed-corpus pairs of
docs/benchmarks.md (one thread each, two at a time):

    python experiments/demo_fresh_search.py --out runs/mixed --minutes 15 --parallel 2 \
        --variants mixed_base mixed_ge2e

Equal CPU time instead of equal steps: ``--steps`` for the base schedule and ``--speedup
NAME=X`` (a variant's measured step-time ratio) to train NAME for X times as many steps, e.g.
the batch-size search in docs/benchmarks.md:

    python experiments/demo_fresh_search.py --out runs/fresh2 --steps 851 --parallel 2 \
        --variants cheap_phase cheap_phase_b4 --speedup cheap_phase=1.25 cheap_phase_b4=2.4

Variants are overrides on ``configs/demo.yaml`` as it is, so the older ones (up to the
batch and learning-rate rows of docs/benchmarks.md) ran on the demo.yaml of their day. The
2026-12-01 variants name their STFT (``STFT512`` or ``HOP512``), and all but the ``shape_``
ones the target-absent weight of 0.1 they ran with, so they stay reproducible:

    python experiments/demo_fresh_search.py --out runs/fresh3 --steps 3830 \
        --variants hop512 base_seed1 --speedup hop512=1.72
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEPS = 1350  # `hifi-tse demo` defaults: 15 minutes x 90 expected steps per minute
PHASE1_FRACTION = 0.5
# Demo-style phase loss: windows as in the defaults, hop = window / 4 and no zero-padded FFT,
# about a fifth of the default's STFT work (see docs/benchmarks.md).
CHEAP_PHASE = "objective.phase_resolutions=[[240,240,60],[600,600,150],[1200,1200,300]]"

# demo.yaml's STFT before 2026-12-01: 32 ms windows, 16 ms hop, 20 bands.
STFT512 = [
    "stft.n_fft=512",
    "stft.win_length=512",
    "stft.hop_length=256",
    "band_split.regions=[{upper_hz: 1000.0, width_bins: 4}, "
    "{upper_hz: 4000.0, width_bins: 12}, {upper_hz: 8000.0, width_bins: 32}]",
]
# Half the frames: 64 ms windows with a 32 ms hop, band widths doubled (the same 20 bands);
# demo.yaml's STFT since 2026-12-01.
HOP512 = [
    "stft.n_fft=1024",
    "stft.win_length=1024",
    "stft.hop_length=512",
    "band_split.regions=[{upper_hz: 1000.0, width_bins: 8}, "
    "{upper_hz: 4000.0, width_bins: 24}, {upper_hz: 8000.0, width_bins: 64}]",
]

# "Seed n": other initial weights (train.seed) and other training mixtures (mixing.seed); the
# test mixtures do not depend on them.
SEEDS = {
    1: ["train.seed=1", "mixing.seed=4321"],
    2: ["train.seed=2", "mixing.seed=99"],
    3: ["train.seed=3", "mixing.seed=777"],
}

# Variants of options that have since left the code (last in commit 6b56eb1):
# the per-frame presence gain and the auxiliary speaker classifier (docs/benchmarks.md).
VARIANTS: dict[str, list[str]] = {
    "base": [],
    "cheap_phase": [CHEAP_PHASE],
    "cheap_phase_b4": [CHEAP_PHASE, "train.batch_size=4"],
    "cheap_phase_b2": [CHEAP_PHASE, "train.batch_size=2"],
    "cheap_phase_b4_seg1.5": [CHEAP_PHASE, "train.batch_size=4", "audio.segment_seconds=1.5"],
    "cheap_phase_b2_seg1.5": [CHEAP_PHASE, "train.batch_size=2", "audio.segment_seconds=1.5"],
    "cheap_phase_b2_ta_ratio0.35": [CHEAP_PHASE, "train.batch_size=2", "mixing.ta_ratio=0.35"],
    "cheap_phase_b2_lr3e-3": [
        CHEAP_PHASE,
        "train.batch_size=2",
        "train.lr=0.003",
        "train.min_lr=0.0003",
    ],
    "cheap_phase_b2_lr1.3e-3": [
        CHEAP_PHASE,
        "train.batch_size=2",
        "train.lr=0.0013",
        "train.min_lr=0.00013",
    ],
    # half the frames: 64 ms windows, hop 32 ms, band widths doubled (same 20 bands)
    "hop512": HOP512,
    # 12 bands instead of 20 (wider bands above 1 kHz)
    "bands12": [
        *STFT512,
        "band_split.regions=[{upper_hz: 1000.0, width_bins: 6}, "
        "{upper_hz: 4000.0, width_bins: 24}, {upper_hz: 8000.0, width_bins: 64}]",
    ],
    # one wider GridNet block
    "blk1_w64": [
        *STFT512,
        "model.num_blocks=1",
        "model.reinject_blocks=[0]",
        "model.feature_dim=64",
        "model.lstm_hidden=64",
    ],
    "hop512_ta_ratio0.3": [*HOP512, "mixing.ta_ratio=0.3"],
    # hop512 with other initial weights and other training mixtures: the seed-to-seed spread
    "hop512_seed1": [*HOP512, *SEEDS[1]],
    "hop512_seed2": [*HOP512, *SEEDS[2]],
    "hop512_seed3": [*HOP512, *SEEDS[3]],
    # the 512-point STFT (demo.yaml before 2026-12-01): seed 0 and other seeds
    "stft512": STFT512,
    "base_seed1": [*STFT512, *SEEDS[1]],
    "stft512_seed2": [*STFT512, *SEEDS[2]],
    # 1024-point STFT, wider or one more block
    "wide64": [
        *HOP512,
        "model.feature_dim=64",
        "model.lstm_hidden=64",
        "model.decoder_hidden=64",
    ],
    "blk3": [*HOP512, "model.num_blocks=3", "model.reinject_blocks=[0,1,2]"],
    "hop512_blk1_w64": [
        *HOP512,
        "model.num_blocks=1",
        "model.reinject_blocks=[0]",
        "model.feature_dim=64",
        "model.lstm_hidden=64",
    ],
    # no conditioning dropout: never train an output without the enrolment (seeds 0 and 1)
    "hop512_nodrop": [*HOP512, "model.ref_dropout_prob=0"],
    "hop512_nodrop_seed1": [*HOP512, "model.ref_dropout_prob=0", *SEEDS[1]],
    "hop512_nodrop_seed2": [*HOP512, "model.ref_dropout_prob=0", *SEEDS[2]],
    "hop512_nodrop_seed3": [*HOP512, "model.ref_dropout_prob=0", *SEEDS[3]],
    # three times the TA weight at demo.yaml's anchor, 64 ms window (seeds 0 and 1)
    "hop512_ta_w0.3": [*HOP512, "objective.ta_weight=0.3"],
    "hop512_ta_w0.3_seed1": [
        *HOP512,
        "objective.ta_weight=0.3",
        *SEEDS[1],
    ],
    # the auxiliary speaker classifier on the enrolment (48 demo training voices), no dropout
    # phase-free per-bin shape features in the encoder (band_split.bin_shape), no dropout
    "hop512_shape": [*HOP512, "model.ref_dropout_prob=0", "band_split.bin_shape=true"],
    "hop512_shape_seed1": [
        *HOP512,
        "model.ref_dropout_prob=0",
        "band_split.bin_shape=true",
        *SEEDS[1],
    ],
    "hop512_shape_seed2": [
        *HOP512,
        "model.ref_dropout_prob=0",
        "band_split.bin_shape=true",
        *SEEDS[2],
    ],
    "hop512_shape_seed3": [
        *HOP512,
        "model.ref_dropout_prob=0",
        "band_split.bin_shape=true",
        *SEEDS[3],
    ],
    # three times the TA weight; the anchor scaled with it keeps the audit's blind gain
    "ta_w0.3": ["objective.ta_weight=0.3", "objective.lambda_amp=30"],
    # three times the TA weight at the default anchor (audit blind gain 0.88, inside the band)
    "ta_w0.3_amp10": ["objective.ta_weight=0.3"],
    # more target-absent mixtures per batch
    "ta_ratio0.35": ["mixing.ta_ratio=0.35"],
    "ta_w0.3_ratio0.35": [
        "objective.ta_weight=0.3",
        "objective.lambda_amp=30",
        "mixing.ta_ratio=0.35",
    ],
    # demo.yaml with the shape features (2026-12-01, late): three times the TA weight, and
    # the same with phase 2 (target-absent mixtures) from a quarter of the run instead of half
    "shape_ta_w0.3": ["objective.ta_weight=0.3"],
    "shape_ta_w0.3_seed1": ["objective.ta_weight=0.3", *SEEDS[1]],
    "shape_ta_w0.3_seed2": ["objective.ta_weight=0.3", *SEEDS[2]],
    "shape_ta_w0.3_seed3": ["objective.ta_weight=0.3", *SEEDS[3]],
    "shape_ta_w0.3_p1q": ["objective.ta_weight=0.3"],
    "shape_ta_w0.3_p1q_seed1": ["objective.ta_weight=0.3", *SEEDS[1]],
    # the mixed corpus (real and espeak voices, 2026-12-02), run with --minutes 15: every
    # speaker alike (demo.yaml before), the frozen GE2E embedding, espeak voices drawn more
    # often, and with the share at 0.5 an earlier phase 2 or a heavier TA weight
    "mixed_base": ["mixing.synthetic_share=0"],
    "mixed_ge2e": ["mixing.synthetic_share=0", "model.speaker_embedding=ge2e"],
    "mixed_share0.5": ["mixing.synthetic_share=0.5"],
    "mixed_share0.65": ["mixing.synthetic_share=0.65"],
    "mixed_share0.5_p035": ["mixing.synthetic_share=0.5"],
    "mixed_share0.5_ta_w0.5": ["mixing.synthetic_share=0.5", "objective.ta_weight=0.5"],
    # demo.yaml with random recording chains on half the training mixtures (2026-12-02, later)
    "mixed_share0.65_chain0.5": ["mixing.synthetic_share=0.65", "mixing.channel_prob=0.5"],
}

# demo.yaml's target-absent weight went from 0.1 to 0.3 on 2026-12-01 (late, the `shape_`
# variants); every variant measured before keeps the 0.1 it ran with (its own setting, if
# any, comes later and wins).
for _name in VARIANTS:
    if not _name.startswith(("shape_", "mixed_")):
        VARIANTS[_name] = ["objective.ta_weight=0.1", *VARIANTS[_name]]

# Variants whose phase 2 starts elsewhere than PHASE1_FRACTION of the run (`hifi-tse demo
# --phase1-fraction`).
PHASE1_FRACTIONS: dict[str, float] = {
    "shape_ta_w0.3_p1q": 0.25,
    "shape_ta_w0.3_p1q_seed1": 0.25,
    "mixed_share0.5_p035": 0.35,
}


def train_command(name: str, args: argparse.Namespace) -> list[str]:
    from hifi_tse.demo import NOMINAL_STEPS, budget_overrides

    phase1_fraction = PHASE1_FRACTIONS.get(name, PHASE1_FRACTION)
    if args.minutes:  # hifi-tse demo's time-budgeted schedule
        schedule = [
            *budget_overrides(NOMINAL_STEPS, phase1_fraction),
            f"train.budget_minutes={args.minutes}",
        ]
    else:
        steps = round(args.steps * args.speedup.get(name, 1.0))
        schedule = budget_overrides(steps, phase1_fraction)
    overrides = [*schedule, *VARIANTS[name]]
    sets = [x for o in overrides for x in ("--set", o)]
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


def run(name: str, args: argparse.Namespace) -> None:
    from hifi_tse.demo import evaluate, test_voice_kinds

    run_dir = args.out / name
    if not (run_dir / "checkpoint_final.pt").is_file() or args.rerun:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        args.out.mkdir(parents=True, exist_ok=True)
        with open(args.out / f"{name}.log", "w") as log:
            code = subprocess.call(train_command(name, args), stdout=log, stderr=log)
        if code != 0:
            print(f"{name}: training exited {code}; see {args.out / name}.log")
            return
    for kind in test_voice_kinds(args.corpus):
        evaluate(run_dir / "checkpoint_best.pt", args.corpus, run_dir / f"eval_{kind}", 120, kind)


def summarise(names: list[str], args: argparse.Namespace) -> str:
    from hifi_tse.demo import headline, test_voice_kinds
    from hifi_tse.train.curves import read_metrics, split_records

    lines = [
        "| variant | overrides | s/step | val SI-SDRi by step (dB) | test voices | test SI-SDRi "
        "| TA suppression | rms_ratio | wrong-ref drop |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        run_dir = args.out / name
        for kind in test_voice_kinds(args.corpus):
            metrics_file = run_dir / f"eval_{kind}" / "metrics.json"
            if not metrics_file.is_file():
                continue
            train, val = split_records(read_metrics(run_dir))
            step_time = statistics.median(r["step_time"] for r in train)
            curve = ", ".join(f"{r['step']}: {r['tp_si_sdri']:.2f}" for r in val)
            h = headline(json.loads(metrics_file.read_text()))
            overrides = list(VARIANTS[name])
            if name in PHASE1_FRACTIONS:
                overrides.append(f"(phase 2 from {PHASE1_FRACTIONS[name]:g} of the run)")
            lines.append(
                f"| {name} | `{' '.join(overrides) or '(demo defaults)'}` | {step_time:.2f} | "
                f"{curve} | {kind} | {h['tp_si_sdri_db']:.2f} | {h['ta_suppression_db']:.2f} | "
                f"{h['rms_ratio']:.3f} | {h['wrong_ref_drop_db']:.2f} |"
            )
    text = "\n".join(lines) + "\n"
    (args.out / "summary.md").write_text(text)
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, default=REPO / "data" / "demo")
    p.add_argument("--config", type=Path, default=REPO / "configs" / "demo.yaml")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "demo_fresh_search")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--rerun", action="store_true", help="retrain finished runs")
    p.add_argument("--summary-only", action="store_true", help="only tabulate finished runs")
    p.add_argument("--steps", type=int, default=STEPS, help="steps of the base schedule")
    p.add_argument(
        "--speedup",
        nargs="*",
        default=[],
        metavar="NAME=X",
        help="train NAME for X times --steps (its measured speed-up per step, so that every "
        "variant gets the same CPU time)",
    )
    p.add_argument(
        "--minutes",
        type=float,
        default=0.0,
        help="train each variant for this wall clock with hifi-tse demo's time-budgeted "
        "schedule instead of --steps (equal time for variants of any speed)",
    )
    p.add_argument("--parallel", type=int, default=1, help="variants trained at once")
    args = p.parse_args()
    args.speedup = {k: float(v) for k, v in (item.split("=", 1) for item in args.speedup)}
    if not args.summary_only:
        with ThreadPoolExecutor(max_workers=args.parallel) as pool:
            list(pool.map(lambda name: run(name, args), args.variants))
    print(summarise(args.variants, args))


if __name__ == "__main__":
    main()
