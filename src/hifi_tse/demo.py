"""``hifi-tse demo``: the main job end to end on the offline demo corpus.

1. build (or reuse) the espeak demo corpus;
2. train a fresh model with ``configs/demo.yaml`` under a wall-clock budget (both phases);
3. evaluate the shipped demo model and the fresh one on the held-out test voices
   (with the wrong-reference selectivity check);
4. extract three test mixtures (one target-absent) with ``hifi-tse separate``;
5. write ``<out>/report.md`` with the figures, curves and WAVs, and print a summary.

Each stage is the same subcommand a user would run, called in-process, so the demo exercises
exactly the user-facing code paths.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from hifi_tse.config import load_config
from hifi_tse.errors import UserError
from hifi_tse.train.logging_utils import LOG as TRAIN_LOG
from hifi_tse.utils import atomic_write_text

ASSETS = Path(__file__).resolve().parent / "assets"  # shipped inside the package
DEFAULT_CONFIG = ASSETS / "configs" / "demo.yaml"
DEFAULT_SHIPPED = ASSETS / "demo_model.pt"
# Fixed test-set draw of the report, so two demo runs score the same mixtures.
EVAL_SEED = 7
SEPARATE_SEED = 11
# The fresh run's schedule is sized from the speed of a short timed run of the same config on
# this machine (CPUs differ by 1.5x and more, and a schedule that does not fit the budget ends
# before phase 2 and the learning-rate decay). The first log interval holds start-up and the
# data workers' first batches, so it is not timed.
CALIBRATION_STEPS = 25  # default of --timing-steps
CALIBRATION_LOG_INTERVAL = 5
# Share of the remaining budget given to training steps at the measured speed. The rest covers
# validation passes and checkpoint writes (1.5 % of a 15-minute run, measured) and a machine
# that slows down after it was measured: in one batch-2 run of 2026-11-30 steps went from
# 0.155 s in the first third to 0.19-0.20 s later.
STEP_BUDGET_SHARE = 0.9
# The fresh run trains in two legs. The first, this share of the time left after the timing
# run, follows the schedule sized from the timing run; the schedule is then re-sized from the
# speed the first leg really had (start-up, validation and checkpoints included) and the run
# resumes for the rest of the budget. A 5-second timing run alone misjudged a 15-minute run
# both ways on 2026-11-30: one run hit its budget at 88 % of the schedule, before the end of
# the learning-rate decay; with a lower share another left 3 of its 15 minutes unused.
# A quarter stays before phase 2 (half the schedule) unless the machine runs 1.8x faster
# than it was timed.
FIRST_LEG_SHARE = 0.25
# Validation passes in a fresh run, whatever its step count: a fixed number keeps their share
# of the budget (inside 1 - STEP_BUDGET_SHARE) the same on fast and slow machines.
FRESH_VALIDATIONS = 6
# The most torch threads the timing run tries: the demo model's ops are small, and on a busy
# machine more threads than free cores make every step many times slower.
MAX_AUTO_THREADS = 4


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="demo output folder")
    p.add_argument("--corpus", type=Path, default=Path("data/demo"), help="demo corpus folder")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="fresh-run config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--minutes", type=float, default=15.0, help="fresh training budget, min")
    p.add_argument(
        "--phase1-fraction",
        type=float,
        default=0.5,
        help="share of the expected steps spent in phase 1 (TP only)",
    )
    p.add_argument(
        "--expected-steps-per-minute",
        type=float,
        default=None,
        help="size the step schedule from this speed instead of timing training steps first",
    )
    p.add_argument(
        "--timing-steps",
        type=int,
        default=CALIBRATION_STEPS,
        help="training steps of the timing run that sizes the schedule",
    )
    p.add_argument("--shipped", type=Path, default=DEFAULT_SHIPPED, help="shipped demo model")
    p.add_argument("--eval-examples", type=int, default=120, help="test mixtures scored")
    p.add_argument("--skip-train", action="store_true", help="only evaluate the shipped model")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads in the trainer (default: time 1 thread and all cores, up to "
        f"{MAX_AUTO_THREADS}, and train with the faster)",
    )
    p.add_argument("--workers", type=int, default=2, help="corpus synthesis processes")


def _cli(argv: list[str]) -> None:
    from hifi_tse.cli import main

    code = main(argv)
    if code != 0:
        raise UserError(f"demo stage failed: hifi-tse {' '.join(argv[:1])} exited {code}")


def _stage(name: str) -> float:
    print(f"\n=== demo: {name}", flush=True)
    return time.perf_counter()


def _lacks_installed_real_voices(corpus: Path) -> bool:
    """A demo corpus built before the real voices were installed (re-running adds them)."""
    from hifi_tse.data.real_voices import find_real_voices
    from hifi_tse.data.store import load_report

    if not (corpus / "raw" / "voices.json").is_file():
        return False  # not built by make-demo-corpus: use it as it is
    tags = {s.get("voices") for s in load_report(corpus).get("sources", [])}
    if "real" in tags:
        return False
    found = find_real_voices(corpus / "raw", 16000, 1.0, 0, pyannote_sample=None)
    return any(src.name == "fillets" for src in found.sources)


def test_voice_kinds(corpus: Path) -> list[str]:
    """The kinds of voice (real, synthetic) with at least two test speakers in ``corpus``."""
    from hifi_tse.data.store import load_manifest, load_report

    kind_of = {
        s["name"]: s.get("voices", "real")
        for s in load_report(corpus).get("sources", [])
        if s.get("kind") == "speech"
    }
    speakers: dict[str, set[str]] = {}
    for r in load_manifest(corpus, "test"):
        if r["kind"] == "speech":
            speakers.setdefault(kind_of.get(r["source"], "real"), set()).add(
                f"{r['source']}/{r['speaker']}"
            )
    return [k for k in ("real", "synthetic") if len(speakers.get(k, ())) >= 2]


def build_corpus(corpus: Path, sample_rate: int, workers: int) -> None:
    if (corpus / "manifest_test.jsonl").is_file() and not _lacks_installed_real_voices(corpus):
        print(f"reusing demo corpus in {corpus}")
        return
    _cli(
        [
            "make-demo-corpus",
            "--out",
            str(corpus),
            "--sample-rate",
            str(sample_rate),
            "--workers",
            str(workers),
            "--quiet",
        ]
    )


def budget_overrides(steps: int, phase1_fraction: float) -> list[str]:
    """Config overrides that fit every schedule into ``steps``: phase 2 after
    ``phase1_fraction``, the easy-to-hard data curriculum over the first half, the noisy-
    enrollment ramp over the second half (so the run ends on the test distribution), a
    warm-up of 1/12 of the run (as `experiments/demo_config_search.py` measured), and
    :data:`FRESH_VALIDATIONS` validation passes, the last at the final step."""
    half = max(steps // 2, 1)
    return [
        # rounded up, so the last interval ends at or after the final step (which validates)
        f"train.val_interval={-(-steps // FRESH_VALIDATIONS)}",
        f"train.steps={steps}",
        f"train.phase1_steps={max(int(steps * phase1_fraction), 1)}",
        f"data.easy_steps={half}",
        f"data.noisy_ref_ramp=[{half},{steps}]",
        f"train.warmup_steps={max(steps // 12, 1)}",
    ]


def _train(
    args: argparse.Namespace,
    run_dir: Path,
    minutes: float,
    overrides: list[str],
    threads: int,
    extra: tuple[str, ...] = (),
    resume: bool = False,
) -> None:
    if run_dir.exists() and not resume:
        shutil.rmtree(run_dir)  # a demo run always starts fresh
    sets = [item for o in overrides for item in ("--set", o)]
    _cli(
        [
            "train",
            "--config",
            str(args.config),
            "--data",
            str(args.corpus),
            "--out",
            str(run_dir),
            "--max-minutes",
            str(minutes),
            "--threads",
            str(threads),
            *(("--resume", "latest") if resume else ()),
            *extra,
            *sets,
        ]
    )


def calibrate_step_seconds(args: argparse.Namespace, scratch: Path, threads: int) -> float:
    """Seconds per training step of the demo config on this machine with ``threads`` torch
    threads (data loading included): the median log interval of a short run, leaving out the
    first one (start-up)."""
    from hifi_tse.train.curves import read_metrics, split_records

    # the user's model and data settings apply; every schedule is squeezed into the timing run
    overrides = [
        *args.overrides,
        *budget_overrides(args.timing_steps, args.phase1_fraction),
        f"train.log_interval={CALIBRATION_LOG_INTERVAL}",
        f"train.val_interval={args.timing_steps + 1}",
        # the trainer validates once at the end: keep that pass small, it is not timed
        "train.val_examples=2",
        "train.val_batch_size=2",
        "train.val_audio_examples=0",
        f"train.save_interval={args.timing_steps + 1}",
    ]
    # the timing run's console lines (and health warnings of an untrained model) would only
    # confuse: it is thrown away, and one line reports its result
    previous = TRAIN_LOG.level
    TRAIN_LOG.setLevel(logging.ERROR)
    try:
        _train(args, scratch, args.minutes, overrides, threads, extra=("--no-tensorboard",))
    finally:
        TRAIN_LOG.setLevel(previous)
    train, _ = split_records(read_metrics(scratch))
    timed = [r["step_time"] for r in train if r["step"] > CALIBRATION_LOG_INTERVAL]
    if not timed:
        raise UserError(f"{scratch}: the timing run logged no step times")
    shutil.rmtree(scratch)
    step_seconds = float(np.median(timed))
    print(f"timed {args.timing_steps} steps with {threads} thread(s): {step_seconds:.2f} s/step")
    return step_seconds


def schedule_steps(seconds_left: float, step_seconds: float, steps_done: int = 0) -> int:
    """Training steps (counted from 0) that fit ``seconds_left`` at ``step_seconds`` per step
    after ``steps_done``, less the share kept for validation and checkpoints; at least 20
    so both phases exist, and at least one more than ``steps_done``."""
    more = int(STEP_BUDGET_SHARE * seconds_left / step_seconds)
    return max(steps_done + more, 20, steps_done + 1)


def second_leg_steps(
    first_steps: int, first_leg_steps: int, first_leg_s: float, seconds_left: float
) -> int | None:
    """The re-sized schedule for the second leg from what the first leg did
    (``first_leg_steps`` steps in ``first_leg_s`` s, start-up included), or None when there
    is no second leg: the first leg finished the schedule, no time is left, or it made no
    step to measure the speed by."""
    if first_leg_steps >= first_steps or seconds_left <= 0 or first_leg_steps <= 0:
        return None
    return schedule_steps(seconds_left, first_leg_s / first_leg_steps, first_leg_steps)


def last_step(run_dir: Path) -> int:
    """The step a stopped training run ended at (its last ``end`` event)."""
    from hifi_tse.train.curves import read_metrics

    ends = [r["step"] for r in read_metrics(run_dir) if r.get("event") == "end"]
    if not ends:
        raise UserError(f"{run_dir}: the training run recorded no end")
    return int(ends[-1])


def check_timing_args(args: argparse.Namespace) -> None:
    """Refuse bad timing options before any work is done (one-line errors)."""
    if args.expected_steps_per_minute is not None and args.expected_steps_per_minute <= 0:
        raise UserError(
            "--expected-steps-per-minute: expected a positive number, "
            f"got {args.expected_steps_per_minute:g}"
        )
    if args.timing_steps < 2 * CALIBRATION_LOG_INTERVAL:
        raise UserError(
            f"--timing-steps: expected at least {2 * CALIBRATION_LOG_INTERVAL}, "
            f"got {args.timing_steps}"
        )
    thread_candidates(args.threads)


def thread_candidates(requested: int | None) -> list[int]:
    """Torch thread counts the timing run compares: the requested one, else 1 and the
    usable cores (at most MAX_AUTO_THREADS)."""
    if requested is not None:
        if requested < 1:
            raise UserError(f"--threads: expected a positive integer, got {requested}")
        return [requested]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return sorted({1, min(cores or 1, MAX_AUTO_THREADS)})


def fastest(step_seconds_by_threads: dict[int, float]) -> int:
    """The thread count with the shortest step; the fewer threads on a tie."""
    return min(sorted(step_seconds_by_threads), key=step_seconds_by_threads.__getitem__)


def train_fresh(args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    """Train with the schedules sized to the budget so both phases fit in it, in two legs
    (:data:`FIRST_LEG_SHARE`). Returns the sizing: ``steps`` (the final schedule),
    ``first_steps`` (the schedule sized from the timing run), ``first_leg_steps`` and
    ``first_leg_s`` (what the first leg did), ``steps_per_minute`` (timed), ``threads``,
    ``step_seconds_by_threads`` (empty when ``--expected-steps-per-minute`` is given) and
    ``calibration_s``."""
    t0 = time.perf_counter()
    candidates = thread_candidates(args.threads)
    timed: dict[int, float] = {}
    if args.expected_steps_per_minute is not None:
        # no timing: the requested count, else 1 thread (never oversubscribed)
        threads, step_seconds = candidates[0], 60.0 / args.expected_steps_per_minute
    else:
        for n in candidates:
            timed[n] = calibrate_step_seconds(args, run_dir.parent / "fresh_timing", n)
        threads = fastest(timed)
        step_seconds = timed[threads]
    calibration_s = time.perf_counter() - t0
    minutes_left = args.minutes - calibration_s / 60.0
    if minutes_left <= 0:
        raise UserError(f"--minutes {args.minutes:g}: the timing run alone took longer")
    first_steps = schedule_steps(minutes_left * 60.0, step_seconds)
    timing = ", ".join(f"{n} thread(s) {s:.2f} s/step" for n, s in timed.items())
    print(
        f"fresh schedule: {first_steps} steps at {60.0 / step_seconds:.0f} steps/min with "
        f"{threads} thread(s) ({timing or 'given'}) in the {minutes_left:.1f} min left; "
        f"re-sized after the first {FIRST_LEG_SHARE * minutes_left:.1f} min",
        flush=True,
    )
    # the user's --set comes last, so it wins over the budget sizing
    leg_start = time.perf_counter()
    overrides = [*budget_overrides(first_steps, args.phase1_fraction), *args.overrides]
    _train(args, run_dir, FIRST_LEG_SHARE * minutes_left, overrides, threads)
    first_leg_s = time.perf_counter() - leg_start
    first_leg_steps = last_step(run_dir)
    seconds_left = args.minutes * 60.0 - (time.perf_counter() - t0)
    resized = second_leg_steps(first_steps, first_leg_steps, first_leg_s, seconds_left)
    steps = first_steps if resized is None else resized
    if resized is not None:
        print(
            f"fresh schedule re-sized: {first_leg_steps} steps in {first_leg_s:.0f} s, "
            f"{steps} steps in all in the {seconds_left / 60.0:.1f} min left",
            flush=True,
        )
        overrides = [*budget_overrides(steps, args.phase1_fraction), *args.overrides]
        _train(args, run_dir, seconds_left / 60.0, overrides, threads, resume=True)
    elif first_leg_steps < first_steps:
        print(
            f"--minutes {args.minutes:g}: no time (or no step) left after the first leg "
            f"({first_leg_steps} of {first_steps} steps); give the fresh run more minutes",
            flush=True,
        )
    return {
        "steps": steps,
        "first_steps": first_steps,
        "first_leg_steps": first_leg_steps,
        "first_leg_s": first_leg_s,
        "steps_per_minute": 60.0 / step_seconds,
        "threads": threads,
        "step_seconds_by_threads": {str(n): s for n, s in timed.items()},
        "calibration_s": calibration_s,
    }


def evaluate(
    checkpoint: Path, corpus: Path, out: Path, examples: int, voices: str
) -> dict[str, Any]:
    _cli(
        [
            "evaluate",
            "--checkpoint",
            str(checkpoint),
            "--data",
            str(corpus),
            "--split",
            "test",
            "--examples",
            str(examples),
            "--seed",
            str(EVAL_SEED),
            "--out",
            str(out),
            "--wrong-reference",
            "--voices",
            voices,
        ]
    )
    return json.loads((out / "metrics.json").read_text())


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
    for row in rows:
        row["estimate"] = out / f"{row['tag']}_estimate.wav"
        _cli(
            [
                "separate",
                "--checkpoint",
                str(checkpoint),
                "--mix",
                str(row["mix"]),
                "--ref",
                str(row["ref"]),
                "-o",
                str(row["estimate"]),
            ]
        )


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


# (key, label, target of the shipped model on real voices, on synthetic voices, target of
# the fresh run on synthetic voices); the fresh run's real-voice figures have no target.
HEADLINE_ROWS = (
    ("tp_si_sdri_db", "TP SI-SDRi (dB)", "≥ 5", "≥ 6", "≥ 2"),
    ("tp_si_sdr_db", "TP SI-SDR (dB)", "", "", ""),
    ("pesq_wb", "PESQ-WB", "", "", ""),
    ("stoi", "STOI", "", "", ""),
    ("rms_ratio", "rms_ratio", "0.85–1.15", "0.85–1.15", "0.8–1.25"),
    ("ta_suppression_db", "TA suppression (dB)", "≥ 20", "≥ 20", "≥ 10"),
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
        "Held-out test voices of the demo corpus, real recorded voices and espeak voices apart "
        f"(`hifi-tse evaluate --split test --seed {EVAL_SEED} --wrong-reference --voices "
        "real|synthetic`). The real test talkers were never heard in training.",
        "",
        "| metric | " + " | ".join(names) + " | target (shipped, real) "
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
        lines += ["", "## Extracted examples (`hifi-tse separate`)", ""]
        lines.append("| example | mixture | enrollment | estimate | reference target |")
        lines.append("|---|---|---|---|---|")
        for row in examples:
            cells = [
                f"[{row[k].name}]({row[k].relative_to(out).as_posix()})"
                for k in ("mix", "ref", "estimate", "target")
            ]
            lines.append(f"| {row['tag']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def schedule_note(schedule: dict[str, Any], phase1_fraction: float) -> str:
    """The report's sentence on how the fresh run's schedule was sized."""
    timed = schedule["step_seconds_by_threads"]
    how = (
        f" measured on this machine in a {schedule['calibration_s']:.0f} s timing run "
        "(s/step by threads: " + ", ".join(f"{n}: {s:.2f}" for n, s in timed.items()) + ")"
        if timed
        else " (--expected-steps-per-minute)"
    )
    legs = (
        f"; its first {schedule['first_leg_steps']} steps took "
        f"{schedule['first_leg_s']:.0f} s, and the schedule was re-sized to that speed"
        if schedule["steps"] != schedule["first_steps"]
        else "; the run finished it in its first leg"
    )
    return (
        f"Fresh run: a schedule of {schedule['first_steps']} steps sized from "
        f"{schedule['steps_per_minute']:.0f} steps/min with {schedule['threads']} torch "
        f"thread(s){how}{legs}: {schedule['steps']} steps in all (phase 2 from step "
        f"{max(int(schedule['steps'] * phase1_fraction), 1)})."
    )


def run(args: argparse.Namespace) -> int:
    from hifi_tse.train.curves import plot_training_curves

    check_timing_args(args)
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
    if "real" not in kinds:
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

    report = render_report(results, links, examples, out, timings, notes)
    atomic_write_text(out / "report.md", report)
    (out / "summary.json").write_text(json.dumps(results, indent=2))
    print("\n" + report.split("\n\nStage times")[0])
    print(f"\nreport: {(out / 'report.md').resolve()}")
    return 0
