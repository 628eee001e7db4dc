"""Speaker similarity in evaluation: GE2E cosines per TP example, and the no-target mode
that scores a user's own mixture + enrollment pairs."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from eval_fixtures import tiny_ckpt, tiny_config, tiny_packs, voice  # noqa: F401

from hifi_tse.audio.io import load_audio
from hifi_tse.cli import main
from hifi_tse.speaker.ge2e import default_weights_path

try:
    default_weights_path()
    HAVE_WEIGHTS = True
except Exception:  # noqa: BLE001 - any failure to find the weights means: skip
    HAVE_WEIGHTS = False
needs_weights = pytest.mark.skipif(not HAVE_WEIGHTS, reason="resemblyzer weights not installed")
FILLETS = "/usr/share/games/fillets-ng/sound/*/cs/*-{}-*.ogg"


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@needs_weights
def test_similarity_prefers_the_enrolled_voice_over_the_mixture(one_thread) -> None:
    from hifi_tse.eval.similarity import SpeakerSimilarity

    own = sorted(glob.glob(FILLETS.format("m")))[:3]
    other = sorted(glob.glob(FILLETS.format("v")))[:1]
    if len(own) < 3 or not other:
        pytest.skip("Fish Fillets voices not installed")
    a, b, c = (load_audio(p, 16000) for p in own)
    v = load_audio(other[0], 16000)
    n = min(len(a), len(v))
    mix = a[:n] + 1.5 * v[:n] * np.sqrt(np.mean(a[:n] ** 2) / np.mean(v[:n] ** 2))
    scorer = SpeakerSimilarity()
    right, wrong, absent = scorer.score([b, v[:n], None], [mix, mix, None], [c, c, None],
                                        [a[:n], a[:n], None], 16000)  # fmt: skip
    # Another line of the enrolled talker sounds more like the enrollment than the mixture
    # does; the interfering talker alone sounds less like it.
    assert right["spk_sim"] > right["spk_sim_mix"] > wrong["spk_sim"]
    assert right["spk_sim_target"] > wrong["spk_sim_target"]
    assert absent == {"spk_sim": None, "spk_sim_mix": None, "spk_sim_target": None}


@needs_weights
def test_evaluate_reports_similarity_per_tp_example(tiny_ckpt, tiny_packs, tmp_path, one_thread):  # noqa: F811
    out = tmp_path / "ev"
    args = ["evaluate", "--checkpoint", str(tiny_ckpt), "--data", str(tiny_packs),
            "--split", "test", "--examples", "10", "--seed", "1", "--out", str(out),
            "--no-perceptual"]  # fmt: skip
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    sims = metrics["tp"]["spk_sim"]
    assert sims["n"] == metrics["tp"]["count"] and -1.0 <= sims["mean"] <= 1.0
    assert metrics["tp"]["spk_sim_target"]["n"] == metrics["tp"]["count"]
    assert "Speaker similarity (GE2E cosine)" in (out / "report.md").read_text()
    header = (out / "per_example.csv").read_text().splitlines()[0].split(",")
    assert {"spk_sim", "spk_sim_mix", "spk_sim_target"} <= set(header)
    assert main(args + ["--no-speaker-similarity", "--out", str(tmp_path / "ev2")]) == 0
    skipped = json.loads((tmp_path / "ev2" / "metrics.json").read_text())
    assert skipped["tp"]["spk_sim"]["n"] == 0


@needs_weights
def test_no_target_mode_scores_own_recordings(tiny_ckpt, tmp_path, capsys, one_thread):  # noqa: F811
    rng = np.random.default_rng(0)
    rows = []
    for i in range(3):
        mix = voice(rng, 120.0 + 20 * i, 1.5, 24000) + 0.5 * voice(rng, 230.0, 1.5, 24000)
        sf.write(tmp_path / f"mix{i}.wav", mix, 24000)
        sf.write(tmp_path / f"ref{i}.wav", voice(rng, 120.0 + 20 * i, 1.0, 24000), 24000)
        rows.append(f"mix{i}.wav,ref{i}.wav")
    (tmp_path / "own.csv").write_text("mix,ref\n" + "\n".join(rows) + "\n")
    out = tmp_path / "ev"
    code = main(["evaluate", "--checkpoint", str(tiny_ckpt), "--list", str(tmp_path / "own.csv"),
                 "--no-target", "--out", str(out)])  # fmt: skip
    assert code == 0 and "speaker similarity" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["examples"] == 3 and metrics["spk_sim"]["n"] == 3
    gain = metrics["spk_sim_gain"]["mean"]
    assert gain == pytest.approx(metrics["spk_sim"]["mean"] - metrics["spk_sim_mix"]["mean"])
    lines = (out / "per_example.csv").read_text().splitlines()
    assert len(lines) == 4 and lines[0].startswith("name,spk_sim")
    # --no-target needs a list; with --data it is a one-line error.
    code = main(["evaluate", "--checkpoint", str(tiny_ckpt), "--data", str(tmp_path),
                 "--no-target", "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--no-target" in err and len(err.splitlines()) == 1


def test_missing_weights_are_refused_in_one_line(tmp_path: Path) -> None:
    from hifi_tse.errors import UserError
    from hifi_tse.speaker.ge2e import GE2EEncoder

    with pytest.raises(UserError) as err:
        GE2EEncoder.from_pretrained(tmp_path / "absent.pt")
    assert "\n" not in str(err.value)
