"""``hifi-tse check-speakers``: which speaker ids of a corpus may be one person (GE2E)."""

from __future__ import annotations

import argparse
from pathlib import Path

from hifi_tse.data.layouts import LAYOUTS, parse_source
from hifi_tse.errors import UserError

DEFAULT_UTTERANCES = 30
DEFAULT_THRESHOLD = 0.9


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--data", type=Path, help="a prepared corpus (packs folder): all splits")
    where.add_argument(
        "--speech",
        action="append",
        metavar="DIR[:LAYOUT]",
        help=f"a raw speech folder, as for prepare (repeatable); LAYOUT one of "
        f"{', '.join(LAYOUTS)} or pattern=REGEX",
    )
    parser.add_argument(
        "--utterances",
        type=int,
        default=DEFAULT_UTTERANCES,
        metavar="N",
        help=f"clips embedded per speaker, at most (default {DEFAULT_UTTERANCES})",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help=f"centroid cosine at or above which a pair is listed (default {DEFAULT_THRESHOLD})",
    )
    parser.add_argument(
        "--variants", action="store_true", help="include voice variants (left out by default)"
    )
    parser.add_argument(
        "--voices",
        choices=("real", "synthetic"),
        default=None,
        help="with --data: only the sources tagged as real (or synthetic) voices",
    )
    parser.add_argument("--seed", type=int, default=0, help="which clips are drawn")
    parser.add_argument("--out", type=Path, default=None, help="also write the check as JSON")


def run(args: argparse.Namespace) -> int:
    from hifi_tse.speaker.check import (
        check_speakers,
        format_report,
        speakers_of_folder,
        speakers_of_packs,
        write_report,
    )
    from hifi_tse.speaker.ge2e import GE2EEncoder

    if args.utterances < 1:
        raise UserError(f"--utterances must be at least 1, got {args.utterances}")
    if not -1.0 <= args.threshold <= 1.0:
        raise UserError(f"--threshold is a cosine, in [-1, 1]; got {args.threshold}")
    if args.data is not None:
        speakers = speakers_of_packs(args.data, include_variants=args.variants, voices=args.voices)
    else:
        speakers = [s for spec in args.speech for s in speakers_of_folder(parse_source(spec))]
    encoder = GE2EEncoder.from_pretrained()
    rows, pairs = check_speakers(speakers, encoder, args.utterances, args.threshold, args.seed)
    print(format_report(rows, pairs, args.threshold))
    if args.out is not None:
        write_report(args.out, rows, pairs, args.threshold)
    return 0
