"""Atomic writes: all or nothing, with ordinary file permissions."""

import os
import stat

import pytest

from hifi_tse.utils import atomic_path, atomic_write_text


def test_atomic_write_replaces_and_uses_umask_mode(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "ckpt.pt"
    target.write_text("complete")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "complete"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_one_device_resolver_for_cli_api_and_trainer():
    import torch

    from hifi_tse.devices import resolve_device
    from hifi_tse.errors import UserError

    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UserError, match="--device tpu: expected cpu, cuda or cuda:N"):
        resolve_device("tpu")
    if torch.cuda.is_available():
        assert resolve_device("cuda", local_rank=0) == torch.device("cuda", 0)
        assert resolve_device(None).type == "cuda"
    else:
        assert resolve_device(None) == torch.device("cpu")
        for name in ("cuda", "cuda:1"):
            with pytest.raises(UserError, match=f"--device {name}: CUDA is not available"):
                resolve_device(name)
