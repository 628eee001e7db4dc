"""Evaluation outputs: metrics.json, per_example.csv, report.md and PNG figures.

Input is the list of per-example records built by :mod:`hifi_tse.eval.evaluate` (plain
dicts of numbers and strings) plus optional wrong-reference and partial-presence records;
nothing here runs a model. Figures use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hifi_tse.audio.io import save_audio
from hifi_tse.audio.signal import ACTIVITY_FRAME_SECONDS, ACTIVITY_RANGE_DB, CONTINUOUS_ACTIVITY
from hifi_tse.eval import activity_eval, dnsmos
from hifi_tse.eval.metrics import EPS, summarize
from hifi_tse.utils import atomic_write_bytes, atomic_write_text

TP_METRICS = (
    "si_sdr",
    "si_sdri",
    "pesq",
    "stoi",
    "rms_ratio",
    "spk_sim",
    "spk_sim_mix",
    "spk_sim_target",
)
TA_METRICS = ("output_db", "suppression_db")
CSV_COLUMNS = (
    "index",
    "name",
    "target_present",
    "snr_db",
    "snr_bin",
    "num_interferers",
    "target_speaker",
    "target_source",
    "voice_kind",
    "si_sdr",
    "si_sdr_mix",
    "si_sdri",
    "pesq",
    "stoi",
    "rms_ratio",
    "rms_est",
    "rms_target",
    "output_db",
    "mixture_db",
    "suppression_db",
    "target_activity",
    "wrong_ref_speaker",
    "si_sdr_wrong",
    "si_sdri_wrong",
    "spk_sim",
    "spk_sim_mix",
    "spk_sim_target",
)


# Bin edges of the TP breakdowns by the mixture's own SI-SDR (dB) and by target activity
# (share of frames, metrics.target_activity).
MIXTURE_SI_SDR_EDGES = (-5.0, 0.0, 5.0)
ACTIVITY_EDGES = (0.5, 0.75, CONTINUOUS_ACTIVITY)


def snr_bin_label(snr_db: float | None, edges: Sequence[float]) -> str:
    """Name of the bin holding ``snr_db`` for ascending ``edges`` (dB; the TP breakdowns use
    it for other values too: the mixture's SI-SDR, target activity)."""
    if snr_db is None or not math.isfinite(snr_db):
        return "unknown"
    if snr_db < edges[0]:
        return f"< {edges[0]:g}"
    for lo, hi in zip(edges[:-1], edges[1:]):
        if snr_db < hi:
            return f"{lo:g} to {hi:g}"
    return f">= {edges[-1]:g}"


def tp_block(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Summary of target-present records; ``rms_ratio`` as in ARCHITECTURE §5 (ratio of means)."""
    tp = [r for r in records if r["target_present"]]
    block: dict[str, Any] = {"count": len(tp)}
    for key in TP_METRICS:
        block[key] = summarize([r.get(key) for r in tp])
    if tp:
        mean_est = float(np.mean([r["rms_est"] for r in tp]))
        mean_tgt = float(np.mean([r["rms_target"] for r in tp]))
        block["rms_ratio_of_means"] = mean_est / max(mean_tgt, EPS)
    else:
        block["rms_ratio_of_means"] = None
    return block


def ta_block(records: list[dict[str, Any]]) -> dict[str, Any]:
    ta = [r for r in records if not r["target_present"]]
    block: dict[str, Any] = {"count": len(ta)}
    for key in TA_METRICS:
        block[key] = summarize([r.get(key) for r in ta])
    return block


def breakdown(records: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """TP and TA blocks per value of ``key`` (e.g. ``snr_bin``, ``num_interferers``)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(str(r.get(key)), []).append(r)

    def order(name: str) -> tuple[int, float, str]:
        try:
            return (0, float(name.split()[-1]), name)
        except ValueError:
            return (1, 0.0, name)

    return {
        name: {"tp": tp_block(groups[name]), "ta": ta_block(groups[name])}
        for name in sorted(groups, key=order)
    }


def _binned(records: list[dict[str, Any]], key: str, edges: Sequence[float]) -> dict[str, Any]:
    """:func:`breakdown` by the bin of ``records[i][key]`` (records without it left out)."""
    labelled = [
        {**r, "_bin": snr_bin_label(r[key], edges)} for r in records if r.get(key) is not None
    ]
    return breakdown(labelled, "_bin")


def wrong_reference_block(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """SI-SDRi with the right vs a wrong enrollment, and the speaker-confusion rate.

    A wrong enrollment that still yields SI-SDRi > 0 dB on the true target means the model
    extracted the target anyway (it ignored or confused the speaker cue).
    """
    scored = [r for r in records if r.get("si_sdri_wrong") is not None]
    if not scored:
        return None
    drops = [r["si_sdri"] - r["si_sdri_wrong"] for r in scored]
    confused = [r["si_sdri_wrong"] > 0.0 for r in scored]
    return {
        "count": len(scored),
        "si_sdri_correct": summarize([r["si_sdri"] for r in scored]),
        "si_sdri_wrong": summarize([r["si_sdri_wrong"] for r in scored]),
        "si_sdri_drop": summarize(drops),
        "confusion_rate": float(np.mean(confused)),
    }


def dnsmos_block(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """DNSMOS of mixtures and estimates, TP and TA apart (None when not scored)."""
    tp = dnsmos.summary([r for r in records if r["target_present"]])
    ta = dnsmos.summary([r for r in records if not r["target_present"]])
    return {"tp": tp, "ta": ta} if tp or ta else None


def partial_block(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not records:
        return None
    keys = ("ta_before_db", "tp_db", "ta_after_db", "contrast_db", "si_sdr_tp_region")
    block: dict[str, Any] = {"count": len(records)}
    for key in keys:
        block[key] = summarize([r.get(key) for r in records])
    block["window_seconds"] = records[0]["window_seconds"]
    block["length_seconds"] = records[0]["length_seconds"]
    return block


def build_metrics(
    records: list[dict[str, Any]],
    partial: list[dict[str, Any]],
    info: dict[str, Any],
) -> dict[str, Any]:
    """The content of metrics.json."""
    metrics: dict[str, Any] = dict(info)
    metrics["tp"] = tp_block(records)
    metrics["ta"] = ta_block(records)
    metrics["by_snr_bin"] = breakdown(records, "snr_bin")
    metrics["by_num_interferers"] = breakdown(records, "num_interferers")
    # what limits a model: how clean the mixture already is, and how much of the segment the
    # target speaks (TP only; the labels are bins like the SNR's)
    tp = [r for r in records if r["target_present"]]
    metrics["by_mixture_si_sdr"] = _binned(tp, "si_sdr_mix", MIXTURE_SI_SDR_EDGES)
    metrics["by_target_activity"] = _binned(tp, "target_activity", ACTIVITY_EDGES)
    # the enrolled talker: the target in TP examples, the absent enrollee in TA ones
    metrics["by_target_speaker"] = breakdown(records, "target_speaker")
    # ... its kind of voice and its speech source: a model turns down the voices it is unsure
    # of (a source never trained on) while the whole set's level looks right. Empty when the
    # records do not say (list mode).
    for key in ("voice_kind", "target_source"):
        metrics[f"by_{key}"] = breakdown([r for r in records if r.get(key) is not None], key)
    metrics["wrong_reference"] = wrong_reference_block(records)
    metrics["dnsmos"] = dnsmos_block(records)
    metrics["partial_presence"] = partial_block(partial)
    metrics["activity"] = activity_eval.activity_block(records, partial)  # None: not scored
    return metrics


# --------------------------------------------------------------------------- writers


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else ""
    return str(value)


def write_csv(path: Path, records: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    scored = [c for c in dnsmos.COLUMNS if any(r.get(c) is not None for r in records)]
    columns = (*CSV_COLUMNS, *scored)
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for r in records:
        writer.writerow({k: _fmt(r.get(k), 4) for k in columns})
    atomic_write_text(path, buf.getvalue())


def _ms(summary: dict[str, Any] | None) -> str:
    """``mean ± sem`` of a summary (blank when empty)."""
    if not summary or summary.get("mean") is None:
        return "–"
    sem = summary.get("sem")
    return f"{summary['mean']:.2f} ± {sem:.2f}" if sem is not None else f"{summary['mean']:.2f}"


def _med(summary: dict[str, Any] | None) -> str:
    return "–" if not summary or summary.get("median") is None else f"{summary['median']:.2f}"


def _tp_table(rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
    lines = [
        "| group | n | SI-SDR (dB) | SI-SDRi (dB) | SI-SDRi median | PESQ-WB | STOI | rms_ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, tp in rows:
        ratio = tp.get("rms_ratio_of_means")
        lines.append(
            f"| {name} | {tp['count']} | {_ms(tp['si_sdr'])} | {_ms(tp['si_sdri'])} | "
            f"{_med(tp['si_sdri'])} | {_ms(tp['pesq'])} | {_ms(tp['stoi'])} | "
            f"{_fmt(ratio, 3) or '–'} |"
        )
    return lines


def _ta_table(rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
    lines = [
        "| group | n | output energy (dB) | suppression (dB) | suppression median |",
        "|---|---|---|---|---|",
    ]
    for name, ta in rows:
        lines.append(
            f"| {name} | {ta['count']} | {_ms(ta['output_db'])} | {_ms(ta['suppression_db'])} "
            f"| {_med(ta['suppression_db'])} |"
        )
    return lines


def _similarity_lines(tp: dict[str, Any]) -> list[str]:
    """Speaker similarity (GE2E cosine) of the TP estimates, when it was scored."""
    if not tp.get("spk_sim") or tp["spk_sim"].get("mean") is None:
        return []
    line = (
        f"Speaker similarity (GE2E cosine): estimate ↔ enrollment {_ms(tp['spk_sim'])} "
        f"(mixture ↔ enrollment {_ms(tp['spk_sim_mix'])})"
    )
    if tp.get("spk_sim_target") and tp["spk_sim_target"].get("mean") is not None:
        line += f"; estimate ↔ clean target {_ms(tp['spk_sim_target'])}"
    return ["", line + "."]


# The breakdowns of metrics.json, with their report.md headings ("By ...").
BREAKDOWNS = (
    ("input SNR bin (dB)", "by_snr_bin"),
    ("interferers", "by_num_interferers"),
    ("mixture SI-SDR bin (dB)", "by_mixture_si_sdr"),
    (
        f"target activity (share of {ACTIVITY_FRAME_SECONDS * 1000:g} ms frames within "
        f"{ACTIVITY_RANGE_DB:g} dB of the target's loudest)",
        "by_target_activity",
    ),
    ("enrolled talker (absent in TA)", "by_target_speaker"),
    ("kind of enrolled voice", "by_voice_kind"),
    ("speech source of the enrolled talker", "by_target_source"),
)


def _breakdown_sections(metrics: dict[str, Any]) -> list[str]:
    """A "## By ..." section (TP table, TA table) per non-empty breakdown of ``metrics``."""
    out: list[str] = []
    for title, key in BREAKDOWNS:
        groups = metrics.get(key)
        if not groups:
            continue
        out += ["", f"## By {title}", "", "TP:", ""]
        out += _tp_table([(name, g["tp"]) for name, g in groups.items() if g["tp"]["count"]])
        ta_rows = [(name, g["ta"]) for name, g in groups.items() if g["ta"]["count"]]
        if ta_rows:
            out += ["", "TA:", ""] + _ta_table(ta_rows)
    return out


def render_markdown(metrics: dict[str, Any], figures: list[tuple[str, str]]) -> str:
    """report.md: headline tables, breakdowns, robustness checks and figure links."""
    out = [f"# Evaluation report: {metrics.get('checkpoint', '')}", ""]
    facts = [
        f"- source: {metrics.get('source')}",
        f"- examples: {metrics.get('examples')} (TP {metrics['tp']['count']}, "
        f"TA {metrics['ta']['count']}), seed {metrics.get('seed')}"
        + (
            f"; mixtures with {', '.join(metrics['mix_overrides'])}"
            if metrics.get("mix_overrides")
            else ""
        )
        + (f"; enrollment {metrics['ref_seconds']:g} s" if metrics.get("ref_seconds") else ""),
        f"- model sample rate: {metrics.get('sample_rate')} Hz; checkpoint step "
        f"{metrics.get('step')}",
        "- values are mean ± standard error of the mean; PESQ-WB at 16 kHz, STOI at 10 kHz; "
        "missing PESQ/STOI values (no utterance found) are left out of their means",
    ]
    out += facts + ["", "## Target present (TP)", ""]
    out += _tp_table([("all", metrics["tp"])])
    missing = metrics["tp"]["pesq"].get("missing") if metrics["tp"]["pesq"] else None
    if missing:
        out += ["", f"PESQ could not score {missing} TP example(s) (recorded as missing)."]
    out += _similarity_lines(metrics["tp"])
    out += ["", "## Target absent (TA)", ""]
    out += _ta_table([("all", metrics["ta"])])
    quality = metrics.get("dnsmos") or {}
    out += dnsmos.markdown_section([("TP", quality.get("tp")), ("TA", quality.get("ta"))])
    out += _breakdown_sections(metrics)
    wrong = metrics.get("wrong_reference")
    if wrong:
        out += [
            "",
            "## Wrong reference",
            "",
            "Every TP example scored again with the enrollment of a different speaker "
            "(SI-SDRi still measured against the true target). Confusion rate = share of "
            "examples where the wrong enrollment still gives SI-SDRi > 0 dB.",
            "",
            "| n | SI-SDRi right ref | SI-SDRi wrong ref | drop (dB) | confusion rate |",
            "|---|---|---|---|---|",
            f"| {wrong['count']} | {_ms(wrong['si_sdri_correct'])} | "
            f"{_ms(wrong['si_sdri_wrong'])} | {_ms(wrong['si_sdri_drop'])} | "
            f"{100 * wrong['confusion_rate']:.1f} % |",
        ]
    partial = metrics.get("partial_presence")
    if partial:
        lo, hi = partial["window_seconds"]
        out += [
            "",
            "## Partial presence",
            "",
            f"Mixtures of {partial['length_seconds']:.2f} s where the target talks only in "
            f"{lo:.2f}–{hi:.2f} s. Output energy per region (dB); contrast = TP-region energy "
            "minus the energy of the two TA regions taken together.",
            "",
            "| n | TA before (dB) | TP (dB) | TA after (dB) | contrast (dB) | SI-SDR in TP (dB) |",
            "|---|---|---|---|---|---|",
            f"| {partial['count']} | {_ms(partial['ta_before_db'])} | {_ms(partial['tp_db'])} | "
            f"{_ms(partial['ta_after_db'])} | {_ms(partial['contrast_db'])} | "
            f"{_ms(partial['si_sdr_tp_region'])} |",
        ]
    out += activity_eval.markdown_lines(metrics.get("activity"))
    if figures:
        out += ["", "## Figures", ""]
        out += [f"![{caption}]({rel})" for caption, rel in figures]
    return "\n".join(out) + "\n"


def _save_png(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def plot_histogram(values: list[float], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(values, bins=max(5, min(40, len(values) // 3)), color="tab:blue", alpha=0.8)
    ax.axvline(0.0, color="k", lw=0.8)
    ax.set_xlabel("SI-SDRi (dB)")
    ax.set_ylabel("examples")
    ax.set_title("SI-SDR improvement, target present")
    _save_png(fig, path)
    plt.close(fig)


def plot_vs_input(records: list[dict[str, Any]], path: Path) -> None:
    import matplotlib.pyplot as plt

    x = [r["si_sdr_mix"] for r in records]
    y = [r["si_sdri"] for r in records]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.scatter(x, y, s=10, alpha=0.7)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xlabel("input SNR: SI-SDR of the mixture vs target (dB)")
    ax.set_ylabel("SI-SDRi (dB)")
    ax.set_title("SI-SDRi vs input SNR")
    _save_png(fig, path)
    plt.close(fig)


def plot_spectrograms(
    signals: list[tuple[str, np.ndarray]], sample_rate: int, title: str, path: Path
) -> None:
    """One log-magnitude spectrogram panel per ``(name, (L,) audio)``."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(signals), 1, figsize=(8, 1.9 * len(signals)), squeeze=False)
    nfft = 1 << max(6, int(math.log2(sample_rate * 0.032)))  # ~32 ms analysis window
    for ax, (name, wav) in zip(axes[:, 0], signals):
        if wav.size >= nfft and np.any(wav):
            with np.errstate(divide="ignore"):  # exact-zero stretches (padding) are -inf dB
                ax.specgram(wav, NFFT=nfft, Fs=sample_rate, noverlap=nfft // 2, cmap="magma")
        ax.set_ylabel(f"{name}\nHz", fontsize=8)
    axes[-1, 0].set_xlabel("time (s)")
    axes[0, 0].set_title(title)
    _save_png(fig, path)
    plt.close(fig)


def write_report(
    out_dir: Path,
    records: list[dict[str, Any]],
    partial: list[dict[str, Any]],
    info: dict[str, Any],
    examples_audio: dict[str, dict[str, Any]],
    sample_rate: int,
) -> dict[str, Any]:
    """Write every output into ``out_dir`` and return the metrics dict.

    ``examples_audio``: ``{"best"|"median"|"worst": {"record": r, "mixture": (L,),
    "reference": (L_ref,), "estimate": (L,), "target": (L,)}}`` for the spectrogram panels.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    metrics = build_metrics(records, partial, info)
    figures: list[tuple[str, str]] = []
    tp = [r for r in records if r["target_present"]]
    if tp:
        plot_histogram([r["si_sdri"] for r in tp], fig_dir / "si_sdri_hist.png")
        plot_vs_input(tp, fig_dir / "si_sdri_vs_input_snr.png")
        figures += [
            ("SI-SDRi histogram", "figures/si_sdri_hist.png"),
            ("SI-SDRi vs input SNR", "figures/si_sdri_vs_input_snr.png"),
        ]
    for which, item in examples_audio.items():
        r = item["record"]
        wav_dir = out_dir / "examples" / which
        for name in ("mixture", "reference", "estimate", "target"):
            save_audio(wav_dir / f"{name}.wav", item[name], sample_rate)
        title = (
            f"{which}: example {r['index']} ({r.get('name', '')}), SI-SDRi {r['si_sdri']:.2f} dB"
        )
        png = fig_dir / f"spectrogram_{which}.png"
        plot_spectrograms(
            [(n, item[n]) for n in ("mixture", "reference", "estimate", "target")],
            sample_rate,
            title,
            png,
        )
        figures.append((f"{which} example", f"figures/spectrogram_{which}.png"))
    atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    write_csv(out_dir / "per_example.csv", records)
    atomic_write_text(out_dir / "report.md", render_markdown(metrics, figures))
    return metrics
