"""``COPY``: a file or a directory tree copied on the server (RFC 4918, 9.8).

Every file is copied as an upload (:class:`.uploads.Upload`): written to a temp beside its
target, hashed while written, fsynced and renamed into place, with the source's mtime and
executable bit (:meth:`~.uploads.Upload.set_meta`). What the copy replaces goes through the
store's own paths: a file over a file is the upload's rename, anything else is
:meth:`.store.Store.delete` first, so that whatever those keep (versions) is kept for a COPY too.

A copy of a tree is not atomic: a failure part-way leaves what was copied so far (the answer
says what failed). Symlinks, special files, temps and reserved names inside the source are
left out, as listings leave them out. Every function blocks: run it in a worker thread.
"""

from __future__ import annotations

import os
import stat

from syncd.server.errors import Conflict, Forbidden, NotFound, PreconditionFailed, os_error
from syncd.server.fdio import CHUNK, O_READ, fsync_quiet, lstat_at
from syncd.server.paths import RelPath, listed_name
from syncd.server.store import Store
from syncd.server.tree import Dirs, walk
from syncd.server.uploads import Upload


def _copyable(name: str) -> bool:
    """Whether an entry inside a copied tree is copied: a name a mirror may hold."""
    return listed_name(name)


def copy(store: Store, src: RelPath, dst: RelPath, *, deep: bool, overwrite: bool) -> bool:
    """Copy ``src`` to ``dst`` (a directory with everything in it if ``deep``, else only the
    directory itself); True if something was replaced.

    Raises 404 (no source), 403 (the root, a symlink, a special file, source and destination
    the same, a destination under ``/.~syncd-versions/``), 409 (the destination's parent is
    missing or not a directory, a directory into itself or onto a parent of the source),
    412 (the destination exists and not ``overwrite``).
    """
    if not src.parts:
        raise Forbidden("/: cannot copy the server root")
    if not dst.parts:
        raise Forbidden("/: cannot copy onto the server root")
    if dst.in_versions:
        raise Forbidden(f"{dst}: versions are read-only (copy a version out of them instead)")
    if src.parts == dst.parts:
        raise Forbidden(f"{src}: source and destination are the same")
    if dst.parts[: len(src.parts)] == src.parts:
        raise Conflict(f"{src}: cannot copy a directory into itself")
    if src.parts[: len(dst.parts)] == dst.parts:
        raise Conflict(f"{dst}: cannot copy onto a parent of the source")
    dst = RelPath(dst.parts)  # ("/x/" onto a collection: what it holds after may be a file)
    try:
        return _copy(store, src, dst, deep=deep, overwrite=overwrite)
    finally:
        store.changed(dst)


def _copy(store: Store, src: RelPath, dst: RelPath, *, deep: bool, overwrite: bool) -> bool:
    with Dirs(store.root, src.parent) as sdirs:
        st = lstat_at(sdirs.last, src.name, str(src))
        if st is None:
            raise NotFound(f"{src}: not found")
        if stat.S_ISLNK(st.st_mode):
            raise Forbidden(f"{src}: is a symlink (never followed)")
        is_dir = stat.S_ISDIR(st.st_mode)
        if not (is_dir or stat.S_ISREG(st.st_mode)):
            raise Forbidden(f"{src}: not a regular file or directory")
        old = _target(store, dst, overwrite=overwrite, parents=src.in_versions)
        if old is not None and (is_dir or stat.S_ISDIR(old.st_mode)):
            store.delete(
                dst, why="overwritten"
            )  # RFC 4918: the target is deleted first (a file over a file
            #                    is replaced by one rename, below)
        if not is_dir:
            replaced = copy_file(store, sdirs.last, src.name, src.text, dst)
            return replaced or old is not None
    _make_dir(store, dst)
    if deep:
        _copy_tree(store, src, dst)
    return old is not None


def _target(store: Store, dst: RelPath, *, overwrite: bool, parents: bool) -> os.stat_result | None:
    """What the destination holds now (None: nothing); 409 if its parent is missing, unless
    ``parents`` (a version put back: its directories are made, as a delete may have pruned
    them)."""
    try:
        ddirs = Dirs(store.root, dst.parent)
    except NotFound as e:
        if parents:
            return None
        raise Conflict(f"{dst}: the destination's parent directory does not exist") from e
    with ddirs:
        old = lstat_at(ddirs.last, dst.name, str(dst))
    if old is None:
        return None
    if stat.S_ISLNK(old.st_mode):
        raise Forbidden(f"{dst}: is a symlink (never followed)")
    if not overwrite:
        raise PreconditionFailed(f"{dst}: exists and Overwrite is F")
    return old


def _make_dir(store: Store, rel: RelPath) -> None:
    """Create the directory ``rel`` (its parents too: a delete may have pruned them)."""
    with Dirs(store.root, rel.parent, create=True) as dirs:
        try:
            os.mkdir(rel.name, 0o755, dir_fd=dirs.last)
        except FileExistsError as e:
            raise Conflict(f"{rel}: appeared while it was being copied to") from e
        except OSError as e:
            raise os_error(e, str(rel)) from e
        fsync_quiet(dirs.last)


def _copy_tree(store: Store, src: RelPath, dst: RelPath) -> None:
    with Dirs(store.root, src.parts) as sdirs:
        for sub, dir_fd, entries in walk(sdirs.last, descend=_copyable, stop=store.stopping):
            if sub:
                _make_dir(store, RelPath((*dst.parts, *sub)))
            for entry in entries:
                name = entry.name
                if not _copyable(name):
                    continue
                try:
                    if not entry.is_file(follow_symlinks=False):
                        continue  # directories come from the walk; symlinks, specials: never
                except OSError:
                    continue
                key = "/".join((*src.parts, *sub, name))
                copy_file(store, dir_fd, name, key, RelPath((*dst.parts, *sub, name)))


def copy_file(store: Store, dir_fd: int, name: str, key: str, dst: RelPath) -> bool:
    """Copy the regular file ``name`` of directory ``dir_fd`` (the store's path ``key``) to
    ``dst`` as an upload, with its mtime and executable bit; True if it replaced a file.
    409 if the source changes while it is read."""
    shown = "/" + key
    try:
        fd = os.open(name, O_READ, dir_fd=dir_fd)
    except OSError as e:
        raise os_error(e, shown) from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Forbidden(f"{shown}: not a regular file")
        up = Upload(store, dst)
        up.why = "overwritten"
        try:
            offset = 0
            while True:
                store.check_running()
                chunk = os.pread(fd, CHUNK, offset)
                if not chunk:
                    break
                up.write([chunk])
                offset += len(chunk)
            up.set_meta(mtime_ns=st.st_mtime_ns, executable=bool(st.st_mode & stat.S_IXUSR))
            stored = up.complete([], length=None, expected=[], commit=False)
            after = os.fstat(fd)
            known = store.digests.get(key, st)
            changed = (
                after.st_size != st.st_size
                or after.st_mtime_ns != st.st_mtime_ns
                or stored.size != st.st_size
                or (known is not None and known != stored.digest.hex())
            )
            if changed:
                raise Conflict(f"{shown}: changed while it was copied; try again")
            store.digests.put(key, st, stored.digest.hex())
            return up.commit([])
        except BaseException:
            up.discard()
            raise
    except OSError as e:
        raise os_error(e, shown) from e
    finally:
        os.close(fd)
