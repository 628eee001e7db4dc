"""Score a generator on a fixed test set or on a list of pre-mixed files.

Python API (the demo calls these)::

    metrics = evaluate_checkpoint("runs/x/checkpoint_best.pt", out_dir=Path("eval"),
                                  data=Path("packs"), split="test", examples=200, seed=0)
    metrics = evaluate_model(extractor, items, EvalOptions(...), out_dir=Path("eval"))

Every estimate comes from :class:`hifi_tse.Extractor` (``extract_pairs``), the same API a
user's script calls.

``items`` are dataset items (dicts with ``mix (L,)``, ``ref (L_ref,)``, ``target (L,)``
float32, ``target_present``, ``snr_db``, ``num_interferers``, ``index``, ``meta``) as
produced by :class:`hifi_tse.data.datasets.FixedExampleSet` or :func:`load_list_items`.
Outputs (metrics.json, per_example.csv, report.md, figures/, examples/) are described in
:mod:`hifi_tse.eval.report`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hifi_tse.api import BATCH_CHUNKS, Extractor
from hifi_tse.audio.io import load_audio
from hifi_tse.checkpoints import read_checkpoint
from hifi_tse.config import Config, ConfigError, apply_overrides, config_from_dict
from hifi_tse.data.datasets import FixedExampleSet
from hifi_tse.data.store import load_report, speech_source_voices
from hifi_tse.errors import UserError
from hifi_tse.eval.activity_eval import partial_activity, score_ta_activity
from hifi_tse.eval.dnsmos import DnsmosScorer
from hifi_tse.eval.metrics import region_energy_db, score_example, si_sdr
from hifi_tse.eval.report import snr_bin_label, write_report
from hifi_tse.eval.similarity import SpeakerSimilarity
from hifi_tse.infer.separate import read_csv_rows


@dataclass(frozen=True)
class EvalOptions:
    """How to evaluate (values come from the CLI flags or the caller)."""

    batch_size: int  # examples per forward pass
    perceptual: bool  # compute PESQ-WB and STOI
    wrong_reference: bool  # also score every TP example with another speaker's enrollment
    snr_edges: tuple[float, ...]  # ascending SNR bin edges, dB
    chunk_seconds: float  # mixtures longer than one chunk (list mode) are chunked, s
    overlap_seconds: float  # cross-fade between chunks, s
    partial_window: tuple[float, float]  # target-active window, fractions of the length
    partial_ramp_seconds: float  # raised-cosine on/off ramp of the windowed target, s
    device: str = "cpu"
    progress: bool = True
    speaker_similarity: bool = True  # GE2E cosines (skipped with a warning without weights)
    precision: str = "fp32"  # or "bf16" (autocast; native-bf16 devices)
    dnsmos: bool = False  # no-reference DNSMOS of mixture and estimate (speechmos's models)
    activity: bool = False  # target-activity frames on partial-presence and TA mixtures


# --------------------------------------------------------------------------- inputs


def load_list_items(path: Path, sample_rate: int) -> list[dict[str, Any]]:
    """Items from a CSV of ``mix, ref, target`` WAV paths (target empty = target absent).

    Files are resampled to ``sample_rate`` and downmixed; a target must have the mixture's
    length (at the model rate, ±1 sample of resampling rounding is trimmed/padded).
    """
    items = []
    for i, row in enumerate(read_csv_rows(path, ["mix", "ref", "target"], required=2)):
        mix = load_audio(row["mix"], sample_rate)
        ref = np.concatenate([load_audio(p, sample_rate) for p in row["ref"].split(";")])
        if not np.any(ref):
            raise UserError(f"{row['ref']}: reference is all zeros (digital silence)")
        present = bool(row["target"])
        if present:
            target = load_audio(row["target"], sample_rate)
            if abs(target.size - mix.size) > 1:
                raise UserError(
                    f"{row['target']}: target has {target.size} samples at {sample_rate} Hz, "
                    f"the mixture {mix.size}; expected equal lengths"
                )
            target = np.pad(target, (0, max(0, mix.size - target.size)))[: mix.size]
        else:
            target = np.zeros_like(mix)
        items.append(
            {
                "mix": mix,
                "ref": ref,
                "target": target,
                "target_present": present,
                "snr_db": float("nan"),
                "num_interferers": -1,
                "index": i,
                "meta": {"name": Path(row["mix"]).name, "ref_path": row["ref"]},
            }
        )
    return items


def _speakers(item: dict[str, Any]) -> set[str]:
    meta = item.get("meta") or {}
    spk = {meta.get("target_speaker")} | set(meta.get("interferer_speakers") or [])
    return {s for s in spk if s}


def wrong_reference_pairs(items: Sequence[dict[str, Any]]) -> dict[int, int]:
    """For each TP position ``i``, the position ``j`` whose enrollment is another speaker's.

    Preference: the next example (cyclically) whose target speaker talks nowhere in mixture
    ``i``; else one whose target speaker is not ``i``'s target. Without speaker metadata
    (list mode) the next example with a different reference file is used.
    """
    n = len(items)
    pairs: dict[int, int] = {}
    for i, it in enumerate(items):
        if not it["target_present"]:
            continue
        meta_i = it.get("meta") or {}
        own = meta_i.get("target_speaker")
        in_mix = _speakers(it)
        fallback = None
        for step in range(1, n):
            j = (i + step) % n
            meta_j = items[j].get("meta") or {}
            spk = meta_j.get("target_speaker")
            if own is None:
                if meta_j.get("ref_path") != meta_i.get("ref_path"):
                    fallback = j
                    break
                continue
            if spk is None or spk == own:
                continue
            if spk not in in_mix:
                pairs[i] = j
                break
            if fallback is None:
                fallback = j
        if i not in pairs and fallback is not None:
            pairs[i] = fallback
    return pairs


# --------------------------------------------------------------------------- running


def _forward(
    extractor: Extractor, mixes: list[np.ndarray], refs: list[np.ndarray]
) -> list[np.ndarray]:
    """Estimates of one batch of mixtures, each with its own enrollment, at the model rate."""
    return extractor.extract_pairs(mixes, refs, extractor.sample_rate, batch_size=len(mixes))


def _stream_batches(
    items: Sequence[dict[str, Any]], positions: Sequence[int], size: int
) -> Iterator[list[tuple[int, dict[str, Any]]]]:
    """Batches of ``(position, item)`` with equal mixture and enrollment lengths (≤ ``size``),
    reading each item once, in order: a :class:`FixedExampleSet` is generated lazily, so
    memory holds one batch, not the whole set."""
    batch: list[tuple[int, dict[str, Any]]] = []
    for i in positions:
        it = items[i]
        if batch and (
            len(batch) == size
            or it["mix"].size != batch[0][1]["mix"].size
            or it["ref"].size != batch[0][1]["ref"].size
        ):
            yield batch
            batch = []
        batch.append((i, it))
    if batch:
        yield batch


def _record(
    position: int, item: dict[str, Any], scores: dict[str, Any], edges: Sequence[float]
) -> dict:
    meta = item.get("meta") or {}
    snr = item.get("snr_db")
    snr = float(snr) if snr is not None and math.isfinite(float(snr)) else None
    n_int = int(item.get("num_interferers", -1))
    speaker = meta.get("target_speaker")
    return {
        "position": position,
        "index": int(item["index"]),
        "name": meta.get("name") or f"example_{int(item['index']):05d}",
        "target_present": bool(item["target_present"]),
        "snr_db": snr,
        "snr_bin": snr_bin_label(snr, edges),
        "num_interferers": n_int if n_int >= 0 else "unknown",
        "target_speaker": speaker,
        # the speech source of the enrolled talker ("source/speaker" ids)
        "target_source": speaker.split("/", 1)[0] if speaker else None,
        **scores,
    }


def _window(length: int, start: int, stop: int, ramp: int) -> np.ndarray:
    """``(length,)`` gain: 1 on ``[start, stop)``, 0 elsewhere, raised-cosine edges of
    ``ramp`` samples inside the window (so the target has no clicks)."""
    w = np.zeros(length, dtype=np.float32)
    w[start:stop] = 1.0
    ramp = min(ramp, (stop - start) // 2)
    if ramp > 0:
        r = (0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp) + 0.5) / ramp)).astype(np.float32)
        w[start : start + ramp] = r
        w[stop - ramp : stop] = r[::-1]
    return w


def make_partial_items(
    items: Sequence[dict[str, Any]], window: tuple[float, float], ramp_seconds: float, sr: int
) -> list[dict[str, Any]]:
    """Partial-presence mixtures from TP items: the target talks only inside ``window``.

    ``mix' = (mix - target) + target * w`` with ``w`` the window gain: interferers and noise
    are untouched, the target is silenced outside the window. Items get ``region``
    ``(start, stop)`` samples.
    """
    out = []
    for it in items:
        if not it["target_present"]:
            continue
        length = it["mix"].size
        start, stop = int(round(window[0] * length)), int(round(window[1] * length))
        w = _window(length, start, stop, int(round(ramp_seconds * sr)))
        target = it["target"] * w
        mix = it["mix"] - it["target"] + target
        out.append({**it, "mix": mix.astype(np.float32), "target": target, "region": (start, stop)})
    return out


def score_partial(est: np.ndarray, item: dict[str, Any], sr: int) -> dict[str, Any]:
    """Output energy before / inside / after the target window, contrast and window SI-SDR."""
    start, stop = item["region"]
    length = est.size
    ta = np.concatenate([est[:start], est[stop:]])
    tp_db = region_energy_db(est, start, stop)
    ta_db = region_energy_db(ta, 0, ta.size)
    return {
        "index": int(item["index"]),
        "ta_before_db": region_energy_db(est, 0, start) if start > 0 else None,
        "tp_db": tp_db,
        "ta_after_db": region_energy_db(est, stop, length) if stop < length else None,
        "contrast_db": tp_db - ta_db if ta.size else None,
        "si_sdr_tp_region": si_sdr(est[start:stop], item["target"][start:stop]),
        "window_seconds": [start / sr, stop / sr],
        "length_seconds": length / sr,
    }


def _similarities(
    similarity: SpeakerSimilarity | None,
    batch: list[tuple[int, dict[str, Any]]],
    ests: list[np.ndarray],
    sr: int,
) -> list[dict[str, float | None]]:
    """GE2E cosines of the TP examples of a batch (empty dicts without a scorer)."""
    if similarity is None:
        return [{} for _ in batch]
    present = [bool(it["target_present"]) for _, it in batch]
    return similarity.score(
        [e if p else None for e, p in zip(ests, present)],
        [it["mix"] if p else None for (_, it), p in zip(batch, present)],
        [it["ref"] if p else None for (_, it), p in zip(batch, present)],
        [it["target"] if p else None for (_, it), p in zip(batch, present)],
        sr,
    )


def _dnsmos_fields(
    scorer: DnsmosScorer | None,
    batch: list[tuple[int, dict[str, Any]]],
    ests: list[np.ndarray],
    sr: int,
) -> list[dict[str, float]]:
    """DNSMOS of each mixture and estimate of a batch (empty dicts without a scorer)."""
    if scorer is None:
        return [{} for _ in batch]
    return scorer.compare([it["mix"] for _, it in batch], ests, sr)


def _dnsmos_scorer() -> DnsmosScorer:
    """The DNSMOS scorer on as many CPU threads as the model's torch runs on (``--threads``)."""
    import torch

    return DnsmosScorer(threads=torch.get_num_threads())


def _score_wrong_references(
    extractor: Extractor,
    items: Sequence[dict[str, Any]],
    records: list[dict[str, Any]],
    metas: list[dict[str, Any]],
    opts: EvalOptions,
    quiet: bool | None,
) -> None:
    """Add ``si_sdr_wrong`` / ``si_sdri_wrong`` to the TP records: each mixture run with
    another speaker's enrollment (:func:`wrong_reference_pairs`)."""
    from tqdm import tqdm

    pairs = wrong_reference_pairs(metas)
    swapped = _Swapped(items, pairs)
    for batch in tqdm(
        _stream_batches(swapped, sorted(pairs), opts.batch_size),
        total=-(-len(pairs) // opts.batch_size),
        desc="wrong reference",
        unit="batch",
        disable=quiet,
    ):
        ests = _forward(extractor, [it["mix"] for _, it in batch], [it["ref"] for _, it in batch])
        for (i, it), est in zip(batch, ests):
            r = records[i]
            r["si_sdr_wrong"] = si_sdr(est, it["target"])
            r["si_sdri_wrong"] = r["si_sdr_wrong"] - r["si_sdr_mix"]
            meta_j = metas[pairs[i]]["meta"] or {}
            r["wrong_ref_speaker"] = meta_j.get("target_speaker") or meta_j.get("ref_path")


def evaluate_model(
    extractor: Extractor,
    items: Sequence[dict[str, Any]],
    opts: EvalOptions,
    out_dir: Path | None = None,
    partial_items: Sequence[dict[str, Any]] = (),
    info: dict[str, Any] | None = None,
    kind_of_source: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Score ``extractor`` on ``items`` (at its model rate); write the report into
    ``out_dir`` (when given).

    ``partial_items``: TP items to turn into partial-presence mixtures (empty = skip).
    ``kind_of_source``: speech source -> ``"real"`` / ``"synthetic"`` (the prepare report's
    tags), for the breakdown by kind of enrolled voice.
    Returns the metrics dict (the content of metrics.json).
    """
    from tqdm import tqdm

    if not items:
        raise UserError("evaluation set is empty")
    sr = extractor.sample_rate
    similarity = SpeakerSimilarity.try_load(opts.device) if opts.speaker_similarity else None
    dnsmos = _dnsmos_scorer() if opts.dnsmos else None  # asked for: a missing wheel is an error
    records: list[dict[str, Any]] = []
    metas: list[dict[str, Any]] = []  # light copies for the wrong-reference pairing
    quiet = None if opts.progress else True  # None: bar only on a terminal
    with tqdm(total=len(items), desc="evaluate", unit="ex", disable=quiet) as bar:
        for batch in _stream_batches(items, range(len(items)), opts.batch_size):
            ests = _forward(
                extractor, [it["mix"] for _, it in batch], [it["ref"] for _, it in batch]
            )
            sims = _similarities(similarity, batch, ests, sr)
            quality = _dnsmos_fields(dnsmos, batch, ests, sr)
            for (i, it), est, sim, dq in zip(batch, ests, sims, quality):
                scores = score_example(
                    est, it["mix"], it["target"], it["target_present"], sr, opts.perceptual
                )
                records.append(_record(i, it, {**scores, **sim, **dq}, opts.snr_edges))
                if opts.activity and not it["target_present"]:
                    records[-1].update(score_ta_activity(est, it["mix"], sr))
                metas.append({"target_present": it["target_present"], "meta": it.get("meta")})
            bar.update(len(batch))
    for r in records:  # the kind of the enrolled voice (None in list mode)
        r["voice_kind"] = (kind_of_source or {}).get(r["target_source"])

    if opts.wrong_reference:
        _score_wrong_references(extractor, items, records, metas, opts, quiet)

    partial_records: list[dict[str, Any]] = []
    if partial_items:
        for batch in tqdm(
            _stream_batches(partial_items, range(len(partial_items)), opts.batch_size),
            desc="partial presence",
            disable=quiet,
        ):
            pp = make_partial_items(
                [it for _, it in batch], opts.partial_window, opts.partial_ramp_seconds, sr
            )
            if pp:
                ests = _forward(extractor, [p["mix"] for p in pp], [p["ref"] for p in pp])
                partial_records += [
                    {
                        **score_partial(e, p, sr),
                        **(partial_activity(e, p, sr, kind_of_source) if opts.activity else {}),
                    }
                    for p, e in zip(pp, ests)
                ]

    info = dict(info or {})
    info.setdefault("examples", len(items))
    info.setdefault("sample_rate", sr)
    if out_dir is None:
        from hifi_tse.eval.report import build_metrics

        return build_metrics(records, partial_records, info)
    audio = _example_audio(extractor, items, records)
    return write_report(Path(out_dir), records, partial_records, info, audio, sr)


class _Swapped:
    """View of ``items`` where item ``i`` carries the enrollment of item ``pairs[i]``."""

    def __init__(self, items: Sequence[dict[str, Any]], pairs: dict[int, int]) -> None:
        self.items, self.pairs = items, pairs

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.items[i], "ref": self.items[self.pairs[i]]["ref"]}


def _example_audio(
    extractor: Extractor, items: Sequence[dict[str, Any]], records: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Re-run the best, median and worst TP examples (by SI-SDRi) for figures and WAVs."""
    tp = sorted(
        (r for r in records if r["target_present"] and r["si_sdri"] is not None),
        key=lambda r: r["si_sdri"],
    )
    if not tp:
        return {}
    chosen = {"best": tp[-1], "median": tp[len(tp) // 2], "worst": tp[0]}
    out = {}
    for which, rec in chosen.items():
        it = items[rec["position"]]
        (est,) = _forward(extractor, [it["mix"]], [it["ref"]])
        out[which] = {
            "record": rec,
            "mixture": it["mix"],
            "reference": it["ref"],
            "estimate": est,
            "target": it["target"],
        }
    return out


# --------------------------------------------------------------------------- checkpoint entry


def _with_overrides(cfg: Config, overrides: Sequence[str], option: str) -> Config:
    """``cfg`` with ``KEY=VALUE`` ``overrides`` applied and checked against the config
    schema; a refused value is a one-line :class:`UserError` naming ``option``."""
    if not overrides:
        return cfg
    try:
        return config_from_dict(apply_overrides(cfg.to_dict(), list(overrides)))
    except ConfigError as exc:
        raise UserError(f"{option}: {exc}") from None


def mixing_config(cfg: Config, overrides: Sequence[str]) -> Config:
    """``cfg`` with ``mixing.KEY=VALUE`` overrides applied (the settings test mixtures are
    built with; the old name ``data.KEY`` of a mixing key is accepted); any other section is
    refused, since the model's own settings must not change."""
    from hifi_tse.config import current_key

    for item in overrides:
        if not current_key(item.split("=", 1)[0].strip()).startswith("mixing."):
            raise UserError(f"--mix-set {item!r}: expected mixing.KEY=VALUE")
    return _with_overrides(cfg, overrides, "--mix-set")


def enrollment_config(cfg: Config, ref_seconds: float | None) -> Config:
    """``cfg`` with the enrollment crop length ``audio.ref_seconds`` set to ``ref_seconds``
    (s; ``None`` keeps it), checked against the config schema's bounds."""
    if ref_seconds is None:
        return cfg
    overrides = [f"audio.ref_seconds={ref_seconds}"]
    return _with_overrides(cfg, overrides, f"--ref-seconds {ref_seconds}")


def _evaluate_no_target(
    checkpoint: Path, out_dir: Path | None, opts: EvalOptions, list_path: Path | None, ema: bool
) -> dict[str, Any]:
    """``evaluate --list --no-target``: mixture + enrollment rows, speaker similarity only."""
    if list_path is None:
        raise UserError("--no-target: applies to --list (mix, ref rows), not to --data")
    if out_dir is None:
        raise UserError("--no-target: an output folder is needed")
    from hifi_tse.eval.unlabelled import evaluate_unlabelled, load_unlabelled_items

    extractor = load_extractor(checkpoint, opts, ema)
    items = load_unlabelled_items(Path(list_path), extractor.sample_rate)
    return evaluate_unlabelled(extractor, items, Path(out_dir), opts.device, opts.dnsmos)


def load_extractor(checkpoint: Path, opts: EvalOptions, use_ema: bool = True) -> Extractor:
    """The checkpoint's :class:`Extractor` with the evaluation's device, precision and
    chunking."""
    return Extractor.from_checkpoint(
        checkpoint,
        opts.device,
        use_ema=use_ema,
        precision=opts.precision,
        chunk_seconds=opts.chunk_seconds,
        overlap_seconds=opts.overlap_seconds,
        batch_chunks=BATCH_CHUNKS,
    )


def _partial_presence_set(
    data: Path,
    mix_cfg: Config,
    split: str,
    seed: int,
    n: int,
    seconds: float | None,
    voices: str | None,
) -> FixedExampleSet:
    """``n`` TP mixtures of ``seconds`` (default: two training segments) from ``split``, in
    which the target talks for part of the time (phase 1: no TA mixtures)."""
    seconds = seconds or 2.0 * mix_cfg.audio.segment_seconds
    long_cfg = dataclasses.replace(
        mix_cfg, audio=dataclasses.replace(mix_cfg.audio, segment_seconds=seconds)
    )
    return FixedExampleSet(data, long_cfg, split=split, seed=seed, n=n, phase=1, voices=voices)


def evaluate_checkpoint(
    checkpoint: Path,
    out_dir: Path | None,
    opts: EvalOptions,
    data: Path | None = None,
    list_path: Path | None = None,
    split: str = "test",
    examples: int = 200,
    seed: int = 0,
    partial_presence: bool = False,
    partial_seconds: float | None = None,
    partial_examples: int | None = None,
    use_ema: bool = True,
    mix_overrides: Sequence[str] = (),
    voices: str | None = None,
    no_target: bool = False,
    ref_seconds: float | None = None,
) -> dict[str, Any]:
    """Load ``checkpoint`` (architecture and EMA weights from the file) and evaluate it.

    Exactly one of ``data`` (packs dir: a :class:`FixedExampleSet` of ``examples`` items
    from ``split``, seeded by ``seed``) and ``list_path`` (CSV of mix, ref, target).
    Partial presence (``data`` mode) draws TP mixtures of ``partial_seconds`` (default: two
    training segments) from the same split with seed ``seed + 1``.
    The ``data`` mixtures follow the checkpoint's ``data`` settings, changed by
    ``mix_overrides`` (``data.KEY=VALUE``), so that checkpoints trained with different data
    settings can be scored on the same mixtures. ``voices`` (``real`` / ``synthetic``)
    mixes only speakers of that kind (``data`` mode). ``no_target``: the list holds
    ``mix, ref`` only and is scored by speaker similarity (:mod:`hifi_tse.eval.unlabelled`).
    ``ref_seconds`` (``data`` mode) replaces the checkpoint's enrollment length; each
    mixture is drawn before its enrollment, so the mixtures stay the same.
    """
    if no_target:
        return _evaluate_no_target(checkpoint, out_dir, opts, list_path, use_ema)
    if (data is None) == (list_path is None):
        raise UserError("evaluate: give exactly one of --data (packs dir) and --list (CSV)")
    data_only = {"--mix-set": bool(mix_overrides), "--ref-seconds": ref_seconds is not None}
    refused = [flag for flag, given in data_only.items() if given and data is None]
    if refused:
        raise UserError(f"{refused[0]}: applies to --data mixtures only, not to --list")
    extractor = load_extractor(checkpoint, opts, use_ema)
    ckpt = read_checkpoint(checkpoint)
    cfg, step = config_from_dict(ckpt["config"]), ckpt.get("step")
    mix_cfg = enrollment_config(mixing_config(cfg, mix_overrides), ref_seconds)
    sr = extractor.sample_rate
    partial: Sequence[dict[str, Any]] = []
    if data is not None:
        items = FixedExampleSet(
            Path(data), mix_cfg, split=split, seed=seed, n=examples, phase=2, voices=voices
        )  # generated lazily, item by item
        which = f", {voices} voices" if voices else ""
        source = f"{data} split={split} (FixedExampleSet, held-out speakers{which})"
        if partial_presence:
            n_pp = partial_examples or max(1, examples // 4)
            partial = _partial_presence_set(
                Path(data), mix_cfg, split, seed + 1, n_pp, partial_seconds, voices
            )
    else:
        items = load_list_items(Path(list_path), sr)
        source = f"{list_path} (pre-mixed list)"
        if partial_presence:
            partial = [it for it in items if it["target_present"]]
    info = {
        "checkpoint": str(checkpoint),
        "step": step,
        "source": source,
        "split": split if data is not None else None,
        "seed": seed if data is not None else None,
        "examples": len(items),
        "mix_overrides": list(mix_overrides),
        "ref_seconds": mix_cfg.audio.ref_seconds if data is not None else None,
        "voices": voices if data is not None else None,
    }
    # Speech source -> kind of voice (the prepare report's tags): the by-kind breakdown.
    kinds = speech_source_voices(load_report(Path(data)), None) if data is not None else None
    return evaluate_model(extractor, items, opts, out_dir, partial, info, kinds)
