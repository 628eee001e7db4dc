"""`hifi-tse separate --mix-list` under torchrun: sharded by rank, atomic, resumable, with a
summary of failures. Two real gloo processes on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from eval_fixtures import SR, tiny_ckpt, voice  # noqa: F401


def _run(ckpt: Path, listing: Path, out: Path) -> subprocess.CompletedProcess:
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "hifi_tse", "separate",
           "--checkpoint", str(ckpt), "--mix-list", str(listing), "--out-dir", str(out),
           "--threads", "1"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)


def test_two_ranks_shard_resume_and_report_failures(tiny_ckpt, tmp_path):  # noqa: F811
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "ref.wav", voice(rng, 140.0, 1.2, SR), SR)
    rows = ["mix,ref,out"]
    for i in range(5):
        sf.write(tmp_path / f"m{i}.wav", voice(rng, 120.0 + 15 * i, 0.6, SR), SR)
        rows.append(f"m{i}.wav,ref.wav,o{i}.wav")
    (tmp_path / "broken.wav").write_text("not audio")
    rows.append("broken.wav,ref.wav,o_broken.wav")
    rows.append("missing.wav,ref.wav,o_missing.wav")
    listing = tmp_path / "list.csv"
    listing.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"

    proc = _run(tiny_ckpt, listing, out)
    assert proc.returncode == 1, (proc.stdout + proc.stderr)[-3000:]  # failures: exit 1
    summary = json.loads((out / "separate_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["files"] == 7
    assert summary["done"] == 5 and summary["skipped"] == 0
    failed = {Path(f["mix"]).name: f["reason"] for f in summary["failed"]}
    assert set(failed) == {"broken.wav", "missing.wav"} and "not found" in failed["missing.wav"]
    made = sorted(p.name for p in out.glob("*.wav"))
    assert made == [f"o{i}.wav" for i in range(5)]  # nothing written for the failures
    for i in range(5):
        assert sf.info(str(out / f"o{i}.wav")).frames == sf.info(str(tmp_path / f"m{i}.wav")).frames
    assert not list(out.glob(".*tmp*"))  # atomic writes left no temporary file

    # A re-run resumes: finished outputs are skipped, a removed one is made again.
    before = (out / "o1.wav").stat().st_mtime_ns
    (out / "o3.wav").unlink()
    proc = _run(tiny_ckpt, listing, out)
    summary = json.loads((out / "separate_summary.json").read_text())
    assert (summary["done"], summary["skipped"], len(summary["failed"])) == (1, 4, 2)
    assert (out / "o3.wav").is_file() and (out / "o1.wav").stat().st_mtime_ns == before
