"""The ``hifi-tse`` command: one subcommand per job.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``. Expected user errors (bad files, bad config values) are raised as
:class:`hifi_tse.errors.UserError` (or ``ConfigError``) and printed as one line.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from hifi_tse import __version__
from hifi_tse.config import ConfigError
from hifi_tse.errors import UserError

# (name, module, one-line help)
COMMANDS: list[tuple[str, str, str]] = [
    ("prepare", "hifi_tse.data.prepare_cli", "pack speech/noise/RIR folders into HDF5 + manifests"),
    ("make-demo-corpus", "hifi_tse.data.demo_corpus_cli", "synthesise the offline demo corpus"),
    ("train", "hifi_tse.train.cli", "train a generator (single process or torchrun)"),
    ("evaluate", "hifi_tse.eval.cli", "score a checkpoint and write a report"),
    ("compare", "hifi_tse.eval.compare", "paired differences between evaluate runs"),
    ("separate", "hifi_tse.infer.separate_cli", "extract the target talker from recordings"),
    ("stream", "hifi_tse.infer.stream_cli", "real-time extraction of raw PCM, stdin to stdout"),
    ("export", "hifi_tse.infer.export_cli", "export a checkpoint to ONNX"),
    ("audit-loss", "hifi_tse.losses.audit_cli", "check that no loss term rewards silence"),
    (
        "check-speakers",
        "hifi_tse.speaker.check_cli",
        "list speaker ids that may be one person (GE2E centroids)",
    ),
    ("demo", "hifi_tse.demo", "build the demo corpus, train, evaluate, extract, report"),
    ("config", "hifi_tse.config_cli", "print the resolved config or the config reference"),
]


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the subcommand named in ``argv`` (all, when ``argv`` is None) is
    imported, so a command never pays for another's imports (``stream --onnx`` runs
    without torch)."""
    chosen = None if argv is None else next((a for a in argv if not a.startswith("-")), "")
    parser = argparse.ArgumentParser(prog="hifi-tse", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"hifi-tse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name, help_text in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        if chosen is None or name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (UserError, ConfigError) as exc:
        print(f"hifi-tse {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hifi-tse {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
