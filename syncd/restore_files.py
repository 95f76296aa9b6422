"""Writing a restored file: a temp beside its place (the reserved prefix, so the scanner
skips it; the pid, so that a later restore removes what a killed one left), hashed while
written, fsynced, given its mode and mtime, then linked into place (never over a file that
appeared meanwhile); what ``--overwrite`` sets aside, and the local file's stat and digest."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import secrets
import stat
import time
from pathlib import Path

from syncd.types import RESERVED_PREFIX, LocalFile

CHUNK = 1 << 20
KEPT_INFIX = ".syncd-kept-"


def stat_local(path: Path, rel: str) -> LocalFile | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return LocalFile.of(rel, st)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def kept_name(target: Path, now: float | None = None) -> Path:
    """Where ``--overwrite`` puts the local file aside: ``<name>.syncd-kept-<YYYYmmdd-HHMMSS>``
    (``-2``, ``-3``... if that is taken)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    aside = target.with_name(f"{target.name}{KEPT_INFIX}{stamp}")
    n = 2
    while os.path.lexists(aside):
        aside = target.with_name(f"{target.name}{KEPT_INFIX}{stamp}-{n}")
        n += 1
    return aside


TEMP_PREFIX = f"{RESERVED_PREFIX}restore-"


def sweep(directory: Path) -> int:
    """Remove the temps a restore that was killed left in ``directory`` (their process is
    gone); returns how many."""
    n = 0
    with contextlib.suppress(OSError), os.scandir(directory) as it:
        for entry in it:
            if not (entry.name.startswith(TEMP_PREFIX) and entry.name.endswith(".tmp")):
                continue
            pid_s = entry.name[len(TEMP_PREFIX) :].split("-", 1)[0]
            if pid_s.isdigit() and not _alive(int(pid_s)):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    n += 1
    return n


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


@functools.cache
def process_umask() -> int:
    """The process's umask, read once (``os.umask`` can only be read by setting it, and for
    that instant every other thread's new directories would get mode 0777): the restorer
    reads it before its threads start."""
    umask = os.umask(0o077)
    os.umask(umask)
    return umask


class Temp:
    """A temp file beside ``target`` (``.~syncd-restore-<pid>-<hex>.tmp``: the reserved
    prefix, and the pid so that a later restore can remove what a killed one left), written
    and hashed chunk by chunk."""

    def __init__(self, target: Path) -> None:
        self.target = target
        name = f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}.tmp"
        self.path = target.with_name(name)
        self.fd = os.open(
            self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600
        )
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        self.hash.update(data)
        self.size += len(data)

    def restart(self) -> None:
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)
        self.hash = hashlib.sha256()
        self.size = 0

    def finish(self, mtime_ns: int | None, executable: bool | None) -> None:
        """fsync, then the mode (0666/0777 less the umask) and the mtime."""
        os.fsync(self.fd)
        mode = (0o777 if executable else 0o666) & ~process_umask()
        os.fchmod(self.fd, mode)
        if mtime_ns is not None:
            os.utime(self.fd, ns=(time.time_ns(), mtime_ns))
        os.close(self.fd)
        self.fd = -1

    def place(self) -> None:
        """Into place without replacing anything (a file that appeared meanwhile stays):
        a hard link then the temp's removal; a rename where links are not possible."""
        try:
            os.link(self.path, self.target, follow_symlinks=False)
        except FileExistsError:
            raise
        except OSError:
            if os.path.lexists(self.target):
                raise FileExistsError(self.target) from None
            os.rename(self.path, self.target)
        else:
            os.unlink(self.path)
        _fsync_dir(self.target.parent)

    def discard(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def symlink_on_the_way(base: Path, target: Path) -> Path | None:
    """The first directory between ``base`` (not itself) and ``target`` (itself included)
    that is a symbolic link, None if none is: a restore never writes through one (it would
    land outside the folder, where syncd never looks)."""
    try:
        inner = target.relative_to(base)
    except ValueError:
        return None
    at = base
    for part in inner.parts:
        at = at / part
        if at.is_symlink():
            return at
        if not at.exists():
            return None
    return None


def make_dirs(path: Path) -> None:
    """The target's directories; a file in the way is an error naming it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        for parent in reversed(path.parents):
            if os.path.lexists(parent) and not os.path.isdir(parent):
                raise NotADirectoryError(f"{parent} is in the way (not a directory)") from None
        raise


__all__ = [
    "CHUNK",
    "KEPT_INFIX",
    "TEMP_PREFIX",
    "Temp",
    "kept_name",
    "make_dirs",
    "process_umask",
    "sha256_of",
    "stat_local",
    "sweep",
    "symlink_on_the_way",
]
