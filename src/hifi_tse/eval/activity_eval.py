"""How well target activity (:mod:`hifi_tse.infer.activity`) is detected.

* **Partial-presence mixtures** (``hifi-tse evaluate --activity``): the target talks only
  inside a known window (:func:`hifi_tse.eval.evaluate.make_partial_items`). The truth is the
  windowed clean target's own activity: frames within :data:`TRUTH_RANGE_DB` of its loudest
  frame, gaps under the detector's bridge filled (pauses between words count as talking, as in
  an RTTM turn). Frame precision, recall and F1 are pooled over all frames of a kind of voice.
* **Target-absent mixtures**: the share of frames flagged (every flagged frame is wrong).
* **The two-talker call** of the ``pyannote.audio`` wheel (:func:`evaluate_call`): each
  talker enrolled from :data:`CALL_ENROLL_SECONDS` of their longest stretch alone, scored
  everywhere else against the RTTM: miss (share of the talker's frames not flagged), false
  alarm (share of the other frames flagged) and F1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from hifi_tse.audio.signal import frame_power
from hifi_tse.infer.activity import (
    DEFAULTS,
    FRAME_SECONDS,
    Activity,
    ActivitySettings,
    detect_activity,
    smooth,
    window_similarity,
)

TRUTH_RANGE_DB = 35.0  # a clean-target frame talks within this of the target's loudest frame
TRUTH_SILENCE_POWER = 1e-10  # ... and above this mean power (digital silence never talks)
CALL_ENROLL_SECONDS = 3.5  # enrollment cut from the middle of a talker's longest lone stretch
# The sweep of the call: hysteresis on-thresholds (off = on - HYSTERESIS_DB), speaker checks.
SWEEP_ON_DB = (-16.0, -12.0, -8.0, -4.0)
SWEEP_SPEAKER = (None, 0.7, 0.74, 0.76, 0.78)
HYSTERESIS_DB = 4.0
KINDS = ("real", "synthetic")


# --------------------------------------------------------------------------- frames


def target_truth(target: np.ndarray, sample_rate: int, settings: ActivitySettings) -> np.ndarray:
    """``(T,)`` bool: where the clean ``target (L,)`` talks, on the detector's frames, with
    gaps under ``settings.bridge_seconds`` filled."""
    frame = max(1, int(round(settings.frame_seconds * sample_rate)))
    power = frame_power(target, frame)
    if not power.size or power.max() <= TRUTH_SILENCE_POWER:
        return np.zeros(power.size, dtype=bool)
    db = 10.0 * np.log10(power + TRUTH_SILENCE_POWER)
    talk = (db > db.max() - TRUTH_RANGE_DB) & (power > TRUTH_SILENCE_POWER)
    bridge_only = replace(settings, min_seconds=0.0, hangover_seconds=0.0)
    return smooth(talk, replace(bridge_only, frame_seconds=frame / sample_rate))


def frame_counts(pred: np.ndarray, truth: np.ndarray) -> dict[str, int]:
    """True/false positives/negatives of ``pred`` against ``truth`` (both ``(T,)`` bool; the
    shorter length is used)."""
    n = min(pred.size, truth.size)
    p, t = pred[:n], truth[:n]
    return {
        "tp": int((p & t).sum()),
        "fp": int((p & ~t).sum()),
        "fn": int((~p & t).sum()),
        "tn": int((~p & ~t).sum()),
    }


def rates(c: dict[str, int]) -> dict[str, float | None]:
    """Precision, recall, F1, miss and false-alarm rate of frame counts (None: undefined)."""

    def ratio(a: int, b: int) -> float | None:
        return a / b if b else None

    precision, recall = ratio(c["tp"], c["tp"] + c["fp"]), ratio(c["tp"], c["tp"] + c["fn"])
    f1 = ratio(2 * c["tp"], 2 * c["tp"] + c["fp"] + c["fn"])
    miss = ratio(c["fn"], c["tp"] + c["fn"])
    false_alarm = ratio(c["fp"], c["fp"] + c["tn"])
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "miss": miss,
        "false_alarm": false_alarm,
    }


# --------------------------------------------------------------------------- evaluate


def score_partial_activity(
    est: np.ndarray, item: dict[str, Any], sample_rate: int, settings: ActivitySettings = DEFAULTS
) -> dict[str, Any]:
    """Record fields ``act_tp/fp/fn/tn`` and ``act_f1`` of one partial-presence mixture
    (``item["mix"]``, ``item["target"]`` the windowed target, ``(L,)`` at ``sample_rate``)."""
    act = detect_activity(item["mix"], est, sample_rate, settings)
    counts = frame_counts(act.active, target_truth(item["target"], sample_rate, settings))
    return {**{f"act_{k}": v for k, v in counts.items()}, "act_f1": rates(counts)["f1"]}


def score_ta_activity(
    est: np.ndarray, mix: np.ndarray, sample_rate: int, settings: ActivitySettings = DEFAULTS
) -> dict[str, Any]:
    """Record fields of a target-absent mixture: ``act_frames``, ``act_flagged`` frames."""
    act = detect_activity(mix, est, sample_rate, settings)
    return {"act_frames": int(act.active.size), "act_flagged": int(act.active.sum())}


def partial_activity(
    est: np.ndarray,
    item: dict[str, Any],
    sample_rate: int,
    kind_of_source: dict[str, str] | None = None,
) -> dict[str, Any]:
    """:func:`score_partial_activity` plus the ``voice_kind`` of the item's target talker
    (``kind_of_source``: speech source -> ``real`` / ``synthetic``)."""
    speaker = (item.get("meta") or {}).get("target_speaker") or ""
    kind = (kind_of_source or {}).get(speaker.split("/", 1)[0]) if speaker else None
    return {**score_partial_activity(est, item, sample_rate), "voice_kind": kind}


def _partial_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    counts = {k: sum(int(r[f"act_{k}"]) for r in records) for k in ("tp", "fp", "fn", "tn")}
    return {"count": len(records), **rates(counts)}


def _ta_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    frames = sum(r["act_frames"] for r in records)
    flagged = sum(r["act_flagged"] for r in records)
    return {
        "count": len(records),
        "flagged_share": flagged / frames if frames else None,
        "examples_flagged": sum(1 for r in records if r["act_flagged"]),
    }


def activity_block(
    records: Sequence[dict[str, Any]], partial: Sequence[dict[str, Any]]
) -> dict[str, Any] | None:
    """metrics.json's ``activity``: partial-presence frame precision/recall/F1 and the TA
    share of frames flagged, for all examples and per kind of voice (None: not scored)."""
    ta = [r for r in records if not r["target_present"] and "act_frames" in r]
    pp = [r for r in partial if "act_tp" in r]
    if not ta and not pp:
        return None
    block: dict[str, Any] = {"settings": asdict(DEFAULTS)}
    groups = [("all", lambda r: True)] + [
        (k, lambda r, k=k: r.get("voice_kind") == k) for k in KINDS
    ]
    for name, keep in groups:
        sub_pp, sub_ta = [r for r in pp if keep(r)], [r for r in ta if keep(r)]
        if sub_pp or sub_ta:
            block[name] = {
                "partial": _partial_summary(sub_pp) if sub_pp else None,
                "ta": _ta_summary(sub_ta) if sub_ta else None,
            }
    return block


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _f(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def markdown_lines(block: dict[str, Any] | None) -> list[str]:
    """report.md's "Target activity" section (empty when not scored)."""
    if not block:
        return []
    out = [
        "",
        "## Target activity (`--activity`)",
        "",
        "Frames of 20 ms flagged by `hifi_tse.infer.activity` (estimate level against the "
        "mixture's, default thresholds) against the clean target's activity on the "
        "partial-presence mixtures; on target-absent mixtures every flagged frame is wrong.",
        "",
        "| voices | partial n | precision | recall | F1 | TA n | TA frames flagged "
        "| TA examples with a flag |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in ("all", *KINDS):
        g = block.get(name)
        if not g:
            continue
        pp, ta = g["partial"] or {}, g["ta"] or {}
        out.append(
            f"| {name} | {pp.get('count', 0)} | {_f(pp.get('precision'))} "
            f"| {_f(pp.get('recall'))} | {_f(pp.get('f1'))} | {ta.get('count', 0)} "
            f"| {_pct(ta.get('flagged_share'))} | {ta.get('examples_flagged', '–')} |"
        )
    return out


# --------------------------------------------------------------------------- the call


@dataclass(frozen=True)
class Call:
    """The two-talker sample call: ``audio (L,)`` float32 at ``sample_rate``, RTTM turns."""

    audio: np.ndarray
    sample_rate: int
    turns: list[tuple[str, float, float]]
    name: str

    @property
    def speakers(self) -> list[str]:
        return sorted({s for s, _, _ in self.turns})


def load_call(sample: Path | None = None) -> Call | None:
    """The ``pyannote.audio`` wheel's sample call (``sample.wav`` + ``sample.rttm``; None when
    the wheel is not installed: ``pip install --no-deps pyannote.audio``)."""
    from hifi_tse.audio.io import read_audio
    from hifi_tse.data.real_voices import _pyannote_sample, rttm_turns

    sample = sample if sample is not None else _pyannote_sample()
    if sample is None:
        return None
    wav_path, rttm_path = sample.with_suffix(".wav"), sample.with_suffix(".rttm")
    if not (wav_path.is_file() and rttm_path.is_file()):
        return None
    audio, rate = read_audio(wav_path)
    return Call(audio, rate, rttm_turns(rttm_path.read_text().splitlines()), wav_path.name)


def enrollment_span(call: Call, speaker: str) -> tuple[float, float]:
    """(start, end) s: :data:`CALL_ENROLL_SECONDS` from the middle of the talker's longest
    stretch where nobody else talks (all of it when shorter)."""
    from hifi_tse.data.real_voices import single_talker_spans

    spans = [(a, b) for s, a, b in single_talker_spans(call.turns, 0.0) if s == speaker]
    a, b = max(spans, key=lambda ab: ab[1] - ab[0])
    mid, half = 0.5 * (a + b), 0.5 * min(CALL_ENROLL_SECONDS, b - a)
    return mid - half, mid + half


def _truth(call: Call, speaker: str, frames: int, per: float) -> np.ndarray:
    t = (np.arange(frames) + 0.5) * per
    truth = np.zeros(frames, dtype=bool)
    for s, a, b in call.turns:
        if s == speaker:
            truth |= (t >= a) & (t < b)
    return truth


@dataclass
class CallTalker:
    """One talker of the call: extraction, truth and the frames scored."""

    speaker: str
    enroll: tuple[float, float]
    mixture: np.ndarray  # (L,) at the model rate
    estimate: np.ndarray  # (L,) at the model rate
    similarity: np.ndarray  # (T,) speaker check cosine of every frame
    truth: np.ndarray  # (T,) bool, the RTTM
    scored: np.ndarray  # (T,) bool, everything but the enrollment


def extract_call(extractor: Any, call: Call) -> list[CallTalker]:
    """Enroll each talker from its :func:`enrollment_span` and extract it from the whole
    call (one pass each); the speaker check's cosines are computed for every frame once,
    so settings can be compared without running the model again."""
    from hifi_tse.audio.io import resample

    rate = extractor.sample_rate
    mix = resample(call.audio, call.sample_rate, rate)
    per = max(1, round(FRAME_SECONDS * rate)) / rate
    frames = mix.size // max(1, round(FRAME_SECONDS * rate))
    out = []
    for speaker in call.speakers:
        a, b = enrollment_span(call, speaker)
        ref = mix[int(a * rate) : int(b * rate)]
        est = extractor.extract(mix, rate, extractor.enroll(ref, rate, name=speaker))
        sim = _similarity_or_nan(extractor, mix, ref, rate, frames, per)
        t = (np.arange(frames) + 0.5) * per
        out.append(
            CallTalker(
                speaker,
                (a, b),
                mix,
                est,
                sim,
                _truth(call, speaker, frames, per),
                ~((t >= a) & (t < b)),
            )  # fmt: skip
        )
    return out


def _similarity_or_nan(
    extractor: Any, mix: np.ndarray, ref: np.ndarray, rate: int, frames: int, per: float
) -> np.ndarray:
    """Speaker-check cosines of every frame (NaN when the GE2E weights are missing)."""
    from hifi_tse.errors import UserError

    try:
        encoder = extractor.speaker_encoder()
    except UserError:
        return np.full(frames, np.nan, dtype=np.float32)
    return window_similarity(encoder, mix, ref, rate, np.ones(frames, dtype=bool), per)


def score_talker(talker: CallTalker, rate: int, settings: ActivitySettings) -> dict[str, Any]:
    """Miss, false alarm, precision, recall and F1 of one talker under ``settings``."""
    act = talker_activity(talker, rate, settings)
    s = talker.scored[: act.active.size]
    counts = frame_counts(act.active[s], talker.truth[: act.active.size][s])
    return {"speaker": talker.speaker, "enroll_seconds": list(talker.enroll), **rates(counts)}


def talker_activity(talker: CallTalker, rate: int, settings: ActivitySettings) -> Activity:
    def cached(candidates: np.ndarray) -> np.ndarray:
        return np.where(candidates, talker.similarity[: candidates.size], np.nan)

    return detect_activity(talker.mixture, talker.estimate, rate, settings, cached)


def evaluate_call(
    extractor: Any, settings: Sequence[tuple[str, ActivitySettings]] | None = None
) -> dict[str, Any] | None:
    """The call's activity figures per talker for each named setting (default: the level
    detector, and it with the speaker check), plus a sweep of thresholds. None without the
    pyannote wheel. Returns ``{"call", "results": {name: [talker rows]}, "sweep": rows,
    "talkers": [CallTalker]}``."""
    call = load_call()
    if call is None:
        return None
    rate = extractor.sample_rate
    talkers = extract_call(extractor, call)
    has_sim = bool(np.isfinite(talkers[0].similarity).any())
    if settings is None:
        settings = [("level", DEFAULTS)]
        if has_sim:
            from hifi_tse.infer.activity import SPEAKER_THRESHOLD

            settings.append(
                ("level + speaker check", replace(DEFAULTS, speaker_threshold=SPEAKER_THRESHOLD))
            )
    results = {name: [score_talker(t, rate, s) for t in talkers] for name, s in settings}
    sweep = []
    for on in SWEEP_ON_DB:
        for check in SWEEP_SPEAKER if has_sim else (None,):
            s = replace(DEFAULTS, on_db=on, off_db=on - HYSTERESIS_DB, speaker_threshold=check)
            rows = [score_talker(t, rate, s) for t in talkers]
            sweep.append({"on_db": on, "speaker_threshold": check, "talkers": rows})
    return {"call": call.name, "results": results, "sweep": sweep, "talkers": talkers}


def call_markdown(result: dict[str, Any], figure: str | None) -> list[str]:
    """The demo report's section on the call (tables, figure link)."""
    out = [
        f"Each talker of `{result['call']}` (the `pyannote.audio` sample) enrolled from "
        f"{CALL_ENROLL_SECONDS:g} s of their longest stretch alone, scored on the rest of the "
        "call against its RTTM (20 ms frames). Targets: F1 ≥ 0.75 per talker.",
        "",
        "| detector | talker | miss | false alarm | precision | recall | F1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rows in result["results"].items():
        for r in rows:
            out.append(
                f"| {name} | {r['speaker']} | {_pct(r['miss'])} | {_pct(r['false_alarm'])} "
                f"| {_f(r['precision'])} | {_f(r['recall'])} | {_f(r['f1'])} |"
            )
    speakers = [r["speaker"] for r in result["sweep"][0]["talkers"]]
    out += [
        "",
        "F1 per talker by threshold (on threshold, off 4 dB lower; speaker check cosine):",
        "",
        "| on (dB) | speaker check | " + " | ".join(speakers) + " |",
        "|---|---|" + "---|" * len(speakers),
    ]
    for row in result["sweep"]:
        check = "–" if row["speaker_threshold"] is None else f"{row['speaker_threshold']:g}"
        cells = " | ".join(_f(t["f1"]) for t in row["talkers"])
        out.append(f"| {row['on_db']:g} | {check} | {cells} |")
    if figure:
        out += ["", f"![activity on the call]({figure})"]
    return out


def plot_call(
    result: dict[str, Any],
    rate: int,
    path: Path,
    settings: Sequence[tuple[str, ActivitySettings]],
) -> None:
    """Mixture, each talker's estimate, and its detected activity (one line per named
    setting) against the RTTM, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    talkers: list[CallTalker] = result["talkers"]
    rows = 1 + 2 * len(talkers)
    fig, axes = plt.subplots(rows, 1, figsize=(10, 1.4 * rows), sharex=True)
    t = np.arange(talkers[0].mixture.size) / rate
    axes[0].plot(t, talkers[0].mixture, lw=0.3, color="0.3")
    axes[0].set_ylabel("mixture", fontsize=8)
    for k, talker in enumerate(talkers):
        ax_est, ax_act = axes[1 + 2 * k], axes[2 + 2 * k]
        ax_est.plot(t, talker.estimate, lw=0.3, color=f"C{k}")
        ax_est.set_ylabel(f"estimate\n{talker.speaker}", fontsize=8)
        per = max(1, round(FRAME_SECONDS * rate)) / rate
        ft = (np.arange(talker.truth.size) + 0.5) * per
        ax_act.fill_between(ft, 0, talker.truth * 1.0, step="mid", color="0.85", label="RTTM")
        ax_act.axvspan(*talker.enroll, color="gold", alpha=0.3, label="enrollment")
        for j, (name, setting) in enumerate(settings):
            act = talker_activity(talker, rate, setting)
            height = 0.85 - 0.15 * j  # one level per detector, so the lines do not hide
            ax_act.step(ft[: act.active.size], act.active * height, where="mid",
                        color=f"C{2 + j}", label=name)  # fmt: skip
        ax_act.set_yticks([])
        ax_act.set_ylabel(f"activity\n{talker.speaker}", fontsize=8)
        ax_act.legend(loc="upper left", fontsize=6, ncol=4)
    axes[-1].set_xlabel("time (s)")
    axes[0].set_title(f"target activity on {result['call']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


CALL_FIGURE = "call_activity.png"
CALL_JSON = "call_activity.json"


def call_activity_section(checkpoint: Path, out: Path) -> str | None:
    """The demo's check of activity against truth: run :func:`evaluate_call` with the
    checkpoint, write ``out/call_activity.png`` and ``.json``, return the report section
    (markdown; None when the pyannote wheel is missing)."""
    import json

    from hifi_tse.api import Extractor
    from hifi_tse.infer.activity import SPEAKER_THRESHOLD
    from hifi_tse.utils import atomic_write_text

    extractor = Extractor.from_checkpoint(checkpoint)
    result = evaluate_call(extractor)
    if result is None:
        print("no pyannote.audio sample call: skipping the activity check")
        return None
    named = [("level", DEFAULTS)]
    if "level + speaker check" in result["results"]:
        named.append(
            ("level + speaker check", replace(DEFAULTS, speaker_threshold=SPEAKER_THRESHOLD))
        )
    plot_call(result, extractor.sample_rate, out / CALL_FIGURE, named)
    summary = {k: v for k, v in result.items() if k != "talkers"}
    atomic_write_text(out / CALL_JSON, json.dumps(summary, indent=2))
    for name, rows in result["results"].items():
        f1 = ", ".join(f"{r['speaker']} {_f(r['f1'])}" for r in rows)
        print(f"activity on the call ({name}): F1 {f1}", flush=True)
    return "\n".join(call_markdown(result, CALL_FIGURE))
