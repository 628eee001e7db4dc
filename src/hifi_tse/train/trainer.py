"""The training run: wires config, data, models, objective and the loop together.

:class:`Trainer` owns everything a checkpoint holds (weights, EMA, optimisers, :class:`TrainState`,
RNG streams) and runs small pieces in order each step: :func:`step.train_step`, logging,
:meth:`Trainer.validate`, :meth:`Trainer.save`. Nothing here sets a number: every interval,
weight and threshold comes from the config.
"""

# The legacy global NumPy RNG is a training stream like Python's and torch's (third-party
# code draws from it), so it is seeded, saved and restored on purpose here.
# ruff: noqa: NPY002

from __future__ import annotations

import hashlib
import math
import random
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from hifi_tse.checkpoints import (
    BEST_NAME,
    FINAL_NAME,
    TrainState,
    build_checkpoint,
    capture_rng_state,
    load_checkpoint,
    numbered_checkpoints,
    numbered_name,
    phase_boundary_steps,
    remove_partial_checkpoints,
    resolve_resume,
    restore_rng_state,
    rotate_checkpoints,
    save_checkpoint,
)
from hifi_tse.config import RETIRED_KEYS, Config, config_from_dict, save_config
from hifi_tse.errors import UserError
from hifi_tse.schedules import PHASE_TP_TA, TimeBudget, crossed, lr_at, stage_at
from hifi_tse.train.distributed import (
    DistInfo,
    any_rank,
    barrier,
    gather_objects,
    init_distributed,
    rank0_value,
    shutdown_distributed,
    wrap_ddp,
)
from hifi_tse.train.ema import EMA
from hifi_tse.train.logging_utils import (
    RunLogger,
    format_train_line,
    format_val_line,
    truncate_metrics,
)
from hifi_tse.train.monitor import HealthMonitor
from hifi_tse.train.step import StepModules, StepResult, set_lr, train_step
from hifi_tse.train.validation import preserved_rng, should_stop_early, update_best, validate

# Config keys that define the network: on resume they come from the checkpoint.
ARCH_SECTIONS = ("audio", "stft", "band_split", "model")
# Training-time switches inside the model section that the user may change on resume.
MODEL_TRAIN_KEYS = ("grad_checkpoint", "ref_dropout_prob")
GAN_ARCH_KEYS = ("periods", "num_scales", "channels")
VAL_CACHE_NAME = "val_cache.h5"


class TrainingDiverged(UserError):
    """Too many consecutive non-finite steps."""


@dataclass
class TrainOptions:
    """The ``hifi-tse train`` command line, resolved."""

    cfg: Config
    data_dir: Path
    run_dir: Path
    resume: str | None = None
    reset_optimizer: bool = False
    reset_patience: bool = False
    init_from: str | None = None
    max_minutes: float | None = None
    allow_unsafe_loss: bool = False
    device: str | None = None
    tensorboard: bool = True


def merge_architecture(user_cfg: Config, ckpt_cfg: dict[str, Any]) -> tuple[Config, list[str]]:
    """User config with the network-defining sections of the checkpoint's config.

    Returns the merged config and the dotted keys whose value the checkpoint overrode.
    """
    merged = user_cfg.to_dict()
    changed = []
    for section in ARCH_SECTIONS:
        for key, value in ckpt_cfg[section].items():
            if section == "model" and key in MODEL_TRAIN_KEYS:
                continue
            if f"{section}.{key}" in RETIRED_KEYS:
                continue  # a checkpoint from before the key left: it holds the fixed value
            if merged[section].get(key) != value:
                changed.append(f"{section}.{key}")
            merged[section][key] = value
    for key in GAN_ARCH_KEYS:
        if merged["gan"][key] != ckpt_cfg["gan"][key]:
            changed.append(f"gan.{key}")
        merged["gan"][key] = ckpt_cfg["gan"][key]
    return config_from_dict(merged), changed


def check_loss_safety(cfg: Config, allow_unsafe: bool) -> list[str]:
    """Refuse an objective that rewards silence; returns warnings to show.

    Raises UserError (one line) when ``losses.audit.check_objective_safe`` names failing terms
    and ``allow_unsafe`` is false.
    """
    from hifi_tse.losses.audit import check_objective_safe

    warnings = []
    if cfg.loss_weights.ta_loss == "legacy_db":
        warnings.append(
            "loss_weights.ta_loss=legacy_db: the TA term is a raw dB value that rewards "
            "silence (the seed's over-suppression bug); use 'relu'"
        )
    failing = check_objective_safe(cfg)
    if failing:
        message = (
            f"loss_weights: terms {', '.join(failing)} reward silence (lower loss for a "
            f"quieter output, or a common TP/TA gain outside the healthy rms_ratio band; "
            f"`hifi-tse audit-loss` shows the sweep); fix loss_weights or pass "
            f"--allow-unsafe-loss"
        )
        if not allow_unsafe:
            raise UserError(message)
        warnings.append(message + " (allowed by --allow-unsafe-loss)")
    return warnings


def warm_start(generator: torch.nn.Module, path: str | Path) -> tuple[int, list[str]]:
    """Copy a checkpoint's generator weights (EMA when present) into ``generator`` wherever
    name and shape match; the rest keep their initialisation (e.g. zero-initialised level
    features added to an older model). Returns ``(tensors copied, names left as initialised)``.

    Raises UserError when nothing matches or a shared name has another shape (another
    architecture: fine-tune with the checkpoint's own model settings instead).
    """
    from hifi_tse.checkpoints import read_checkpoint

    ckpt = read_checkpoint(path)
    source = ckpt["ema"] if isinstance(ckpt.get("ema"), dict) else ckpt["model"]
    target = generator.state_dict()
    mismatched = [
        f"{name} {tuple(source[name].shape)} vs {tuple(value.shape)}"
        for name, value in target.items()
        if name in source and source[name].shape != value.shape
    ]
    if mismatched:
        raise UserError(
            f"--init-from {path}: {len(mismatched)} weights have other shapes than this "
            f"config's generator (first: {mismatched[0]}); use the checkpoint's model settings"
        )
    shared = {name: source[name] for name in target if name in source}
    if not shared:
        raise UserError(f"--init-from {path}: no weight names match this config's generator")
    generator.load_state_dict(shared, strict=False)
    return len(shared), [name for name in target if name not in source]


def derived_seed(*parts: int) -> int:
    """A 32-bit seed from integers (e.g. base seed and rank), independent streams per tuple."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's state dict (names and raw bytes): equal iff weights are equal."""
    h = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        h.update(name.encode())
        # reshape(-1): 0-dim tensors (e.g. the GE2E path's `pretrained` flag) have no byte view
        flat = value.detach().cpu().contiguous().reshape(-1)
        h.update(flat.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class Trainer:
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
        self.autocast = cfg.train.bf16 and self.device.type == "cuda"
        self.examples_per_step = cfg.train.batch_size * cfg.train.grad_accum_steps
        self.boundaries = phase_boundary_steps(cfg)
        self.monitor = HealthMonitor(cfg.health, cfg.loss_weights)
        self.state = TrainState()
        self._build_models()
        if checkpoint is not None:
            self._restore(checkpoint)
        elif opts.init_from:
            copied, new = warm_start(self.generator, opts.init_from)
            self.ema.load_state_dict(self.generator.state_dict())
            self.log.info(
                f"--init-from {opts.init_from}: {copied} weight tensors copied"
                + (f"; initialised afresh: {', '.join(new)}" if new else "")
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

    # ------------------------------------------------------------------ setup

    def _check_data_dir(self) -> None:
        if not (self.data_dir / "manifest_train.jsonl").is_file():
            raise UserError(
                f"{self.data_dir}: expected a prepared corpus (manifest_train.jsonl missing; "
                f"run 'hifi-tse prepare')"
            )

    def _load_resume_checkpoint(self) -> dict[str, Any] | None:
        if not self.opts.resume:
            if numbered_checkpoints(self.run_dir):
                raise UserError(
                    f"{self.run_dir}: already holds checkpoints; pass --resume latest to "
                    f"continue that run, or choose another --out"
                )
            return None
        if self.opts.resume == "auto" and not numbered_checkpoints(self.run_dir):
            return None  # first start of a job that may be restarted: nothing to resume yet
        path = resolve_resume(self.opts.resume, self.run_dir)
        return load_checkpoint(path, map_location="cpu")

    def _build_models(self) -> None:
        from hifi_tse.losses.adversarial import GANLoss
        from hifi_tse.losses.objective import Objective
        from hifi_tse.models.generator import build_generator

        cfg = self.cfg
        # Same init on every rank (DDP also broadcasts rank 0's weights).
        torch.manual_seed(cfg.train.seed)
        generator = build_generator(cfg).to(self.device)
        if generator.speaker_embedding is not None:
            # Pretrained and frozen; a checkpoint restored below brings its own copy.
            generator.speaker_embedding.load_pretrained()
        self.generator = generator
        self.ema = EMA(generator, cfg.train.ema_decay)
        self.optimizer = torch.optim.AdamW(
            (p for p in generator.parameters() if p.requires_grad),
            lr=lr_at(0, cfg.train),
            betas=tuple(cfg.train.betas),
            weight_decay=cfg.train.weight_decay,
        )
        self.discriminator = self.disc_optimizer = None
        gan_loss = None
        if cfg.gan.enabled:
            from hifi_tse.models.discriminator import Discriminators

            self.discriminator = Discriminators(cfg.gan).to(self.device)
            self.disc_optimizer = torch.optim.AdamW(
                self.discriminator.parameters(),
                lr=cfg.gan.lr,
                betas=tuple(cfg.train.betas),
                weight_decay=cfg.train.weight_decay,
            )
            gan_loss = GANLoss()
        self.objective = Objective(cfg.loss_weights, cfg.audio.sample_rate).to(self.device)
        self.model = wrap_ddp(generator, self.dist)
        self.mods = StepModules(
            cfg=cfg,
            generator=self.model,
            optimizer=self.optimizer,
            objective=self.objective,
            ema=self.ema,
            device=self.device,
            autocast=self.autocast,
            discriminator=self.discriminator,
            disc_optimizer=self.disc_optimizer,
            gan_loss=gan_loss,
        )
        # Training streams (dropout, ...) differ per rank but are reproducible.
        seed = derived_seed(cfg.train.seed, self.dist.rank)
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)

    def _restore(self, ckpt: dict[str, Any]) -> None:
        self.generator.load_state_dict(ckpt["model"])
        self.ema.load_state_dict(ckpt["ema"])
        self.state = TrainState.from_dict(ckpt["train_state"])
        if self.opts.reset_optimizer:
            # Fresh Adam moments; the step (and so the LR schedule position) is kept.
            self.log.info(f"--reset-optimizer: fresh optimiser state at step {self.state.step}")
        else:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.discriminator is not None and ckpt.get("discriminator") is not None:
            self.discriminator.load_state_dict(ckpt["discriminator"])
            if not self.opts.reset_optimizer and ckpt.get("disc_optimizer") is not None:
                self.disc_optimizer.load_state_dict(ckpt["disc_optimizer"])
        if self.opts.reset_patience:
            self.state.reset_patience()
            self.log.info("--reset-patience: best TP SI-SDR and patience cleared")
        set_lr(self.optimizer, lr_at(self.state.step, self.cfg.train))
        self.log.info(f"resumed at step {self.state.step}")
        self.log.jsonl({"kind": "event", "event": "resume", "step": self.state.step})

    def _restore_rng(self, ckpt: dict[str, Any]) -> None:
        per_rank = ckpt.get("rng_per_rank") or [ckpt["rng"]]
        if len(per_rank) == self.dist.world_size:
            restore_rng_state(per_rank[self.dist.rank])
        else:
            seed = derived_seed(self.cfg.train.seed, self.dist.rank, self.state.step)
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed)
            self.log.info("world size changed since the checkpoint: RNG streams reseeded")

    def _build_data(self) -> None:
        from hifi_tse.data.datasets import (
            FixedExampleSet,
            InfiniteSampler,
            MixtureDataset,
            collate_batch,
        )

        cfg, info = self.cfg, self.dist
        train_set = MixtureDataset(
            self.data_dir,
            cfg,
            split="train",
            rank=info.rank,
            examples_per_step=self.examples_per_step,
        )
        workers = cfg.data.num_workers
        self.train_loader = DataLoader(
            train_set,
            batch_size=cfg.train.batch_size,
            # The stream is pure in the index: resuming = starting at step * examples_per_step.
            sampler=InfiniteSampler(
                start_index=self.state.step * self.examples_per_step,
                position=self._position if cfg.train.budget_minutes > 0 else None,
            ),
            collate_fn=collate_batch,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
            worker_init_fn=ignore_stop_signals,
        )
        self.train_iter: Iterator[dict[str, Any]] = iter(self.train_loader)
        # Generated once into an HDF5 cache in the run folder (rank 0 writes, others read).
        if not info.is_main:
            barrier()
        val_set = FixedExampleSet(
            self.data_dir,
            cfg,
            split="val",
            seed=cfg.train.val_seed,
            n=cfg.train.val_examples,
            phase=PHASE_TP_TA,
            cache_path=self.run_dir / VAL_CACHE_NAME,
        )
        if info.is_main:
            barrier()
        # Strided shard per rank; the all-reduce in validate() puts the whole set back together.
        self.val_subset = Subset(val_set, list(range(info.rank, len(val_set), info.world_size)))

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
        if state.nonfinite_consecutive >= self.cfg.train.max_nonfinite:
            raise TrainingDiverged(
                f"training stopped at step {state.step}: {state.nonfinite_consecutive} "
                f"consecutive non-finite steps (train.max_nonfinite); lower train.lr or "
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
            num_workers=cfg.data.num_workers,
            worker_init_fn=ignore_stop_signals,
        )
        with preserved_rng(cfg.train.val_seed):
            result = validate(
                self.ema.module,
                loader,
                self.objective,
                cfg,
                self.device,
                self.autocast,
                cfg.train.val_audio_examples if self.dist.is_main else 0,
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

    # ------------------------------------------------------------------ checkpoints

    def checkpoint_payload(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly (collective under DDP)."""
        rng_all = gather_objects(capture_rng_state())
        payload = build_checkpoint(
            self.cfg,
            self.state,
            model=self.generator.state_dict(),
            ema=self.ema.state_dict(),
            optimizer=self.optimizer.state_dict(),
            examples_per_step=self.examples_per_step,
            world_size=self.dist.world_size,
            discriminator=None if self.discriminator is None else self.discriminator.state_dict(),
            disc_optimizer=None
            if self.disc_optimizer is None
            else self.disc_optimizer.state_dict(),
        )
        payload["rng_per_rank"] = rng_all
        return payload

    def save(self, numbered: bool, name: str | None = None) -> None:
        """Write ``checkpoint_{step}.pt`` (then rotate) or the named checkpoint; rank 0 only."""
        payload = self.checkpoint_payload()  # every rank joins the RNG gather
        if numbered:
            # On every rank: finish() decides from it whether all ranks save (and gather) once
            # more, so a rank that skipped it would wait in another collective.
            self._saved_at = self.state.step
        if not self.dist.is_main:
            return
        path = self.run_dir / (numbered_name(self.state.step) if numbered else name)
        save_checkpoint(path, payload)
        if numbered:
            rotate_checkpoints(self.run_dir, self.cfg.train.keep_last, self.boundaries)
        self.log.jsonl(
            {"kind": "event", "event": "checkpoint", "step": self.state.step, "path": path.name}
        )

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


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader worker start-up: ignore SIGTERM, as torch's workers already ignore SIGINT.

    A scheduler's pre-emption or ``kill -- -PGID`` signals the whole process group; a worker
    that died of it would crash the trainer before :class:`_StopSignal` could save. The main
    process stops its workers itself, and a worker exits on its own if the main one dies."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


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
    try:
        return Trainer(opts).run()
    finally:
        shutdown_distributed()
