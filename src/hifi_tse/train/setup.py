"""Setting a training run up: options, the architecture a resume keeps, the loss-safety
gate, warm starts, and building (or restoring) models, optimisers and data.

:class:`RunSetup` is the part of :class:`hifi_tse.train.trainer.Trainer` that builds; the
loop lives in ``trainer.py`` and checkpoint writing in ``run_checkpoints.py``.
"""

# The legacy global NumPy RNG is a training stream like Python's and torch's (third-party
# code draws from it), so it is seeded, saved and restored on purpose here.
# ruff: noqa: NPY002

from __future__ import annotations

import random
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from hifi_tse.checkpoints import (
    TrainState,
    load_checkpoint,
    numbered_checkpoints,
    resolve_resume,
    restore_rng_state,
)
from hifi_tse.config import Config, architecture_keys, config_from_dict
from hifi_tse.errors import UserError
from hifi_tse.schedules import PHASE_TP_TA, lr_at
from hifi_tse.train.distributed import barrier, wrap_ddp
from hifi_tse.train.ema import EMA
from hifi_tse.train.step import StepModules, set_lr

VAL_CACHE_NAME = "val_cache.h5"
# AdamW's usual moments and decoupled weight decay, for the generator and the discriminators
# alike; the learning rate and its schedule are the settings (train.lr, gan.lr).
ADAMW_BETAS = (0.9, 0.999)
ADAMW_WEIGHT_DECAY = 0.01


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
    """User config with the checkpoint's values of every architecture key
    (:func:`hifi_tse.config.architecture_keys`). Returns the merged config and the dotted
    keys whose value the checkpoint overrode."""
    merged = user_cfg.to_dict()
    changed = []
    for dotted in architecture_keys():
        section, key = dotted.split(".")
        if key not in ckpt_cfg.get(section, {}):
            continue  # a checkpoint from before the key existed: the default stands
        value = ckpt_cfg[section][key]
        if merged[section][key] != value:
            changed.append(dotted)
        merged[section][key] = value
    return config_from_dict(merged), changed


def check_loss_safety(cfg: Config, allow_unsafe: bool) -> list[str]:
    """Refuse an objective that rewards silence; returns warnings to show.

    Raises UserError (one line) when ``losses.audit.check_objective_safe`` names failing terms
    and ``allow_unsafe`` is false.
    """
    from hifi_tse.losses.audit import check_objective_safe

    warnings = []
    if cfg.objective.ta_loss == "legacy_db":
        warnings.append(
            "objective.ta_loss=legacy_db: the TA term is a raw dB value that rewards "
            "silence (the seed's over-suppression bug); use 'relu'"
        )
    failing = check_objective_safe(cfg)
    if failing:
        message = (
            f"objective: terms {', '.join(failing)} reward silence (lower loss for a "
            f"quieter output, or a common TP/TA gain outside the healthy rms_ratio band; "
            f"`hifi-tse audit-loss` shows the sweep); fix the objective section or pass "
            f"--allow-unsafe-loss"
        )
        if not allow_unsafe:
            raise UserError(message)
        warnings.append(message + " (allowed by --allow-unsafe-loss)")
    return warnings


def warm_start(generator: torch.nn.Module, path: str | Path) -> tuple[int, list[str]]:
    """Copy a checkpoint's generator weights (EMA when present) into ``generator`` wherever
    name and shape match; the rest keep their initialisation (e.g. zero-initialised level
    features added to an older model). Added backbone blocks and re-injections, and backbone
    LSTMs widened by a larger ``model.lstm_hidden``, start as the identity / as the
    checkpoint's LSTMs, so the larger model computes what the checkpoint did. Returns
    ``(tensors copied, names left as initialised)``.

    Raises UserError when nothing matches or a shared name has another shape (another
    architecture: fine-tune with the checkpoint's own model settings instead).
    """
    from hifi_tse.checkpoints import read_checkpoint

    ckpt = read_checkpoint(path)
    source = ckpt["ema"] if isinstance(ckpt.get("ema"), dict) else ckpt["model"]
    target = generator.state_dict()
    source = _forward_halves(source, target)
    source = _grown_lstm_hidden(source, target)
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
    _silence_new_branches(generator, source)
    return len(shared), [name for name in target if name not in source]


# The last layer of each residual branch of a backbone stage (the two BiLSTMs' projections,
# the self-attention's and the re-injection's output layers): the stage adds their output to
# its input, so a branch with this layer at zero passes its input through unchanged.
_RESIDUAL_OUTPUT = re.compile(
    r"^backbone\.stages\.\d+\."
    r"(?:block\.intra\.proj|block\.inter\.proj|block\.attn\.out|reinject\.attn\.out)\."
)


def _silence_new_branches(generator: torch.nn.Module, source: dict[str, torch.Tensor]) -> None:
    """Zero the output layer of every residual branch the checkpoint lacks (a whole new
    block from a larger ``model.num_blocks``, or a re-injection added by
    ``model.reinject_blocks``), so the larger model starts computing exactly what the
    checkpoint did; the new branches' inner layers keep their random initialisation and
    start learning as soon as their output layers leave zero (after the first update)."""
    with torch.no_grad():
        for name, value in generator.named_parameters():
            if name not in source and _RESIDUAL_OUTPUT.match(name):
                value.zero_()


# A backbone BiLSTM's tensors: (stage, branch, tensor kind, direction suffix).
_BACKBONE_LSTM = re.compile(
    r"^(backbone\.stages\.\d+\.block\.(?:intra|inter))\.lstm\."
    r"(weight_ih|weight_hh|bias_ih|bias_hh)_l0(_reverse)?$"
)


def _grown_lstm_hidden(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """A checkpoint's backbone LSTMs embedded in a config's wider ones (a larger
    ``model.lstm_hidden``, same ``model.feature_dim``), so the wider model starts computing
    exactly what the checkpoint did.

    Each of the four gates' blocks of ``H`` rows goes to the first ``H`` rows of its block
    of ``H'`` in the wider tensor; the added rows (the new units' gates) keep the target's
    random initialisation, so the new units compute from the start. The old units do not
    see the new ones (their recurrent columns are zero) and the branch's output projection
    ``(D, dirs * H')`` reads only the old units (the new units' columns are zero), so the
    output is unchanged until the first update moves those columns off zero.
    """
    out = dict(source)
    grown: dict[str, int] = {}  # branch prefix -> old hidden size
    for name, value in target.items():
        match = _BACKBONE_LSTM.match(name)
        have = source.get(name)
        if match is None or have is None or have.shape == value.shape:
            continue
        old, new = have.shape[0] // 4, value.shape[0] // 4
        kind = match.group(2)
        width_ok = kind != "weight_ih" or have.shape[1] == value.shape[1]
        recurrent_ok = kind != "weight_hh" or have.shape[1] == old
        if not (new > old and width_ok and recurrent_ok):
            continue
        wide = value.clone()
        if kind == "weight_hh":
            # Old units' gates read no new unit; new units' rows keep their initialisation.
            for gate in range(4):
                wide[gate * new : gate * new + old, old:] = 0.0
        for gate in range(4):
            rows = slice(gate * new, gate * new + old)
            if have.dim() == 2:
                wide[rows, : have.shape[1]] = have[gate * old : (gate + 1) * old]
            else:
                wide[rows] = have[gate * old : (gate + 1) * old]
        out[name] = wide
        grown[match.group(1)] = old
    for prefix, old in grown.items():
        name = f"{prefix}.proj.weight"
        have, want = source.get(name), target.get(name)
        if have is None or want is None or have.shape[0] != want.shape[0]:
            continue
        directions = have.shape[1] // old
        new = want.shape[1] // directions
        wide = torch.zeros_like(want)
        for direction in range(directions):
            wide[:, direction * new : direction * new + old] = have[
                :, direction * old : (direction + 1) * old
            ]
        out[name] = wide
    return out


def _forward_halves(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """An offline model's weights in a causal model's shapes: a time BiLSTM's output
    projection ``(D, 2H)`` keeps its forward-direction columns ``(D, H)``.

    The forward LSTM's own weights share their names with the bidirectional one's and the
    ``*_reverse`` weights have no counterpart, so the causal model starts as the offline
    model with its backward time recurrences removed.
    """
    out = dict(source)
    for name, value in target.items():
        have = source.get(name)
        if (
            have is not None
            and name.endswith("inter.proj.weight")
            and have.dim() == 2
            and have.shape[0] == value.shape[0]
            and have.shape[1] == 2 * value.shape[1]
            and f"{name.removesuffix('proj.weight')}lstm.weight_hh_l0_reverse" in source
        ):
            out[name] = have[:, : value.shape[1]]
    return out


def derived_seed(*parts: int) -> int:
    """A 32-bit seed from integers (e.g. base seed and rank), independent streams per tuple."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


class RunSetup:
    """Builds and restores what a :class:`~hifi_tse.train.trainer.Trainer` trains."""

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
            betas=ADAMW_BETAS,
            weight_decay=ADAMW_WEIGHT_DECAY,
        )
        self.discriminator = self.disc_optimizer = None
        gan_loss = None
        if cfg.gan.enabled:
            from hifi_tse.models.discriminator import Discriminators

            self.discriminator = Discriminators(cfg.gan).to(self.device)
            self.disc_optimizer = torch.optim.AdamW(
                self.discriminator.parameters(),
                lr=cfg.gan.lr,
                betas=ADAMW_BETAS,
                weight_decay=ADAMW_WEIGHT_DECAY,
            )
            gan_loss = GANLoss()
        self.objective = Objective(cfg.objective, cfg.audio.sample_rate).to(self.device)
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
            VAL_SEED,
            FixedExampleSet,
            InfiniteSampler,
            MixtureDataset,
            collate_batch,
        )
        from hifi_tse.data.store import load_report, speech_source_voices

        cfg, info = self.cfg, self.dist
        train_set = MixtureDataset(
            self.data_dir,
            cfg,
            split="train",
            rank=info.rank,
            examples_per_step=self.examples_per_step,
        )
        workers = cfg.mixing.num_workers
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
            seed=VAL_SEED,
            n=cfg.train.val_examples,
            phase=PHASE_TP_TA,
            cache_path=self.run_dir / VAL_CACHE_NAME,
        )
        if info.is_main:
            barrier()
        # Strided shard per rank; the all-reduce in validate() puts the whole set back together.
        self.val_subset = Subset(val_set, list(range(info.rank, len(val_set), info.world_size)))
        # Speech source -> "real" / "synthetic": validation's per-kind figures.
        self.val_kind_of_source = speech_source_voices(load_report(self.data_dir), None)


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader worker start-up: ignore SIGTERM, as torch's workers already ignore SIGINT.

    A scheduler's pre-emption or ``kill -- -PGID`` signals the whole process group; a worker
    that died of it would crash the trainer before :class:`_StopSignal` could save. The main
    process stops its workers itself, and a worker exits on its own if the main one dies."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
