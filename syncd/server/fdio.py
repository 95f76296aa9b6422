"""File-descriptor primitives the other rooms share: open flags, whole reads and writes,
a writeback hint, a quiet directory fsync, an ``lstat`` relative to a directory.

Every function blocks: run it in a worker thread.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Sequence

from syncd.server.errors import os_error

log = logging.getLogger("syncd.server.store")  # (the name the server's logs have always shown)

SUPPORTED = (
    hasattr(os, "O_NOFOLLOW") and hasattr(os, "O_DIRECTORY") and os.open in os.supports_dir_fd
)
"""Whether this OS can serve safely (Windows cannot: no openat, no O_NOFOLLOW)."""

CHUNK = 1 << 20
"""Bytes written, read or hashed per worker-thread call."""

O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
O_DIR = os.O_RDONLY | _O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC
"""A directory below ROOT (never through a symlink)."""
O_ROOT = os.O_RDONLY | _O_DIRECTORY | O_CLOEXEC
"""ROOT itself (which may be reached through a symlink)."""
O_READ = os.O_RDONLY | O_NOFOLLOW | _O_NONBLOCK | O_CLOEXEC
"""A file to read (a fifo does not block the open)."""
O_TEMP = os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_NOFOLLOW | O_CLOEXEC
"""A new temporary file."""

_FADV_DONTNEED: int | None = getattr(os, "POSIX_FADV_DONTNEED", None)
try:
    _IOV_MAX = max(16, os.sysconf("SC_IOV_MAX"))
except (AttributeError, ValueError, OSError):
    _IOV_MAX = 16


def read_all(fd: int, size: int) -> bytes:
    """Up to ``size`` bytes from the start of ``fd`` (fewer if the file is shorter)."""
    parts: list[bytes] = []
    offset = 0
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            break
        parts.append(chunk)
        offset += len(chunk)
    return b"".join(parts)


def write_all(fd: int, chunks: Sequence[bytes | memoryview]) -> int:
    """Write every chunk, in order, with as few system calls as possible; returns the bytes."""
    views = [memoryview(c) for c in chunks if c]
    total = sum(len(v) for v in views)
    while views:
        n = os.writev(fd, views[:_IOV_MAX])
        while views and n >= len(views[0]):
            n -= len(views.pop(0))
        if n:
            views[0] = views[0][n:]
    return total


_NO_KERNEL_COPY = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}
"""What copy_file_range says where it cannot copy these files (they are read and written)."""


def copy_piece(src: int, dst: int, offset: int, want: int) -> int:
    """Copy up to ``want`` bytes at ``offset`` of ``src`` to ``dst``'s position; returns how
    many (0: ``src`` ends there). Inside the kernel where it can (the bytes never pass through
    Python; a reflink on filesystems that have them), else read and written (a filesystem or
    a kernel without copy_file_range, or not between these two files)."""
    if hasattr(os, "copy_file_range"):
        try:
            return os.copy_file_range(src, dst, want, offset)
        except OSError as e:
            if e.errno not in _NO_KERNEL_COPY:
                raise
    data = os.pread(src, min(want, CHUNK), offset)
    return write_all(dst, [data]) if data else 0


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing a range of the file to disk now, without waiting for it (a hint).

    Left alone, the kernel holds a large upload in dirty pages, throttles the writer once too
    many pile up, and leaves most of the writing to the final fsync. POSIX_FADV_DONTNEED makes
    Linux start the writeback of the range at once (and drop the pages once clean): the disk
    works while the body arrives and the fsync before the rename has little left to do.
    Measured on a 1 GiB body: write + hash + fsync 2.6-3.7 s without, 1.4-1.5 s with.
    The fsync is still what makes the file durable; this changes only when the work happens.
    """
    if _FADV_DONTNEED is None:
        return
    try:
        os.posix_fadvise(fd, offset, length, _FADV_DONTNEED)
    except OSError:
        pass


def fsync_quiet(fd: int) -> None:
    """fsync a directory; a failure is logged, not raised (the change itself is done)."""
    try:
        os.fsync(fd)
    except OSError as e:
        log.warning("fsync of a directory failed: %s", e)


def lstat_at(dir_fd: int, name: str, shown: str) -> os.stat_result | None:
    """``lstat`` of ``name`` in ``dir_fd``; None if absent."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise os_error(e, shown) from e
