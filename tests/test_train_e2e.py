"""End-to-end training runs of the tiny config on the synthetic corpus (CPU).

Runs go through the real command line: in-process via ``hifi_tse.cli.main`` where that is
enough, as real subprocesses for SIGKILL-and-resume and for ``torchrun`` (DDP, gloo).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hifi_tse.checkpoints import capture_rng_state, load_checkpoint
from hifi_tse.cli import main
from hifi_tse.config import load_config
from hifi_tse.errors import UserError
from hifi_tse.schedules import lr_at

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "tiny.yaml")
# Short segments and few validation examples keep each run to a few seconds on 2 shared cores.
FAST = [
    "audio.segment_seconds=0.25",
    "audio.ref_seconds=0.25",
    "train.batch_size=2",
    "train.val_examples=8",
    "train.val_batch_size=4",
    "train.log_interval=1",
    "train.warmup_steps=3",
]
pytestmark = pytest.mark.usefixtures("one_thread")
TIMING_KEYS = {"step_time", "examples_per_s", "eta_s"}


def _sets(*items: str) -> list[str]:
    out: list[str] = []
    for item in (*FAST, *items):
        out += ["--set", item]
    return out


def _cmd(packs: Path, run: Path, *sets: str, extra: tuple[str, ...] = ()) -> list[str]:
    head = ["train", "--config", TINY, "--data", str(packs), "--out", str(run), "--device", "cpu"]
    return head + _sets(*sets) + list(extra)


def _records(run: Path, kind: str) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows if r["kind"] == kind]


def _end(run: Path) -> dict:
    return [r for r in _records(run, "event") if r["event"] == "end"][-1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"  # same reductions in every process -> bitwise comparable
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


# Reference run shared by several tests: 16 steps, phase 1 -> 2 at step 8 (mid-run).
RESUME_SETS = (
    "train.steps=16",
    "train.phase1_steps=8",
    "train.save_interval=4",
    "train.val_interval=4",
    "train.keep_last=1",
)


@pytest.fixture(scope="module")
def reference_run(tiny_packs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("reference") / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "hifi_tse", *_cmd(tiny_packs, run, *RESUME_SETS)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def test_reference_run_curriculum_checkpoints_and_logs(reference_run: Path):
    run = reference_run
    train = _records(run, "train")
    assert [r["step"] for r in train] == list(range(1, 17))
    assert [r["phase"] for r in train] == [1] * 8 + [2] * 8  # boundary crossed mid-run
    # Phase 1 has no TA examples; phase 2 draws some (ta_ratio of the tiny config).
    assert all(r["ta_per_batch"] == 0 for r in train[:8])
    cfg = load_config(TINY, [*FAST, *RESUME_SETS])
    for r in train:
        assert r["lr"] == pytest.approx(lr_at(r["step"] - 1, cfg.train))
        for key in ("loss/sep", "loss/phase", "loss/amp", "loss/ta_energy", "loss/total"):
            assert key in r
        assert r["loss/ta_energy"] >= 0.0  # relu TA term never goes negative
        assert r["grad_norm_before"] >= r["grad_norm_after"] > 0
    # keep_last=1: the newest numbered checkpoint, the phase boundary (step 8), best, final.
    names = sorted(p.name for p in run.glob("checkpoint_*.pt"))
    assert names == [
        "checkpoint_0000008.pt",
        "checkpoint_0000016.pt",
        "checkpoint_best.pt",
        "checkpoint_final.pt",
    ]
    final = torch.load(run / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    assert final["step"] == 16 and set(final["ema"]) == set(final["model"])
    assert load_config(run / "config.yaml").train.steps == 16  # resolved config saved
    val = _records(run, "val")
    assert [v["step"] for v in val] == [4, 8, 12, 16]
    for key in ("loss", "tp_si_sdr", "tp_si_sdri", "rms_ratio", "ta_energy_db"):
        assert key in val[0] and f"{key}_se" in val[0]
    assert val[0]["tp_count"] + val[0]["ta_count"] == 8
    # Best checkpoint = highest TP SI-SDR among validations.
    best = torch.load(run / "checkpoint_best.pt", map_location="cpu", weights_only=True)
    assert best["train_state"]["best_si_sdr"] == max(v["tp_si_sdr"] for v in val)


def test_tensorboard_has_scalars_audio_and_health_text(reference_run: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(reference_run / "tensorboard"), size_guidance={"audio": 0})
    acc.Reload()
    tags = acc.Tags()
    for tag in (
        "train/loss_sep",
        "train/loss_amp",
        "train/lr",
        "train/noisy_ref_prob",
        "train/tp_per_batch",
        "train/ta_per_batch",
        "val/tp_si_sdr",
        "val/rms_ratio",
    ):
        assert tag in tags["scalars"], tag
    assert "val_audio/0/estimate" in tags["audio"] and "val_audio/0/mixture" in tags["audio"]


def test_sigkill_then_resume_reproduces_losses_exactly(
    tiny_packs: Path, tmp_path: Path, reference_run: Path
):
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "hifi_tse", *_cmd(tiny_packs, run, *RESUME_SETS)]
    proc = subprocess.Popen(argv, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not (run / "checkpoint_0000004.pt").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not (run / "checkpoint_final.pt").exists()  # really killed mid-run
    killed_at = max(r["step"] for r in _records(run, "train"))
    assert killed_at < 16
    resumed = subprocess.run(
        [*argv, "--resume", "latest"], env=_env(), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed at step" in resumed.stdout
    # Step for step, the same losses, LRs, validations and final weights.
    assert _records(run, "train") == _records(reference_run, "train")
    assert _records(run, "val") == _records(reference_run, "val")
    assert _end(run)["weights_sha256_per_rank"] == _end(reference_run)["weights_sha256_per_rank"]


@pytest.mark.parametrize("whole_group", [False, True], ids=["trainer", "process-group"])
def test_sigterm_saves_and_stops_then_resumes(tiny_packs: Path, tmp_path: Path, whole_group: bool):
    run = tmp_path / "run"
    # a data worker too when the whole group is signalled (a cluster's pre-emption does that)
    workers = f"mixing.num_workers={1 if whole_group else 0}"
    sets = ("train.steps=500", "train.phase1_steps=1", workers)
    argv = [sys.executable, "-m", "hifi_tse", *_cmd(tiny_packs, run, *sets)]
    proc = subprocess.Popen(
        argv,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=whole_group,
    )
    deadline = time.monotonic() + 240
    while not (run / "metrics.jsonl").exists() or not _records(run, "train"):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    if whole_group:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert "SIGTERM at step" in out.decode()
    end = _end(run)
    assert end["reason"] == "signal" and 0 < end["step"] < 500
    final = torch.load(run / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    assert final["step"] == end["step"]
    assert (run / f"checkpoint_{end['step']:07d}.pt").is_file()  # what --resume latest takes
    steps = f"train.steps={end['step'] + 1}"
    more = _cmd(tiny_packs, run, sets[1], workers, steps, extra=("--resume", "latest"))
    assert main(more) == 0
    assert _end(run)["step"] == end["step"] + 1 and _end(run)["reason"] == "steps"


def test_reset_optimizer_keeps_step_and_lr_and_reset_patience(
    tiny_packs: Path, tmp_path: Path, reference_run: Path
):
    run = tmp_path / "run"
    boundary = reference_run / "checkpoint_0000008.pt"
    assert load_checkpoint(boundary)["train_state"]["best_si_sdr"] > float("-inf")
    extra = ("--resume", str(boundary), "--reset-optimizer", "--reset-patience", "--no-tensorboard")
    assert main(_cmd(tiny_packs, run, *RESUME_SETS, extra=extra)) == 0
    ref = {r["step"]: r for r in _records(reference_run, "train")}
    got = {r["step"]: r for r in _records(run, "train")}
    assert sorted(got) == list(range(9, 17))  # step kept: continues at 9
    assert all(got[s]["lr"] == ref[s]["lr"] for s in got)  # LR schedule position kept
    assert got[9]["loss/total"] == ref[9]["loss/total"]  # same weights, same data
    assert got[10]["loss/total"] != ref[10]["loss/total"]  # fresh Adam moments moved it
    ckpt = load_checkpoint(run / "checkpoint_final.pt")
    assert ckpt["optimizer"]["state"][0]["step"].item() == 8  # only the 8 new steps
    # --reset-patience: the first validation after resuming is a new best by definition.
    assert _records(run, "val")[0]["improved"] is True


def test_early_stopping_counts_validations_without_tp_sdr_gain(tiny_packs: Path, tmp_path):
    # lr 0: weights never change, so TP SI-SDR never improves after the first validation.
    sets = (
        "train.steps=20",
        "train.phase1_steps=2",
        "train.val_interval=2",
        "train.patience=2",
        "train.lr=0.0",
        "train.min_lr=0.0",
        "train.save_interval=100",
    )
    assert main(_cmd(tiny_packs, tmp_path / "run", *sets)) == 0
    end = _end(tmp_path / "run")
    # val at 2 (phase 1: best), 4 and 6 (phase 2: no gain) -> stop at 6.
    assert end["reason"] == "early_stop" and end["step"] == 6
    assert (tmp_path / "run" / "checkpoint_0000006.pt").exists()


def test_max_minutes_stops_cleanly_with_final_checkpoint(tiny_packs: Path, tmp_path):
    extra = ("--max-minutes", "0.0001")
    assert (
        main(
            _cmd(
                tiny_packs, tmp_path / "run", "train.steps=50", "train.phase1_steps=2", extra=extra
            )
        )
        == 0
    )
    end = _end(tmp_path / "run")
    assert end["reason"] == "max_minutes" and end["step"] == 1
    assert load_checkpoint(tmp_path / "run" / "checkpoint_final.pt")["step"] == 1
    assert main(_cmd(tiny_packs, tmp_path / "run", "train.steps=50", "train.phase1_steps=2")) == 2


def test_unsafe_loss_refused_unless_allowed(tiny_packs: Path, tmp_path, capsys):
    legacy = "objective.ta_loss=legacy_db"
    assert (
        main(_cmd(tiny_packs, tmp_path / "a", legacy, "train.steps=1", "train.phase1_steps=0")) == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "reward silence" in err and "--allow-unsafe-loss" in err
    assert not (tmp_path / "a").exists()  # refused before anything was written
    extra = ("--allow-unsafe-loss",)
    assert (
        main(
            _cmd(
                tiny_packs,
                tmp_path / "b",
                legacy,
                "train.steps=1",
                "train.phase1_steps=0",
                extra=extra,
            )
        )
        == 0
    )
    assert "legacy_db" in capsys.readouterr().out  # still warned


def test_validation_is_fixed_uses_config_ta_weight_and_restores_rng(tiny_packs: Path, tmp_path):
    from hifi_tse.losses.objective import Objective
    from hifi_tse.train.trainer import Trainer, TrainOptions

    cfg = load_config(
        TINY, [*FAST, "train.steps=4", "train.phase1_steps=2", "objective.ta_weight=0.1"]
    )
    trainer = Trainer(
        TrainOptions(
            cfg=cfg, data_dir=tiny_packs, run_dir=tmp_path, device="cpu", tensorboard=False
        )
    )
    before = capture_rng_state()
    first = trainer.validate()
    after = capture_rng_state()
    assert before["python"] == after["python"]
    assert torch.equal(before["numpy"]["keys"], after["numpy"]["keys"])
    assert torch.equal(before["torch"], after["torch"])
    assert trainer.validate() == first  # same set, same numbers
    # The validation loss is the training objective with the config's ta_weight (0.1) ...
    loader = torch.utils.data.DataLoader(
        trainer.val_subset, batch_size=4, collate_fn=trainer._collate()
    )

    def mean_loss(ta_weight: float) -> float:
        lcfg = load_config(TINY, [*FAST, f"objective.ta_weight={ta_weight}"]).objective
        obj = Objective(lcfg, cfg.audio.sample_rate)
        with torch.no_grad():
            vals = [
                float(
                    obj(
                        trainer.ema.module(b["mix"], b["ref"]), b["target"], b["target_present"], 2
                    )[0]
                )
                for b in loader
            ]
        return sum(vals) / len(vals)

    assert first["loss"] == pytest.approx(mean_loss(0.1), rel=1e-5)
    # ... not the seed's silent function default of 0.2.
    assert first["loss"] != pytest.approx(mean_loss(0.2), rel=1e-5)
    assert first["tp_count"] >= 1 and first["ta_count"] >= 1
    trainer.log.close()


def test_torchrun_two_cpu_ranks_stay_in_sync(tiny_packs: Path, tmp_path: Path):
    torchrun = Path(sys.executable).with_name("torchrun")
    run = tmp_path / "run"
    cmd = [
        str(torchrun),
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "hifi_tse",
        *_cmd(
            tiny_packs,
            run,
            "train.steps=3",
            "train.phase1_steps=1",
            "train.save_interval=2",
            "train.val_interval=3",
            "train.grad_accum_steps=2",
        ),
    ]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    end = _end(run)
    hashes = end["weights_sha256_per_rank"]
    assert len(hashes) == 2 and hashes[0] == hashes[1]  # DDP kept the ranks identical
    streams = end["last_batch_per_rank"]
    assert streams[0]["indices"] == streams[1]["indices"]  # same positions ...
    assert streams[0]["mix_sha256"] != streams[1]["mix_sha256"]  # ... different mixtures
    # One set of checkpoints and one log line per step (rank 0 only).
    names = sorted(p.name for p in run.glob("checkpoint_*.pt"))
    assert names == [
        "checkpoint_0000001.pt",
        "checkpoint_0000002.pt",
        "checkpoint_0000003.pt",
        "checkpoint_best.pt",
        "checkpoint_final.pt",
    ]
    assert [r["step"] for r in _records(run, "train")] == [1, 2, 3]
    # Validation reduced over ranks: the whole fixed set counted once.
    val = _records(run, "val")[0]
    assert val["tp_count"] + val["ta_count"] == 8


def test_gan_phase_warmup_ramp_and_exact_resume(tiny_packs: Path, tmp_path: Path):
    sets = (
        "train.steps=6",
        "train.phase1_steps=1",
        "train.save_interval=2",
        "train.val_interval=3",
        "gan.enabled=true",
        "gan.start_step=2",
        "gan.disc_warmup_steps=1",
        "gan.ramp_steps=2",
        "gan.channels=4",
    )
    full = tmp_path / "full"
    assert main(_cmd(tiny_packs, full, *sets)) == 0
    train = _records(full, "train")
    assert [r["phase"] for r in train] == [1, 2, 3, 3, 3, 3]
    assert [r["adv_scale"] for r in train] == [0.0, 0.0, 0.0, 0.0, 0.5, 1.0]
    assert "loss/disc" in train[2] and "loss/disc" not in train[1]
    assert train[4]["loss/adv"] > 0 and train[4]["loss/fm"] > 0
    ckpt = load_checkpoint(full / "checkpoint_0000004.pt")
    assert ckpt["discriminator"] and ckpt["disc_optimizer"]["state"]
    # Resume inside the GAN phase (ramp), in another run folder: identical steps 5 and 6.
    part = tmp_path / "part"
    extra = ("--resume", str(full / "checkpoint_0000004.pt"))
    assert main(_cmd(tiny_packs, part, *sets, extra=extra)) == 0
    assert _records(part, "train") == train[4:]
    assert _end(part)["weights_sha256_per_rank"] == _end(full)["weights_sha256_per_rank"]


@pytest.mark.slow
def test_ta_heavy_training_keeps_tp_level(tiny_packs: Path, tmp_path: Path):
    """Over-suppression guard: mostly-TA batches for a few hundred steps must not pull the
    target-present output level down (the seed's rms_ratio collapse to 0.63).

    Measured on the synthetic corpus: ta_ratio 0.5, batch 4 keeps rms_ratio at 1.0-1.2 over
    300 steps; ta_ratio 0.8 still drifts (0.67 at batch 4, 0.26 at batch 2, where most
    batches hold no TP example and so no amplitude anchor)."""
    sets = (
        "train.steps=300",
        "train.phase1_steps=30",
        "train.val_interval=50",
        "train.save_interval=100",
        "train.log_interval=25",
        "train.val_examples=16",
        "train.patience=100",
        "mixing.ta_ratio=0.5",
        "train.batch_size=4",
        "train.ema_decay=0.9",
    )
    assert main(_cmd(tiny_packs, tmp_path / "run", *sets)) == 0
    val = _records(tmp_path / "run", "val")
    phase2 = [v for v in val if v["step"] > 30]
    assert phase2 and all(v["rms_ratio"] > 0.8 for v in phase2), [v["rms_ratio"] for v in val]
    assert _records(tmp_path / "run", "train")[-1]["ta_per_batch"] > 0


def test_dataloader_workers_do_not_change_training(tiny_packs: Path, tmp_path: Path):
    sets = ("train.steps=3", "train.phase1_steps=1", "train.val_interval=3")
    losses = []
    for workers in (0, 2):
        run = tmp_path / f"w{workers}"
        assert main(_cmd(tiny_packs, run, *sets, f"mixing.num_workers={workers}")) == 0
        losses.append([(r["step"], r["loss/total"]) for r in _records(run, "train")])
        assert len(losses[-1]) == 3
    assert losses[0] == losses[1]


def test_init_from_fine_tunes_with_new_level_features(
    reference_run: Path, tiny_packs: Path, tmp_path: Path, capsys
):
    """A new run warm-started from a finished one: shared weights copied, new ones (the
    zero-initialised level features) added, so the first validation matches the source."""
    source = reference_run / "checkpoint_final.pt"
    run = tmp_path / "finetune"
    sets = ("train.steps=2", "train.phase1_steps=1", "train.val_interval=1")
    sets += ("band_split.level_features=true",)
    assert main(_cmd(tiny_packs, run, *sets, extra=("--init-from", str(source)))) == 0
    out = capsys.readouterr().out
    assert "weight tensors copied; not in it, kept as built: encoder.level_weight" in out
    ckpt = torch.load(run / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    assert ckpt["step"] == 2 and "encoder.level_weight" in ckpt["model"]
    src = torch.load(source, map_location="cpu", weights_only=True)
    # two steps of fine-tuning moved the weights only a little from the source's EMA
    drift = max(
        (ckpt["model"][k] - src["ema"][k]).abs().max().item() for k in src["ema"] if "weight" in k
    )
    assert 0 < drift < 0.1


def test_init_from_rejects_other_shapes_and_resume(reference_run: Path, tiny_packs, tmp_path):
    source = str(reference_run / "checkpoint_final.pt")
    with pytest.raises(UserError, match="other shapes"):
        from hifi_tse.models.generator import build_generator
        from hifi_tse.train.trainer import warm_start

        warm_start(build_generator(load_config(TINY, ["model.feature_dim=12"])), source)
    both = ("--init-from", source, "--resume", "latest")
    assert main(_cmd(tiny_packs, tmp_path / "r", extra=both)) == 2


def test_resume_auto_starts_fresh_then_continues(tiny_packs: Path, tmp_path):
    run = tmp_path / "run"
    sets = ("train.phase1_steps=2", "train.save_interval=2", "train.val_interval=100")
    auto = ("--resume", "auto")
    # An empty folder: a fresh start (what a job restarted by torchrun first needs) ...
    assert main(_cmd(tiny_packs, run, "train.steps=2", *sets, extra=auto)) == 0
    assert not [r for r in _records(run, "event") if r["event"] == "resume"]
    # ... and once it holds checkpoints, the same command continues from the newest.
    assert main(_cmd(tiny_packs, run, "train.steps=4", *sets, extra=auto)) == 0
    events = [r for r in _records(run, "event") if r["event"] == "resume"]
    assert [e["step"] for e in events] == [2]
    assert [r["step"] for r in _records(run, "train")] == [1, 2, 3, 4]
