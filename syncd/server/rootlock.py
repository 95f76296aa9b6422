"""ROOT at start-up: its lock (one server per tree, nested trees included) and the
temporary files a server that died left behind.

``ROOT/.~syncd-serve.lock`` is held with ``flock`` for the life of the server; a second server
on the same ROOT, on a directory inside it or on one that holds it is refused with
:class:`RootInUse`, which names the holder.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from syncd.errors import InUse, SyncdError
from syncd.server.errors import Conflict
from syncd.server.fdio import O_CLOEXEC, O_NOFOLLOW, O_ROOT
from syncd.server.paths import LOCK_NAME, is_temp_name
from syncd.server.tree import walk


class RootInUse(InUse):
    """Another server holds ROOT's lock."""

    def __init__(self, root: Path, pid: int | None, url: str, *, mine: str = "") -> None:
        """``root``: the directory a server runs on; ``mine``: how this server's ROOT stands
        to it, e.g. "/srv/mirror/docs is inside" ("": it is the same)."""
        self.root = root
        self.pid = pid
        self.url = url
        who = f"PID {pid}" if pid is not None else "another process"
        what = f"{mine} {root}, which" if mine else f"{root}"
        super().__init__(f"{what} is already served by {who} ({url or 'still starting'})")


class RootLock:
    """``ROOT/.~syncd-serve.lock``, held with an exclusive ``flock`` while a server runs.

    The file holds the server's PID on its first line and, once it listens, its URL on the
    second. It is never removed (removing it would let two servers lock two files of one
    name); the lock dies with the process, however it ends.
    """

    def __init__(self, root: Path, fd: int) -> None:
        self.root = root
        self._fd = fd
        self._write("")

    @classmethod
    def acquire(cls, root: Path) -> RootLock:
        """Take the lock without waiting; :class:`RootInUse` names the holder if another
        server has it, :class:`SyncdError` if the lock file cannot be used."""
        import fcntl  # (here: Windows has none, and is told so by ``serve``, not an ImportError)

        try:
            root_fd = os.open(root, O_ROOT)
        except OSError as e:
            raise SyncdError(f"cannot open {root}: {e.strerror or e}") from e
        try:
            fd = os.open(
                LOCK_NAME, os.O_RDWR | os.O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o644, dir_fd=root_fd
            )
        except OSError as e:
            raise SyncdError(
                f"cannot open the lock file {root / LOCK_NAME}: {e.strerror or e}"
            ) from e
        finally:
            os.close(root_fd)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise SyncdError(f"{root / LOCK_NAME} is not a regular file")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid, url = _read_holder(fd)
                raise RootInUse(root, pid, url) from None
            except OSError as e:
                raise SyncdError(f"cannot lock {root / LOCK_NAME}: {e.strerror or e}") from e
            for parent in root.resolve().parents:  # a server on a directory that holds ROOT
                try:
                    parent_fd = os.open(parent, O_ROOT)
                except OSError:
                    continue
                try:
                    holder = _other_holder(parent_fd)
                finally:
                    os.close(parent_fd)
                if holder is not None:
                    raise RootInUse(parent, *holder, mine=f"{root} is inside")
            return cls(root, fd)
        except BaseException:
            os.close(fd)
            raise

    def _write(self, url: str) -> None:
        text = f"{os.getpid()}\n" + (f"{url}\n" if url else "")
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, text.encode("utf-8"), 0)

    def set_url(self, url: str) -> None:
        """Record the URL the server listens on (for a second server's message)."""
        self._write(url)

    def release(self) -> None:
        """Empty the file and let the lock go (idempotent)."""
        if self._fd < 0:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = -1


def _other_holder(dir_fd: int) -> tuple[int | None, str] | None:
    """(PID, URL) of a server whose lock is in the directory ``dir_fd``; None if none runs."""
    import fcntl

    try:
        fd = os.open(LOCK_NAME, os.O_RDONLY | O_NOFOLLOW | O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _read_holder(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_holder(fd: int) -> tuple[int | None, str]:
    """(PID, URL) from a lock file held by another server (None, "" where not written yet)."""
    try:
        lines = os.pread(fd, 4096, 0).decode("utf-8", "replace").splitlines()
    except OSError:
        return None, ""
    pid = int(lines[0]) if lines and lines[0].strip().isdigit() else None
    url = lines[1].strip() if len(lines) > 1 else ""
    return pid, url


def remove_leftover_temps(root: Path) -> int:
    """Remove every temporary file (``.~syncd-*.tmp``) under ``root``; the lock and mirror
    markers stay. Symlinks are not followed; a tree of any depth is walked. Call it only while
    holding the root's lock: the temps of a server still running on ``root`` would go too."""
    removed = 0
    try:
        root_fd = os.open(root, O_ROOT)
    except OSError as e:
        raise SyncdError(f"cannot open {root}: {e.strerror or e}") from e
    try:
        for sub, dir_fd, entries in walk(root_fd):
            names = {e.name for e in entries}
            if sub and LOCK_NAME in names:
                holder = _other_holder(dir_fd)  # a server on a directory inside this root
                if holder is not None:
                    raise RootInUse(root.joinpath(*sub), *holder, mine=f"{root} holds")
            for entry in entries:
                if not is_temp_name(entry.name):
                    continue
                try:
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    os.unlink(entry.name, dir_fd=dir_fd)
                    removed += 1
                except OSError:
                    pass
    except Conflict as e:
        raise SyncdError(f"{root}: {e.reason} (while removing leftover temporary files)") from e
    finally:
        os.close(root_fd)
    return removed
