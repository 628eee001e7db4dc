"""``hifi-tse prepare``: pack speech / noise / RIR folders into HDF5 packs and manifests."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from hifi_tse.config import load_config
from hifi_tse.data.layouts import LAYOUTS, parse_source
from hifi_tse.data.prepare import HELD_OUT_SPLITS, prepare_corpus
from hifi_tse.data.store import DEFAULT_STORAGE, STORAGES
from hifi_tse.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--speech",
        action="append",
        required=True,
        metavar="DIR[:LAYOUT]",
        help=f"speech corpus folder (repeatable); LAYOUT one of {', '.join(LAYOUTS)}, "
        "auto-detected when omitted, or pattern=REGEX: the speaker id is REGEX's named groups "
        "(joined with '-') searched in each path below DIR; files it does not match are "
        "skipped and listed in the report",
    )
    parser.add_argument(
        "--val-speakers",
        default="",
        metavar="ID,ID",
        help="hold these speakers out for val (a source holding any named speaker takes its "
        "held-out speakers from --val-speakers/--test-speakers only)",
    )
    parser.add_argument("--test-speakers", default="", metavar="ID,ID", help="as --val-speakers")
    parser.add_argument(
        "--held-out-sources",
        default="",
        metavar="NAME=SPLIT,...",
        help="hold whole --speech sources out (NAME is the folder's name, SPLIT val or test): "
        "a recording chain never trained on; `evaluate --voices unseen-source` scores them",
    )
    parser.add_argument(
        "--voice-variants",
        type=int,
        default=0,
        metavar="K",
        help="K pitch/formant-shifted copies of each training speaker, as new training "
        "speakers (preparation.variant_* ranges)",
    )
    parser.add_argument(
        "--synthetic",
        action="store_true",
        help="tag the --speech sources as synthetic voices (reports show real and synthetic "
        "voices apart)",
    )
    parser.add_argument("--noise", action="append", default=[], metavar="DIR", help="noise folder")
    parser.add_argument(
        "--rir", action="append", default=[], metavar="DIR", help="measured RIR folder"
    )
    parser.add_argument(
        "--simulate-rirs", type=int, default=0, metavar="N", help="simulate N shoebox RIRs"
    )
    parser.add_argument("--out", type=Path, required=True, help="output packs folder")
    parser.add_argument("--config", type=Path, default=None, help="YAML config (defaults)")
    parser.add_argument("--sample-rate", type=int, default=None, help="Hz (audio.sample_rate)")
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=None,
        help="skip shorter speech (preparation.min_seconds)",
    )
    parser.add_argument("--val-ratio", type=float, default=None, help="preparation.val_ratio")
    parser.add_argument("--test-ratio", type=float, default=None, help="preparation.test_ratio")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="decoding processes"
    )
    parser.add_argument("--seed", type=int, default=None, help="RIR simulation seed (mixing.seed)")
    parser.add_argument(
        "--storage",
        choices=STORAGES,
        default=None,
        help=f"how packs hold the audio (default: the storage of the packs already in --out, "
        f"else {DEFAULT_STORAGE}: half of float32's disk for 7%% of its mixing rate): "
        "float32; int16 with a per-file scale (exact for "
        "16-bit sources at the pack rate, no clipping above full scale); flac (lossless "
        "16-bit for such sources, else 24-bit, per-file scale). Another storage than an "
        "existing packs folder's rewrites its packs",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _ids(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _held_out_sources(text: str) -> dict[str, str]:
    """``NAME=SPLIT,...`` -> {name: split}; one-line UserError on a malformed item."""
    out = {}
    for item in _ids(text):
        name, sep, split = item.partition("=")
        if not sep or split not in HELD_OUT_SPLITS or not name:
            raise UserError(f"--held-out-sources: expected NAME=val or NAME=test, got {item!r}")
        out[name] = split
    return out


def _pick(value: float | int | None, default: float | int) -> float | int:
    return default if value is None else value


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    val_speakers = _ids(args.val_speakers)
    test_speakers = _ids(args.test_speakers)
    held_out = _held_out_sources(args.held_out_sources)
    speech = []
    for spec in args.speech:
        src = parse_source(spec)
        whole = held_out.pop(src.root.name, None)
        speech.append(
            dataclasses.replace(
                src,
                voices="synthetic" if args.synthetic else "real",
                voice_variants=0 if whole else args.voice_variants,
                val_speakers=() if whole else val_speakers,
                test_speakers=() if whole else test_speakers,
                whole_split=whole,
            )
        )
    if held_out:
        raise UserError(f"--held-out-sources: no --speech folder named {', '.join(held_out)}")
    report = prepare_corpus(
        speech=speech,
        noise=[Path(p) for p in args.noise],
        rir=[Path(p) for p in args.rir],
        simulate_rirs=args.simulate_rirs,
        out=args.out,
        sample_rate=int(_pick(args.sample_rate, cfg.audio.sample_rate)),
        min_seconds=float(_pick(args.min_seconds, cfg.preparation.min_seconds)),
        val_ratio=float(_pick(args.val_ratio, cfg.preparation.val_ratio)),
        test_ratio=float(_pick(args.test_ratio, cfg.preparation.test_ratio)),
        workers=args.workers,
        seed=int(_pick(args.seed, cfg.mixing.seed)),
        cfg=cfg,
        progress=not args.quiet,
        storage=args.storage,
    )
    for split, c in report["splits"].items():
        print(
            f"{split:5s}: {c['speakers']} speakers, {c['utterances']} utterances "
            f"({c['speech_hours']:.2f} h), {c['noise']} noise, {c['rir']} RIRs"
        )
    print(
        f"skipped: {report['skipped_short']} short, {len(report['errors'])} unreadable, "
        f"{len(report['unmatched'])} not matching a pattern; "
        f"packs ({report['storage']}): {report['packs_written']} written, "
        f"{report['packs_reused']} reused; "
        f"report: {Path(args.out) / 'prepare_report.json'}"
    )
    return 0
