"""One worker per state dir: an exclusive lock on ``<state_dir>/lock``.

``syncd run`` holds it for its whole life, ``syncd sync`` for its pass: the manifest has one
writer, and two processes mirroring the same folders would send the same files twice and
plan deletions from each other's half-finished work.

The lock is an advisory, non-blocking ``fcntl.flock`` on the file (``msvcrt.locking`` on
Windows). The kernel drops it when the holder exits, however it exits (SIGKILL included), so
a stale file never keeps anyone out. The file holds ``"<pid> <command>\\n"`` while it is held,
for the message of whoever is refused (and for ``syncd status``); it is emptied, never
removed, on release (removing it would let a third process lock a new file while a second one
still holds the old one).

Kept free of asyncio and the rest of the daemon: ``syncd sync`` takes the lock before its
quick no-op pass, which imports neither.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

from syncd.errors import SyncdError

LOCK_NAME = "lock"

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    # Lock one byte far past the text, so that the holder's PID and command stay readable
    # (Windows locks are mandatory: a locked byte cannot be read by anyone else).
    _WIN_OFFSET = 1 << 30

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, _WIN_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, _WIN_OFFSET, os.SEEK_SET)
        with contextlib.suppress(OSError):
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)


class AlreadyRunning(SyncdError):
    """Another syncd process owns this state dir (the manifest has one writer).

    ``pid`` and ``command`` name the holder when known (``None`` and ``""`` otherwise).
    """

    def __init__(self, message: str, *, pid: int | None = None, command: str = "") -> None:
        super().__init__(message)
        self.pid = pid
        self.command = command


def lock_path(state_dir: Path) -> Path:
    return state_dir / LOCK_NAME


def _parse(text: str) -> tuple[int | None, str]:
    pid_s, _, command = text.strip().partition(" ")
    try:
        pid = int(pid_s)
    except ValueError:
        return None, ""
    return (pid, command.strip()) if pid > 0 else (None, "")


def read_holder(state_dir: Path) -> tuple[int | None, str]:
    """What the lock file says: ``(pid, command)`` of the last holder, or ``(None, "")``.

    The file is emptied on a clean release but not after a crash: see ``holder``.
    """
    try:
        return _parse(lock_path(state_dir).read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None, ""


def _alive(pid: int) -> bool:
    if sys.platform == "win32":  # pragma: no cover - no cheap, safe probe there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def holder(state_dir: Path) -> tuple[int, str] | None:
    """The process that holds the lock as far as can be told without taking it: the PID and
    command in the file, if that process is alive; None otherwise.

    Never tries the lock itself (a probe would, for an instant, keep a starting ``syncd run``
    out). A PID reused by an unrelated process after a crash is possible but harmless: this
    is for messages and ``syncd status``, never for deciding to write.
    """
    pid, command = read_holder(state_dir)
    if pid is None or not _alive(pid):
        return None
    return pid, command


class StateLock:
    """The exclusive lock on ``<state_dir>/lock`` for ``command`` ("run", "sync"), as a
    context manager. ``acquire`` raises ``AlreadyRunning`` naming the holder's PID."""

    def __init__(self, state_dir: Path, command: str) -> None:
        self.state_dir = state_dir
        self.path = lock_path(state_dir)
        self.command = command
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> StateLock:
        if self._fd is not None:
            return self
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        except OSError as e:
            raise SyncdError(f"{self.path}: cannot open the state dir's lock: {e}") from e
        if not _try_lock(fd):
            os.close(fd)
            raise self._refusal()
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"{os.getpid()} {self.command}\n".encode())
        except OSError:
            pass  # the lock is what counts; the text is for messages
        self._fd = fd
        return self

    def _refusal(self) -> AlreadyRunning:
        # The holder writes its PID right after it locks: give it a moment to do so.
        pid, command = read_holder(self.state_dir)
        for _ in range(10):
            if pid is not None:
                break
            time.sleep(0.02)
            pid, command = read_holder(self.state_dir)
        who = f"`syncd {command}`" if command else "syncd"
        pid_s = f" (pid {pid})" if pid is not None else ""
        return AlreadyRunning(
            f"another {who}{pid_s} is using {self.state_dir}", pid=pid, command=command
        )

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            _unlock(fd)
        finally:
            os.close(fd)

    def __enter__(self) -> StateLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


__all__ = ["LOCK_NAME", "AlreadyRunning", "StateLock", "holder", "lock_path", "read_holder"]
