"""``hifi-tse evaluate``: fixed test set and list mode, robustness checks, report files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from eval_fixtures import SR, make_checkpoint, tiny_ckpt, tiny_config, tiny_packs, voice  # noqa: F401

from hifi_tse.api import Extractor
from hifi_tse.cli import main
from hifi_tse.errors import UserError
from hifi_tse.eval.evaluate import (
    EvalOptions,
    evaluate_model,
    make_partial_items,
    score_partial,
    wrong_reference_pairs,
)


def _opts(**kw) -> EvalOptions:
    base = dict(
        batch_size=4,
        perceptual=False,
        wrong_reference=False,
        snr_edges=(0.0, 5.0, 10.0),
        chunk_seconds=4.0,
        overlap_seconds=0.5,
        partial_window=(0.25, 0.6875),
        partial_ramp_seconds=0.02,
        progress=False,
    )
    base.update(kw)
    return EvalOptions(**base)


def test_evaluate_fixed_set_writes_full_report(tiny_ckpt, tiny_packs, tmp_path):  # noqa: F811
    out = tmp_path / "eval"
    code = main(
        ["evaluate", "--checkpoint", str(tiny_ckpt), "--data", str(tiny_packs)]
        + ["--split", "test", "--examples", "10", "--seed", "3", "--out", str(out)]
        + ["--wrong-reference", "--partial-presence", "--partial-examples", "3"]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    tp, ta = metrics["tp"], metrics["ta"]
    assert tp["count"] + ta["count"] == 10 and ta["count"] == 2  # ta_ratio 0.2
    for key in ("si_sdr", "si_sdri", "pesq", "stoi", "rms_ratio"):
        assert set(tp[key]) >= {"mean", "sem", "median", "n", "missing"}
    assert tp["pesq"]["n"] + tp["pesq"]["missing"] == tp["count"]
    assert ta["suppression_db"]["n"] == 2
    assert sum(g["tp"]["count"] + g["ta"]["count"] for g in metrics["by_snr_bin"].values()) == 10
    by_talker = metrics["by_target_speaker"]
    assert sum(g["tp"]["count"] + g["ta"]["count"] for g in by_talker.values()) == 10
    wrong = metrics["wrong_reference"]
    assert wrong["count"] == tp["count"] and 0.0 <= wrong["confusion_rate"] <= 1.0
    partial = metrics["partial_presence"]
    assert partial["count"] == 3 and partial["length_seconds"] == pytest.approx(2.0)
    assert partial["window_seconds"] == pytest.approx([0.5, 1.375])
    rows = list(csv.DictReader((out / "per_example.csv").open()))
    assert len(rows) == 10
    tp_rows = [r for r in rows if r["target_present"] == "True"]
    assert all(
        r["wrong_ref_speaker"] and r["wrong_ref_speaker"] != r["target_speaker"] for r in tp_rows
    )
    report = (out / "report.md").read_text()
    for heading in (
        "Target present",
        "Target absent",
        "By input SNR bin",
        "By interferers",
        "By enrolled talker (absent in TA)",
        "Wrong reference",
        "Partial presence",
    ):
        assert f"## {heading}" in report
    for talker, group in by_talker.items():  # each group is its talker's rows of the CSV
        talker_rows = [r for r in rows if r["target_speaker"] == talker]
        tp_talker = [float(r["si_sdri"]) for r in talker_rows if r["target_present"] == "True"]
        ta_talker = [r for r in talker_rows if r["target_present"] != "True"]
        assert (group["tp"]["count"], group["ta"]["count"]) == (len(tp_talker), len(ta_talker))
        if tp_talker:
            assert group["tp"]["si_sdri"]["mean"] == pytest.approx(np.mean(tp_talker), abs=1e-3)
    for png in (
        "si_sdri_hist",
        "si_sdri_vs_input_snr",
        "spectrogram_best",
        "spectrogram_median",
        "spectrogram_worst",
    ):
        path = out / "figures" / f"{png}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for which in ("best", "median", "worst"):
        for name in ("mixture", "reference", "estimate", "target"):
            assert sf.info(str(out / "examples" / which / f"{name}.wav")).samplerate == SR


def test_pass_through_model_scores_zero_improvement(tmp_path):
    """An untrained generator returns the mixture: SI-SDRi 0 dB and 0 dB suppression."""
    ckpt = make_checkpoint(tmp_path / "pt.pt", perturb=0.0)
    extractor = Extractor.from_checkpoint(ckpt)
    rng = np.random.default_rng(0)
    items = []
    for i in range(3):
        target = voice(rng, 120.0 + 30 * i, 1.0, SR)
        other = voice(rng, 250.0, 1.0, SR)
        present = i < 2
        items.append(
            {
                "mix": (target if present else 0 * target) + 0.5 * other,
                "ref": voice(rng, 120.0 + 30 * i, 1.0, SR),
                "target": target if present else np.zeros_like(target),
                "target_present": present,
                "snr_db": 3.0,
                "num_interferers": 1,
                "index": i,
                "meta": {"target_speaker": f"s{i}", "interferer_speakers": ["x"]},
            }
        )
    metrics = evaluate_model(extractor, items, _opts(wrong_reference=True))
    assert metrics["tp"]["si_sdri"]["mean"] == pytest.approx(0.0, abs=1e-3)
    assert metrics["ta"]["suppression_db"]["mean"] == pytest.approx(0.0, abs=1e-3)
    assert metrics["tp"]["rms_ratio_of_means"] > 1.0  # the mixture is louder than the target
    # a pass-through ignores the enrollment: the wrong one "extracts" just as well (0 dB)
    assert metrics["wrong_reference"]["si_sdri_drop"]["mean"] == pytest.approx(0.0, abs=1e-3)


def test_wrong_reference_prefers_a_speaker_absent_from_the_mixture():
    def item(tp, spk, interf):
        return {
            "target_present": tp,
            "meta": {"target_speaker": spk, "interferer_speakers": interf},
        }

    items = [
        item(True, "a", ["b"]),
        item(True, "b", ["a"]),
        item(False, "c", ["a"]),
        item(True, "a", ["c"]),
    ]
    pairs = wrong_reference_pairs(items)
    assert pairs[0] == 2  # "b" talks in mixture 0, "c" does not
    assert pairs[1] == 2  # "c"
    assert pairs[3] == 1  # "b" (next after wrapping; "c" talks in mixture 3, "a" is itself)
    assert 2 not in pairs  # TA examples are not scored


def test_partial_presence_items_and_scores():
    rng = np.random.default_rng(0)
    target, rest = voice(rng, 130.0, 2.0, SR), 0.3 * voice(rng, 220.0, 2.0, SR)
    it = {"mix": target + rest, "target": target, "target_present": True, "index": 0, "ref": target}
    (pp,) = make_partial_items([it], (0.25, 0.75), 0.01, SR)
    start, stop = pp["region"]
    assert (start, stop) == (SR // 2, 3 * SR // 2)
    np.testing.assert_allclose(pp["mix"][:start], rest[:start], atol=1e-6)
    np.testing.assert_allclose(pp["mix"][stop:], rest[stop:], atol=1e-6)
    np.testing.assert_allclose(
        pp["target"][start + 200 : stop - 200], target[start + 200 : stop - 200]
    )
    ideal = score_partial(pp["target"], pp, SR)  # a perfect extractor
    assert ideal["si_sdr_tp_region"] > 60.0
    assert ideal["contrast_db"] > 100.0  # silence outside the window
    leaky = score_partial(pp["mix"], pp, SR)  # pass-through keeps the interferer
    assert leaky["contrast_db"] < 10.0
    assert leaky["ta_before_db"] == pytest.approx(
        10 * np.log10(np.mean(rest[:start] ** 2)), abs=1e-3
    )


def test_evaluate_list_mode(tiny_ckpt, tmp_path):  # noqa: F811
    rng = np.random.default_rng(0)
    rows = []
    for i in range(3):
        t = voice(rng, 120.0 + 20 * i, 1.2, 24000)
        o = voice(rng, 230.0, 1.2, 24000)
        present = i != 1
        sf.write(tmp_path / f"mix{i}.wav", (t if present else 0) + 0.5 * o, 24000)
        sf.write(tmp_path / f"ref{i}.wav", voice(rng, 120.0 + 20 * i, 1.0, 24000), 24000)
        if present:
            sf.write(tmp_path / f"tgt{i}.wav", t, 24000)
        rows.append(f"mix{i}.wav,ref{i}.wav,{f'tgt{i}.wav' if present else ''}")
    (tmp_path / "list.csv").write_text("mix,ref,target\n" + "\n".join(rows) + "\n")
    out = tmp_path / "ev"
    code = main(
        ["evaluate", "--checkpoint", str(tiny_ckpt), "--list", str(tmp_path / "list.csv")]
        + ["--out", str(out), "--wrong-reference"]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tp"]["count"] == 2 and metrics["ta"]["count"] == 1
    assert metrics["wrong_reference"]["count"] == 2
    assert "unknown" in metrics["by_snr_bin"]


def test_evaluate_bad_inputs(tiny_ckpt, tmp_path, capsys):  # noqa: F811
    (tmp_path / "l.csv").write_text(f"{tmp_path / 'missing.wav'},{tmp_path / 'r.wav'},\n")
    out = tmp_path / "ev"
    code = main(
        ["evaluate", "--checkpoint", str(tiny_ckpt), "--list", str(tmp_path / "l.csv")]
        + ["--out", str(out)]
    )
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and "missing.wav" in err
    code = main(
        [
            "evaluate",
            "--checkpoint",
            str(tmp_path / "none.pt"),
            "--list",
            str(tmp_path / "l.csv"),
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code != 0 and "none.pt" in err and len(err.splitlines()) == 1
    assert not (out / "metrics.json").exists()


def test_mix_set_pins_the_test_mixtures(tiny_ckpt, tiny_packs, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "eval"
    base = ["evaluate", "--checkpoint", str(tiny_ckpt), "--data", str(tiny_packs)]
    base += ["--examples", "8", "--no-perceptual", "--out", str(out)]
    assert main([*base, "--mix-set", "mixing.ta_ratio=0.5"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ta"]["count"] == 4 and metrics["tp"]["count"] == 4  # checkpoint has 0.2
    assert metrics["mix_overrides"] == ["mixing.ta_ratio=0.5"]
    assert "mixing.ta_ratio=0.5" in (out / "report.md").read_text()
    capsys.readouterr()
    # the key's name before the data section was split still sets the same key
    from hifi_tse.eval.evaluate import mixing_config
    from hifi_tse.infer.loading import load_generator

    cfg = load_generator(tiny_ckpt)[1]
    old_name = mixing_config(cfg, ["data.ta_ratio=0.5"])
    assert old_name == mixing_config(cfg, ["mixing.ta_ratio=0.5"]) != cfg
    assert old_name.mixing.ta_ratio == 0.5
    for bad, named in (
        ("model.num_blocks=3", "model.num_blocks"),
        ("mixing.ta_ratio=2", "ta_ratio"),
        ("data.ta_ratio=2", "ta_ratio"),
        ("data.min_seconds=1", "data.min_seconds"),  # a preparation key: not a mixing one
    ):
        bad_out = tmp_path / bad
        code = main([*base[:-1], str(bad_out), "--mix-set", bad])
        err = capsys.readouterr().err.strip()
        assert code != 0 and len(err.splitlines()) == 1 and named in err and "--mix-set" in err
        assert not (bad_out / "metrics.json").exists()


def test_list_header_must_name_every_column(tmp_path):
    from hifi_tse.infer.separate import read_csv_rows

    for name in ("a", "r", "t"):
        (tmp_path / f"{name}.wav").write_bytes(b"")
    path = tmp_path / "l.csv"
    path.write_text("mix,ref\na.wav,r.wav\n")  # a header without the target column
    with pytest.raises(UserError, match=r"l.csv:1: header lacks column\(s\) target") as err:
        read_csv_rows(path, ["mix", "ref", "target"], required=2)
    assert "\n" not in str(err.value)
    path.write_text("mix,ref,target,notes\na.wav,r.wav,t.wav,x\n")
    with pytest.raises(UserError, match="unknown or repeated column"):
        read_csv_rows(path, ["mix", "ref", "target"], required=2)
    # A header sets the order; rows without one keep the documented order.
    path.write_text("target,mix,ref\nt.wav,a.wav,r.wav\n")
    (row,) = read_csv_rows(path, ["mix", "ref", "target"], required=2)
    assert Path(row["mix"]).name == "a.wav" and Path(row["target"]).name == "t.wav"
    path.write_text("a.wav,r.wav\n")
    (row,) = read_csv_rows(path, ["mix", "ref", "target"], required=2)
    assert Path(row["ref"]).name == "r.wav" and row["target"] == ""


def test_ref_seconds_changes_only_the_enrollment(tiny_ckpt, tiny_packs, tmp_path, capsys):  # noqa: F811
    from hifi_tse.data.datasets import FixedExampleSet
    from hifi_tse.eval.evaluate import enrollment_config
    from hifi_tse.infer.loading import load_generator

    cfg = load_generator(tiny_ckpt)[1]
    longer = cfg.audio.ref_seconds * 2.0
    sets = [
        FixedExampleSet(tiny_packs, c, split="test", seed=5, n=6)
        for c in (cfg, enrollment_config(cfg, longer))
    ]
    for index in range(len(sets[0])):
        short, long = sets[0].example(index), sets[1].example(index)
        assert np.array_equal(short.mix, long.mix) and np.array_equal(short.target, long.target)
        assert len(short.ref) == round(cfg.audio.ref_seconds * SR)
        assert len(long.ref) == round(longer * SR)
    assert enrollment_config(cfg, None) is cfg

    base = ["evaluate", "--checkpoint", str(tiny_ckpt), "--data", str(tiny_packs)]
    base += ["--examples", "6", "--no-perceptual", "--seed", "5"]
    outs = [tmp_path / "short", tmp_path / "long"]
    assert main([*base, "--out", str(outs[0])]) == 0
    assert main([*base, "--ref-seconds", str(longer), "--out", str(outs[1])]) == 0
    metrics = [json.loads((o / "metrics.json").read_text()) for o in outs]
    assert [m["ref_seconds"] for m in metrics] == [cfg.audio.ref_seconds, longer]
    assert f"enrollment {longer:g} s" in (outs[1] / "report.md").read_text()
    # the same draws: compare pairs them (it refuses runs whose mixtures differ)
    assert main(["compare", str(outs[0]), str(outs[1]), "--out", str(tmp_path / "cmp")]) == 0
    capsys.readouterr()
    for extra, named in (
        (["--ref-seconds", "0.01"], "--ref-seconds 0.01"),  # below the schema's bound
        (["--ref-seconds", "1", "--list", str(tmp_path / "l.csv")], "--ref-seconds: applies"),
    ):
        args = (
            [a for a in base if a not in ("--data", str(tiny_packs))] if "--list" in extra else base
        )
        code = main([*args, *extra, "--out", str(tmp_path / "bad")])
        err = capsys.readouterr().err.strip()
        assert code != 0 and len(err.splitlines()) == 1 and named in err
        assert not (tmp_path / "bad" / "metrics.json").exists()
