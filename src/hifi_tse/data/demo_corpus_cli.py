"""``hifi-tse make-demo-corpus``: synthesise and pack the offline demo corpus (CPU, minutes)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from hifi_tse.data import demo_corpus as dc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="output folder (a packs dir)")
    parser.add_argument("--seed", type=int, default=dc.DEFAULT_SEED, help="corpus seed")
    parser.add_argument(
        "--voices",
        type=int,
        default=dc.DEFAULT_VOICES,
        help=f"synthetic speakers (default {dc.DEFAULT_VOICES}; "
        f"{dc.HELD_OUT_VOICES} each held out for val and test)",
    )
    parser.add_argument(
        "--sentences",
        type=int,
        default=dc.DEFAULT_SENTENCES,
        help=f"sentences per voice, at most {len(dc.SENTENCES)} (default {dc.DEFAULT_SENTENCES})",
    )
    parser.add_argument(
        "--sample-rate",
        type=int,
        default=dc.DEFAULT_SAMPLE_RATE,
        help=f"Hz (default {dc.DEFAULT_SAMPLE_RATE}, the demo models' rate)",
    )
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="synthesis/decoding processes"
    )
    parser.add_argument(
        "--simulate-rirs",
        type=int,
        default=dc.DEFAULT_SIMULATE_RIRS,
        metavar="K",
        help=f"shoebox RIRs to simulate (default {dc.DEFAULT_SIMULATE_RIRS})",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML config whose preparation section (and mixing.max_rir_seconds) applies",
    )
    parser.add_argument(
        "--no-real-voices",
        action="store_true",
        help="espeak voices only (by default the installed real voices are added: "
        "fillets-ng-data-cs/-nl, alsa-utils, the pyannote.audio sample and every package "
        "source of hifi_tse.data.sources found; `make real-voices` installs them)",
    )
    parser.add_argument(
        "--real-voices-root",
        type=Path,
        default=None,
        help="where `make real-voices` extracted the packages (default data/real-voices; "
        "packages installed system-wide are found as well)",
    )
    parser.add_argument(
        "--voice-variants",
        type=int,
        default=dc.DEFAULT_VOICE_VARIANTS,
        metavar="K",
        help=f"pitch/formant variants per real training talker (default "
        f"{dc.DEFAULT_VOICE_VARIANTS})",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def format_summary(summary: dict) -> str:
    """A few lines for the console: sizes, splits, time taken."""
    lo, hi = summary["utterance_seconds"]
    lines = [
        f"demo corpus in {summary['out']} ({summary['sample_rate']} Hz, seed {summary['seed']})",
        f"voices: {summary['voices']} ({summary['voices_synthesised']} synthesised, "
        f"{summary['voices_reused']} reused); utterances: {summary['utterances']} "
        f"({summary['speech_hours']:.2f} h, {lo:.1f}-{hi:.1f} s each)",
        f"noise clips: {summary['noise_clips']} "
        + ", ".join(f"{k} {n}" for k, n in summary["noise_by_kind"].items())
        + f"; simulated RIRs: {summary['rirs']}",
    ]
    for split, c in summary["splits"].items():
        lines.append(
            f"  {split:5s}: {c['speakers']} voices, {c['utterances']} utterances "
            f"({c['speech_hours']:.2f} h), {c['noise']} noise, {c['rir']} RIRs"
        )
    real = summary.get("real_voices")
    if real:
        per = ", ".join(f"{split} {n}" for split, n in real["speakers"].items())
        lines.append(
            f"real voices ({', '.join(real['sources'])}): {per} talkers "
            f"(train includes {real['variant_speakers']} pitch/formant variants)"
        )
    for name, pkg in summary.get("real_packages", {}).items():
        dropped = ", ".join(f"{why} {n}" for why, n in pkg["dropped"].items()) or "none"
        lines.append(
            f"  {name} ({pkg['role']}): {pkg['talkers']} talkers, {pkg['minutes']:.1f} min "
            f"from {pkg['kept']} of {pkg['clips']} clips (dropped: {dropped})"
        )
    if summary.get("real_found"):
        lines.append(summary["real_found"])
    if summary.get("real_missing"):
        lines.append(summary["real_missing"])
    lines.append(
        f"time: {summary['seconds']:.1f} s (synthesis {summary['synthesis_seconds']:.1f} s)"
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    cfg = None
    if args.config is not None:
        from hifi_tse.config import load_config

        cfg = load_config(args.config)
    summary = dc.build_demo_corpus(
        out=args.out,
        seed=args.seed,
        num_voices=args.voices,
        sentences_per_voice=args.sentences,
        sample_rate=args.sample_rate,
        workers=args.workers,
        simulate_rirs=args.simulate_rirs,
        cfg=cfg,
        progress=not args.quiet,
        real_voices=not args.no_real_voices,
        voice_variants=args.voice_variants,
        real_roots={"extract_root": args.real_voices_root} if args.real_voices_root else None,
    )
    print(format_summary(summary))
    return 0
