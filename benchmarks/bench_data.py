"""Data pipeline throughput on ONE core: prepare, pack reads and dynamic mixing at 48 kHz.

Builds a small synthetic corpus (harmonic "voices" with a faint noise floor, noise,
simulated RIRs) in a temporary folder with ``prepare_corpus``, then measures

* mixtures per second through ``MixtureDataset[i]`` with the full recipe (4 s segments, 4 s
  enrollment, RIR on every talker, noise, speed perturbation, 1-3 interferers, TA share,
  noisy enrollment at its final probability);
* the same mixing rate without and with a random recording chain (``mixing.channel_prob``
  0 and 1), in alternating rounds (first storage only);
* pack reads: random 4 s crops per second and MB/s, and whole-utterance MB/s;
* voice variants (pitch/formant shift, ``prepare --voice-variants``) at 16 kHz: seconds of
  compute per second of speech, what precomputing costs per hour of speech, and the mixing
  rate they would allow if done on the fly (each demo mixture transforms its target, its
  enrollment and on average 1.5 interferers, 2 s each);
* per pack storage (``prepare --storage``: float32, int16, flac): GB per hour of packed audio
  at 16 kHz and at 48 kHz (bytes of the pack files on disk over the hours of audio they
  hold: speech, noise and RIRs), prepare files/s, random 4 s crop reads/s and mixtures/s
  through the full 48 kHz recipe. The synthetic speech is 24-bit at 48 kHz, so FLAC packs
  hold 24-bit streams at both rates (16-bit sources at the pack rate would pack as 16-bit
  FLAC instead); FLAC sizes depend on the content, so check them on a real corpus.

The figures at the top level (prepare, reads, mixing) are those of the float32 packs (or of
the first storage given when float32 is not among them).

Usage: ``python benchmarks/bench_data.py [--storage float32,int16,flac] [--mixtures 200]
[--json out.json]`` (a few minutes on one core); ``--quick`` is a few-second smoke run of
the script (tiny corpus, a handful of reads and mixtures: its figures mean nothing).
Threads are limited to 1 (and the process pinned to one core where possible) so the figure
is per DataLoader worker.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

from hifi_tse.config import Config, config_from_dict  # noqa: E402
from hifi_tse.data.datasets import MixtureDataset  # noqa: E402
from hifi_tse.data.prepare import prepare_corpus  # noqa: E402
from hifi_tse.data.store import SPLITS, STORAGES, PackReader, load_manifest  # noqa: E402

SR = 48000
SIZE_RATES = (16000, 48000)  # pack rates whose size per hour is reported, Hz
SECONDS_PER_HOUR = 3600.0
BYTES_PER_GB = 1e9
# A recording's noise floor (~ -70 dBFS RMS): pure synthetic tones would FLAC-compress far
# better than any microphone signal does.
SPEECH_NOISE_FLOOR = 3e-4


def synth_corpus(root: Path, speakers: int, utts: int, seconds: float, noises: int) -> None:
    """Harmonic tones with a syllable envelope per speaker (24-bit WAV) + white-ish noise."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SR)) / SR
    for s in range(speakers):
        f0 = 90.0 + 12.0 * s
        for u in range(utts):
            x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 8))
            x *= 0.15 * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t)) ** 2
            x += SPEECH_NOISE_FLOOR * rng.standard_normal(len(t))
            path = root / "speech" / f"p{300 + s}" / f"p{300 + s}_{u:03d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), x, SR, subtype="PCM_24")
    for k in range(noises):
        path = root / "noise" / f"noise_{k}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), 0.05 * rng.standard_normal(int(10 * SR)), SR, subtype="PCM_24")


def bench_mixing(packs: Path, cfg: Config, n: int) -> dict[str, float]:
    ds = MixtureDataset(packs, cfg, split="train")
    # Past phase 1 and both ramps, so TA, noisy references and full difficulty all occur.
    start = cfg.train.steps * ds.examples_per_step
    for i in range(3):  # warm-up: open packs, FFT plans
        ds[start + i]
    t0, c0 = time.perf_counter(), time.process_time()
    n_int, n_ta, n_noisy = 0, 0, 0
    for i in range(n):
        item = ds[start + 3 + i]
        n_int += item["num_interferers"]
        n_ta += not item["target_present"]
        n_noisy += item["meta"]["noisy_ref"]
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "mixtures_per_s": n / dt,
        "ms_per_mixture": 1e3 * dt / n,
        # CPU time of this process only: closer to an idle core when the machine is shared.
        "mixtures_per_cpu_s": n / cpu,
        "cpu_ms_per_mixture": 1e3 * cpu / n,
        "mean_interferers": n_int / n,
        "ta_share": n_ta / n,
        "noisy_ref_share": n_noisy / n,
    }


CHAIN_ROUNDS = 4  # alternating rounds with and without recording chains


def bench_chains(packs: Path, cfg: Config, n: int) -> dict[str, float]:
    """Mixtures/s without and with a recording chain on every mixture and enrollment
    (``mixing.channel_prob`` 0 against 1), measured in alternating rounds in one process so
    the machine's drift falls on both alike; the figure is the median round."""
    rates: dict[float, list[float]] = {0.0: [], 1.0: []}
    datasets = {}
    for prob in rates:
        cfg_p = copy.deepcopy(cfg)
        cfg_p.mixing.channel_prob = prob
        datasets[prob] = MixtureDataset(packs, cfg_p, split="train")
    start = cfg.train.steps * datasets[0.0].examples_per_step
    per_round = max(1, n // CHAIN_ROUNDS)
    for k in range(CHAIN_ROUNDS):
        for prob, ds in datasets.items():
            ds[start]  # warm-up: open packs, FFT plans
            t0 = time.perf_counter()
            for i in range(per_round):
                ds[start + 1 + k * per_round + i]
            rates[prob].append(per_round / (time.perf_counter() - t0))
    return {
        "mixtures_per_s_no_chain": float(np.median(rates[0.0])),
        "mixtures_per_s_chain": float(np.median(rates[1.0])),
    }


def bench_reads(packs: Path, crop_seconds: float, n: int) -> dict[str, float]:
    rows = [r for r in load_manifest(packs, "train") if r["kind"] == "speech"]
    reader = PackReader(packs)
    rng = np.random.default_rng(1)
    crop = int(crop_seconds * SR)
    reader.read(rows[0]["pack"], rows[0]["key"], 0, crop)  # open handles
    t0 = time.perf_counter()
    nbytes = 0
    for _ in range(n):
        r = rows[int(rng.integers(len(rows)))]
        start = int(rng.integers(0, max(1, r["num_samples"] - crop)))
        nbytes += reader.read(r["pack"], r["key"], start, crop).nbytes
    dt_crop = time.perf_counter() - t0
    t0 = time.perf_counter()
    full_bytes = 0
    for r in rows:
        full_bytes += reader.read(r["pack"], r["key"]).nbytes
    dt_full = time.perf_counter() - t0
    return {
        "crops_per_s": n / dt_crop,
        "crop_mb_per_s": nbytes / dt_crop / 1e6,
        "full_read_mb_per_s": full_bytes / dt_full / 1e6,
    }


VARIANT_SR = 16000
VARIANT_CLIP_SECONDS = 2.0  # the demo config's segment and enrollment length
VARIANT_CLIPS_PER_MIXTURE = 3.5  # target + enrollment + 1.5 interferers on average


def bench_variants(n: int) -> dict[str, float]:
    """Cost of one pitch/formant transform of a 2 s clip at 16 kHz, on one core."""
    from hifi_tse.data.voice_variants import VoiceVariant, apply_variant

    rng = np.random.default_rng(1)
    t = np.arange(int(VARIANT_CLIP_SECONDS * VARIANT_SR)) / VARIANT_SR
    clips = []
    for k in range(n):
        f0 = 100.0 + 10.0 * (k % 10)
        x = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6)) / h for h in range(1, 12))
        clips.append((0.1 * x * (0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t)) ** 2).astype(np.float32))
    apply_variant(clips[0], VARIANT_SR, VoiceVariant(1.2, 1.1))  # first call loads Praat
    t0 = time.perf_counter()
    for k, x in enumerate(clips):
        apply_variant(x, VARIANT_SR, VoiceVariant(0.8 + 0.05 * (k % 8), 0.9 + 0.03 * (k % 8)))
    per_clip = (time.perf_counter() - t0) / n
    return {
        "variant_ms_per_2s_clip": 1000.0 * per_clip,
        "variant_compute_per_speech_s": per_clip / VARIANT_CLIP_SECONDS,
        "variant_precompute_s_per_speech_hour": 3600.0 * per_clip / VARIANT_CLIP_SECONDS,
        "variant_on_the_fly_mixtures_per_s": 1.0 / (VARIANT_CLIPS_PER_MIXTURE * per_clip),
    }


def pack_size(packs: Path, sample_rate: int) -> dict[str, float]:
    """Bytes of the pack files on disk and the hours of audio (all kinds) they hold."""
    nbytes = sum(p.stat().st_size for p in (packs / "packs").rglob("*.h5"))
    samples = sum(r["num_samples"] for s in SPLITS for r in load_manifest(packs, s))
    hours = samples / sample_rate / SECONDS_PER_HOUR
    return {"pack_bytes": float(nbytes), "audio_hours": hours}


def prepare(root: Path, out: Path, sample_rate: int, cfg: Config, rirs: int, storage: str) -> dict:
    """``prepare_corpus`` of the synthetic corpus in ``root`` (one process, no held-out sets)."""
    return prepare_corpus(
        [(root / "speech", None)],
        [root / "noise"],
        [],
        rirs,
        out,
        sample_rate,
        cfg.preparation.min_seconds,
        0.0,
        0.0,
        1,
        0,
        cfg=cfg,
        progress=False,
        storage=storage,
    )


def bench_storage(
    root: Path, cfg: Config, storage: str, args: argparse.Namespace, n_files: int
) -> dict[str, object]:
    """One storage: pack sizes at each of SIZE_RATES, then prepare, reads and mixing at 48 kHz."""
    out: dict[str, object] = {}
    for rate in SIZE_RATES:
        packs = root / f"packs_{storage}_{rate}"
        t0 = time.perf_counter()
        report = prepare(root, packs, rate, cfg, args.rirs, storage)
        dt = time.perf_counter() - t0
        size = pack_size(packs, rate)
        out[f"gb_per_hour_{rate // 1000}k"] = (
            size["pack_bytes"] / BYTES_PER_GB / size["audio_hours"]
        )
        if rate == cfg.audio.sample_rate:
            out["prepare_files_per_s"] = n_files / dt
            out["prepare_seconds"] = dt
            out["corpus"] = report["splits"]["train"]
            out.update(bench_reads(packs, cfg.audio.segment_seconds, args.crops))
            out.update(bench_mixing(packs, cfg, args.mixtures))
            if storage == args.storage[0]:
                out.update(bench_chains(packs, cfg, args.mixtures))
        shutil.rmtree(packs)  # only one storage's packs on disk at a time
    return out


def _storages(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in names if x not in STORAGES]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of {', '.join(STORAGES)}, got {text!r}"
        )
    return names


QUICK = {  # --quick: a smoke run of the script, seconds not minutes
    "mixtures": 4,
    "crops": 20,
    "speakers": 3,
    "utterances": 2,
    "seconds": 4.5,
    "rirs": 2,
    "variant_clips": 2,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mixtures", type=int, default=200, help="per storage")
    parser.add_argument("--crops", type=int, default=2000, help="random 4 s reads per storage")
    parser.add_argument("--speakers", type=int, default=12)
    parser.add_argument("--utterances", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0, help="synthetic utterance length")
    parser.add_argument("--rirs", type=int, default=24)
    parser.add_argument("--variant-clips", type=int, default=40, help="voice-variant timing")
    parser.add_argument(
        "--storage",
        type=_storages,
        default=list(STORAGES),
        metavar="LIST",
        help=f"pack storages to compare, comma-separated (default {','.join(STORAGES)})",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny smoke run (figures mean nothing)"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)

    torch.set_num_threads(1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    cfg = config_from_dict({})  # the full 48 kHz recipe: 4 s segments, 1 s RIRs
    results: dict[str, object] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "quick": args.quick,
        "sample_rate": cfg.audio.sample_rate,
        "segment_seconds": cfg.audio.segment_seconds,
        "max_rir_seconds": cfg.mixing.max_rir_seconds,
    }
    headline = "float32" if "float32" in args.storage else args.storage[0]
    storages: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        root = Path(tmp)
        synth_corpus(root, args.speakers, args.utterances, args.seconds, noises=4)
        n_files = args.speakers * args.utterances + 4 + args.rirs
        for storage in args.storage:
            storages[storage] = bench_storage(root, cfg, storage, args, n_files)
    results["storage"] = headline
    results.update({k: v for k, v in storages[headline].items() if not k.startswith("gb_")})
    results.update(bench_variants(args.variant_clips))
    for k, v in results.items():
        print(f"{k:22s} {v:.2f}" if isinstance(v, float) else f"{k:22s} {v}")
    columns = ("gb_per_hour_16k", "gb_per_hour_48k", "prepare_files_per_s", "crops_per_s")
    columns += ("mixtures_per_s", "mixtures_per_cpu_s")
    print("\nper storage (48 kHz full recipe for prepare, crops and mixtures; 1 core)")
    print(f"{'storage':8s} " + " ".join(f"{c:>19s}" for c in columns))
    for storage, figures in storages.items():
        print(f"{storage:8s} " + " ".join(f"{figures[c]:19.3f}" for c in columns))
    results["storages"] = storages
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
