"""``hifi-tse compare``: paired differences between ``evaluate`` runs on the same mixtures.

Two checkpoints scored on the same draws (same ``--data``, ``--seed``, ``--examples`` and
``--mix-set``) differ per mixture far less than their means' standard errors suggest: the
mixtures' difficulty is shared. The paired difference (candidate minus baseline, per mixture)
and its standard error are what tell a real gain from a draw's luck, and what a shipping rule
should read. Target-present metrics are paired over TP mixtures, ``suppression_db`` over TA
mixtures. Runs that did not score the same mixtures are refused, naming the first that differs.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
from typing import Any

from hifi_tse.errors import UserError
from hifi_tse.eval.metrics import summarize
from hifi_tse.utils import atomic_write_text

# Columns that identify a mixture: two runs pair only when all of them agree.
KEY_COLUMNS = ("name", "target_present", "target_speaker", "snr_db", "num_interferers")
# (column, mixtures it is scored on, higher is better; None: neither, as rms_ratio's best is 1)
METRICS: tuple[tuple[str, str, bool | None], ...] = (
    ("si_sdri", "tp", True),
    ("si_sdr", "tp", True),
    ("pesq", "tp", True),
    ("stoi", "tp", True),
    ("rms_ratio", "tp", None),
    ("spk_sim", "tp", True),
    ("si_sdri_wrong", "tp", False),
    ("dnsmos_ovrl", "tp", True),
    ("dnsmos_sig", "tp", True),
    ("dnsmos_bak", "tp", True),
    ("dnsmos_povrl", "tp", True),
    ("dnsmos_pbak", "tp", True),
    ("dnsmos_p808", "tp", True),
    ("suppression_db", "ta", True),
)
# A difference this many standard errors from zero is flagged as clear of the draw's noise.
CLEAR_SE = 2.0


def read_examples(run_dir: Path) -> dict[str, dict[str, str]]:
    """``per_example.csv`` of an ``evaluate`` output folder, keyed by example name."""
    path = run_dir if run_dir.suffix == ".csv" else run_dir / "per_example.csv"
    if not path.is_file():
        raise UserError(f"{path}: no such file; expected an evaluate output folder")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "name" not in rows[0]:
        raise UserError(f"{path}: expected evaluate's per_example.csv with a 'name' column")
    return {r["name"]: r for r in rows}


def _value(row: dict[str, str], column: str) -> float | None:
    text = row.get(column, "")
    if text in ("", None):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def paired_differences(
    baseline: dict[str, dict[str, str]],
    candidate: dict[str, dict[str, str]],
    names: tuple[str, str] = ("baseline", "candidate"),
    group_by: str | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per group (``"all"`` and each value of ``group_by``) and metric: baseline and candidate
    means and the paired difference (candidate − baseline) with its standard error.

    Raises :class:`UserError` when the two runs scored different mixtures."""
    if set(baseline) != set(candidate):
        only = sorted(set(baseline) ^ set(candidate))[0]
        raise UserError(
            f"{names[0]} and {names[1]} scored different mixtures ({only} is in one only): "
            "evaluate both with the same --data, --split, --voices, --seed and --examples"
        )
    for name, row in baseline.items():
        for key in KEY_COLUMNS:
            if key in row and row[key] != candidate[name].get(key, row[key]):
                raise UserError(
                    f"{names[1]}: {name} has {key}={candidate[name][key]!r} but {names[0]} "
                    f"{row[key]!r}: not the same draws (pin them with the same --mix-set)"
                )
    groups: dict[str, list[str]] = {"all": sorted(baseline)}
    if group_by:
        if any(group_by not in row for row in baseline.values()):
            raise UserError(f"{names[0]}: per_example.csv has no column {group_by!r}")
        for name in sorted(baseline):
            groups.setdefault(f"{group_by}={baseline[name][group_by]}", []).append(name)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for group, members in groups.items():
        table: dict[str, dict[str, Any]] = {}
        for column, kind, higher_better in METRICS:
            want_tp = kind == "tp"
            pairs = []
            for name in members:
                row_a, row_b = baseline[name], candidate[name]
                if (row_a.get("target_present") == "True") != want_tp:
                    continue
                a, b = _value(row_a, column), _value(row_b, column)
                if a is not None and b is not None:
                    pairs.append((a, b))
            if not pairs:
                continue
            diff = summarize([b - a for a, b in pairs])
            sem = diff["sem"] or 0.0  # one pair: no spread to measure
            clear = sem > 0 and abs(diff["mean"]) >= CLEAR_SE * sem
            table[column] = {
                "n": len(pairs),
                "baseline": sum(a for a, _ in pairs) / len(pairs),
                "candidate": sum(b for _, b in pairs) / len(pairs),
                "difference": diff["mean"],
                "difference_sem": sem,
                "clear": clear,
                "higher_is_better": higher_better,
            }
        out[group] = table
    return out


def _verdict(row: dict[str, Any]) -> str:
    if not row["clear"]:
        return "within noise"
    up = row["difference"] > 0
    if row["higher_is_better"] is None:
        return "higher" if up else "lower"
    return "better" if up == row["higher_is_better"] else "worse"


def markdown(result: dict[str, dict[str, dict[str, Any]]], names: tuple[str, str]) -> str:
    lines = []
    for group, table in result.items():
        lines += [
            f"### {group}: {names[1]} − {names[0]}",
            "",
            "| metric | n | baseline | candidate | paired difference | |",
            "|---|---|---|---|---|---|",
        ]
        for column, r in table.items():
            verdict = _verdict(r)
            lines.append(
                f"| {column} | {r['n']} | {r['baseline']:.3f} | {r['candidate']:.3f} | "
                f"{r['difference']:+.3f} ± {r['difference_sem']:.3f} | {verdict} |"
            )
        lines.append("")
    note = f"Verdicts other than 'within noise': the difference is ≥ {CLEAR_SE:g} standard errors"
    return "\n".join(lines) + note + " from zero.\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("baseline", type=Path, help="evaluate output folder (or its per_example.csv)")
    p.add_argument("candidates", type=Path, nargs="+", help="folders scored on the same draws")
    p.add_argument(
        "--by", default=None, help="also per value of this column (voice_kind, target_source…)"
    )
    p.add_argument("--out", type=Path, default=None, help="write compare.json and compare.md")


def run(args: argparse.Namespace) -> int:
    baseline = read_examples(args.baseline)
    results = {}
    text = []
    for cand_dir in args.candidates:
        names = (str(args.baseline), str(cand_dir))
        result = paired_differences(baseline, read_examples(cand_dir), names, args.by)
        results[str(cand_dir)] = result
        text.append(markdown(result, names))
    print("\n".join(text))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / "compare.json", json.dumps(results, indent=1))
        atomic_write_text(args.out / "compare.md", "\n".join(text))
    return 0
