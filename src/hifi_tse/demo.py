"""``hifi-tse demo``: the main job end to end on the offline demo corpus.

1. build (or reuse) the demo corpus (espeak voices, and the real ones when installed);
2. train a fresh model with ``configs/demo.yaml`` under a wall-clock budget
   (``train.budget_minutes``: both phases and the learning-rate decay fit in it);
3. evaluate the shipped demo model and the fresh one on the held-out test voices
   (with the wrong-reference selectivity check);
4. extract three test mixtures (one target-absent) with ``hifi_tse.Extractor`` and score
   mixture and estimate with no-reference DNSMOS (when the speechmos wheel is installed);
   detect where each talker of the pyannote two-talker call speaks, against its RTTM
   (:func:`hifi_tse.eval.activity_eval.call_activity_section`: figures and a PNG);
5. write ``<out>/report.md`` with the figures, curves and WAVs, and print a summary.

Each stage calls the Python API a user's own script would (``build_demo_corpus``,
``train``, ``evaluate_checkpoint``, ``hifi_tse.Extractor``): no command lines are built.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from hifi_tse.config import load_config
from hifi_tse.errors import UserError
from hifi_tse.eval import dnsmos
from hifi_tse.train.logging_utils import configure_console_logging
from hifi_tse.utils import atomic_write_text

ASSETS = Path(__file__).resolve().parent / "assets"  # shipped inside the package
DEFAULT_CONFIG = ASSETS / "configs" / "demo.yaml"
DEFAULT_SHIPPED = ASSETS / "demo_model.pt"
# Fixed test-set draw of the report, so two demo runs score the same mixtures.
EVAL_SEED = 7
SEPARATE_SEED = 11
# The fresh run follows its time budget (train.budget_minutes): its schedule's position is
# the share of the budget spent, so it ends its phases and learning-rate decay on time on a
# fast, slow or loaded machine. These nominal steps only set the schedule's resolution.
NOMINAL_STEPS = 12000
# Validation passes in a fresh run: a fixed number keeps their share of the budget the same on
# fast and slow machines.
FRESH_VALIDATIONS = 6
# The most torch threads the demo uses: its model's ops are small, and more threads than cores
# make every step slower.
MAX_AUTO_THREADS = 4


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="demo output folder")
    p.add_argument("--corpus", type=Path, default=Path("data/demo"), help="demo corpus folder")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="fresh-run config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--minutes", type=float, default=15.0, help="fresh training budget (wall clock), min"
    )
    p.add_argument(
        "--phase1-fraction",
        type=float,
        default=0.5,
        help="share of the budget spent in phase 1 (TP only)",
    )
    p.add_argument("--shipped", type=Path, default=DEFAULT_SHIPPED, help="shipped demo model")
    p.add_argument("--eval-examples", type=int, default=120, help="test mixtures scored")
    p.add_argument("--skip-train", action="store_true", help="only evaluate the shipped model")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help=f"torch threads in the trainer (default: the usable cores, at most "
        f"{MAX_AUTO_THREADS})",
    )
    p.add_argument("--workers", type=int, default=2, help="corpus synthesis processes")


def _stage(name: str) -> float:
    print(f"\n=== demo: {name}", flush=True)
    return time.perf_counter()


def _lacks_installed_real_voices(corpus: Path) -> bool:
    """A demo corpus built before some real voices were installed (re-running adds them)."""
    from hifi_tse.data.real_voices import (
        FILLETS_ROOT,
        FILLETS_SOURCE,
        installed_package_sources,
    )
    from hifi_tse.data.store import load_report

    if not (corpus / "raw" / "voices.json").is_file():
        return False  # not built by make-demo-corpus: use it as it is
    names = {s.get("name") for s in load_report(corpus).get("sources", [])}
    installed = set(installed_package_sources())
    if any(FILLETS_ROOT.glob("*/cs/*.ogg")):
        installed.add(FILLETS_SOURCE)
    return bool(installed - names)


def test_voice_kinds(corpus: Path) -> list[str]:
    """The selections of test voices with at least two test speakers in ``corpus``: real and
    synthetic; with sources held out whole, the real ones apart as ``unseen-source`` (a
    recording never heard) and ``seen-source`` (held-out talkers of training sources)."""
    from hifi_tse.data.store import load_manifest, load_report, selected_sources

    report = load_report(corpus)
    test_speakers = {
        (r["source"], r["speaker"]) for r in load_manifest(corpus, "test") if r["kind"] == "speech"
    }
    order = ("unseen-source", "seen-source", "real", "synthetic")
    counts = {}
    for sel in order:
        sources = selected_sources(report, sel)  # once per selection, not per speaker
        counts[sel] = sum(src in sources for src, _ in test_speakers)
    split_real = counts["unseen-source"] >= 2
    dropped = ("real",) if split_real else ("unseen-source", "seen-source")
    return [k for k in order if counts[k] >= 2 and k not in dropped]


def build_corpus(corpus: Path, sample_rate: int, workers: int) -> None:
    if (corpus / "manifest_test.jsonl").is_file() and not _lacks_installed_real_voices(corpus):
        from hifi_tse.data.store import load_report

        real = [
            s["name"]
            for s in load_report(corpus).get("sources", [])
            if s.get("kind") == "speech" and s.get("voices", "real") == "real"
        ]
        print(f"reusing demo corpus in {corpus}; real voices: {', '.join(real) or 'none'}")
        return
    from hifi_tse.data import demo_corpus as dc
    from hifi_tse.data.demo_corpus_cli import format_summary

    summary = dc.build_demo_corpus(
        out=corpus, sample_rate=sample_rate, workers=workers, progress=False, real_voices=True
    )
    print(format_summary(summary))


def budget_overrides(steps: int, phase1_fraction: float) -> list[str]:
    """Config overrides that place every schedule in a nominal schedule of ``steps``: phase 2
    after ``phase1_fraction``, the easy-to-hard data curriculum over the first half, the
    noisy-enrollment ramp over the second half (so the run ends on the test distribution), a
    warm-up of 1/12 of the run (as `experiments/demo_config_search.py` measured), and
    :data:`FRESH_VALIDATIONS` validation passes, the last at the end."""
    half = max(steps // 2, 1)
    return [
        # rounded up, so the last interval ends at or after the final step (which validates)
        f"train.val_interval={-(-steps // FRESH_VALIDATIONS)}",
        f"train.steps={steps}",
        f"train.phase1_steps={max(int(steps * phase1_fraction), 1)}",
        f"mixing.easy_steps={half}",
        f"mixing.noisy_ref_ramp=[{half},{steps}]",
        f"train.warmup_steps={max(steps // 12, 1)}",
    ]


def demo_threads(requested: int | None) -> int:
    """Torch threads of the fresh run: ``--threads``, else the usable cores (at most
    :data:`MAX_AUTO_THREADS`)."""
    if requested is not None:
        if requested < 1:
            raise UserError(f"--threads: expected a positive integer, got {requested}")
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, MAX_AUTO_THREADS))


def train_fresh(args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    """Train a fresh model with ``train.budget_minutes = --minutes`` through the Python API.

    Returns ``steps`` (optimiser steps done), ``threads``, ``budget_minutes``, ``wall_s``
    (the trainer's whole call: start-up, training, validations, checkpoints) and
    ``reason`` (why training stopped)."""
    import torch

    from hifi_tse.train.trainer import TrainOptions, train

    threads = demo_threads(args.threads)
    overrides = [
        *budget_overrides(NOMINAL_STEPS, args.phase1_fraction),
        f"train.budget_minutes={args.minutes}",
        *args.overrides,  # the user's --set comes last, so it wins
    ]
    cfg = load_config(args.config, overrides)
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a demo run always starts fresh
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    try:
        train(TrainOptions(cfg=cfg, data_dir=Path(args.corpus), run_dir=run_dir))
    finally:
        torch.set_num_threads(previous)
    end = last_end(run_dir)
    return {
        "steps": int(end["step"]),
        "reason": end["reason"],
        "threads": threads,
        "budget_minutes": args.minutes,
        "wall_s": time.perf_counter() - t0,
    }


def last_end(run_dir: Path) -> dict[str, Any]:
    """The last ``end`` event of a training run."""
    from hifi_tse.train.curves import read_metrics

    ends = [r for r in read_metrics(run_dir) if r.get("event") == "end"]
    if not ends:
        raise UserError(f"{run_dir}: the training run recorded no end")
    return ends[-1]


def evaluate(
    checkpoint: Path, corpus: Path, out: Path, examples: int, voices: str
) -> dict[str, Any]:
    """Score ``checkpoint`` on the corpus's held-out ``voices`` test talkers (the fixed draw
    of :data:`EVAL_SEED`, with the wrong-reference check); writes a report to ``out``."""
    from hifi_tse.eval.cli import eval_options
    from hifi_tse.eval.evaluate import evaluate_checkpoint

    metrics = evaluate_checkpoint(
        checkpoint,
        out,
        eval_options(wrong_reference=True),
        data=corpus,
        split="test",
        examples=examples,
        seed=EVAL_SEED,
        voices=voices,
    )
    tp, ta = metrics["tp"], metrics["ta"]
    print(
        f"{voices} voices: TP n={tp['count']} SI-SDRi {_fmt(tp['si_sdri']['mean'])} dB; "
        f"TA n={ta['count']} suppression {_fmt(ta['suppression_db']['mean'])} dB; "
        f"report: {out / 'report.md'}",
        flush=True,
    )
    return metrics


def evaluate_by_voices(
    name: str, checkpoint: Path, corpus: Path, out: Path, examples: int, kinds: list[str]
) -> tuple[dict[str, dict[str, float | None]], dict[str, str]]:
    """Headline figures of ``checkpoint`` on each kind of test voice, and report links."""
    results, links = {}, {}
    slug = name.split()[0]
    for kind in kinds:
        folder = f"eval_{slug}_{kind}"
        metrics = evaluate(checkpoint, corpus, out / folder, examples, kind)
        results[f"{name}, {kind} voices"] = headline(metrics)
        links[f"{name.capitalize()} evaluation, {kind} voices"] = f"[report]({folder}/report.md)"
    return results, links


def write_separation_inputs(corpus: Path, cfg_path: Path, out: Path) -> list[dict[str, Any]]:
    """Three held-out test mixtures (two target-present, one target-absent) as WAV files."""
    from hifi_tse.audio.io import save_audio
    from hifi_tse.data.datasets import FixedExampleSet

    cfg = load_config(cfg_path)
    fixed = FixedExampleSet(corpus, cfg, split="test", seed=SEPARATE_SEED, n=10, phase=2)
    chosen: list[int] = []
    for want_present in (True, True, False):
        for i in range(len(fixed)):
            if i not in chosen and bool(fixed[i]["target_present"]) == want_present:
                chosen.append(i)
                break
    rows = []
    for n, i in enumerate(chosen):
        item = fixed[i]
        tag = f"example{n + 1}_{'tp' if item['target_present'] else 'ta'}"
        paths = {k: out / f"{tag}_{k}.wav" for k in ("mix", "ref", "target")}
        for key, path in paths.items():
            save_audio(path, np.asarray(item[key], dtype=np.float32), cfg.audio.sample_rate)
        rows.append({"tag": tag, "target_present": bool(item["target_present"]), **paths})
    return rows


def separate_examples(checkpoint: Path, rows: list[dict[str, Any]], out: Path) -> None:
    """Extract each row's mixture with ``hifi_tse.Extractor`` and write the estimate; with
    the speechmos wheel installed, ``row["dnsmos"]`` holds the no-reference DNSMOS of mixture
    and estimate (a few seconds of CPU for the three short mixtures)."""
    from hifi_tse.api import Extractor
    from hifi_tse.audio.io import read_audio, save_audio
    from hifi_tse.eval.dnsmos import DnsmosScorer

    extractor = Extractor.from_checkpoint(checkpoint)
    quality = DnsmosScorer.try_load()
    for row in rows:
        row["estimate"] = out / f"{row['tag']}_estimate.wav"
        mix, rate = read_audio(row["mix"])
        ref, ref_rate = read_audio(row["ref"])
        estimate = extractor.extract(mix, rate, extractor.enroll(ref, ref_rate))
        save_audio(row["estimate"], estimate, rate)
        if quality is not None:
            row["dnsmos"] = quality.compare([mix], [estimate], rate)[0]


def headline(metrics: dict[str, Any]) -> dict[str, float | None]:
    """The demo's target figures from an evaluation's metrics.json."""

    def mean(block: dict[str, Any] | None, key: str) -> float | None:
        return None if not block or block.get(key) is None else block[key].get("mean")

    wrong = metrics.get("wrong_reference") or {}
    return {
        "tp_si_sdri_db": mean(metrics.get("tp"), "si_sdri"),
        "tp_si_sdr_db": mean(metrics.get("tp"), "si_sdr"),
        "pesq_wb": mean(metrics.get("tp"), "pesq"),
        "stoi": mean(metrics.get("tp"), "stoi"),
        "rms_ratio": (metrics.get("tp") or {}).get("rms_ratio_of_means"),
        "ta_suppression_db": mean(metrics.get("ta"), "suppression_db"),
        "wrong_ref_si_sdri_db": mean(wrong, "si_sdri_wrong"),
        "wrong_ref_drop_db": mean(wrong, "si_sdri_drop"),
        "confusion_rate": wrong.get("confusion_rate"),
        "spk_sim": mean(metrics.get("tp"), "spk_sim"),
        "spk_sim_mix": mean(metrics.get("tp"), "spk_sim_mix"),
        "spk_sim_target": mean(metrics.get("tp"), "spk_sim_target"),
    }


# (key, label, target of the shipped model on the real talkers of a source never trained on
# (issue 35; with no such source, on the real test voices), on synthetic voices, target of
# the fresh run on synthetic voices); the fresh run's real-voice figures have no target.
HEADLINE_ROWS = (
    ("tp_si_sdri_db", "TP SI-SDRi (dB)", "≥ 5", "≥ 5.5", "≥ 2"),
    ("tp_si_sdr_db", "TP SI-SDR (dB)", "", "", ""),
    ("pesq_wb", "PESQ-WB", "", "", ""),
    ("stoi", "STOI", "", "", ""),
    ("rms_ratio", "rms_ratio", "0.85–1.15", "0.85–1.15", "0.8–1.25"),
    ("ta_suppression_db", "TA suppression (dB)", "≥ 15", "≥ 20", "≥ 10"),
    ("wrong_ref_si_sdri_db", "wrong-reference SI-SDRi (dB)", "", "", ""),
    ("wrong_ref_drop_db", "SI-SDRi drop with wrong reference (dB)", "≥ 6", "≥ 6", "≥ 3"),
    ("confusion_rate", "speaker-confusion rate", "", "", ""),
    ("spk_sim", "speaker similarity, estimate ↔ enrollment (GE2E cosine)", "", "", ""),
    ("spk_sim_mix", "speaker similarity, mixture ↔ enrollment", "", "", ""),
    ("spk_sim_target", "speaker similarity, estimate ↔ clean target", "", "", ""),
)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def render_report(
    results: dict[str, dict[str, float | None]],
    rel_links: dict[str, str],
    examples: list[dict[str, Any]],
    out: Path,
    timings: dict[str, float],
    notes: list[str],
) -> str:
    names = list(results)
    lines = [
        "# hifi-tse demo report",
        "",
        "Held-out test voices of the demo corpus by kind (`hifi-tse evaluate --split test "
        f"--seed {EVAL_SEED} --wrong-reference --voices KIND`): unseen-source, the real "
        "talkers of a source never trained on; seen-source, held-out real talkers of training "
        "sources (real, when the corpus holds no source out whole); synthetic, espeak voices. "
        "The real test talkers were never heard in training.",
        "",
        "| metric | " + " | ".join(names) + " | target (shipped, unseen source) "
        "| target (shipped, synthetic) | target (fresh, synthetic) |",
        "|---|" + "---|" * len(names) + "---|---|---|",
    ]
    for key, label, shipped_real, shipped_synthetic, fresh_synthetic in HEADLINE_ROWS:
        cells = " | ".join(_fmt(results[n][key]) for n in names)
        lines.append(
            f"| {label} | {cells} | {shipped_real} | {shipped_synthetic} | {fresh_synthetic} |"
        )
    lines += ["", "Stage times: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items())]
    lines += [line for note in notes for line in ("", note)]
    for name, link in rel_links.items():
        lines += ["", f"## {name}", "", link]
    if examples:
        lines += ["", "## Extracted examples (`hifi_tse.Extractor`)", ""]
        lines.append("| example | mixture | enrollment | estimate | reference target |")
        lines.append("|---|---|---|---|---|")
        for row in examples:
            cells = [
                f"[{row[k].name}]({row[k].relative_to(out).as_posix()})"
                for k in ("mix", "ref", "estimate", "target")
            ]
            lines.append(f"| {row['tag']} | " + " | ".join(cells) + " |")
        lines += dnsmos.markdown_section(
            [(row["tag"], dnsmos.summary([row.get("dnsmos") or {}])) for row in examples]
        )
    return "\n".join(lines) + "\n"


def schedule_note(schedule: dict[str, Any], phase1_fraction: float) -> str:
    """The report's sentence on the fresh run's schedule."""
    return (
        f"Fresh run: {schedule['steps']} steps with {schedule['threads']} torch thread(s) in "
        f"a {schedule['budget_minutes']:g}-minute budget (`train.budget_minutes`): warm-up, "
        f"phase 2 after {phase1_fraction:.0%} of it, the data curricula, "
        f"{FRESH_VALIDATIONS} validations and the learning-rate decay followed the time "
        f"spent; the trainer's whole call took {schedule['wall_s'] / 60:.1f} min."
    )


def run(args: argparse.Namespace) -> int:
    from hifi_tse.train.curves import plot_training_curves

    demo_threads(args.threads)  # a bad --threads fails before any work
    configure_console_logging()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(args.config, args.overrides)
    timings: dict[str, float] = {}

    t0 = _stage("corpus")
    build_corpus(args.corpus, cfg.audio.sample_rate, args.workers)
    timings["corpus"] = time.perf_counter() - t0

    results: dict[str, dict[str, float | None]] = {}
    links: dict[str, str] = {}
    notes: list[str] = []
    kinds = test_voice_kinds(args.corpus)
    if kinds == ["synthetic"]:
        notes.append("No real test voices in this corpus: the figures are on synthetic voices.")
    if args.shipped.is_file():
        t0 = _stage(f"evaluate the shipped demo model {args.shipped}")
        res, lk = evaluate_by_voices(
            "shipped model", args.shipped, args.corpus, out, args.eval_examples, kinds
        )
        results.update(res)
        links.update(lk)
        timings["evaluate shipped"] = time.perf_counter() - t0
    else:
        print(f"no shipped demo model at {args.shipped}: skipping its evaluation")

    if not args.skip_train:
        run_dir = out / "fresh"
        t0 = _stage(f"train a fresh model for {args.minutes:g} min ({args.config})")
        schedule = train_fresh(args, run_dir)
        (out / "fresh_schedule.json").write_text(json.dumps(schedule, indent=2))
        notes.append(schedule_note(schedule, args.phase1_fraction))
        timings["train fresh"] = time.perf_counter() - t0
        plot_training_curves(run_dir, out / "fresh_curves.png", "fresh demo run")
        links["Fresh run: training curves"] = "![fresh curves](fresh_curves.png)"
        t0 = _stage("evaluate the fresh model")
        res, lk = evaluate_by_voices(
            f"fresh ({args.minutes:g} min)",
            run_dir / "checkpoint_best.pt",
            args.corpus,
            out,
            args.eval_examples,
            kinds,
        )
        results.update(res)
        links.update(lk)
        timings["evaluate fresh"] = time.perf_counter() - t0

    if not results:
        raise UserError(f"{args.shipped}: no shipped model and --skip-train: nothing to show")

    examples: list[dict[str, Any]] = []
    separator = args.shipped if args.shipped.is_file() else out / "fresh" / "checkpoint_best.pt"
    t0 = _stage(f"extract three test mixtures with {separator}")
    examples = write_separation_inputs(args.corpus, args.config, out / "examples")
    separate_examples(separator, examples, out / "examples")
    timings["separate"] = time.perf_counter() - t0

    t0 = _stage(f"target activity on the two-talker call with {separator}")
    from hifi_tse.eval.activity_eval import call_activity_section

    section = call_activity_section(separator, out)
    if section is not None:
        links["Where the target speaks: the two-talker call"] = section
    timings["activity"] = time.perf_counter() - t0

    report = render_report(results, links, examples, out, timings, notes)
    atomic_write_text(out / "report.md", report)
    (out / "summary.json").write_text(json.dumps(results, indent=2))
    print("\n" + report.split("\n\nStage times")[0])
    print(f"\nreport: {(out / 'report.md').resolve()}")
    return 0
