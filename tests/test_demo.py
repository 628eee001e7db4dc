"""`hifi-tse demo` end to end on a tiny corpus: train, evaluate, extract, report."""

import json
import math
from pathlib import Path

import pytest
import torch

from hifi_tse.cli import main
from hifi_tse.config import load_config
from hifi_tse.demo import (
    FRESH_VALIDATIONS,
    MAX_AUTO_THREADS,
    STEP_BUDGET_SHARE,
    budget_overrides,
    fastest,
    schedule_steps,
    second_leg_steps,
    thread_candidates,
)
from hifi_tse.errors import UserError
from hifi_tse.infer.loading import load_generator, save_generator_checkpoint
from hifi_tse.models.generator import build_generator
from hifi_tse.train.curves import loss_term_names, read_metrics, split_records

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
DEMO = TINY.with_name("demo.yaml")


def test_demo_trains_evaluates_extracts_and_reports(tiny_packs, tmp_path, one_thread, capsys):
    cfg = load_config(TINY)
    shipped = tmp_path / "shipped.pt"
    save_generator_checkpoint(shipped, build_generator(cfg), cfg, step=0)
    out = tmp_path / "demo"
    code = main(
        [
            "demo",
            "--out",
            str(out),
            "--corpus",
            str(tiny_packs),
            "--config",
            str(TINY),
            "--minutes",
            "1",
            "--timing-steps",
            "10",
            # one thread: two xdist workers share the CPU (auto mode would also time all cores)
            "--threads",
            "1",
            "--eval-examples",
            "8",
            "--shipped",
            str(shipped),
            "--set",
            "train.val_interval=10",
        ]
    )
    assert code == 0
    console = capsys.readouterr()
    # the thrown-away timing run prints one result line, not its training log
    assert "timed 10 steps with 1 thread(s)" in console.out
    assert "fresh_timing" not in console.out + console.err
    assert "/fresh on cpu" in console.out + console.err  # ... while the fresh run still logs
    report = (out / "report.md").read_text()
    assert "| TP SI-SDRi (dB) |" in report and "fresh (1 min)" in report
    summary = json.loads((out / "summary.json").read_text())
    # The test corpus's sources carry no voice tag: they count as real recordings, and with
    # no synthetic test voices the report has one column per model.
    assert set(summary) == {"shipped model, real voices", "fresh (1 min), real voices"}
    assert summary["shipped model, real voices"]["ta_suppression_db"] is not None
    # the schedule was sized from a timing run on this machine to what is left of the budget
    schedule = json.loads((out / "fresh_schedule.json").read_text())
    assert 0 < schedule["calibration_s"] < 30 and not (out / "fresh_timing").exists()
    assert schedule["threads"] == 1 and list(schedule["step_seconds_by_threads"]) == ["1"]
    first_steps = schedule["first_steps"]
    assert first_steps == schedule_steps(
        60 - schedule["calibration_s"], 60 / schedule["steps_per_minute"]
    )
    assert f"a schedule of {first_steps} steps" in report
    # ... then re-sized from the speed of its first leg, which the second leg resumed from
    leg_steps, steps = schedule["first_leg_steps"], schedule["steps"]
    assert 0 < leg_steps < min(first_steps, steps) and schedule["first_leg_s"] > 0, schedule
    assert "re-sized after the first" in console.out
    assert "fresh schedule re-sized" in console.out, console.out
    records = read_metrics(out / "fresh")
    resumes = [r["step"] for r in records if r.get("event") == "resume"]
    assert resumes == [leg_steps]
    assert f"{steps} steps in all" in report
    # both curriculum phases ran: phase 1 = half of the schedule
    fresh_cfg = load_config(out / "fresh" / "config.yaml")
    half = steps // 2
    assert (fresh_cfg.train.steps, fresh_cfg.train.phase1_steps) == (steps, half)
    # ... and so are the data curriculum, the noisy-enrollment ramp and the warm-up
    assert fresh_cfg.data.easy_steps == half and fresh_cfg.data.noisy_ref_ramp == [half, steps]
    assert fresh_cfg.train.warmup_steps == max(steps // 12, 1)
    assert fresh_cfg.train.val_interval == 10  # the user's --set still applies
    train, val = split_records(read_metrics(out / "fresh"))
    assert max(r["step"] for r in train) >= 10 and train[-1]["phase"] == 2
    assert val, "the fresh run validated at least once"
    assert "loss/amp" in loss_term_names(train)
    assert (out / "fresh_curves.png").stat().st_size > 10_000
    wavs = sorted(p.name for p in (out / "examples").glob("*_estimate.wav"))
    assert len(wavs) == 3 and sum("_ta_" in w for w in wavs) == 1
    for name in ("eval_shipped_real", "eval_fresh_real"):
        assert (out / name / "metrics.json").is_file()
    assert not (out / "eval_shipped_synthetic").exists()  # no synthetic test voices here


def test_export_checkpoint_format_keeps_only_inference_state(tmp_path):
    cfg = load_config(TINY)
    model = build_generator(cfg)
    full = tmp_path / "full.pt"
    payload = {
        "format": "hifi-tse-checkpoint",
        "version": 1,
        "config": cfg.to_dict(),
        "step": 42,
        "model": model.state_dict(),
        "ema": {k: v + 0.01 for k, v in model.state_dict().items()},
        "optimizer": {"state": {}, "param_groups": []},
    }
    torch.save(payload, full)
    small = tmp_path / "small.pt"
    assert (
        main(["export", "--checkpoint", str(full), "--format", "checkpoint", "-o", str(small)]) == 0
    )
    saved = torch.load(small, weights_only=True)
    assert sorted(saved) == ["config", "ema", "format", "step", "version"]
    assert saved["step"] == 42
    loaded, _ = load_generator(small)
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, payload["ema"][key])


def test_onnx_export_in_process_leaves_grad_mode_alone(tmp_path):
    """The CLI runs in-process (demo, tests): exporting must not switch autograd off."""
    cfg = load_config(TINY)
    ckpt = tmp_path / "model.pt"
    save_generator_checkpoint(ckpt, build_generator(cfg), cfg, step=1)
    assert torch.is_grad_enabled()
    assert main(["export", "--checkpoint", str(ckpt), "-o", str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "m.onnx").stat().st_size > 0
    assert torch.is_grad_enabled()


def test_schedule_steps_fill_the_budget_share():
    # 600 s at 0.5 s/step: 1200 steps, less the share kept for validation and checkpoints
    assert schedule_steps(600.0, 0.5) == int(STEP_BUDGET_SHARE * 1200)
    assert schedule_steps(1.0, 0.5) == 20  # never fewer than 20 (both phases must exist)
    # re-sized after a first leg: the steps done plus those that fit in the time left
    assert schedule_steps(600.0, 0.5, steps_done=300) == 300 + int(STEP_BUDGET_SHARE * 1200)
    assert schedule_steps(0.1, 0.5, steps_done=300) == 301  # at least one more step


@pytest.mark.parametrize("steps", [715, 3830, 3834])
def test_budget_overrides_fit_every_schedule_and_a_fixed_number_of_validations(steps):
    cfg = load_config(DEMO)
    sized = load_config(DEMO, overrides=budget_overrides(steps, 0.5))
    assert sized.train.steps == steps and sized.train.phase1_steps == steps // 2
    # validation points, the final step's included: the configured interval would give more
    # in a long schedule and fewer in a short one
    assert math.ceil(steps / cfg.train.val_interval) != FRESH_VALIDATIONS
    assert math.ceil(steps / sized.train.val_interval) == FRESH_VALIDATIONS
    assert sized.data.noisy_ref_ramp == [steps // 2, steps]


def test_thread_choice_times_one_thread_and_the_cores():
    auto = thread_candidates(None)
    assert auto[0] == 1 and max(auto) <= MAX_AUTO_THREADS and auto == sorted(set(auto))
    assert thread_candidates(3) == [3]
    with pytest.raises(UserError, match="--threads"):
        thread_candidates(0)
    assert fastest({1: 1.6, 2: 1.1}) == 2  # quiet machine: both cores win
    assert fastest({1: 0.9, 2: 30.0}) == 1  # busy machine: oversubscribed threads lose
    assert fastest({1: 1.0, 2: 1.0}) == 1


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--expected-steps-per-minute", "0"], "--expected-steps-per-minute: expected a positive"),
        (["--timing-steps", "5"], "--timing-steps: expected at least 10"),
        (["--threads", "0"], "--threads: expected a positive integer"),
    ],
)
def test_demo_refuses_bad_timing_options_before_any_work(tmp_path, capsys, option, message):
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--corpus", str(tmp_path / "corpus"), *option])
    assert code != 0 and message in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "corpus").exists()  # nothing was started


def test_second_leg_is_resized_from_the_first_leg_or_skipped():
    # 100 steps in 50 s: 0.5 s/step, so 600 s left re-size the schedule like schedule_steps
    assert second_leg_steps(1000, 100, 50.0, 600.0) == schedule_steps(600.0, 0.5, 100)
    # a slower first leg than timed shrinks the schedule, a faster one grows it
    assert second_leg_steps(1000, 100, 100.0, 600.0) < second_leg_steps(1000, 100, 25.0, 600.0)
    assert second_leg_steps(1000, 1000, 50.0, 600.0) is None  # the first leg did it all
    assert second_leg_steps(1000, 100, 50.0, 0.0) is None  # start-up ate the budget
    assert second_leg_steps(1000, 100, 50.0, -3.0) is None
    assert second_leg_steps(1000, 0, 50.0, 600.0) is None  # no step to time the speed by
