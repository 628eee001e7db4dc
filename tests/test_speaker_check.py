"""``hifi-tse check-speakers``: speaker ids that may be one person, by GE2E centroids."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_prepare import run_prepare, tone, write

from hifi_tse.cli import main as cli_main
from hifi_tse.data.layouts import SpeechSource
from hifi_tse.errors import UserError
from hifi_tse.speaker.check import similar_pairs
from hifi_tse.speaker.ge2e import GE2EEncoder

SR = 16000
FILLETS = Path("/usr/share/games/fillets-ng/sound")
pytestmark = pytest.mark.usefixtures("one_thread")  # a few short clips: threads only wait


@pytest.fixture(scope="module")
def encoder_available() -> None:
    try:
        GE2EEncoder.from_pretrained()
    except UserError as exc:
        pytest.skip(str(exc))


def test_similar_pairs_lists_each_pair_once_at_or_above_the_threshold() -> None:
    rng = np.random.default_rng(0)
    base = rng.standard_normal((3, 16))
    # d is a close copy of a; b and c are unrelated directions.
    vectors = np.concatenate([base, base[:1] + 0.05 * rng.standard_normal((1, 16))])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    names, splits = ["a", "b", "c", "d"], ["train", "train", "val", "test"]
    cos_ad = float(vectors[0] @ vectors[3])
    pairs = similar_pairs(names, splits, vectors, threshold=0.9)
    assert [(p.first, p.second) for p in pairs] == [("a", "d")]
    assert pairs[0].across_splits and abs(pairs[0].cosine - cos_ad) < 1e-6
    # At a threshold just above their cosine the pair is gone; at -1 every pair is listed.
    assert similar_pairs(names, splits, vectors, threshold=cos_ad + 1e-4) == []
    assert len(similar_pairs(names, splits, vectors, threshold=-1.0)) == 6


def test_one_talker_under_two_names_is_flagged_in_a_raw_folder(
    tmp_path: Path, encoder_available: None, capsys: pytest.CaptureFixture
) -> None:
    """Real voices: the game's Czech small fish filed under two names is listed as a pair;
    the big fish, another actor, is not paired with either."""
    small = sorted(FILLETS.glob("*/cs/*-m-*.ogg"))
    big = sorted(FILLETS.glob("*/cs/*-v-*.ogg"))
    small = [p for p in small if 2.5 <= sf.info(str(p)).duration <= 6.0][:8]
    big = [p for p in big if 2.5 <= sf.info(str(p)).duration <= 6.0][:4]
    if len(small) < 8 or len(big) < 4:
        pytest.skip(f"needs the Fish Fillets NG Czech voices under {FILLETS}")
    root = tmp_path / "corpus"
    for who, files in (("fish-a", small[:4]), ("fish-b", small[4:]), ("other", big)):
        (root / who).mkdir(parents=True)
        for p in files:
            shutil.copy(p, root / who / p.name)
    out = tmp_path / "check.json"
    code = cli_main(["check-speakers", "--speech", f"{root}:folder", "--threshold", "0.9",
                     "--out", str(out)])  # fmt: skip
    assert code == 0
    doc = json.loads(out.read_text())
    pairs = {(p["first"], p["second"]) for p in doc["similar_pairs"]}
    assert pairs == {("fish-a", "fish-b")}
    rows = {r["speaker"]: r for r in doc["speakers"]}
    assert rows["fish-a"]["nearest"] == "fish-b" and rows["fish-b"]["nearest"] == "fish-a"
    assert rows["other"]["nearest_cosine"] < 0.9 <= rows["fish-a"]["nearest_cosine"]
    assert all(r["clips"] == 4 for r in rows.values())
    assert "fish-a ~ fish-b" in capsys.readouterr().out


def test_prepared_corpus_marks_a_held_out_talker_that_also_trains(
    tmp_path: Path, encoder_available: None
) -> None:
    """The same clips under a training id and a test id: listed, and marked across splits;
    voice variants stay out unless asked for, synthetic sources when real voices are asked."""
    root = tmp_path / "corpus"
    for u in range(3):
        x = tone(2.0, SR, 130.0, seed=u)
        write(root / "train-talker" / f"u{u}.wav", x, SR, "PCM_16")
        write(root / "test-talker" / f"u{u}.wav", x, SR, "PCM_16")
        write(root / "third" / f"u{u}.wav", tone(2.0, SR, 230.0, seed=10 + u), SR, "PCM_16")
        write(tmp_path / "synth" / "robot" / f"u{u}.wav", tone(2.0, SR, 90.0, seed=20 + u), SR,
              "PCM_16")  # fmt: skip
    packs = tmp_path / "packs"
    run_prepare([SpeechSource(root, "folder", test_speakers=("test-talker",), voice_variants=1),
                 SpeechSource(tmp_path / "synth", "folder", voices="synthetic")],
                packs)  # fmt: skip
    out = tmp_path / "check.json"
    assert cli_main(["check-speakers", "--data", str(packs), "--out", str(out)]) == 0
    assert "robot" in {r["speaker"] for r in json.loads(out.read_text())["speakers"]}
    args = ["check-speakers", "--data", str(packs), "--voices", "real", "--out", str(out)]
    assert cli_main(args) == 0
    doc = json.loads(out.read_text())
    split = {r["speaker"]: r["split"] for r in doc["speakers"]}
    assert split == {"train-talker": "train", "test-talker": "test", "third": "train"}
    flagged = [p for p in doc["similar_pairs"] if {p["first"], p["second"]} ==
               {"test-talker", "train-talker"}]  # fmt: skip
    assert len(flagged) == 1 and flagged[0]["across_splits"] and flagged[0]["cosine"] > 0.99
    assert cli_main([*args, "--variants"]) == 0
    assert len(json.loads(out.read_text())["speakers"]) == 5  # + one variant per training talker


def test_bad_arguments_are_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert cli_main(["check-speakers", "--data", str(tmp_path / "none")]) == 2
    assert "prepare_report.json: not found" in capsys.readouterr().err
    assert cli_main(["check-speakers", "--data", str(tmp_path), "--utterances", "0"]) == 2
    err = capsys.readouterr().err
    assert "--utterances must be at least 1" in err and err.count("\n") == 1
