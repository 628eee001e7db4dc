"""Can the model fit real speech at all? Train on a small fixed set and score that same set.

The shipped model extracts held-out real talkers ~2 dB worse than synthetic ones, and even the
real talkers it trained on (docs/demo_model.md). This probe separates "cannot represent the
task on real speech" from "does not generalise from the real speech it has": it fine-tunes a
checkpoint on ``--examples`` fixed mixtures of the *training* split (drawn once, like a
validation set, with real and synthetic targets in the recipe's shares) and validates on
those mixtures (``--val-examples N``: the first N of them), so the validation curve is the fit.
Where the real group's fit stays far below the synthetic group's on mixtures the model sees
hundreds of times, the limit is the model (its size or its features) on real speech, not the
data volume. Probe sets of different sizes share their first mixtures (item ``i`` depends on
the seed and ``i`` only), so ``--val-examples`` scores them on the same mixtures.

Everything else is ``hifi-tse train``: the same arguments, the same recipe, budget and
checkpoints; only the training stream and the validation set are replaced (docs/demo_model.md,
"What limits the unseen-source figure"); the order in which the set is drawn is random and
not part of a checkpoint, so a resumed probe trains on the same set in a new order. E.g.

    python experiments/fit_probe.py --examples 240 -- --config recipes/demo_model_stage14 \
        --data data/demo --threads 1 --init-from models/demo_model.pt \
        --set train.budget_minutes=40 --out runs/fit_probe
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from torch.utils.data import DataLoader, RandomSampler, Subset

from hifi_tse.cli import main as hifi_tse_main
from hifi_tse.data.datasets import FixedExampleSet, collate_batch
from hifi_tse.schedules import PHASE_TP_TA
from hifi_tse.train import setup

# A seed no validation or test draw uses, so the probe set is its own draw of the train split.
PROBE_SEED = 9001
PROBE_CACHE_NAME = "probe_cache.h5"
# Effectively endless: the trainer stops on its budget, not on the sampler.
SAMPLES_PER_PASS = 10**9


@contextmanager
def fixed_training_set(examples: int, val_examples: int | None = None) -> Iterator[None]:
    """Within the block, ``hifi-tse train`` trains on ``examples`` fixed train-split mixtures
    (drawn with :data:`PROBE_SEED`, cached in the run folder) and validates on the first
    ``val_examples`` of them (default: all)."""
    build_data = setup.RunSetup._build_data

    def build_fixed_data(self: setup.RunSetup) -> None:
        build_data(self)
        fixed = FixedExampleSet(
            self.data_dir,
            self.cfg,
            split="train",
            seed=PROBE_SEED,
            n=examples,
            phase=PHASE_TP_TA,
            cache_path=self.run_dir / PROBE_CACHE_NAME,
        )
        self.train_loader = DataLoader(
            fixed,
            batch_size=self.cfg.train.batch_size,
            sampler=RandomSampler(fixed, replacement=True, num_samples=SAMPLES_PER_PASS),
            collate_fn=collate_batch,
            num_workers=0,
        )
        self.train_iter = iter(self.train_loader)
        # The probe set is also the validation set (train.val_examples is not used).
        self.val_subset = Subset(fixed, range(min(val_examples or examples, examples)))

    setup.RunSetup._build_data = build_fixed_data
    try:
        yield
    finally:
        setup.RunSetup._build_data = build_data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=240, help="fixed training mixtures")
    parser.add_argument(
        "--val-examples", type=int, default=None, help="validate on the first N (default: all)"
    )
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="-- hifi-tse train ...")
    args = parser.parse_args(argv)
    train_args = [a for a in args.train_args if a != "--"]
    with fixed_training_set(args.examples, args.val_examples):
        return hifi_tse_main(["train", *train_args])


if __name__ == "__main__":
    sys.exit(main())
