"""Atomic file writes: a temporary file in the target's folder, then os.replace, so a reader (a
DataLoader worker, a resumed run, another DDP rank) never sees a half-written file and an
interrupted write leaves the previous version intact."""

import contextlib
import os
import tempfile
from typing import IO, Iterator

import numpy as np


def _umask() -> int:
    """The process umask (reading it means setting it; set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: os.PathLike, mode: str = "wb", encoding=None) -> Iterator[IO]:
    """Open a temporary file beside `path` for writing; on a clean exit it replaces `path`, on an
    exception it is removed. Creates the parent folders."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
        # mkstemp creates 0600; give the file the mode a plain open() would (0666 minus umask)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_text_atomic(path: os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def save_npz_atomic(path: os.PathLike, **arrays) -> None:
    """np.savez_compressed to `path` atomically (the name is kept as given)."""
    with atomic_open(path, "wb") as f:
        np.savez_compressed(f, **arrays)
