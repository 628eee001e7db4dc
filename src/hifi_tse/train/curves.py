"""Training curves from a run's ``metrics.jsonl``: validation health and every loss term vs step.

Used by ``hifi-tse demo`` and the over-suppression experiment; reads only the JSONL log, so it
works on a finished run, a running one, or a copy of the log.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hifi_tse.data.store import VOICE_KINDS
from hifi_tse.train.logging_utils import METRICS_NAME
from hifi_tse.train.validation import SOURCE_PREFIX

# Validation metrics shown as curves, with their axis labels.
VAL_PANELS: tuple[tuple[str, str], ...] = (
    ("tp_si_sdr", "TP SI-SDR (dB)"),
    ("tp_si_sdri", "TP SI-SDRi (dB)"),
    ("rms_ratio", "rms_ratio (TP est / target)"),
    ("ta_energy_db", "TA output energy (dB)"),
)
# The row drawn per speech source of the enrolled target, when the log holds sources.
SOURCE_PANELS: tuple[tuple[str, str], ...] = (
    ("tp_si_sdri", "TP SI-SDRi (dB)"),
    ("rms_ratio", "rms_ratio (TP est / target)"),
    ("ta_energy_db", "TA output energy (dB)"),
)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Every record of ``run_dir/metrics.jsonl`` (a torn last line is skipped)."""
    records = []
    for line in (Path(run_dir) / METRICS_NAME).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def split_records(records: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """(train records, validation records) of a metrics log, each sorted by step."""
    train = sorted((r for r in records if r.get("kind") == "train"), key=lambda r: r["step"])
    val = sorted((r for r in records if r.get("kind") == "val"), key=lambda r: r["step"])
    return train, val


def loss_term_names(train: list[dict[str, Any]]) -> list[str]:
    """Every ``loss/<term>`` key logged during training, in first-seen order."""
    names: list[str] = []
    for record in train:
        for key in record:
            if key.startswith("loss/") and key not in names:
                names.append(key)
    return names


def source_names(val: list[dict[str, Any]], key: str) -> list[str]:
    """Sorted speech sources with a ``source/<name>/<key>`` figure in the records."""
    suffix = f"/{key}"
    return sorted(
        {
            k[len(SOURCE_PREFIX) : -len(suffix)]
            for record in val
            for k in record
            if k.startswith(SOURCE_PREFIX) and k.endswith(suffix)
        }
    )


def val_series(
    val: list[dict[str, Any]], key: str, by: str = "kind"
) -> list[tuple[str, list[tuple[int, float, float]]]]:
    """(label, [(step, value, standard error)]) of validation metric ``key``: the whole set
    (label ``"all"``), then each kind of enrolled voice the log holds (``real/<key>``, ...)
    or, with ``by="source"``, each speech source of the enrolled target
    (``source/<name>/<key>``, labelled ``<name>``)."""
    if by == "kind":
        groups = [(kind, f"{kind}/{key}") for kind in VOICE_KINDS]
    elif by == "source":
        groups = [(name, f"{SOURCE_PREFIX}{name}/{key}") for name in source_names(val, key)]
    else:
        raise ValueError(f"val_series: by must be 'kind' or 'source', got {by!r}")
    series = []
    for label, name in (("all", key), *groups):
        # float(): the log keeps a NaN (a standard error of one example) as the string "nan".
        points = [
            (r["step"], float(r[name]), float(r.get(f"{name}_se", 0.0))) for r in val if name in r
        ]
        if points:
            series.append((label, points))
    return series


def _val_panel(
    ax: Any, val: list[dict[str, Any]], key: str, title: str, by: str, legend: str
) -> None:
    """Error-bar curves of :func:`val_series` on one matplotlib axis."""
    series = val_series(val, key, by)
    for name, points in series:
        steps, values, errors = zip(*points)
        ax.errorbar(steps, values, yerr=errors, marker="o", ms=3, capsize=2, label=name)
    if len(series) > 1:
        ax.legend(fontsize=7, title=legend)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)


def plot_training_curves(run_dir: Path, out_png: Path, title: str = "") -> Path:
    """Plot validation metrics (with standard errors) and training loss terms vs step; a third
    row per speech source of the enrolled target when the log holds per-source figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, val = split_records(read_metrics(Path(run_dir)))
    terms = loss_term_names(train)
    by_source = any(source_names(val, key) for key, _ in SOURCE_PANELS)
    rows = 3 if by_source else 2
    fig, axes = plt.subplots(rows, 3, figsize=(15, 4 * rows))
    flat = axes.ravel()
    for ax, (key, label) in zip(flat[:4], VAL_PANELS):
        _val_panel(ax, val, key, f"validation {label}", "kind", "enrolled voices")
    for ax, (key, label) in zip(flat[6:], SOURCE_PANELS):  # empty without sources
        _val_panel(ax, val, key, f"validation {label} by source", "source", "enrolled target")
    ax = flat[4]
    for key in terms:
        if key in ("loss/total", "loss/rms_ratio"):
            continue
        points = [(r["step"], r[key]) for r in train if key in r]
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, label=key.removeprefix("loss/"))
    ax.set_title("training loss terms")
    ax.set_xlabel("step")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax = flat[5]
    points = [(r["step"], r["rms_ratio"]) for r in train if "rms_ratio" in r]
    if points:
        steps, values = zip(*points)
        ax.plot(steps, values, label="train rms_ratio")
    points = [(r["step"], r["lr"]) for r in train if "lr" in r]
    if points:
        twin = ax.twinx()
        steps, values = zip(*points)
        twin.plot(steps, values, color="grey", ls="--", label="lr")
        twin.set_ylabel("learning rate")
    ax.set_title("training rms_ratio (and lr, dashed)")
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png
