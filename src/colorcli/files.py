"""Writing files safely: the one atomic writer of the project, and cleaning up after a crash.

Every file colorcli writes (images, reports, training caches and checkpoints, weights, ONNX
exports) goes through :func:`atomic_write`: the data lands in a hidden temp file beside the
target, named ``.NAME.xxxxxxxx.part`` (8 random hex digits), is fsynced, then renamed into
place. On any error or interrupt the temp file is removed, so a reader sees the old file or the
whole new one, never a partial one. Only ``kill -9`` or a power cut can leave a temp file;
:func:`clean_stale_parts` removes those of our pattern once they are older than any write takes.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from typing import BinaryIO
from pathlib import Path

from colorcli.errors import ImageWriteError, OutputExistsError

# ".NAME.xxxxxxxx.part": NAME is the target's name cut to 80 characters, so that a long (but
# valid) name does not give a temp name past the file system's 255-byte limit.
PART_PATTERN = re.compile(r"^\..+\.[0-9a-f]{8}\.part$", re.DOTALL)
STALE_SECONDS = 15 * 60  # far longer than any single write takes

_cleaned: set[str] = set()
_cleaned_lock = threading.Lock()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def part_name(path: Path) -> Path:
    """A fresh temp name for ``path``: ``.NAME.xxxxxxxx.part`` in the same folder."""
    return path.with_name(f".{path.name[:80]}.{secrets.token_hex(4)}.part")


def atomic_write(path: Path, write: Callable[[Path], object], *, overwrite: bool = True) -> Path:
    """Create ``path`` through ``write(tmp)``, which fills the (empty, existing) temp file ``tmp``.

    The temp file is created with mode 0o666 so the umask applies as for any new file. With
    ``overwrite=False`` an existing ``path`` is never replaced, even one that appeared meanwhile
    (:class:`OutputExistsError`). Any OS error (a full disk, a read-only folder) is an
    :class:`ImageWriteError` naming ``path``; the temp file is removed on every failure.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImageWriteError(f"{path}: cannot create folder {path.parent} ({_reason(exc)})") from None
    clean_stale_parts(path.parent)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = part_name(path)
        try:
            os.close(os.open(tmp, flags, 0o666))
            break
        except FileExistsError:
            continue
        except OSError as exc:
            raise ImageWriteError(f"{path}: cannot write ({_reason(exc)})") from None
    else:  # pragma: no cover - 100 random-name collisions
        raise ImageWriteError(f"{path}: cannot create a temporary file")
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_no_replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, FileExistsError):
            raise OutputExistsError(f"{path}: exists (use --overwrite to replace it)") from None
        os_error = _os_error(exc)
        if os_error is not None:
            raise ImageWriteError(f"{path}: cannot write ({_reason(os_error)})") from None
        raise
    return path


def _os_error(exc: BaseException) -> OSError | None:
    """``exc`` if it is an OSError, or the OSError it was raised while handling: torch.save's
    zip writer turns a full disk into a RuntimeError from its clean-up."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, OSError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def atomic_write_stream(path: Path, write: Callable[[BinaryIO], object], *, overwrite: bool = True) -> Path:
    """Create ``path`` through ``write(fh)``, which writes into the open binary temp file ``fh``
    (see :func:`atomic_write`). Prefer it to a temp path for writers that take a file object:
    every write then goes through Python, so a full disk is an ``OSError`` (torch.save on a path
    reports one as a RuntimeError from its C++ writer)."""

    def to_path(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            write(fh)

    return atomic_write(path, to_path, overwrite=overwrite)


def atomic_write_bytes(path: Path, data: bytes, *, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write_stream(path, lambda fh: fh.write(data), overwrite=overwrite)


def _link_no_replace(tmp: Path, path: Path) -> None:
    """Move ``tmp`` to ``path`` unless ``path`` exists (FileExistsError then)."""
    try:
        # link() fails if the target exists, where rename() would silently replace it.
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:
        # No hard links here (FAT, some network shares): check, then rename; a file appearing in
        # between is the only case this cannot guard.
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "exists", str(path)) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def clean_stale_parts(folder: Path, *, max_age: float = STALE_SECONDS, now: float | None = None) -> list[Path]:
    """Remove our own temp files (``.NAME.xxxxxxxx.part``) older than ``max_age`` seconds from
    ``folder`` (not its sub-folders); returns what was removed.

    Each folder is looked at once per process: the first write into it pays one listing. A
    younger temp file may belong to a run still writing, so it is left alone; anything that
    does not match our pattern is never touched. Errors (a folder we cannot list) are ignored.
    """
    key = os.path.realpath(folder)
    with _cleaned_lock:
        if key in _cleaned:
            return []
        _cleaned.add(key)
    now = time.time() if now is None else now
    removed: list[Path] = []
    try:
        with os.scandir(folder) as it:
            for entry in it:
                if not PART_PATTERN.match(entry.name):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                    if entry.is_file(follow_symlinks=False) and now - st.st_mtime > max_age:
                        os.unlink(entry.path)
                        removed.append(Path(entry.path))
                except OSError:
                    continue
    except OSError:
        pass
    return removed


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's content, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


__all__ = ["PART_PATTERN", "STALE_SECONDS", "atomic_write", "atomic_write_bytes", "atomic_write_stream", "clean_stale_parts", "part_name", "sha256_file"]
