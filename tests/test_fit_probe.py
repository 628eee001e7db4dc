"""experiments/fit_probe.py: ``hifi-tse train`` on a fixed set of training mixtures, validated
on exactly that set (the fit), and the trainer left as it was afterwards."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import h5py
import pytest
from test_train_e2e import _cmd, _records

from hifi_tse.train import setup

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def _probe_module():
    spec = importlib.util.spec_from_file_location("fit_probe", REPO / "experiments/fit_probe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("val_examples", [None, 3])
def test_fit_probe_trains_and_validates_on_its_fixed_training_mixtures(
    tiny_packs: Path, tmp_path: Path, val_examples: int | None
):
    probe = _probe_module()
    run = tmp_path / "probe"
    examples = 6
    scored = val_examples or examples
    original = setup.RunSetup._build_data
    args = _cmd(
        tiny_packs,
        run,
        "train.steps=4",
        "train.phase1_steps=1",
        "train.val_interval=2",
        "mixing.ta_ratio=0.5",
    )
    options = ["--examples", str(examples)]
    if val_examples is not None:
        options += ["--val-examples", str(val_examples)]
    assert probe.main([*options, "--", *args[1:]]) == 0
    assert setup.RunSetup._build_data is original  # the patch is undone

    with h5py.File(run / probe.PROBE_CACHE_NAME, "r") as cache:
        assert cache["mix"].shape[0] == examples
        assert cache.attrs["split"] == "train"
        present = cache["target_present"][:scored]
    val = _records(run, "val")
    assert [r["step"] for r in val] == [2, 4]
    # validation scored the probe set itself, not the corpus's validation split (8 mixtures)
    for record in val:
        assert record["tp_count"] == int(present.sum())
        assert record["ta_count"] == scored - int(present.sum())


def test_fit_probe_trains_on_the_fixed_set_not_the_corpus_stream(tiny_packs: Path, tmp_path: Path):
    # A probe set of one mixture: item 0 is target-present at any ta_ratio, so every training
    # batch is target-present, where the corpus stream at ta_ratio 0.9 is mostly target-absent.
    probe = _probe_module()
    run = tmp_path / "probe"
    args = _cmd(tiny_packs, run, "train.steps=4", "train.phase1_steps=1", "mixing.ta_ratio=0.9")
    assert probe.main(["--examples", "1", "--", *args[1:]]) == 0
    train = _records(run, "train")
    assert train and all(r["ta_per_batch"] == 0 for r in train)
    assert all(r["tp_per_batch"] == 2 for r in train)  # batch_size 2, both from the one mixture
