"""Corpus preparation: speech / noise / RIR folders → split manifests + HDF5 packs.

Stages (all deterministic for a given input and seed):

1. scan: list audio files per source; speech files get speaker ids from the layout (or a
   ``pattern=REGEX``; files it does not match are skipped and listed in the report).
2. probe: read headers only (``soundfile.info``): unreadable / empty files are listed in the
   report, speech shorter than ``min_seconds`` is skipped and counted, and speakers left with
   fewer than 2 utterances are excluded (the enrollment must differ from the target).
3. split: per source, sorted speaker ids (speech) or sorted files (noise, RIRs); the last
   ``val_ratio`` share goes to val and the ``test_ratio`` share before it to test, so val and
   test hold unseen speakers, unseen noise and unseen rooms. A source that names its
   held-out speakers (``val_speakers`` / ``test_speakers``) uses those instead.
3b. voice variants: a source with ``voice_variants`` K gets K pitch/formant-shifted copies
   of each training speaker (``preparation.variant_utterances`` utterances each), new training
   speakers rendered while packing (:mod:`hifi_tse.data.voice_variants`).
4. pack: per (kind, source, split), shards of ``PACK_FILES`` files are decoded,
   downmixed, resampled (soxr) and written as HDF5 datasets in the chosen ``storage``
   (``float32``, ``int16`` with a per-file scale, or ``flac``; the layouts are in
   :mod:`hifi_tse.data.store`, recorded in each pack and in the report). Each shard is
   written under a temporary name and renamed when complete; its ``meta`` records a hash of
   its plan (files, rate, storage, ...), so a re-run reuses every finished shard whose plan
   is unchanged, discards temporary files of a crashed run and redoes only the missing
   shards (all of them for another storage). Decoding uses a process pool.
5. manifests (``manifest_{split}.jsonl``) and ``prepare_report.json``, written atomically.

One bad file never stops the run: it is skipped and listed with its reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import multiprocessing as mp
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from tqdm import tqdm

from hifi_tse.audio.io import resample, to_mono
from hifi_tse.config import Config
from hifi_tse.data.layouts import AudioFile, SpeechSource, scan_pattern, scan_plain, scan_speech
from hifi_tse.data.rir import (
    SIM_ROOM_MAX_M,
    SIM_ROOM_MIN_M,
    TAIL_WINDOW_MS,
    WALL_MARGIN_M,
    normalise_rir,
    simulate_rir,
)
from hifi_tse.data.store import (
    DEFAULT_STORAGE,
    LEGACY_STORAGE,
    SPLITS,
    PackWriter,
    check_storage,
    read_pack_meta,
    recorded_storage,
    write_manifest,
)
from hifi_tse.data.voice_variants import (
    VoiceVariant,
    apply_variant,
    draw_variants,
    variant_speaker,
)
from hifi_tse.errors import UserError
from hifi_tse.utils import atomic_path, atomic_write_text

# A mixture needs a target speaker and at least one interfering speaker, so an evaluation
# split with speakers should have two of them; train keeps at least as many.
_MIN_SPLIT_SPEAKERS = 2
# Noise clips and rooms: one per split is enough to be unseen.
_MIN_SPLIT_FILES = 1
# The enrollment is a different utterance of the target speaker.
_MIN_UTTERANCES_PER_SPEAKER = 2
SIMULATED_SOURCE = "simulated"
# Files per HDF5 pack shard: the unit a re-run reuses or redoes, and a size that keeps a
# shard's decoding short next to the time a crash could cost.
PACK_FILES = 2000
_MAX_CHUNK = 64  # files per process-pool task at most


@dataclass
class _Task:
    """One file (or simulated RIR) to put into a pack."""

    kind: str  # "speech" | "noise" | "rir"
    source: str
    speaker: str | None
    utterance: str
    path: str
    split: str = ""
    sim_index: int = -1
    variant: VoiceVariant | None = None  # pitch/formant transform of a voice variant


@dataclass
class _Pack:
    rel: str  # path relative to the output dir
    tasks: list[_Task]
    plan: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- workers


def _probe(path: str) -> tuple[int, int, str | None]:
    """(frames, sample rate, error) from the file header only."""
    try:
        info = sf.info(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported, never fatal
        return 0, 0, f"unreadable header ({_first_line(exc)})"
    if info.frames <= 0:
        return 0, int(info.samplerate), "empty (zero samples)"
    return int(info.frames), int(info.samplerate), None


def _load(
    args: tuple[_Task, int, int, Config],
) -> tuple[np.ndarray | None, dict[str, Any] | None, str | None]:
    """Decode one task to ``(L,)`` float32 at the target rate: (audio, extra info, error)."""
    task, sample_rate, seed, cfg = args
    try:
        if task.sim_index >= 0:
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(task.sim_index,)))
            h, info = simulate_rir(rng, sample_rate, cfg.preparation, cfg.mixing.max_rir_seconds)
            return h, {"sim": info}, None
        wav, sr = sf.read(task.path, dtype="float32", always_2d=True)
        if wav.shape[0] == 0:
            return None, None, "empty (zero samples)"
        wav = to_mono(wav)
        if not np.isfinite(wav).all():
            return None, None, "contains NaN or Inf samples"
        if not np.any(wav):
            return None, None, "silent (all samples zero)"
        wav = resample(wav, int(sr), sample_rate)
        if task.variant is not None:
            return apply_variant(wav, sample_rate, task.variant), None, None
        if task.kind == "rir":
            wav = normalise_rir(wav)
        return np.ascontiguousarray(wav, dtype=np.float32), None, None
    except Exception as exc:  # noqa: BLE001 - one bad file never stops the run
        return None, None, f"unreadable audio ({_first_line(exc)})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- splitting


def split_ids(
    ids: Iterable[str], val_ratio: float, test_ratio: float, min_eval: int, min_train: int
) -> dict[str, str]:
    """Map sorted ``ids`` to splits: the last ``val_ratio`` → val, the ``test_ratio`` before
    them → test, the rest → train.

    A split with a positive ratio gets at least ``min_eval`` ids, reduced (test first) while
    fewer than ``min_train`` ids would be left for training.
    """
    ids = sorted(set(ids))
    n = len(ids)

    def want(ratio: float) -> int:
        return 0 if ratio <= 0 else max(min_eval, int(round(n * ratio)))

    n_val, n_test = want(val_ratio), want(test_ratio)
    while n_val + n_test > max(0, n - min_train) and (n_val or n_test):
        if n_test >= n_val and n_test > 0:
            n_test -= 1
        else:
            n_val -= 1
    out = {}
    for i, ident in enumerate(ids):
        if i >= n - n_val:
            out[ident] = "val"
        elif i >= n - n_val - n_test:
            out[ident] = "test"
        else:
            out[ident] = "train"
    return out


# --------------------------------------------------------------------------- main entry


def prepare_corpus(
    speech: list[SpeechSource | tuple[Path, str | None]],
    noise: list[Path],
    rir: list[Path],
    simulate_rirs: int,
    out: Path,
    sample_rate: int,
    min_seconds: float,
    val_ratio: float,
    test_ratio: float,
    workers: int,
    seed: int,
    *,
    cfg: Config | None = None,
    progress: bool = True,
    storage: str | None = None,
) -> dict[str, Any]:
    """Prepare a packs dir from audio folders; returns the report (also written to disk).

    Args:
        speech: per speech corpus a :class:`SpeechSource` (or a (folder, layout name or
            None to auto-detect) pair).
        noise: noise folders (any audio files).
        rir: measured RIR folders (any audio files); exclusive with ``simulate_rirs``.
        simulate_rirs: number of shoebox RIRs to simulate (0 = none).
        out: output packs dir.
        sample_rate: target rate, Hz.
        min_seconds: speech files shorter than this are skipped, s.
        val_ratio, test_ratio: shares of speakers / noise files / RIRs for val and test.
        workers: decoding processes (<= 1: in this process).
        seed: seed of the RIR simulation.
        cfg: ``preparation`` and ``mixing.max_rir_seconds`` (simulated RIR length); None: defaults.
        progress: show a tqdm bar (files/s) on stderr.
        storage: ``float32``, ``int16`` or ``flac`` (:mod:`hifi_tse.data.store`); None: the
            storage of the packs already in ``out``, else ``DEFAULT_STORAGE``.
    """
    t0 = time.perf_counter()
    cfg, out = cfg or Config(), Path(out)
    storage = check_storage(storage or recorded_storage(out) or DEFAULT_STORAGE)
    _check_arguments(bool(speech), bool(rir), simulate_rirs, val_ratio, test_ratio)
    scan = _scan_sources(speech, noise, rir, simulate_rirs)
    tasks, speech_sources = scan.tasks, scan.speech
    errors: list[dict[str, str]] = []
    short: dict[str, int] = defaultdict(int)
    with _worker_pool(workers) as imap:
        tasks = _probe_tasks(tasks, imap, min_seconds, errors, short)
        tasks, excluded = _drop_small_speakers(tasks)
        _check_named_speakers(tasks, speech_sources)
        _assign_splits(tasks, val_ratio, test_ratio, speech_sources)
        tasks += _variant_tasks(tasks, speech_sources, seed, cfg)
        packs = _plan_packs(tasks, sample_rate, seed, cfg, storage)
        rows, written, reused = _run_packs(
            packs, out, imap, sample_rate, seed, cfg, min_seconds, errors, short,
            progress, storage,
        )  # fmt: skip
    rows, excluded_after = _drop_small_speakers_rows(rows)
    excluded += excluded_after
    by_split = _write_manifests(out, rows)

    report = {
        "format": "hifi-tse-prepare-report",
        "sample_rate": sample_rate,
        "storage": storage,
        "min_seconds": min_seconds,
        "val_ratio": val_ratio,
        "test_ratio": test_ratio,
        "seed": seed,
        "sources": scan.sources,
        "splits": {s: _split_counts(r) for s, r in by_split.items()},
        "skipped_short": int(sum(short.values())),
        "skipped_short_by_source": dict(sorted(short.items())),
        "errors": sorted(errors, key=lambda e: e["path"]),
        "unmatched": sorted(scan.unmatched),
        "excluded_speakers": excluded,
        "packs_written": written,
        "packs_reused": reused,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    atomic_write_text(out / "prepare_report.json", json.dumps(report, indent=2) + "\n")
    return report


# --------------------------------------------------------------------------- stages


@contextlib.contextmanager
def _worker_pool(workers: int) -> Iterator[Callable[[Callable, list], Iterator]]:
    """An ``imap`` over ``workers`` processes (in this process when ``workers <= 1``); on an
    error or Ctrl-C the queued files are dropped instead of waited for."""
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    pool = ctx.Pool(workers) if workers > 1 else None
    try:
        yield _imap_fn(pool, workers)
    except BaseException:
        if pool is not None:
            pool.terminate()
        raise
    if pool is not None:
        pool.close()
        pool.join()


def _write_manifests(out: Path, rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """One sorted manifest per split (written atomically); returns the rows by split."""
    by_split: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for r in rows:
        by_split[r["split"]].append(r)
    for split, split_rows in by_split.items():
        split_rows.sort(key=lambda r: (r["kind"], r["source"], r["speaker"] or "", r["utterance"]))
        write_manifest(out, split, split_rows)
    return by_split


def _check_arguments(
    has_speech: bool,
    has_rir: bool,
    simulate_rirs: int,
    val_ratio: float,
    test_ratio: float,
) -> None:
    """One-line UserErrors for argument combinations prepare cannot run with."""
    if val_ratio < 0 or test_ratio < 0 or val_ratio + test_ratio >= 1:
        raise UserError(
            f"--val-ratio/--test-ratio: expected non-negative shares summing below 1, "
            f"got {val_ratio} and {test_ratio}"
        )
    if not has_speech:
        raise UserError("--speech: expected at least one speech folder")
    if has_rir and simulate_rirs > 0:
        raise UserError("--rir and --simulate-rirs: give measured RIR folders or a count, not both")


@dataclass
class _Scan:
    """Stage 1's result: the sources for the report, the tasks, unmatched pattern files."""

    sources: list[dict[str, Any]]
    tasks: list[_Task]
    unmatched: list[str]
    speech: dict[str, SpeechSource]  # by source name


def _scan_sources(
    speech: list[SpeechSource | tuple[Path, str | None]],
    noise: list[Path],
    rir: list[Path],
    simulate_rirs: int,
) -> _Scan:
    """List every input file (and simulated RIR) as a task, with unique source names."""
    used: set[str] = set()
    sources: list[dict[str, Any]] = []
    tasks: list[_Task] = []
    unmatched: list[str] = []
    speech_sources: dict[str, SpeechSource] = {}
    for entry in speech:
        src = entry if isinstance(entry, SpeechSource) else SpeechSource(Path(entry[0]), entry[1])
        if src.layout == "pattern":
            files, skipped = scan_pattern(Path(src.root), src.pattern or "")
            unmatched += [str(p) for p in skipped]
            layout_used = f"pattern={src.pattern}"
        else:
            layout_used, files = scan_speech(Path(src.root), src.layout)
        name = _unique(src.name or Path(src.root).name or "speech", used)
        speech_sources[name] = src
        sources.append(
            {
                "kind": "speech",
                "name": name,
                "root": str(src.root),
                "layout": layout_used,
                "voices": src.voices,
                "voice_variants": src.voice_variants,
                "whole_split": src.whole_split,
            }
        )
        tasks += [_task("speech", name, f) for f in files]
    for kind, roots in (("noise", noise), ("rir", rir)):
        for root in roots:
            files = scan_plain(Path(root))
            name = _unique(Path(root).name or kind, used)
            sources.append({"kind": kind, "name": name, "root": str(root), "layout": None})
            tasks += [_task(kind, name, f) for f in files]
    for i in range(simulate_rirs):
        tasks.append(_Task("rir", SIMULATED_SOURCE, None, f"sim_{i:05d}", "simulated", sim_index=i))
    if simulate_rirs > 0:
        sources.append({"kind": "rir", "name": SIMULATED_SOURCE, "root": None, "layout": None})

    return _Scan(sources, tasks, unmatched, speech_sources)


def _task(kind: str, source: str, f: AudioFile) -> _Task:
    return _Task(kind, source, f.speaker or None, f.utterance, str(f.path))


def _unique(base: str, used: set[str]) -> str:
    name, k = base, 2
    while name in used or name == SIMULATED_SOURCE:
        name, k = f"{base}_{k}", k + 1
    used.add(name)
    return name


def _imap_fn(pool: Any, workers: int) -> Callable[[Callable, list], Iterator]:
    def imap(fn: Callable, items: list) -> Iterator:
        if pool is None:
            return map(fn, items)
        # A few chunks per worker: low IPC overhead, balanced tail.
        chunk = max(1, min(_MAX_CHUNK, len(items) // (4 * workers)))
        return pool.imap(fn, items, chunksize=chunk)

    return imap


def _probe_tasks(
    tasks: list[_Task],
    imap: Callable,
    min_seconds: float,
    errors: list[dict[str, str]],
    short: dict[str, int],
) -> list[_Task]:
    files = [t for t in tasks if t.sim_index < 0]
    keep = [t for t in tasks if t.sim_index >= 0]
    for t, (frames, sr, err) in zip(files, imap(_probe, [t.path for t in files])):
        if err is not None:
            errors.append({"path": t.path, "reason": err})
        elif t.kind == "speech" and frames / sr < min_seconds:
            short[t.source] += 1
        else:
            keep.append(t)
    return keep


def _drop_small_speakers(tasks: list[_Task]) -> tuple[list[_Task], list[dict[str, Any]]]:
    count: dict[tuple[str, str], int] = defaultdict(int)
    for t in tasks:
        if t.kind == "speech":
            count[(t.source, t.speaker or "")] += 1
    small = {k for k, n in count.items() if n < _MIN_UTTERANCES_PER_SPEAKER}
    excluded = [
        {"source": s, "speaker": spk, "usable": count[(s, spk)]} for s, spk in sorted(small)
    ]
    kept = [t for t in tasks if t.kind != "speech" or (t.source, t.speaker or "") not in small]
    return kept, excluded


def _drop_small_speakers_rows(
    rows: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Second pass after decoding: a decode failure can leave a speaker with one file."""
    count: dict[tuple[str, str], int] = defaultdict(int)
    for r in rows:
        if r["kind"] == "speech":
            count[(r["source"], r["speaker"])] += 1
    small = {k for k, n in count.items() if n < _MIN_UTTERANCES_PER_SPEAKER}
    excluded = [
        {"source": s, "speaker": spk, "usable": count[(s, spk)]} for s, spk in sorted(small)
    ]
    kept = [r for r in rows if r["kind"] != "speech" or (r["source"], r["speaker"]) not in small]
    return kept, excluded


HELD_OUT_SPLITS = ("val", "test")  # where a source held out whole may go
WHOLE_SPLITS = ("train", *HELD_OUT_SPLITS)  # SpeechSource.whole_split's values


def _assign_splits(
    tasks: list[_Task],
    val_ratio: float,
    test_ratio: float,
    speech_sources: dict[str, SpeechSource],
) -> None:
    groups: dict[tuple[str, str], list[_Task]] = defaultdict(list)
    for t in tasks:
        groups[(t.kind, t.source)].append(t)
    for (kind, source), group in groups.items():
        src = speech_sources.get(source)
        fixed = _fixed_splits(src, {t.speaker or "" for t in group}) if src else {}
        if kind == "speech" and fixed:
            for t in group:
                t.split = fixed.get(t.speaker or "", "train")
        elif kind == "speech":
            ids = {t.speaker or "" for t in group}
            split = split_ids(ids, val_ratio, test_ratio, _MIN_SPLIT_SPEAKERS, _MIN_SPLIT_SPEAKERS)
            for t in group:
                t.split = split[t.speaker or ""]
        else:
            split = split_ids(
                (t.utterance for t in group),
                val_ratio,
                test_ratio,
                _MIN_SPLIT_FILES,
                _MIN_SPLIT_FILES,
            )
            for t in group:
                t.split = split[t.utterance]


def _fixed_splits(src: SpeechSource, speakers: set[str]) -> dict[str, str]:
    """speaker → split for the named held-out speakers of ``src`` found in ``speakers`` (all of
    them for a source with a ``whole_split``)."""
    if src.whole_split is not None:
        if src.whole_split not in WHOLE_SPLITS or src.val_speakers or src.test_speakers:
            raise UserError(
                f"{src.root}: whole_split must be one of {', '.join(WHOLE_SPLITS)}, without "
                f"named val/test speakers; got {src.whole_split!r}"
            )
        return dict.fromkeys(speakers, src.whole_split)
    both = sorted(set(src.val_speakers) & set(src.test_speakers))
    if both:
        raise UserError(f"{src.root}: speaker(s) {', '.join(both)} named for both val and test")
    fixed = {spk: "val" for spk in src.val_speakers} | {spk: "test" for spk in src.test_speakers}
    return {spk: split for spk, split in fixed.items() if spk in speakers}


def _check_named_speakers(tasks: list[_Task], speech_sources: dict[str, SpeechSource]) -> None:
    """Every named held-out speaker must exist in some source (a typo is not a silent no-op)."""
    named = {s for src in speech_sources.values() for s in src.val_speakers + src.test_speakers}
    found = {t.speaker for t in tasks if t.kind == "speech"}
    missing = sorted(named - found)
    if missing:
        raise UserError(
            f"--val-speakers/--test-speakers: {', '.join(missing)} not found among the usable "
            f"speakers ({len(found)}; ids as the layout names them, e.g. "
            f"{', '.join(sorted(found)[:3])})"
        )


def _variant_tasks(
    tasks: list[_Task], speech_sources: dict[str, SpeechSource], seed: int, cfg: Config
) -> list[_Task]:
    """Voice-variant tasks for the training speakers of sources that ask for them."""
    by_speaker: dict[tuple[str, str], list[_Task]] = defaultdict(list)
    for t in tasks:
        src = speech_sources.get(t.source)
        if t.kind == "speech" and t.split == "train" and src is not None and src.voice_variants:
            by_speaker[(t.source, t.speaker or "")].append(t)
    out = []
    for (source, speaker), group in sorted(by_speaker.items()):
        # A stable, spread-out subset of the speaker's utterances for each variant.
        group.sort(key=lambda t: hashlib.sha1(t.utterance.encode()).hexdigest())
        count = speech_sources[source].voice_variants
        variants = draw_variants(
            seed,
            f"{source}/{speaker}",
            count,
            tuple(cfg.preparation.variant_pitch_range),
            tuple(cfg.preparation.variant_formant_range),
        )
        per = min(len(group), cfg.preparation.variant_utterances)
        for k, variant in enumerate(variants):
            start = (k * per) % len(group)
            chosen = (group + group)[start : start + per]
            new_speaker = variant_speaker(speaker, k)
            for t in chosen:
                out.append(
                    dataclasses.replace(
                        t,
                        speaker=new_speaker,
                        utterance=f"{t.utterance}{new_speaker[len(speaker) :]}",
                        variant=variant,
                    )
                )
    return out


def _sim_plan(cfg: Config) -> dict[str, Any]:
    """Everything a simulated RIR depends on besides seed and length, as the pack plan names
    it: the simulation keys, and those that were keys once and are constants now (under
    their old names, so the digests of existing packs stay valid)."""
    return {
        **{k: v for k, v in dataclasses.asdict(cfg.preparation).items() if "sim" in k},
        "sim_room_min": list(SIM_ROOM_MIN_M),
        "sim_room_max": list(SIM_ROOM_MAX_M),
        "sim_wall_margin": WALL_MARGIN_M,
        "sim_tail_window_ms": TAIL_WINDOW_MS,
    }


def _plan_packs(
    tasks: list[_Task], sample_rate: int, seed: int, cfg: Config, storage: str
) -> list[_Pack]:
    groups: dict[tuple[str, str, str], list[_Task]] = defaultdict(list)
    for t in tasks:
        groups[(t.kind, t.source, t.split)].append(t)
    packs = []
    for (kind, source, split), group in sorted(groups.items()):
        group.sort(key=lambda t: (t.speaker or "", t.utterance))
        n = PACK_FILES
        for shard, start in enumerate(range(0, len(group), n)):
            chunk = group[start : start + n]
            plan: dict[str, Any] = {
                "sample_rate": sample_rate,
                "files": [
                    [t.path, t.utterance, t.speaker, t.sim_index]
                    + ([t.variant.as_dict()] if t.variant is not None else [])
                    for t in chunk
                ],
            }
            if storage != LEGACY_STORAGE:
                # Only other storages add the key: float32 plans keep the digest they had
                # before storages existed, so those packs are still reused.
                plan["storage"] = storage
            if source == SIMULATED_SOURCE:
                plan.update(
                    seed=seed, sim=_sim_plan(cfg), max_rir_seconds=cfg.mixing.max_rir_seconds
                )
            digest = hashlib.sha1(json.dumps(plan, sort_keys=True).encode()).hexdigest()
            packs.append(
                _Pack(rel=f"packs/{kind}/{source}/{split}_{shard:04d}.h5", tasks=chunk, plan=digest)
            )
    return packs


def _reuse_finished_packs(
    packs: list[_Pack], out: Path, errors: list[dict[str, str]], short: dict[str, int]
) -> tuple[list[dict[str, Any]], list[_Pack]]:
    """Rows of the packs already written with the same plan, and the packs still to write."""
    rows: list[dict[str, Any]] = []
    todo: list[_Pack] = []
    for pack in packs:
        final = out / pack.rel
        # Temporary files of a crashed run are incomplete by construction: discard them.
        if final.parent.is_dir():
            for stale in final.parent.glob(f".{final.stem}.*.tmp{final.suffix}"):
                stale.unlink(missing_ok=True)
        meta = read_pack_meta(final) if final.is_file() else None
        if meta is not None and meta.get("plan") == pack.plan:
            rows += meta["rows"]
            errors += meta["errors"]
            for src, n in meta["short"].items():
                short[src] += n
        else:
            todo.append(pack)
    return rows, todo


def _run_packs(
    packs: list[_Pack],
    out: Path,
    imap: Callable,
    sample_rate: int,
    seed: int,
    cfg: Config,
    min_seconds: float,
    errors: list[dict[str, str]],
    short: dict[str, int],
    progress: bool,
    storage: str,
) -> tuple[list[dict[str, Any]], int, int]:
    rows, todo = _reuse_finished_packs(packs, out, errors, short)
    reused = len(packs) - len(todo)
    min_samples = int(round(min_seconds * sample_rate))
    total = sum(len(p.tasks) for p in todo)
    with tqdm(total=total, unit="file", desc="prepare", disable=not progress) as bar:
        for pack in todo:
            p_rows: list[dict[str, Any]] = []
            p_errors: list[dict[str, str]] = []
            p_short: dict[str, int] = defaultdict(int)
            args = [(t, sample_rate, seed, cfg) for t in pack.tasks]
            # Written file by file into a temporary pack, renamed only once complete.
            with (
                atomic_path(out / pack.rel) as tmp,
                PackWriter(tmp, storage, sample_rate) as writer,
            ):
                for t, (wav, extra, err) in zip(pack.tasks, imap(_load, args)):
                    bar.update(1)
                    if err is not None:
                        p_errors.append({"path": t.path, "reason": err})
                        continue
                    assert wav is not None
                    if t.kind == "speech" and len(wav) < min_samples:
                        p_short[t.source] += 1  # the header lied about the length
                        continue
                    # Keys by position: file names never clash with HDF5 group syntax.
                    key = f"audio/{len(p_rows):06d}"
                    writer.add(key, wav)
                    row = {
                        "kind": t.kind,
                        "source": t.source,
                        "speaker": t.speaker,
                        "utterance": t.utterance,
                        "path": t.path,
                        "duration": round(len(wav) / sample_rate, 6),
                        "num_samples": len(wav),
                        "pack": pack.rel,
                        "key": key,
                        "split": t.split,
                    }
                    if extra:
                        row.update(extra)
                    if t.variant is not None:
                        row["variant"] = t.variant.as_dict()
                    p_rows.append(row)
                writer.set_meta(
                    {"plan": pack.plan, "rows": p_rows, "errors": p_errors, "short": p_short}
                )
            rows += p_rows
            errors += p_errors
            for src, n in p_short.items():
                short[src] += n
    return rows, len(todo), reused


def _split_counts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    speech = [r for r in rows if r["kind"] == "speech"]
    by_source: dict[str, set[str]] = defaultdict(set)
    for r in speech:
        by_source[r["source"]].add(r["speaker"])
    return {
        "speakers": len({(r["source"], r["speaker"]) for r in speech}),
        "speakers_by_source": {src: len(spk) for src, spk in sorted(by_source.items())},
        "variant_speakers": len({(r["source"], r["speaker"]) for r in speech if "variant" in r}),
        "utterances": len(speech),
        "speech_hours": round(sum(r["duration"] for r in speech) / 3600.0, 4),
        "noise": sum(r["kind"] == "noise" for r in rows),
        "rir": sum(r["kind"] == "rir" for r in rows),
    }
