"""The training loop.

:class:`Trainer` owns everything a checkpoint holds (weights, EMA, optimisers, :class:`TrainState`,
RNG streams) and runs small pieces in order each step: :func:`step.train_step`, logging,
:meth:`Trainer.validate`, :meth:`Trainer.save`. It is built in three parts: building and
restoring (:class:`~hifi_tse.train.setup.RunSetup`), this loop, and checkpoint writing
(:class:`~hifi_tse.train.run_checkpoints.RunCheckpoints`). Nothing here sets a number: every
interval, weight and threshold comes from the config.
"""

from __future__ import annotations

import gc
import hashlib
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from hifi_tse.checkpoints import (
    BEST_NAME,
    FINAL_NAME,
    TrainState,
    phase_boundary_steps,
    remove_partial_checkpoints,
)
from hifi_tse.config import save_config
from hifi_tse.data.datasets import VAL_SEED
from hifi_tse.devices import bf16_autocast_available
from hifi_tse.errors import UserError
from hifi_tse.schedules import PHASE_TP_TA, TimeBudget, crossed, lr_at, stage_at
from hifi_tse.train.distributed import (
    DistInfo,
    any_rank,
    gather_objects,
    init_distributed,
    rank0_value,
    shutdown_distributed,
)
from hifi_tse.train.logging_utils import (
    RunLogger,
    format_train_line,
    format_val_line,
    truncate_metrics,
)
from hifi_tse.train.monitor import HealthMonitor
from hifi_tse.train.run_checkpoints import RunCheckpoints, weights_digest
from hifi_tse.train.setup import (
    RunSetup,
    TrainOptions,
    check_loss_safety,
    ignore_stop_signals,
    merge_architecture,
    warm_start,
)
from hifi_tse.train.step import StepResult, set_lr, train_step
from hifi_tse.train.validation import preserved_rng, should_stop_early, update_best, validate

# Consecutive non-finite steps (each skipped) before training stops: a few are an AMP or
# data accident that the next batches ride out; this many in a row is divergence.
MAX_NONFINITE_STEPS = 20


class TrainingDiverged(UserError):
    """Too many consecutive non-finite steps."""


class Trainer(RunSetup, RunCheckpoints):
    """One training run (one process of it under torchrun)."""

    def __init__(self, opts: TrainOptions) -> None:
        self.opts = opts
        self.dist: DistInfo = init_distributed(opts.device)
        self.run_dir = Path(opts.run_dir)
        self.data_dir = Path(opts.data_dir)
        self._check_data_dir()
        checkpoint = self._load_resume_checkpoint()
        cfg = opts.cfg
        arch_changed: list[str] = []
        if checkpoint is not None:
            cfg, arch_changed = merge_architecture(cfg, checkpoint["config"])
        self.cfg = cfg
        loss_warnings = check_loss_safety(cfg, opts.allow_unsafe_loss)  # may refuse: first
        # On resume, TensorBoard drops events a killed run wrote after the checkpoint.
        self.log = RunLogger(
            self.run_dir,
            active=self.dist.is_main,
            tensorboard=opts.tensorboard,
            purge_step=None if checkpoint is None else int(checkpoint["step"]) + 1,
        )
        for message in loss_warnings:
            self.log.warning(message, step=0)
        if self.dist.is_main and opts.resume:
            for partial in remove_partial_checkpoints(self.run_dir):
                self.log.info(f"removed {partial.name}: a checkpoint write that did not finish")
        if arch_changed:
            self.log.info(f"architecture taken from the checkpoint: {', '.join(arch_changed)}")

        self.device = self.dist.device
        self.autocast = cfg.train.bf16 and bf16_autocast_available(self.device)
        self.examples_per_step = cfg.train.batch_size * cfg.train.grad_accum_steps
        self.boundaries = phase_boundary_steps(cfg)
        self.monitor = HealthMonitor(cfg.health, cfg.objective)
        self.state = TrainState()
        self._build_models()
        if checkpoint is not None:
            self._restore(checkpoint)
        elif opts.init_from:
            copied, new = warm_start(self.generator, opts.init_from)
            self.ema.load_state_dict(self.generator.state_dict())
            self.log.info(
                f"--init-from {opts.init_from}: {copied} weight tensors copied"
                # "as built": zero-initialised additions (new blocks and re-injections start
                # as the identity), or a frozen pretrained encoder.
                + (f"; not in it, kept as built: {', '.join(new)}" if new else "")
            )
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
            if checkpoint is not None:
                truncate_metrics(self.log.metrics_path, self.state.step)
        # Schedule position (LR, phases, curricula, validation and save points): the step,
        # or under train.budget_minutes the share of the budget spent (TimeBudget).
        # Set before the data: a sampler that follows the budget reads it from the start.
        self.budget: TimeBudget | None = None
        self._position = _Position(self.state.step)
        if cfg.train.budget_minutes > 0:
            self.budget = TimeBudget(
                cfg.train.budget_minutes, cfg.train.steps, self.state.budget_seconds
            )
            self.position = self.budget.position(self.budget.progress())
            if checkpoint is not None and self.budget.progress() >= 1.0:
                self.log.warning(
                    f"the checkpoint already spent the whole {cfg.train.budget_minutes:g}-min "
                    "budget: nothing to train; raise train.budget_minutes (it counts the time "
                    "spent before the resume too) to go on",
                    self.state.step,
                )
        self._phase = stage_at(max(self.position - 1, 0), cfg).phase
        self._build_data()
        # Restore RNG streams last: building loaders/models above may draw from them.
        if checkpoint is not None:
            self._restore_rng(checkpoint)
        self._val_audio_logged = False
        self._interval: list[StepResult] = []
        self._interval_start = time.perf_counter()
        self._saved_at = -1
        self._validated_at = -1

    # ------------------------------------------------------------------ loop

    def run(self) -> int:
        """Train until ``train.steps``, early stopping or ``--max-minutes``; 0 on success."""
        cfg = self.cfg
        start = time.monotonic()
        budget_s = self.opts.max_minutes * 60.0 if self.opts.max_minutes else math.inf
        span = (
            f"step {self.state.step} -> {cfg.train.steps}"
            if self.budget is None
            else f"step {self.state.step}, schedule {self.position}/{cfg.train.steps} in a "
            f"{cfg.train.budget_minutes:g}-min budget"
        )
        self.log.info(
            f"training {self.run_dir} on {self.device} x{self.dist.world_size}: {span}, "
            f"{self.examples_per_step * self.dist.world_size} examples/step"
        )
        self.log.jsonl({"kind": "event", "event": "start", "step": self.state.step})
        stop_reason = "budget" if self.budget is not None else "steps"
        stop_signal = _StopSignal()
        try:
            while self.position < cfg.train.steps:
                before = self.position
                self.run_one_step()
                step, after = self.state.step, self.position
                if crossed(before, after, cfg.train.val_interval):
                    self.validate_and_select()
                boundary = any(before < b <= after for b in self.boundaries)
                if crossed(before, after, cfg.train.save_interval) or boundary:
                    self.save(numbered=True)
                if should_stop_early(self.state, cfg.train.patience):
                    stop_reason = "early_stop"
                    self.log.info(
                        f"early stopping at step {step}: no TP SI-SDR improvement in "
                        f"{cfg.train.patience} validations (best {self.state.best_si_sdr:.3f} "
                        f"dB at step {self.state.best_step})"
                    )
                    break
                if any_rank(stop_signal.received is not None, self.device):
                    stop_reason = "signal"
                    self.log.info(
                        f"{stop_signal.received or 'stop signal on another rank'} at step "
                        f"{step}: saving and stopping (continue with --resume latest)"
                    )
                    break
                if any_rank(time.monotonic() - start > budget_s, self.device):
                    stop_reason = "max_minutes"
                    self.log.info(f"--max-minutes reached at step {step}: stopping cleanly")
                    break
            self.finish(stop_reason)
        finally:
            stop_signal.restore()
            self.log.close()
            # Stop the data workers now rather than when the trainer is collected: they
            # ignore SIGTERM (see ignore_stop_signals), so none may outlive the run.
            self.train_iter = iter(())
        return 0

    @property
    def position(self) -> int:
        """The schedule position: the step, or under a time budget its share (TimeBudget)."""
        return self._position.value

    @position.setter
    def position(self, value: int) -> None:
        self._position.value = value

    def advance_position(self) -> None:
        """After a step: the schedule position is the step, or follows the time budget."""
        if self.budget is None:
            self.position = self.state.step
            return
        progress = rank0_value(self.budget.progress(), self.device)
        self.state.budget_seconds = progress * self.budget.seconds
        self.position = self.budget.position(progress)

    def next_micro_batches(self) -> list[dict[str, Any]]:
        batches = [next(self.train_iter) for _ in range(self.cfg.train.grad_accum_steps)]
        self._last_data = {
            "indices": [int(i) for b in batches for i in b["index"]],
            "mix_sha256": hashlib.sha256(batches[0]["mix"].numpy().tobytes()).hexdigest(),
        }
        return batches

    def run_one_step(self) -> StepResult:
        """Fetch data, run :func:`train_step` at the current step, count and log it."""
        cfg, state = self.cfg, self.state
        stage = stage_at(self.position, cfg)
        lr = lr_at(self.position, cfg.train)
        self._phase = stage.phase
        set_lr(self.optimizer, lr)
        t0 = time.perf_counter()
        result = train_step(self.mods, self.next_micro_batches(), stage)
        step_time = time.perf_counter() - t0
        state.elapsed_seconds += step_time
        if result.applied:
            state.nonfinite_consecutive = 0
        else:
            self._record_nonfinite(result)
        state.step += 1
        self.advance_position()
        self._interval.append(result)
        if state.step % cfg.train.log_interval == 0 or self.position >= cfg.train.steps:
            self.log_interval(stage.phase, lr, stage.noisy_ref_prob, stage.adv_scale)
        return result

    def _record_nonfinite(self, result: StepResult) -> None:
        state = self.state
        state.nonfinite_total += 1
        state.nonfinite_consecutive += 1
        self.log.warning(
            f"step {state.step}: non-finite loss or gradient, optimiser step skipped "
            f"({state.nonfinite_consecutive} in a row, {state.nonfinite_total} in total)",
            step=state.step,
        )
        if state.nonfinite_consecutive >= MAX_NONFINITE_STEPS:
            raise TrainingDiverged(
                f"training stopped at step {state.step}: {state.nonfinite_consecutive} "
                f"consecutive non-finite steps; lower train.lr or "
                f"resume from an earlier checkpoint"
            )

    def log_interval(self, phase: int, lr: float, noisy_ref_prob: float, adv_scale: float) -> None:
        """Mean of the steps since the last log line -> console, JSONL, TensorBoard."""
        results, self._interval = self._interval, []
        now = time.perf_counter()
        wall = now - self._interval_start
        self._interval_start = now
        if not self.log.active or not results:
            return
        keys = sorted({k for r in results for k in r.terms})
        record: dict[str, Any] = {"kind": "train", "step": self.state.step, "phase": phase}
        for k in keys:
            vals = [r.terms[k] for r in results if k in r.terms]
            record[k] = float(np.mean(vals))

        def mean(attr: str) -> float:
            vals = [getattr(r, attr) for r in results if math.isfinite(getattr(r, attr))]
            return float(np.mean(vals)) if vals else math.nan

        step_time = wall / len(results)
        examples = sum(r.examples for r in results) * self.dist.world_size
        record.update(
            {
                "rms_ratio": mean("rms_ratio"),
                "lr": lr,
                "grad_norm_before": mean("grad_norm_before"),
                "grad_norm_after": mean("grad_norm_after"),
                "step_time": step_time,
                "examples_per_s": examples / wall if wall > 0 else math.nan,
                "eta_s": self._eta_seconds(step_time),
                "schedule_step": self.position,
                "noisy_ref_prob": noisy_ref_prob,
                "adv_scale": adv_scale,
                "tp_per_batch": float(np.mean([r.tp_count for r in results])),
                "ta_per_batch": float(np.mean([r.ta_count for r in results])),
                "skipped_steps": sum(not r.applied for r in results),
                "nonfinite_total": self.state.nonfinite_total,
            }
        )
        self.log.info(format_train_line(record, self.cfg.train.steps))
        self.log.jsonl(record)
        scalars = {k.replace("/", "_"): v for k, v in record.items() if k not in ("kind", "step")}
        self.log.scalars("train", scalars, self.state.step)

    def _eta_seconds(self, step_time: float) -> float:
        if self.budget is not None:
            return max(self.budget.seconds - self.state.budget_seconds, 0.0)
        return step_time * (self.cfg.train.steps - self.state.step)

    # ------------------------------------------------------------------ validation

    def validate(self) -> dict[str, float]:
        """EMA model on the fixed validation set; all RNG streams restored afterwards."""
        cfg = self.cfg
        loader = DataLoader(
            self.val_subset,
            batch_size=cfg.train.val_batch_size,
            shuffle=False,
            collate_fn=self._collate(),
            num_workers=cfg.mixing.num_workers,
            worker_init_fn=ignore_stop_signals,
        )
        with preserved_rng(VAL_SEED):
            result = validate(
                self.ema.module,
                loader,
                self.objective,
                cfg,
                self.device,
                self.autocast,
                cfg.train.val_audio_examples if self.dist.is_main else 0,
                kind_of_source=self.val_kind_of_source,
            )
        self._log_val_audio(result.audio)
        return result.metrics

    @staticmethod
    def _collate():
        from hifi_tse.data.datasets import collate_batch

        return collate_batch

    def _log_val_audio(self, audio: list[dict[str, np.ndarray]]) -> None:
        sr = self.cfg.audio.sample_rate
        for i, ex in enumerate(audio):
            if not self._val_audio_logged:
                self.log.audio(f"val_audio/{i}/mixture", ex["mix"], self.state.step, sr)
                self.log.audio(f"val_audio/{i}/reference", ex["ref"], self.state.step, sr)
            self.log.audio(f"val_audio/{i}/estimate", ex["estimate"], self.state.step, sr)
        self._val_audio_logged = True

    def validate_and_select(self) -> None:
        """Validate, update best / patience, save the best checkpoint, run health checks."""
        step = self.state.step
        metrics = self.validate()
        metrics["step"] = step
        phase = self._phase
        band = (self.cfg.health.rms_ratio_low, self.cfg.health.rms_ratio_high)
        improved = update_best(self.state, metrics, phase >= PHASE_TP_TA, healthy_band=band)
        self._validated_at = step
        record = {
            "kind": "val",
            **metrics,
            "best_tp_si_sdr": self.state.best_si_sdr,
            "patience_count": self.state.patience_count,
            "improved": improved,
        }
        self.log.info(format_val_line(record) + ("  (new best)" if improved else ""))
        self.log.jsonl(record)
        self.log.scalars("val", {k: v for k, v in metrics.items() if k != "step"}, step)
        for warning in self.monitor.check(self.state.val_history):
            self.log.warning(warning, step)
        self.log.flush()
        if improved:
            self.save(numbered=False, name=BEST_NAME)

    def finish(self, reason: str) -> None:
        """Final validation (if the last step had none), numbered + final checkpoints."""
        step = self.state.step
        if self._validated_at != step and step > 0:
            self.validate_and_select()
        if self._saved_at != step:
            self.save(numbered=True)
        self.save(numbered=False, name=FINAL_NAME)
        digests = gather_objects(weights_digest(self.generator))
        # Which example indices and mixtures each rank trained on last (DDP streams differ).
        last_data = gather_objects(getattr(self, "_last_data", {}))
        self.log.jsonl(
            {
                "kind": "event",
                "event": "end",
                "step": step,
                "reason": reason,
                "best_tp_si_sdr": self.state.best_si_sdr,
                "best_step": self.state.best_step,
                "nonfinite_total": self.state.nonfinite_total,
                "weights_sha256_per_rank": digests,
                "last_batch_per_rank": last_data,
            }
        )
        self.log.info(
            f"done at step {step} ({reason}); best TP SI-SDR {self.state.best_si_sdr:.3f} dB "
            f"at step {self.state.best_step}"
        )


class _Position:
    """The schedule position, shared by the trainer and a time-budget sampler: the sampler
    holds this, not the trainer (no reference cycle keeps the data workers alive)."""

    def __init__(self, value: int) -> None:
        self.value = int(value)

    def __call__(self) -> int:
        return self.value


class _StopSignal:
    """SIGTERM (cluster pre-emption, ``kill``) or SIGINT (Ctrl-C) asks the loop to stop after
    the current step with a checkpoint; a second signal of either kind acts as usual."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signal.Signals(signum).name
        self.restore()  # the next signal is not intercepted

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def train(opts: TrainOptions) -> int:
    """Build a :class:`Trainer` and run it; always leaves the process group."""
    trainer = None
    try:
        trainer = Trainer(opts)
        return trainer.run()
    finally:
        # Free the trainer (its DDP wrapper holds the process group and gloo's pending work)
        # while the interpreter is whole: freed by the collector at interpreter exit, gloo's
        # threads can touch Python objects being torn down and abort the process (SIGABRT,
        # "terminate called without an active exception").
        del trainer
        gc.collect()
        shutdown_distributed()
        gc.collect()
