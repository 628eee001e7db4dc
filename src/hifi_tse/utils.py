"""Small shared helpers: atomic file writes and process-wide conveniences."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success fsync and rename it into place.

    On any exception the temporary file is removed and ``final`` is left untouched, so a
    crash never leaves a truncated checkpoint, manifest, pack or audio file behind.
    The temporary name keeps ``final``'s suffix so format-sniffing writers (soundfile,
    h5py) still work.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{final.stem}.", suffix=f".tmp{final.suffix}", dir=final.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600 files; give the final file the usual umask-derived mode instead.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(final: str | Path, text: str) -> None:
    """Write ``text`` to ``final`` atomically."""
    with atomic_path(final) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(final: str | Path, data: bytes) -> None:
    """Write ``data`` to ``final`` atomically."""
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def installed_data_file(dist_name: str, relative: str, what: str, install_hint: str) -> Path:
    """Path of the data file ``relative`` inside the installed distribution ``dist_name``.

    Found through the distribution's metadata, so the package's own (heavy) imports never
    run. Raises UserError naming ``what`` and ``install_hint`` when the distribution is not
    installed or does not hold the file.
    """
    from importlib import metadata

    from hifi_tse.errors import UserError

    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        raise UserError(
            f"{what} not found: package '{dist_name}' is not installed "
            f"(install it with: {install_hint})"
        ) from None
    path = Path(str(dist.locate_file(relative)))
    listed = {str(f) for f in dist.files or ()}
    if not path.is_file() or relative not in listed:
        raise UserError(
            f"{path}: {what} not found in package '{dist_name}' (reinstall with: {install_hint})"
        )
    return path


_HASH_BLOCK = 1 << 16  # bytes read at a time when hashing a file


def file_digest(path: str | Path) -> str:
    """SHA-1 of a file's bytes (hex), read in blocks."""
    import hashlib

    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()
