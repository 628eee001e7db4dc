"""``hifi-tse compare``: paired differences of two evaluate runs on the same draws."""

from __future__ import annotations

import csv
import json

import pytest
from eval_fixtures import make_checkpoint, tiny_ckpt, tiny_packs  # noqa: F401

from hifi_tse.cli import main
from hifi_tse.errors import UserError
from hifi_tse.eval.compare import _verdict, paired_differences, read_examples


def _evaluate(ckpt, packs, out, seed: int = 3) -> None:
    args = ["evaluate", "--checkpoint", str(ckpt), "--data", str(packs), "--split", "test"]
    args += ["--examples", "8", "--seed", str(seed), "--no-perceptual", "--out", str(out)]
    assert main(args) == 0


@pytest.fixture(scope="module")
def baseline_run(tiny_ckpt, tiny_packs, tmp_path_factory):  # noqa: F811
    """The tiny checkpoint's evaluate output on seed 3's draws."""
    out = tmp_path_factory.mktemp("compare") / "a"
    _evaluate(tiny_ckpt, tiny_packs, out)
    return out


def test_compare_pairs_two_checkpoints_on_the_same_draws(
    baseline_run,
    tiny_packs,  # noqa: F811
    tmp_path,
    capsys,
):
    other = make_checkpoint(tmp_path / "other.pt", perturb=0.3, seed=5)
    _evaluate(other, tiny_packs, tmp_path / "b")
    capsys.readouterr()
    assert main(["compare", str(baseline_run), str(tmp_path / "b"), "--by", "voice_kind",
                 "--out", str(tmp_path / "cmp")]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())[str(tmp_path / "b")]
    rows_a = list(csv.DictReader((baseline_run / "per_example.csv").open()))
    rows_b = {r["name"]: r for r in csv.DictReader((tmp_path / "b" / "per_example.csv").open())}
    tp = [r for r in rows_a if r["target_present"] == "True"]
    diffs = [float(rows_b[r["name"]]["si_sdri"]) - float(r["si_sdri"]) for r in tp]
    row = result["all"]["si_sdri"]
    assert row["n"] == len(tp) > 1
    assert row["difference"] == pytest.approx(sum(diffs) / len(diffs), abs=1e-9)
    mean = sum(diffs) / len(diffs)
    sem = (sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1) / len(diffs)) ** 0.5
    assert row["difference_sem"] == pytest.approx(sem, abs=1e-9) and sem > 0
    # TA suppression pairs over the TA mixtures only
    ta = [r for r in rows_a if r["target_present"] == "False"]
    assert result["all"]["suppression_db"]["n"] == len(ta) > 0
    kinds = {f"voice_kind={r['voice_kind']}" for r in rows_a}
    assert kinds <= set(result) and "si_sdri" in printed and "paired difference" in printed


def test_compare_refuses_runs_on_different_draws(
    baseline_run,
    tiny_ckpt,  # noqa: F811
    tiny_packs,  # noqa: F811
    tmp_path,
    capsys,
):
    _evaluate(tiny_ckpt, tiny_packs, tmp_path / "c", seed=4)
    capsys.readouterr()
    code = main(["compare", str(baseline_run), str(tmp_path / "c")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "not the same draws" in err
    # a run against itself pairs exactly: every difference is zero and within noise
    same = read_examples(baseline_run)
    result = paired_differences(same, same)
    assert all(r["difference"] == 0 and not r["clear"] for r in result["all"].values())
    with pytest.raises(UserError, match="per_example.csv"):
        read_examples(tmp_path / "missing")


def _rows(values: dict[str, list[float]], present: bool = True) -> dict[str, dict[str, str]]:
    """per_example.csv rows as read: one per value, every column a string."""
    count = len(next(iter(values.values())))
    return {
        f"ex{i}": {
            "name": f"ex{i}",
            "target_present": str(present),
            **{col: str(v[i]) for col, v in values.items()},
        }
        for i in range(count)
    }


def test_verdicts_follow_each_metrics_direction_and_the_noise():
    base = {"si_sdri": [1.0, 2.0, 3.0, 4.0], "si_sdri_wrong": [0.0, 1.0, 2.0, 3.0],
            "rms_ratio": [0.9, 1.0, 0.8, 0.95], "pesq": [1.1, 1.2, 1.3, 1.4]}  # fmt: skip
    cand = {"si_sdri": [1.5, 2.6, 3.4, 4.5],  # +0.5 each, little spread: clearly better
            "si_sdri_wrong": [0.5, 1.6, 2.4, 3.5],  # up: worse selectivity
            "rms_ratio": [0.8, 0.9, 0.7, 0.86],  # down: neither better nor worse
            # pesq: +0.2 and -0.2 in turn, a mean of zero: noise
            "pesq": [1.3, 1.0, 1.5, 1.2]}  # fmt: skip
    result = paired_differences(_rows(base), _rows(cand))["all"]
    assert result["si_sdri"]["difference"] == pytest.approx(0.5)
    assert _verdict(result["si_sdri"]) == "better"
    assert _verdict(result["si_sdri_wrong"]) == "worse"
    assert _verdict(result["rms_ratio"]) == "lower"
    assert _verdict(result["pesq"]) == "within noise"
    # suppression_db is paired over TA mixtures only: TP rows give it no pairs
    assert "suppression_db" not in result
    with pytest.raises(UserError, match="no column 'voice_kind'"):
        paired_differences(_rows(base), _rows(cand), group_by="voice_kind")
