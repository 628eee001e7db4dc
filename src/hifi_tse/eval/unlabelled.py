"""Score extraction on a user's own recordings: mixture and enrollment, no clean target.

``hifi-tse evaluate --list pairs.csv --no-target``: for each ``mix, ref`` row the model's
estimate is scored by speaker similarity (GE2E cosine of estimate ↔ enrollment,
against mixture ↔ enrollment as the baseline), by how much level it removed and, with
``--dnsmos``, by the no-reference DNSMOS of mixture and estimate. Writes
``metrics.json``, ``per_example.csv`` and ``report.md`` into the output folder.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hifi_tse.api import Extractor
from hifi_tse.audio.io import load_audio
from hifi_tse.errors import UserError
from hifi_tse.eval.dnsmos import COLUMNS as DNSMOS_COLUMNS
from hifi_tse.eval.dnsmos import DnsmosScorer
from hifi_tse.eval.dnsmos import markdown_section as dnsmos_section
from hifi_tse.eval.dnsmos import summary as dnsmos_summary
from hifi_tse.eval.metrics import energy_db, summarize
from hifi_tse.eval.similarity import SpeakerSimilarity
from hifi_tse.infer.separate import read_csv_rows
from hifi_tse.utils import atomic_write_text

COLUMNS = ("name", "spk_sim", "spk_sim_mix", "spk_sim_gain", "output_db", "mixture_db")


def load_unlabelled_items(path: Path, sample_rate: int) -> list[dict[str, Any]]:
    """``mix, ref`` rows of a CSV (several references per cell separated by ``;``)."""
    items = []
    for row in read_csv_rows(path, ["mix", "ref"], required=2):
        ref = np.concatenate([load_audio(p, sample_rate) for p in row["ref"].split(";")])
        if not np.any(ref):
            raise UserError(f"{row['ref']}: reference is all zeros (digital silence)")
        items.append({"mix": load_audio(row["mix"], sample_rate), "ref": ref, "name": row["mix"]})
    return items


def evaluate_unlabelled(
    extractor: Extractor,
    items: list[dict[str, Any]],
    out_dir: Path,
    device: str = "cpu",
    dnsmos: bool = False,
) -> dict[str, Any]:
    """Score ``items`` (from :func:`load_unlabelled_items`, at the extractor's rate) with
    ``extractor``'s estimates; ``dnsmos``: also the no-reference DNSMOS of each mixture and
    estimate (:mod:`hifi_tse.eval.dnsmos`). Returns the metrics written to disk."""
    similarity = SpeakerSimilarity(device)  # the main score here: its weights are required
    quality = DnsmosScorer(threads=torch.get_num_threads()) if dnsmos else None
    sr = extractor.sample_rate
    records = []
    for it in items:
        (est,) = extractor.extract_pairs([it["mix"]], [it["ref"]], sr)
        (sim,) = similarity.score([est], [it["mix"]], [it["ref"]], [None], sr)
        gain = None
        if sim["spk_sim"] is not None and sim["spk_sim_mix"] is not None:
            gain = sim["spk_sim"] - sim["spk_sim_mix"]
        records.append(
            {
                "name": it["name"],
                "spk_sim": sim["spk_sim"],
                "spk_sim_mix": sim["spk_sim_mix"],
                "spk_sim_gain": gain,
                "output_db": energy_db(est),
                "mixture_db": energy_db(it["mix"]),
                **(quality.compare([it["mix"]], [est], sr)[0] if quality else {}),
            }
        )
    metrics = {
        "mode": "unlabelled (mixture and enrollment only)",
        "examples": len(records),
        "sample_rate": sr,
        **{key: summarize([r[key] for r in records]) for key in COLUMNS[1:]},
        "dnsmos": dnsmos_summary(records),
    }
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS + (DNSMOS_COLUMNS if quality else ()))
    writer.writeheader()
    for r in records:
        writer.writerow({k: f"{v:.4f}" if isinstance(v, float) else v for k, v in r.items()})
    atomic_write_text(out_dir / "per_example.csv", buf.getvalue())
    atomic_write_text(out_dir / "report.md", _render(metrics))
    return metrics


def _render(metrics: dict[str, Any]) -> str:
    def ms(key: str) -> str:
        s = metrics[key]
        if s["mean"] is None:
            return "–"
        return f"{s['mean']:.3f} ± {s['sem']:.3f}" if s["sem"] is not None else f"{s['mean']:.3f}"

    return "\n".join(
        [
            "# Evaluation report: own recordings (no clean target)",
            "",
            f"- examples: {metrics['examples']}; model sample rate {metrics['sample_rate']} Hz",
            "- speaker similarity is the cosine of GE2E speaker embeddings (resemblyzer's "
            "encoder); a gain above 0 means the output sounds more like the enrolled talker "
            "than the mixture did",
            "",
            "| metric | mean ± sem |",
            "|---|---|",
            f"| estimate ↔ enrollment | {ms('spk_sim')} |",
            f"| mixture ↔ enrollment | {ms('spk_sim_mix')} |",
            f"| similarity gain | {ms('spk_sim_gain')} |",
            f"| output level (dB) | {ms('output_db')} |",
            f"| mixture level (dB) | {ms('mixture_db')} |",
            *dnsmos_section([("all", metrics.get("dnsmos"))]),
            "",
        ]
    )
