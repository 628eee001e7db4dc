"""Surviving a lost worker: torchrun restarts the group after a SIGKILL and training picks up
from the newest complete checkpoint by itself; a process killed while writing a checkpoint
never leaves a broken one in the place of the previous good one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_train_e2e import _cmd, _end, _env, _records

from hifi_tse.checkpoints import (
    load_checkpoint,
    numbered_checkpoints,
    remove_partial_checkpoints,
    resolve_resume,
)

pytestmark = pytest.mark.usefixtures("one_thread")
SETS = (
    "train.steps=12",
    "train.phase1_steps=2",
    "train.save_interval=4",
    "train.val_interval=4",
)


def _torchrun(*args: str) -> list[str]:
    torchrun = Path(sys.executable).with_name("torchrun")
    return [str(torchrun), "--standalone", "--nproc_per_node=2", *args, "-m", "hifi_tse"]


def _worker_pid(agent_pid: int, local_rank: int) -> int | None:
    """PID of the torchrun worker with ``LOCAL_RANK=local_rank`` (a child of the agent)."""
    children = Path(f"/proc/{agent_pid}/task/{agent_pid}/children").read_text().split()
    for pid in children:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if f"LOCAL_RANK={local_rank}".encode() in environ:
            return int(pid)
    return None


@pytest.mark.xdist_group("torchrun")
def test_sigkilled_rank_restarts_group_and_resumes_by_itself(tiny_packs: Path, tmp_path: Path):
    reference = tmp_path / "reference"
    done = subprocess.run(
        _torchrun() + _cmd(tiny_packs, reference, *SETS),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]

    run = tmp_path / "run"
    # The command a user would submit once: the same line serves the first start and restarts.
    argv = _torchrun("--max-restarts=1") + _cmd(tiny_packs, run, *SETS, extra=("--resume", "auto"))
    agent = subprocess.Popen(argv, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while not (run / "checkpoint_0000004.pt").exists():
        assert agent.poll() is None, agent.stdout.read().decode()[-4000:]
        assert time.monotonic() < deadline
        time.sleep(0.005)
    victim = _worker_pid(agent.pid, local_rank=1)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    out = agent.communicate(timeout=400)[0].decode()
    assert agent.returncode == 0, out[-4000:]
    resumes = [r for r in _records(run, "event") if r["event"] == "resume"]
    assert len(resumes) == 1 and resumes[0]["step"] >= 4  # restarted once, from a checkpoint
    # From that checkpoint on, the same losses, LRs and validations as the uninterrupted run,
    # and the same final weights on both ranks.
    assert _records(run, "train") == _records(reference, "train")
    assert _records(run, "val") == _records(reference, "val")
    assert _end(run)["weights_sha256_per_rank"] == _end(reference)["weights_sha256_per_rank"]


_SLOW_SAVE = """
import sys, torch
from pathlib import Path
from hifi_tse.checkpoints import save_checkpoint
payload = {"format": "hifi-tse-checkpoint", "weights": torch.ones(int(sys.argv[2]))}
save_checkpoint(Path(sys.argv[1]), payload)
"""


def _kill_during_save(path: Path, numel: int) -> None:
    """Start a process that writes a large checkpoint to ``path``; SIGKILL it mid-write."""
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_SAVE, str(path), str(numel)], env=_env())
    deadline = time.monotonic() + 120
    while not any(path.parent.glob(f".{path.stem}.*")):
        assert proc.poll() is None, "the save finished before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


def test_kill_during_save_keeps_the_previous_good_checkpoint(tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    good = {"format": "hifi-tse-checkpoint", "weights": torch.arange(4.0)}
    for name in ("checkpoint_0000004.pt", "checkpoint_best.pt"):
        torch.save(good, run / name)
    numel = 100_000_000  # 400 MB: the write takes long enough to be interrupted
    _kill_during_save(run / "checkpoint_best.pt", numel)  # overwriting a good file
    _kill_during_save(run / "checkpoint_0000008.pt", numel)  # a new step's file

    partial = sorted(p.name for p in run.glob(".checkpoint_*"))
    assert len(partial) == 2  # both writers really died mid-save, leaving their temp files
    best = torch.load(run / "checkpoint_best.pt", weights_only=True)
    assert torch.equal(best["weights"], good["weights"])
    assert not (run / "checkpoint_0000008.pt").exists()
    assert [s for s, _ in numbered_checkpoints(run)] == [4]
    assert resolve_resume("auto", run) == run / "checkpoint_0000004.pt"
    # What a restarted job does first: the dead writers' temp files go, good files stay.
    assert sorted(p.name for p in remove_partial_checkpoints(run)) == partial
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint_0000004.pt", "checkpoint_best.pt"]


def test_resume_skips_and_clears_a_half_written_checkpoint(tiny_packs: Path, tmp_path: Path):
    from hifi_tse.cli import main

    run = tmp_path / "run"
    sets = ("train.steps=2", "train.phase1_steps=1", "train.save_interval=2")
    assert main(_cmd(tiny_packs, run, *sets)) == 0
    # A writer killed after it had written part of step 4's file.
    (run / ".checkpoint_0000004.abc123.tmp.pt").write_bytes(b"PK\x03\x04 truncated")
    sets = ("train.steps=3", "train.phase1_steps=1", "train.save_interval=2")
    assert main(_cmd(tiny_packs, run, *sets, extra=("--resume", "auto"))) == 0
    assert [r["step"] for r in _records(run, "event") if r["event"] == "resume"] == [2]
    assert not list(run.glob(".checkpoint_*"))
    assert load_checkpoint(run / "checkpoint_final.pt")["step"] == 3
