"""``hifi-tse audit-loss``: print each loss term against the output gain; exit 1 when any
term rewards silence (the seed's over-suppression), 0 otherwise."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from hifi_tse.config import Config, load_config
from hifi_tse.errors import UserError
from hifi_tse.losses.audit import (
    AUDIT_EXAMPLES,
    AUDIT_MIN_GAIN,
    AUDIT_TOLERANCE,
    audit_objective,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (defaults when omitted)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--data",
        type=Path,
        help="packs directory: audit on fixed validation examples instead of generated signals",
    )
    p.add_argument(
        "--examples",
        type=int,
        default=AUDIT_EXAMPLES,
        help=f"with --data: fixed validation examples scanned (default {AUDIT_EXAMPLES})",
    )
    p.add_argument(
        "--min-gain",
        type=float,
        default=AUDIT_MIN_GAIN,
        help=f"smallest output gain swept, standing in for 0 (default {AUDIT_MIN_GAIN:g})",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=AUDIT_TOLERANCE,
        help=f"drop below the right-level value that fails, loss units (default "
        f"{AUDIT_TOLERANCE:g})",
    )


def _to_tensor(x: object) -> Tensor:
    return x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))


def signals_from_packs(packs_dir: Path, cfg: Config, count: int) -> dict[str, Tensor]:
    """``count`` TP and TA examples drawn from the fixed validation set of ``packs_dir``."""
    from hifi_tse.data.datasets import VAL_SEED, FixedExampleSet

    if count < 2:
        raise UserError(f"--examples {count}: expected at least 2 (one TP and one TA)")
    if not packs_dir.is_dir():
        raise UserError(f"--data {packs_dir}: not a directory (expected a prepared packs dir)")
    examples = FixedExampleSet(
        packs_dir,
        cfg,
        split="val",
        seed=VAL_SEED,
        n=count,
        phase=2,
    )
    mixes, targets, present = [], [], []
    for i in range(len(examples)):
        ex = examples[i]
        mixes.append(_to_tensor(ex["mix"]).float())
        targets.append(_to_tensor(ex["target"]).float())
        present.append(bool(ex["target_present"]))
    if all(present) or not any(present):
        raise UserError(
            f"--data {packs_dir}: the first {len(present)} validation examples are all "
            f"{'target-present' if all(present) else 'target-absent'}; need both kinds "
            "(raise --examples or mixing.ta_ratio)"
        )
    length = min(m.shape[-1] for m in mixes)  # examples share the segment length; be safe
    return {
        "mix": torch.stack([m[..., :length] for m in mixes]),
        "target": torch.stack([t[..., :length] for t in targets]),
        "target_present": torch.tensor(present),
    }


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.set)
    signals = None
    source = f"generated tones + noise at {cfg.audio.sample_rate} Hz"
    if args.data is not None:
        signals = signals_from_packs(args.data, cfg, args.examples)
        n_tp = int(signals["target_present"].sum())
        n_ta = len(signals["target_present"]) - n_tp
        source = f"{n_tp} TP + {n_ta} TA validation examples from {args.data}"
    result = audit_objective(cfg, signals, min_gain=args.min_gain, tolerance=args.tolerance)
    print(
        f"loss audit ({source}; ta_loss={cfg.objective.ta_loss}, tolerance {result.tolerance:g})\n"
    )
    print(result.table())
    silence = [f for f in result.failures if "/mixed/" not in f]
    if silence:
        print(
            "FAIL: these loss terms reward silent output (lower loss at a quieter output than "
            "the right level): "
            + ", ".join(silence)
            + (
                " — objective.ta_loss=legacy_db is the seed's raw-dB bug; use relu"
                if cfg.objective.ta_loss == "legacy_db"
                else ""
            ),
            file=sys.stderr,
        )
    if len(silence) < len(result.failures):
        low, high = result.healthy_band
        print(
            f"FAIL: a model that cannot yet tell TP from TA minimises the loss at a common "
            f"output gain of {result.blind_gain:.3f}, outside the healthy rms_ratio band "
            f"{low:g}..{high:g}: the TP level will drift as TA suppression grows; raise "
            f"objective.lambda_amp or lower objective.ta_weight",
            file=sys.stderr,
        )
    if result.failures:
        return 1
    print(
        f"OK: no loss term rewards silence; blind gain {result.blind_gain:.3f} is inside "
        f"the healthy rms_ratio band"
    )
    return 0
