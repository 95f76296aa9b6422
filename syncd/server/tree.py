"""Directories opened fd-relative with ``O_NOFOLLOW``, at any depth, with few descriptors.

A tree on the server can be deeper than Python's recursion limit and its paths longer than
``PATH_MAX``: nothing here recurses or builds a path string, and a chain of open directories
keeps only its deepest :data:`WINDOW` levels open. A level above them is reopened through
``..`` of the one below and checked to be the very directory it was (device and inode), so a
directory moved away meanwhile is noticed (:class:`~syncd.server.errors.Conflict`), never
followed. Every function blocks: run it in a worker thread.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from syncd.server.errors import Conflict, Forbidden, NotFound, StoreError, check_stop, os_error
from syncd.server.fdio import O_DIR, O_ROOT

WINDOW = 16
"""Open directory descriptors a chain keeps (besides its base)."""

_RETRIES = 8
"""How often a directory delete starts over on entries that appeared while it ran."""


def _ident(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


class Chain:
    """The directories from a base (not owned) down to the current one, by name.

    ``fd`` is always the deepest directory's descriptor. :meth:`push` enters a subdirectory
    (never through a symlink), :meth:`pop` goes back up (reopening the parent through ``..``
    if its descriptor was closed to stay within :data:`WINDOW`).
    """

    def __init__(self, base: int) -> None:
        self.names: list[str] = []
        self._fds: list[int] = [base]
        self._ids: list[tuple[int, int] | None] = [None]

    @property
    def depth(self) -> int:
        return len(self.names)

    @property
    def fd(self) -> int:
        return self._fds[-1]

    def push(self, name: str) -> int:
        """Open ``name`` in the current directory and make it current; OSError as ``open``
        gives it (ELOOP or ENOTDIR for a symlink or a file, ENOENT if absent)."""
        fd = os.open(name, O_DIR, dir_fd=self._fds[-1])
        self.names.append(name)
        self._fds.append(fd)
        self._ids.append(None)
        k = len(self._fds) - 1 - WINDOW
        if k >= 1 and self._fds[k] >= 0:
            try:
                self._ids[k] = _ident(self._fds[k])
            except OSError:
                self._ids[k] = None  # cannot be checked: reopening it will refuse (Conflict)
            os.close(self._fds[k])
            self._fds[k] = -1
        return fd

    def pop(self) -> str:
        """Leave the current directory for its parent; returns the name left.

        Raises :class:`Conflict` if the parent had to be reopened and is no longer the
        directory it was (something moved it meanwhile).
        """
        fd = self._fds.pop()
        name = self.names.pop()
        self._ids.pop()
        try:
            if self._fds[-1] < 0:
                parent = os.open("..", O_DIR, dir_fd=fd)
                try:
                    same = self._ids[-1] is not None and _ident(parent) == self._ids[-1]
                except OSError:
                    same = False
                if not same:
                    os.close(parent)
                    raise Conflict("a directory was moved while the server was working in it")
                self._fds[-1] = parent
        finally:
            os.close(fd)
        return name

    def close(self) -> None:
        """Close every descriptor but the base (idempotent)."""
        for fd in self._fds[1:]:
            if fd >= 0:
                os.close(fd)
        del self._fds[1:]
        del self._ids[1:]
        self.names.clear()


class Dirs:
    """Directory descriptors from ROOT down a request's path (ROOT's own is owned here).

    ``last`` is the deepest directory. With ``create``, missing directories are made on the
    way (and remembered in ``created``, by index into ``parts``). :meth:`prune` and
    :meth:`prune_created` walk back up; after them only :meth:`close` is left to call.
    """

    def __init__(self, root: Path, parts: Sequence[str], *, create: bool = False) -> None:
        self.parts = tuple(parts)
        self.created: list[int] = []
        try:
            root_fd = os.open(root, O_ROOT)
        except OSError as e:
            raise os_error(e, "the server root") from e
        self._root_fd = root_fd
        self._chain = Chain(root_fd)
        try:
            for i, name in enumerate(self.parts):
                self._enter(i, name, create)
        except BaseException:
            self.close()
            raise

    def _shown(self, i: int) -> str:
        return "/" + "/".join(self.parts[: i + 1])

    def _enter(self, i: int, name: str, create: bool) -> None:
        chain = self._chain
        try:
            try:
                chain.push(name)
                return
            except FileNotFoundError:
                if not create:
                    raise
            try:
                os.mkdir(name, 0o755, dir_fd=chain.fd)
                self.created.append(i)
            except FileExistsError:
                pass
            chain.push(name)
        except FileNotFoundError as e:
            raise NotFound(f"{self._shown(i)}: no such directory") from e
        except OSError as e:
            if e.errno in (errno.ENOTDIR, errno.ELOOP):
                raise not_a_dir(chain.fd, name, self._shown(i)) from e
            raise os_error(e, self._shown(i)) from e

    @property
    def last(self) -> int:
        """The descriptor of the deepest directory."""
        return self._chain.fd

    def prune(self, keep: int = 1) -> None:
        """Remove directories left empty, deepest first, keeping the first ``keep`` segments."""
        chain = self._chain
        while chain.depth > keep:
            try:
                name = chain.pop()
                os.rmdir(name, dir_fd=chain.fd)
            except (OSError, StoreError):
                return

    def prune_created(self) -> None:
        """Remove the directories this walk created, deepest first, while they are empty."""
        chain = self._chain
        created = set(self.created)
        self.created.clear()
        if not created:
            return
        lowest = min(created)
        while chain.depth > lowest:
            index = chain.depth - 1
            try:
                name = chain.pop()
                if index in created:
                    os.rmdir(name, dir_fd=chain.fd)
            except (OSError, StoreError):
                return

    def close(self) -> None:
        """Close every descriptor (idempotent)."""
        self._chain.close()
        if self._root_fd >= 0:
            os.close(self._root_fd)
            self._root_fd = -1

    def __enter__(self) -> Dirs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def not_a_dir(parent: int, name: str, shown: str) -> StoreError:
    """The refusal for a path segment that is not a directory: 403 for a symlink, else 409."""
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except OSError:
        return Conflict(f"{shown}: not a directory")
    if stat.S_ISLNK(st.st_mode):
        return Forbidden(f"{shown}: is a symlink (never followed)")
    return Conflict(f"{shown}: not a directory")


# --------------------------------------------------------------------------- walking


Entries = list[os.DirEntry[str]]


def list_dir(fd: int) -> Entries:
    """The entries of the directory ``fd``, sorted by name."""
    with os.scandir(fd) as it:
        return sorted(it, key=lambda e: e.name)


def _subdirs(entries: Entries, descend: Callable[[str], bool] | None) -> list[str]:
    """The subdirectories to visit, last first (the walk pops them)."""
    names = [e.name for e in entries if _is_dir(e) and (descend is None or descend(e.name))]
    names.reverse()
    return names


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def walk(
    base: int,
    *,
    descend: Callable[[str], bool] | None = None,
    stop: threading.Event | None = None,
) -> Iterator[tuple[tuple[str, ...], int, Entries]]:
    """Every directory from ``base`` down, depth first, subdirectories in name order.

    Yields (its path below ``base`` as names, its descriptor, its entries sorted by name); the
    descriptor is open until the walk goes on. ``descend(name)`` says which subdirectories to
    enter. Symlinks are entries, never entered; a subdirectory that vanished or became
    unreadable since it was listed is left out. Raises :class:`Conflict` if a directory above
    the current one is moved away meanwhile, :class:`Unavailable` once ``stop`` is set.
    """
    chain = Chain(base)
    try:
        entries = list_dir(base)
        yield (), base, entries
        todo = [_subdirs(entries, descend)]
        while todo:
            check_stop(stop)
            names = todo[-1]
            if not names:
                todo.pop()
                if chain.depth:
                    chain.pop()
                continue
            name = names.pop()
            try:
                fd = chain.push(name)
            except OSError:
                continue  # gone, replaced by a file or a symlink, or unreadable
            try:
                entries = list_dir(fd)
            except OSError:
                entries = []
            yield tuple(chain.names), fd, entries
            todo.append(_subdirs(entries, descend))
    finally:
        chain.close()


def remove_tree(parent: int, name: str, *, stop: threading.Event | None = None) -> None:
    """Remove the directory ``name`` in ``parent`` with everything in it.

    Symlinks inside are unlinked, never followed; no recursion, at most :data:`WINDOW` + 1
    descriptors whatever the depth. Entries that appear while it runs are removed too (up to
    a few rounds; then ``OSError(ENOTEMPTY)``). Raises ``OSError`` as the system calls do,
    :class:`Conflict` if a directory is moved away meanwhile, :class:`Unavailable` on ``stop``.
    """
    chain = Chain(parent)
    try:
        chain.push(name)
        todo: list[list[str] | None] = [None]
        retries = 0
        while todo:
            check_stop(stop)
            names = todo[-1]
            if names is None:
                names = todo[-1] = _clear_files(chain.fd)
            if names:
                child = names.pop()
                try:
                    chain.push(child)
                except FileNotFoundError:
                    continue
                except OSError as e:
                    if e.errno not in (errno.ENOTDIR, errno.ELOOP):
                        raise
                    _unlink(chain.fd, child)  # replaced by a file or a symlink meanwhile
                    continue
                todo.append(None)
                continue
            todo.pop()
            done = chain.pop()
            try:
                os.rmdir(done, dir_fd=chain.fd)
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST) or retries >= _RETRIES:
                    raise
                retries += 1  # something was added meanwhile: clear it again
                if todo:
                    again = todo[-1]
                    assert again is not None  # a parent's list is made before its children
                    again.append(done)
                else:
                    chain.push(done)
                    todo.append(None)
    finally:
        chain.close()


def _clear_files(fd: int) -> list[str]:
    """Unlink every entry of directory ``fd`` that is not a directory; return the others."""
    subdirs: list[str] = []
    for entry in list_dir(fd):
        if _is_dir(entry):
            subdirs.append(entry.name)
            continue
        try:
            _unlink(fd, entry.name)
        except IsADirectoryError:
            subdirs.append(entry.name)  # replaced by a directory meanwhile
    return subdirs


def _unlink(fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=fd)
    except FileNotFoundError:
        pass
