"""`hifi-tse demo` end to end on a tiny corpus: train, evaluate, extract, report."""

import json
import math
from pathlib import Path

import pytest
import torch

from hifi_tse.checkpoints import save_generator_checkpoint
from hifi_tse.cli import main
from hifi_tse.config import load_config
from hifi_tse.demo import (
    FRESH_VALIDATIONS,
    MAX_AUTO_THREADS,
    NOMINAL_STEPS,
    budget_overrides,
    demo_threads,
)
from hifi_tse.errors import UserError
from hifi_tse.infer.loading import load_generator
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
            "0.75",
            # one thread: two xdist workers share the CPU
            "--threads",
            "1",
            "--eval-examples",
            "8",
            "--shipped",
            str(shipped),
            "--set",
            f"train.save_interval={NOMINAL_STEPS // 4}",
        ]
    )
    assert code == 0
    console = capsys.readouterr()
    assert "/fresh on cpu" in console.out + console.err  # the trainer's console lines
    report = (out / "report.md").read_text()
    assert "| TP SI-SDRi (dB) |" in report and "fresh (0.75 min)" in report
    summary = json.loads((out / "summary.json").read_text())
    # The test corpus's sources carry no voice tag: they count as real recordings, and with
    # no synthetic test voices the report has one column per model.
    assert set(summary) == {"shipped model, real voices", "fresh (0.75 min), real voices"}
    assert summary["shipped model, real voices"]["ta_suppression_db"] is not None
    # The fresh run trained until its time budget was spent, in one call of the trainer.
    schedule = json.loads((out / "fresh_schedule.json").read_text())
    assert schedule["reason"] == "budget" and schedule["threads"] == 1
    assert 0.75 * 60 <= schedule["wall_s"] < 0.75 * 60 + 40, schedule
    records = read_metrics(out / "fresh")
    assert not [r for r in records if r.get("event") == "resume"]
    assert f"{schedule['steps']} steps with 1 torch thread(s)" in report
    # The schedule's points are fractions of the nominal schedule, hence of the budget.
    fresh_cfg = load_config(out / "fresh" / "config.yaml")
    half = NOMINAL_STEPS // 2
    assert fresh_cfg.train.budget_minutes == 0.75
    assert (fresh_cfg.train.steps, fresh_cfg.train.phase1_steps) == (NOMINAL_STEPS, half)
    assert fresh_cfg.mixing.easy_steps == half and fresh_cfg.mixing.noisy_ref_ramp == [
        half,
        NOMINAL_STEPS,
    ]
    assert fresh_cfg.train.save_interval == NOMINAL_STEPS // 4  # the user's --set still applies
    train, val = split_records(records)
    assert train[-1]["phase"] == 2 and train[-1]["schedule_step"] > 0.9 * NOMINAL_STEPS
    # the learning rate ended its decay: the last logged LR is near the floor
    assert train[-1]["lr"] < 0.2 * fresh_cfg.train.lr
    assert len(val) == FRESH_VALIDATIONS, [v["step"] for v in val]
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


@pytest.mark.parametrize("steps", [715, 3830, 3834])
def test_budget_overrides_fit_every_schedule_and_a_fixed_number_of_validations(steps):
    cfg = load_config(DEMO)
    sized = load_config(DEMO, overrides=budget_overrides(steps, 0.5))
    assert sized.train.steps == steps and sized.train.phase1_steps == steps // 2
    # validation points, the final step's included: the configured interval would give more
    # in a long schedule and fewer in a short one
    assert math.ceil(steps / cfg.train.val_interval) != FRESH_VALIDATIONS
    assert math.ceil(steps / sized.train.val_interval) == FRESH_VALIDATIONS
    assert sized.mixing.noisy_ref_ramp == [steps // 2, steps]


@pytest.mark.parametrize(
    ("option", "message"), [(["--threads", "0"], "--threads: expected a positive integer")]
)
def test_demo_refuses_bad_options_before_any_work(tmp_path, capsys, option, message):
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--corpus", str(tmp_path / "corpus"), *option])
    assert code != 0 and message in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "corpus").exists()  # nothing was started


def test_demo_threads_default_to_the_usable_cores():
    auto = demo_threads(None)
    assert 1 <= auto <= MAX_AUTO_THREADS
    assert demo_threads(3) == 3
    with pytest.raises(UserError, match="--threads"):
        demo_threads(0)
