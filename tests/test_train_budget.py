"""``train.budget_minutes``: the schedule follows wall-clock time, so a run ends its phases
and learning-rate decay when its budget is spent, however fast the machine turns out to be."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_train_e2e import _cmd, _end, _records

from hifi_tse.checkpoints import load_checkpoint
from hifi_tse.cli import main
from hifi_tse.data.datasets import InfiniteSampler
from hifi_tse.schedules import TimeBudget, crossed

pytestmark = pytest.mark.usefixtures("one_thread")


def test_budget_position_is_the_spent_share_of_the_nominal_schedule():
    budget = TimeBudget(minutes=2.0, nominal_steps=1000, spent_seconds=30.0)
    assert 0.25 <= budget.progress() < 0.26  # a resumed run starts where it stopped
    assert budget.position(0.0) == 0 and budget.position(0.4999) == 499
    assert budget.position(1.0) == 1000 and budget.position(1.7) == 1000
    assert TimeBudget(1.0, 10, spent_seconds=600.0).progress() == 1.0


def test_crossed_marks_every_multiple_passed_once():
    # a step from position 9 to 12 passes the point 10; 10 -> 12 passes nothing new
    assert crossed(9, 12, 10) and not crossed(10, 12, 10)
    assert crossed(19, 20, 10) and not crossed(20, 20, 10)
    # without a budget the position is the step, and crossing is "step % interval == 0"
    assert [s for s in range(1, 31) if crossed(s - 1, s, 10)] == [10, 20, 30]


def test_sampler_hands_the_schedule_position_to_the_dataset():
    position = [0]
    stream = iter(InfiniteSampler(start_index=6, position=lambda: position[0]))
    assert next(stream) == (6, 0)
    position[0] = 123
    assert next(stream) == (7, 123)
    assert next(iter(InfiniteSampler(start_index=6))) == 6  # no budget: plain indices


BUDGET = (
    "train.budget_minutes=0.25",
    "train.steps=1000",
    "train.phase1_steps=500",
    "train.warmup_steps=50",
    "train.val_interval=500",
    "train.save_interval=250",
    "train.log_interval=1",
)


def test_budgeted_run_spends_its_budget_and_ends_its_schedule(tiny_packs: Path, tmp_path: Path):
    run = tmp_path / "run"
    # a data worker: the sampler hands it the schedule position from the first batch on
    assert main(_cmd(tiny_packs, run, *BUDGET, "mixing.num_workers=1")) == 0
    end = _end(run)
    assert end["reason"] == "budget"
    rows = _records(run, "train")
    positions = [r["schedule_step"] for r in rows]
    assert positions == sorted(positions) and positions[-1] == 1000
    # The steps done are whatever the machine managed; the schedule still ran to its end.
    assert end["step"] == rows[-1]["step"] and end["step"] != 1000
    assert rows[0]["phase"] == 1 and rows[-1]["phase"] == 2
    assert rows[-1]["lr"] == pytest.approx(1e-4, rel=0.05)  # tiny.yaml's min_lr: decay done
    assert all(r["schedule_step"] >= 500 for r in rows if r["phase"] == 2)
    val = _records(run, "val")
    assert len(val) == 2  # the points 500 and 1000 of the nominal schedule
    state = load_checkpoint(run / "checkpoint_final.pt")["train_state"]
    assert 0.25 * 60 <= state["budget_seconds"] <= 0.25 * 60 + 1e-6


def test_budgeted_run_resumes_with_the_budget_it_has_left(tiny_packs: Path, tmp_path: Path):
    run = tmp_path / "run"
    assert main(_cmd(tiny_packs, run, *BUDGET, extra=("--max-minutes", "0.1"))) == 0
    stopped = _end(run)
    assert stopped["reason"] == "max_minutes"
    first = load_checkpoint(run / "checkpoint_final.pt")["train_state"]["budget_seconds"]
    assert 0.09 * 60 <= first < 0.25 * 60
    assert main(_cmd(tiny_packs, run, *BUDGET, extra=("--resume", "latest"))) == 0
    assert _end(run)["reason"] == "budget"
    rows = _records(run, "train")
    assert rows[-1]["schedule_step"] == 1000
    assert [r["schedule_step"] for r in rows] == sorted(r["schedule_step"] for r in rows)
    # Resuming a run that spent its budget trains nothing, and says so.
    assert main(_cmd(tiny_packs, run, *BUDGET, extra=("--resume", "latest"))) == 0
    said = [r["message"] for r in _records(run, "event") if r.get("event") == "warning"]
    assert any("whole" in m and "train.budget_minutes" in m for m in said), said


_API_RUN = """
import sys
from pathlib import Path
from hifi_tse.config import load_config
from hifi_tse.train.trainer import TrainOptions, train
cfg = load_config(sys.argv[1], sys.argv[4:])
train(TrainOptions(cfg=cfg, data_dir=Path(sys.argv[2]), run_dir=Path(sys.argv[3])))
"""


def test_a_budgeted_run_through_the_python_api_exits_with_its_workers(
    tiny_packs: Path, tmp_path: Path
):
    """What ``hifi-tse demo`` does: ``train()`` in a process that then ends. Its data worker
    ignores SIGTERM, so a worker the trainer left running would keep the process waiting."""
    import subprocess
    import sys

    from test_train_e2e import FAST, TINY, _env

    sets = [*FAST, *BUDGET, "train.budget_minutes=0.1", "mixing.num_workers=1"]
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-c", _API_RUN, TINY, str(tiny_packs), str(run), *sets],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert _end(run)["reason"] == "budget"
