"""Loss audit: flags the seed's legacy_db term, passes the defaults; the audit-loss CLI."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hifi_tse.cli import main
from hifi_tse.config import load_config
from hifi_tse.losses.audit import audit_objective, check_objective_safe, make_audit_signals

TINY = str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
LEGACY = "objective.ta_loss=legacy_db"


@pytest.fixture(scope="module")
def default_result():
    return audit_objective(load_config(TINY))


@pytest.fixture(scope="module")
def legacy_result():
    return audit_objective(load_config(TINY, ["audio.sample_rate=8000", LEGACY]))


def test_defaults_pass_and_tp_minimum_at_unit_gain(default_result):
    r = default_result
    assert r.ok and r.failures == []
    assert r.gains[0] == pytest.approx(1e-3) and r.gains[-1] == 2.0 and len(r.gains) == 41
    assert {s.label for s in r.sweeps} == {"phase1/tp", "phase2/tp", "phase2/ta", "phase2/mixed"}
    assert r.tp_argmin(1) == pytest.approx(1.0) and r.tp_argmin(2) == pytest.approx(1.0)
    ta = next(s for s in r.sweeps if s.batch == "ta")
    # relu term: positive for a loud TA output, flat at 0 once below the target level
    assert ta.values["ta_energy"][-1] > 5.0
    assert np.all(ta.values["ta_energy"][r.gains < ta.ref_gain] == 0.0)
    assert "OK: no term rewards silence" in r.table()


def test_legacy_db_is_flagged(legacy_result):
    r = legacy_result
    assert not r.ok
    assert {"phase2/ta/ta_energy", "phase2/ta/sep", "phase2/ta/total"} <= set(r.failures)
    assert not any(f.startswith("phase2/tp") or f.startswith("phase1") for f in r.failures)
    ta = next(s for s in r.sweeps if s.batch == "ta")
    assert ta.values["ta_energy"][0] == pytest.approx(-40.0)  # the legacy floor
    assert ta.ref_values["ta_energy"] == pytest.approx(-30.0, abs=1e-2)
    assert "FAIL: rewards silence" in r.table()


@pytest.mark.parametrize("lambda_amp", [1.0, 10.0])
def test_blind_gain_follows_amplitude_weight(lambda_amp):
    """One common gain on a TP + TA batch settles where the amplitude anchor's pull up
    (2 lambda_amp ln g) balances the relu TA term's pull down (ta_weight * 20 / ln 10 per
    unit ln g): g = exp(-4.34 ta_weight / lambda_amp), nudged up by the phase term."""
    cfg = load_config(TINY, ["audio.sample_rate=8000", f"objective.lambda_amp={lambda_amp}"])
    r = audit_objective(cfg)
    balance = np.exp(-10.0 / np.log(10.0) * cfg.objective.ta_weight / lambda_amp)
    assert balance - 0.01 <= r.blind_gain <= balance + 0.03
    inside = cfg.health.rms_ratio_low <= r.blind_gain <= cfg.health.rms_ratio_high
    assert inside == (lambda_amp == 10.0)
    assert ("phase2/mixed/total" in r.failures) == (not inside)
    assert ("outside the healthy rms_ratio band" in r.table()) == (not inside)


def test_audit_cli_flags_weak_amplitude_anchor(capsys):
    weak = ["--set", "audio.sample_rate=8000", "--set", "objective.lambda_amp=1"]
    assert main(["audit-loss", "--config", TINY, *weak]) == 1
    err = capsys.readouterr().err
    assert "common output gain of 0.6" in err and "raise objective.lambda_amp" in err


def test_check_objective_safe():
    coarse = np.linspace(0.0, 2.0, 9)
    assert check_objective_safe(load_config(TINY, ["audio.sample_rate=8000"]), coarse) == []
    bad = check_objective_safe(load_config(TINY, ["audio.sample_rate=8000", LEGACY]), coarse)
    assert "phase2/ta/ta_energy" in bad


def test_passed_signals_and_custom_gains():
    cfg = load_config(TINY, ["audio.sample_rate=8000"])
    sig = {k: np.asarray(v) for k, v in make_audit_signals(8000).items()}
    r = audit_objective(cfg, sig, gains=np.array([0.0, 0.5, 1.0, 1.5]))
    assert list(r.gains) == [1e-3, 0.5, 1.0, 1.5] and r.ok
    bad = dict(sig, target_present=np.ones(4, dtype=bool))
    with pytest.raises(ValueError):
        audit_objective(cfg, bad)
    with pytest.raises(TypeError):
        audit_objective(cfg, dict(sig, mix=sig["mix"][0]))


def test_cli_exit_codes(capsys):
    assert main(["audit-loss", "--config", TINY, "--set", LEGACY]) == 1
    captured = capsys.readouterr()
    assert "ta_energy" in captured.err and "legacy_db" in captured.err
    assert "gain" in captured.out  # the table
    assert main(["audit-loss", "--config", TINY, "--set", "audio.sample_rate=8000"]) == 0
    assert "OK: no loss term rewards silence" in capsys.readouterr().out


def test_cli_with_data_uses_fixed_examples(tmp_path, capsys):
    from hifi_tse.data.prepare import prepare_corpus

    sr = 8000
    rng = np.random.default_rng(0)
    t = np.arange(int(1.5 * sr)) / sr
    for s in range(6):
        d = tmp_path / "speech" / f"spk{s}"
        d.mkdir(parents=True)
        for u in range(2):
            x = 0.3 * np.sin(2 * np.pi * (120 + 30 * s + 7 * u) * t) * (1 + np.sin(6 * t)) / 2
            sf.write(d / f"u{u}.wav", x + 0.01 * rng.standard_normal(len(t)), sr)
    (tmp_path / "noise").mkdir()
    for n in range(3):
        sf.write(tmp_path / "noise" / f"n{n}.wav", 0.1 * rng.standard_normal(2 * sr), sr)
    packs = tmp_path / "packs"
    prepare_corpus(
        [(tmp_path / "speech", None)], [tmp_path / "noise"], [], 2, packs,
        sr, 0.5, 0.34, 0.0, 1, 0, progress=False,
    )  # fmt: skip
    # ta_ratio 0.5: the fixed set alternates TP, TA, so two examples give one of each
    sets = ["audio.sample_rate=8000", "mixing.ta_ratio=0.5"]
    args = ["audit-loss", "--config", TINY, "--data", str(packs), "--examples", "2"]
    assert main(args + [f"--set={s}" for s in sets + [LEGACY]]) == 1
    captured = capsys.readouterr()
    assert "1 TP + 1 TA validation examples" in captured.out
    assert "phase2/ta/ta_energy" in captured.err
    # a missing packs dir is a one-line user error (exit 2)
    assert main(["audit-loss", "--config", TINY, "--data", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err
