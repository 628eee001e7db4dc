"""A real, non-editable install: the built wheel in a fresh virtual environment finds its
configs and the shipped demo model from any folder."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{cmd[:3]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def test_wheel_installs_and_runs_the_demo_from_any_folder(tiny_packs, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(dist), str(ROOT)], tmp_path)  # fmt: skip
    (wheel,) = dist.glob("hifi_tse-*.whl")
    fresh = tmp_path / "fresh"
    run([sys._base_executable, "-m", "venv", str(fresh)], tmp_path)
    py = fresh / "bin" / "python"
    run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], tmp_path)
    # The dependencies (torch & co.) come from this interpreter's environment; the editable
    # hifi_tse there is not seen, since .pth files of an added path are not processed.
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    fresh_site = Path(subprocess.check_output([str(py), "-c", purelib], text=True).strip())
    deps = dict.fromkeys(site.getsitepackages() + [sysconfig.get_paths()["purelib"]])
    (fresh_site / "deps.pth").write_text("\n".join(deps) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    work = tmp_path / "elsewhere"
    work.mkdir()
    code = (
        "import hifi_tse, hifi_tse.config as c; print(hifi_tse.__file__);"
        "print(c.load_config('demo').audio.sample_rate);"
        "print(c.load_config('recipes/demo_model_stage9').stft.n_fft)"
    )
    where = run([str(py), "-c", code], work, env)
    assert str(fresh_site) in where and str(ROOT / "src") not in where
    assert where.split()[-2:] == ["16000", "512"]  # a built-in config and a shipped recipe
    out = work / "demo"
    log = run([str(fresh / "bin" / "hifi-tse"), "demo", "--skip-train", "--corpus",
               str(tiny_packs), "--out", str(out), "--eval-examples", "4"], work, env)  # fmt: skip
    assert (out / "report.md").is_file() and "shipped model" in (out / "report.md").read_text()
    assert "no shipped demo model" not in log
