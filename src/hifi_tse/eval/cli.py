"""``hifi-tse evaluate``: score a checkpoint and write metrics.json, per_example.csv,
report.md and figures.

    hifi-tse evaluate --checkpoint ckpt.pt --data packs --split test --examples 400 \\
        --seed 0 --out eval/ [--wrong-reference] [--partial-presence] [--dnsmos]
    hifi-tse evaluate --checkpoint ckpt.pt --list pairs.csv --out eval/

``--list``: CSV rows ``mix, ref, target`` (target empty = target absent; several
references in one cell separated by ``;``; relative paths relative to the CSV).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from hifi_tse.data.store import VOICE_SELECTIONS
from hifi_tse.errors import UserError
from hifi_tse.infer.separate_cli import (
    CHUNK_SECONDS,
    OVERLAP_SECONDS,
    add_precision_argument,
)

if TYPE_CHECKING:
    from hifi_tse.eval.evaluate import EvalOptions

# Defaults of the CLI flags (evaluation protocol, not model configuration).
EXAMPLES = 200
BATCH_SIZE = 4
SNR_EDGES = "0,5,10"  # dB: bins < 0, 0-5, 5-10, >= 10
PARTIAL_WINDOW = (0.25, 0.6875)  # 2.0-5.5 s of an 8 s mixture, as fractions
PARTIAL_RAMP_SECONDS = 0.02


def eval_options(
    *,
    device: str = "cpu",
    batch_size: int = BATCH_SIZE,
    perceptual: bool = True,
    wrong_reference: bool = False,
    snr_bins: str = SNR_EDGES,
    chunk_seconds: float = CHUNK_SECONDS,
    overlap_seconds: float = OVERLAP_SECONDS,
    partial_window: tuple[float, float] = PARTIAL_WINDOW,
    partial_ramp_seconds: float = PARTIAL_RAMP_SECONDS,
    speaker_similarity: bool = True,
    precision: str = "fp32",
    dnsmos: bool = False,
    activity: bool = False,
) -> EvalOptions:
    """The evaluation protocol: the CLI's defaults unless given (``hifi-tse evaluate`` and
    ``hifi-tse demo`` both build it here)."""
    from hifi_tse.eval.evaluate import EvalOptions

    lo, hi = partial_window
    if not 0.0 <= lo < hi <= 1.0:
        raise UserError(f"--partial-window: expected 0 <= START < STOP <= 1, got {lo} {hi}")
    return EvalOptions(
        batch_size=batch_size,
        perceptual=perceptual,
        wrong_reference=wrong_reference,
        snr_edges=_edges(snr_bins),
        chunk_seconds=chunk_seconds,
        overlap_seconds=overlap_seconds,
        partial_window=(lo, hi),
        partial_ramp_seconds=partial_ramp_seconds,
        device=device,
        speaker_similarity=speaker_similarity,
        precision=precision,
        dnsmos=dnsmos,
        activity=activity,
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, required=True, help="hifi-tse checkpoint (.pt)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="packs dir from `hifi-tse prepare`")
    src.add_argument("--list", type=Path, help="CSV of mix, ref, target (target may be empty)")
    p.add_argument(
        "--no-target",
        action="store_true",
        help="--list rows are mix, ref only (your own recordings): score speaker similarity "
        "(GE2E) and level, no clean target needed",
    )
    p.add_argument("--split", default="test", help="split of --data (held-out speakers)")
    p.add_argument("--examples", type=int, default=EXAMPLES, help="fixed-set size (--data)")
    p.add_argument("--seed", type=int, default=0, help="fixed-set seed (--data)")
    p.add_argument(
        "--mix-set",
        action="append",
        default=[],
        metavar="mixing.KEY=VALUE",
        help="change the checkpoint's mixing settings for the --data mixtures (repeatable), "
        "e.g. mixing.ta_ratio=0.2 to score checkpoints trained differently on the same "
        "mixtures (the old name data.KEY is accepted)",
    )
    p.add_argument(
        "--ref-seconds",
        type=float,
        default=None,
        help="enrollment length of the --data mixtures, s (default: the checkpoint's "
        "audio.ref_seconds); the mixtures themselves stay the same, so one checkpoint can be "
        "scored with a shorter or longer enrollment on the same draws",
    )
    p.add_argument(
        "--voices",
        choices=VOICE_SELECTIONS,
        default=None,
        help="mix only real recorded or only synthetic speakers of --split (sources are "
        "tagged by prepare; default: all); unseen-source / seen-source: only the real "
        "sources held out whole / the real sources that also train",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="examples per forward")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="CPU threads")
    p.add_argument("--raw-weights", action="store_true", help="score 'model', not EMA")
    add_precision_argument(p)
    _add_scoring_arguments(p)


def _add_scoring_arguments(p: argparse.ArgumentParser) -> None:
    """What is scored beyond SI-SDR: perceptual, speaker, DNSMOS, activity, partial presence."""
    p.add_argument("--no-perceptual", action="store_true", help="skip PESQ and STOI")
    p.add_argument(
        "--no-speaker-similarity",
        action="store_true",
        help="skip the GE2E speaker similarity (needs resemblyzer's weights: "
        "pip install --no-deps resemblyzer)",
    )
    p.add_argument(
        "--dnsmos",
        action="store_true",
        help="also score mixture and estimate with no-reference DNSMOS P.835, personalised "
        "P.835 and P.808 (every mode, --no-target too; at 16 kHz; needs: "
        "pip install --no-deps speechmos==0.0.1.1)",
    )
    p.add_argument("--snr-bins", default=SNR_EDGES, help="ascending SNR bin edges, dB (csv)")
    p.add_argument(
        "--wrong-reference",
        action="store_true",
        help="also score every TP example with another speaker's enrollment",
    )
    p.add_argument(
        "--activity",
        action="store_true",
        help="score target-activity detection (hifi_tse.infer.activity): frame precision, "
        "recall and F1 on partial-presence mixtures (implies --partial-presence) and the "
        "share of frames flagged on TA mixtures",
    )
    p.add_argument(
        "--partial-presence",
        action="store_true",
        help="score mixtures where the target talks only inside a window",
    )
    p.add_argument(
        "--partial-seconds", type=float, default=None, help="length (default 2 segments), s"
    )
    p.add_argument("--partial-examples", type=int, default=None, help="default examples/4")
    p.add_argument(
        "--partial-window",
        type=float,
        nargs=2,
        default=list(PARTIAL_WINDOW),
        metavar=("START", "STOP"),
        help="target-active window as fractions of the length",
    )
    p.add_argument("--partial-ramp-seconds", type=float, default=PARTIAL_RAMP_SECONDS)
    p.add_argument("--chunk-seconds", type=float, default=CHUNK_SECONDS, help="long files, s")
    p.add_argument("--overlap-seconds", type=float, default=OVERLAP_SECONDS)


def _edges(text: str) -> tuple[float, ...]:
    try:
        edges = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UserError(f"--snr-bins: expected comma-separated numbers, got {text!r}") from None
    if not edges or list(edges) != sorted(edges):
        raise UserError(f"--snr-bins: expected ascending edges, got {text!r}")
    return edges


def run(args: argparse.Namespace) -> int:
    import torch

    from hifi_tse.checkpoints import read_checkpoint
    from hifi_tse.devices import resolve_device
    from hifi_tse.eval.evaluate import evaluate_checkpoint
    from hifi_tse.infer.loading import check_precision

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.examples < 1 or args.batch_size < 1:
        raise UserError("--examples and --batch-size: expected >= 1")
    lo, hi = args.partial_window
    device = resolve_device(args.device)
    read_checkpoint(args.checkpoint)  # fail fast with a one-line error
    opts = eval_options(
        device=str(device),
        batch_size=args.batch_size,
        perceptual=not args.no_perceptual,
        wrong_reference=args.wrong_reference,
        snr_bins=args.snr_bins,
        chunk_seconds=args.chunk_seconds,
        overlap_seconds=args.overlap_seconds,
        partial_window=(lo, hi),
        partial_ramp_seconds=args.partial_ramp_seconds,
        speaker_similarity=not args.no_speaker_similarity,
        precision=check_precision(args.precision, device),
        dnsmos=args.dnsmos,
        activity=args.activity,
    )
    if args.dnsmos:
        from hifi_tse.eval.dnsmos import DnsmosScorer

        DnsmosScorer()  # a missing wheel fails here, before the model runs
    metrics = evaluate_checkpoint(
        args.checkpoint,
        args.out,
        opts,
        data=args.data,
        list_path=args.list,
        split=args.split,
        examples=args.examples,
        seed=args.seed,
        partial_presence=args.partial_presence or args.activity,
        partial_seconds=args.partial_seconds,
        partial_examples=args.partial_examples,
        use_ema=not args.raw_weights,
        mix_overrides=args.mix_set,
        voices=args.voices,
        no_target=args.no_target,
        ref_seconds=args.ref_seconds,
    )
    if args.no_target:
        sim, gain = metrics["spk_sim"]["mean"], metrics["spk_sim_gain"]["mean"]
        print(
            f"n={metrics['examples']} speaker similarity "
            + (f"{sim:.3f} (gain {gain:+.3f} over the mixture)" if sim is not None else "–")
            + _dnsmos_summary(metrics.get("dnsmos"))
            + f"; report: {args.out / 'report.md'}"
        )
        return 0
    tp, ta = metrics["tp"], metrics["ta"]
    line = f"TP n={tp['count']}"
    if tp["si_sdri"]["mean"] is not None:
        line += f" SI-SDRi {tp['si_sdri']['mean']:.2f} dB"
    if ta["count"] and ta["suppression_db"]["mean"] is not None:
        line += f"; TA n={ta['count']} suppression {ta['suppression_db']['mean']:.2f} dB"
    line += _dnsmos_summary((metrics.get("dnsmos") or {}).get("tp"))
    line += _activity_summary(metrics.get("activity"))
    print(f"{line}; report: {args.out / 'report.md'}")
    return 0


def _activity_summary(block: dict | None) -> str:
    """``; activity F1 0.86, TA frames flagged 17.5 %`` or nothing when not scored."""
    group = (block or {}).get("all")
    if not group:
        return ""
    parts = []
    if group["partial"] and group["partial"]["f1"] is not None:
        parts.append(f"activity F1 {group['partial']['f1']:.2f}")
    if group["ta"] and group["ta"]["flagged_share"] is not None:
        parts.append(f"TA frames flagged {100 * group['ta']['flagged_share']:.1f} %")
    return "; " + ", ".join(parts) if parts else ""


def _dnsmos_summary(block: dict | None) -> str:
    """``; DNSMOS OVRL 2.10 → 2.85`` (mixture → estimate means) or nothing when not scored."""
    from hifi_tse.eval.dnsmos import MIX_SUFFIX, PREFIX

    est, mix = (block or {}).get(f"{PREFIX}ovrl"), (block or {}).get(f"{PREFIX}ovrl{MIX_SUFFIX}")
    if not est or est.get("mean") is None or not mix or mix.get("mean") is None:
        return ""
    return f"; DNSMOS OVRL {mix['mean']:.2f} → {est['mean']:.2f}"
