"""Generator benchmark: parameters, forward / forward+backward time and peak memory.

Usage::

    .venv/bin/python benchmarks/bench_model.py                      # full + tiny, CPU (+ CUDA)
    .venv/bin/python benchmarks/bench_model.py --configs configs/hifi_tse.yaml --threads 2

Each measurement runs in a fresh subprocess so its peak memory is its own: on CPU the
figure is the growth of the resident set's high-water mark (``VmHWM`` in /proc/self/status)
over the resident size before the first call; on CUDA it is
``torch.cuda.max_memory_allocated``. Every timed call is preceded by one untimed warm-up call
of the same shape (oneDNN / cuDNN build their kernels for a shape on first use); the
warm-up's peak counts too, being the same computation.

The training step uses the project objective (phase 2, mixed TP / TA batch) when
``hifi_tse.losses.objective.Objective`` is importable and works, else ``-SI-SDR``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = [ROOT / "configs" / "hifi_tse.yaml", ROOT / "configs" / "tiny.yaml"]
SECONDS = 4.0  # benchmark clip length, s


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _neg_si_sdr(est, tgt):
    import torch

    est = est - est.mean(-1, keepdim=True)
    tgt = tgt - tgt.mean(-1, keepdim=True)
    proj = (est * tgt).sum(-1, keepdim=True) / tgt.square().sum(-1, keepdim=True) * tgt
    return -(10 * torch.log10(proj.square().sum(-1) / (est - proj).square().sum(-1))).mean()


def _make_loss(cfg, device):
    """A phase-2-like loss ``f(estimate, target, target_present) -> scalar`` and its name."""
    import torch

    try:
        from hifi_tse.losses.objective import Objective

        objective = Objective(cfg.objective, cfg.audio.sample_rate).to(device)

        def loss(est, tgt, present):
            return objective(est, tgt, present, 2)[0]

        probe = torch.randn(2, 4800, device=device)
        loss(probe, probe * 0.5, torch.tensor([True, False], device=device))
        return loss, "Objective(phase 2, TP+TA)"
    except Exception as exc:  # noqa: BLE001 - any failure of a sibling module -> fallback
        print(
            f"# objective unavailable ({type(exc).__name__}: {exc}); using -SI-SDR", file=sys.stderr
        )
        return (lambda est, tgt, present: _neg_si_sdr(est, tgt)), "-SI-SDR"


def measure(config: str, mode: str, batch: int, seconds: float, device: str, threads: int):
    """One measurement in this process; returns a dict (run inside a fresh subprocess)."""
    import torch

    from hifi_tse.config import load_config
    from hifi_tse.models.generator import build_generator

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = load_config(config)
    sr = cfg.audio.sample_rate
    model = build_generator(cfg).to(device)
    length, ref_length = int(seconds * sr), int(cfg.audio.ref_seconds * sr)
    mix = torch.randn(batch, length, device=device) * 0.1
    ref = torch.randn(batch, ref_length, device=device) * 0.1
    target = mix * 0.5
    present = torch.arange(batch, device=device) % 2 == 0  # mixed TP / TA batch
    loss_name = ""
    if mode == "train":
        loss_fn, loss_name = _make_loss(cfg, device)
        target = torch.where(present[:, None], target, torch.zeros_like(target))
        model.train()

        def step():
            model.zero_grad(set_to_none=True)
            loss_fn(model(mix, ref), target, present).backward()
    else:
        model.eval()

        def step():
            with torch.no_grad():
                model(mix, ref)

    cuda = device.startswith("cuda")

    def sync():
        if cuda:
            torch.cuda.synchronize()

    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _status_kib("VmRSS") * 1024
    step()  # warm-up (kernel selection / primitive creation for this shape)
    sync()
    t0, c0 = time.perf_counter(), time.process_time()
    step()
    sync()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    if cuda:
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _status_kib("VmHWM") * 1024 - base
    return {"seconds": elapsed, "cpu_seconds": cpu, "peak_bytes": peak, "loss": loss_name}


def _run_sub(config, mode, batch, seconds, device, threads) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--measure",
        str(config),
        mode,
        str(batch),
        str(seconds),
        device,
        str(threads),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"measurement failed: {' '.join(cmd)}\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _param_count(config) -> tuple[int, int]:
    from hifi_tse.config import load_config
    from hifi_tse.models.generator import build_generator

    model = build_generator(load_config(config))
    return sum(p.numel() for p in model.parameters()), model.num_bands


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=[str(c) for c in DEFAULT_CONFIGS])
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--seconds", type=float, default=SECONDS, help="clip length, s")
    p.add_argument("--devices", nargs="+", default=None, help="default: cpu (+ cuda if present)")
    p.add_argument("--measure", nargs=6, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.measure:
        config, mode, batch, seconds, device, threads = args.measure
        print(json.dumps(measure(config, mode, int(batch), float(seconds), device, int(threads))))
        return 0

    import torch

    from hifi_tse.config import load_config

    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    print(f"# torch {torch.__version__}, {args.threads} CPU threads, clip {args.seconds:g} s")
    header = (
        f"| {'config':<13} | {'device':<6} | {'params':>8} | {'bands':>5} | {'measurement':<26} "
        f"| {'wall s':>7} | {'CPU s':>7} | {'peak MB':>8} |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    loss_used = set()
    for config in args.configs:
        params, bands = _param_count(config)
        cfg = load_config(config)
        rows = [
            ("forward", 1, args.seconds),
            ("forward", 2, args.seconds),
            ("train", 2, args.seconds),
        ]
        # Plus the config's own training micro-batch when it differs (tiny: 4 x 1 s).
        own = ("train", cfg.train.batch_size, cfg.audio.segment_seconds)
        if own not in rows:
            rows.append(own)
        for device in devices:
            for mode, batch, seconds in rows:
                r = _run_sub(config, mode, batch, seconds, device, args.threads)
                what = f"fwd eval B={batch}" if mode == "forward" else f"fwd+bwd train B={batch}"
                what += f" x {seconds:g} s"
                if r["loss"]:
                    loss_used.add(r["loss"])
                print(
                    f"| {Path(config).stem:<13} | {device:<6} | {params / 1e6:7.2f}M | {bands:>5} "
                    f"| {what:<26} | {r['seconds']:7.2f} | {r['cpu_seconds']:7.2f} "
                    f"| {r['peak_bytes'] / 2**20:8.0f} |",
                    flush=True,
                )
    print(f"# training loss: {', '.join(sorted(loss_used))}")
    print("# CPU s = process CPU time of the timed call (all threads; includes OpenMP spinning)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
