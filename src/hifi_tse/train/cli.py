"""``hifi-tse train``: train a generator, single process or under ``torchrun``.

hifi-tse train --config configs/tiny.yaml --data PACKS --out runs/tiny
torchrun --nproc_per_node=4 -m hifi_tse train --config configs/hifi_tse.yaml ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from hifi_tse.config import load_config
from hifi_tse.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config (e.g. configs/tiny.yaml)")
    parser.add_argument("--data", required=True, help="prepared corpus (hifi-tse prepare --out)")
    parser.add_argument("--out", required=True, help="run folder (checkpoints, logs)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.steps=1000 (repeatable)",
    )
    parser.add_argument(
        "--resume",
        metavar="PATH|latest|auto",
        help="continue from a checkpoint, or the newest checkpoint_*.pt in --out; auto: the "
        "newest when --out has one, else a fresh start (for torchrun --max-restarts and "
        "resubmitted jobs)",
    )
    parser.add_argument(
        "--reset-optimizer",
        action="store_true",
        help="on resume: fresh optimiser state (step and LR schedule position kept)",
    )
    parser.add_argument(
        "--reset-patience",
        action="store_true",
        help="on resume: forget best TP SI-SDR and the early-stopping counter",
    )
    parser.add_argument(
        "--init-from",
        metavar="CKPT",
        help="start a new run from a checkpoint's generator weights (fine-tuning): names and "
        "shapes must match; weights the checkpoint lacks keep their initialisation",
    )
    parser.add_argument(
        "--max-minutes", type=float, help="wall-clock budget; stop with a final checkpoint"
    )
    parser.add_argument(
        "--allow-unsafe-loss",
        action="store_true",
        help="train even if a loss term rewards silence (for the over-suppression experiment)",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda if available")
    parser.add_argument(
        "--no-tensorboard", action="store_true", help="skip TensorBoard event files"
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="intra-op CPU threads per process (default: torch's); on a busy or small CPU, "
        "1 thread plus mixing.num_workers worker processes avoids thread oversubscription",
    )


def run(args: argparse.Namespace) -> int:
    from hifi_tse.train.logging_utils import configure_console_logging
    from hifi_tse.train.trainer import TrainOptions, train

    if (args.reset_optimizer or args.reset_patience) and not args.resume:
        raise UserError("--reset-optimizer/--reset-patience: only valid with --resume")
    if args.init_from and args.resume:
        raise UserError("--init-from starts a new run; it cannot be combined with --resume")
    if args.max_minutes is not None and args.max_minutes <= 0:
        raise UserError(f"--max-minutes: expected a positive number, got {args.max_minutes}")
    configure_console_logging()
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads: expected a positive integer, got {args.threads}")
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    opts = TrainOptions(
        cfg=cfg,
        data_dir=Path(args.data),
        run_dir=Path(args.out),
        resume=args.resume,
        reset_optimizer=args.reset_optimizer,
        reset_patience=args.reset_patience,
        init_from=args.init_from,
        max_minutes=args.max_minutes,
        allow_unsafe_loss=args.allow_unsafe_loss,
        device=args.device,
        tensorboard=not args.no_tensorboard,
    )
    return train(opts)
