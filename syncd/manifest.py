"""The manifest: what the remote is known to hold, per folder and relative path (SQLite, WAL).

A row changes only after the remote confirmed the bytes. Rows are read from the file when
asked for, not held in memory (``ManifestRows``), and changes are staged, then written in one
transaction per batch (``synchronous=FULL``): a crash loses at most the last batch, which
costs a re-check, never a wrong row. Batches are committed in the order they were taken; one
whose commit failed (the file locked, the disk full) is kept and committed first by the next
commit. A change that cannot be stored is left out of its batch with one warning; the rest of
the batch is written. Only ``syncd.recorder`` writes it;
everyone may read it.

How the file is laid out, opened and migrated, and how wide integers are kept: ``syncd.manifestdb``.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import ItemsView, Iterable, Iterator, ValuesView
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from syncd.errors import ManifestError
from syncd.manifestdb import (
    BAD_VALUE,
    COLUMNS,
    decoded,
    named,
    open_db,
    reader,
    reason,
    sorted_rows,
    stored,
)
from syncd.types import LocalFile, Row, Rows

if TYPE_CHECKING:
    from syncd.config import Config, FolderConfig

log = logging.getLogger("syncd.manifest")

FILENAME = "manifest.sqlite3"


def scope_of(config: Config, folder: FolderConfig) -> str:
    """The manifest key of a folder: which remote, and where on it."""
    return f"{config.remote.kind}:{config.remote.url.rstrip('/')}/#{folder.remote_path}"


@dataclass(frozen=True)
class _Batch:
    """Staged statements taken for one commit: ``stamp``, the overlay's stamp when taken;
    ``ticket``, its place in the order of commits."""

    statements: list[tuple[str, tuple[object, ...]]]
    stamp: int
    ticket: int


@dataclass(frozen=True)
class Totals:
    files: int
    bytes: int
    last_synced: float | None


class ManifestRows(Rows):
    """One folder's rows, read from the manifest when asked (``Manifest.rows``)."""

    __slots__ = ("_m", "scope")

    def __init__(self, manifest: Manifest, scope: str) -> None:
        self._m = manifest
        self.scope = scope

    def __getitem__(self, rel: str) -> Row:
        row = self._m.get(self.scope, rel)
        if row is None:
            raise KeyError(rel)
        return row

    def get(self, rel: str, default: Row | None = None) -> Row | None:  # type: ignore[override]
        row = self._m.get(self.scope, rel)
        return default if row is None else row

    def __contains__(self, rel: object) -> bool:
        return isinstance(rel, str) and self._m.get(self.scope, rel) is not None

    def __iter__(self) -> Iterator[str]:
        return (row.rel for row in self._m.under(self.scope, ""))

    def __len__(self) -> int:
        return self._m.count(self.scope)

    def under(self, rel_dir: str) -> Iterable[Row]:
        return self._m.under(self.scope, rel_dir)

    def count_under(self, dirs: Iterable[str]) -> dict[str, int]:
        return {d: self._m.count_under(self.scope, d) for d in dirs}

    def items(self) -> ItemsView[str, Row]:
        return _Items(self)

    def values(self) -> ValuesView[Row]:
        return _Values(self)


class _Items(ItemsView[str, Row]):
    """(rel, row) pairs read in one stream, not a query per key."""

    _mapping: ManifestRows

    def __iter__(self) -> Iterator[tuple[str, Row]]:
        return ((row.rel, row) for row in self._mapping.under(""))


class _Values(ValuesView[Row]):
    _mapping: ManifestRows

    def __iter__(self) -> Iterator[Row]:
        return iter(self._mapping.under(""))


class Manifest:
    """One SQLite file in the state dir. Use as a context manager; one writer per process.

    Rows are read from SQLite when asked for (a point query by path, a range of paths below a
    directory, a sorted stream for the scan's comparison: ``syncd.look``), never all held in
    memory: a million rows would be half a gigabyte of Python objects. Changes are staged and
    committed together (``flush``); until then they live in a small overlay that every read
    looks at first, so a read sees every change made, committed or not. Reads go through a
    second connection, which a commit running in a thread (``aflush``) does not block."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()  # the writer connection
        self._read_lock = threading.RLock()  # the reader connection
        # Commits in the order their batches were taken (``_take``): the tickets taken and
        # not written yet, and the statements of failed commits, written first by the next.
        self._order = threading.Condition(self._lock)
        self._tickets: list[int] = []
        self._next_ticket = 0
        self._unwritten: list[tuple[str, tuple[object, ...]]] = []
        # Changes not committed yet: scope -> path -> (the row, or None: deleted; its stamp).
        self._overlay: dict[str, dict[str, tuple[Row | None, int]]] = {}
        self._stamp = 0
        self._counts: dict[str, int] = {}  # rows per scope, staged changes included, once known
        self._staged: list[tuple[str, tuple[object, ...]]] = []
        # Paths given a chunk list by this process (a delete drops it; older lists are
        # dropped when replaced, or found stale by their sha-256)
        self._chunked: set[str] = set()
        #: bumped when rows change scope (``rekey``): a look compared with the rows before
        #: is stale
        self.epoch = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as e:
            raise ManifestError(f"{path}: cannot create the state dir: {e.strerror}") from e
        try:
            self._db = open_db(self.path)
        except sqlite3.DatabaseError as e:
            # A corrupt manifest is set aside, not trusted and not fatal: syncd starts a new
            # one and rebuilds it from the server's listing (identical files are adopted,
            # nothing is deleted because of the loss).
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            log.warning("%s is unreadable (%s); moved aside to %s, rebuilding", path, e, aside)
            for suffix in ("", "-wal", "-shm"):
                src = Path(str(path) + suffix)
                if src.exists():
                    src.rename(Path(str(aside) + suffix))
            try:
                self._db = open_db(self.path)
            except sqlite3.DatabaseError as e2:
                raise ManifestError(f"{path}: cannot open the manifest: {e2}") from e2
        self._rd = reader(self.path)

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> Manifest:
        return cls(state_dir / FILENAME)

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.flush()
        with self._read_lock:
            self._rd.close()
        with self._lock:
            self._db.close()

    # -- reading ----------------------------------------------------------------------------
    def rows(self, scope: str) -> ManifestRows:
        """The rows of one folder, by relative path: a view that reads them when asked."""
        return ManifestRows(self, scope)

    def staged_rows(self, scope: str) -> dict[str, Row | None]:
        """The changes of ``scope`` not committed yet (None: deleted): what a reader of the
        committed file (``sorted_rows``, in another thread) must apply. Call it on the thread
        that makes the changes."""
        return {rel: row for rel, (row, _stamp) in self._overlay.get(scope, {}).items()}

    def sorted_rows(self, scope: str) -> Iterator[tuple[object, ...]]:
        """Every committed row of ``scope``, in path order (``manifestdb.sorted_rows``)."""
        return sorted_rows(self.path, scope)

    def get(self, scope: str, rel: str) -> Row | None:
        staged = self._overlay.get(scope)
        if staged is not None and rel in staged:
            return staged[rel][0]
        if not _storable(rel):
            return None  # (never in the file: SQLite takes UTF-8 only)
        with self._read_lock:
            t = self._rd.execute(
                f"SELECT {COLUMNS} FROM files WHERE scope = ? AND path = ?", (scope, rel)
            ).fetchone()
        return decoded(t) if t is not None else None

    def under(self, scope: str, rel_dir: str, *, chunk: int = 5000) -> Iterator[Row]:
        """The rows strictly below directory ``rel_dir`` ('' for all): the committed ones in
        path order, then the staged ones. Read ``chunk`` rows at a time, so that no lock is
        held while the caller works with them."""
        prefix = rel_dir + "/" if rel_dir else ""
        # Below "d": after "d/" (no path is "d/" itself) and before "d0" ('0' follows '/').
        sql = f"SELECT {COLUMNS} FROM files WHERE scope = ? AND path > ?"
        sql += " AND path < ? ORDER BY path LIMIT ?" if prefix else " ORDER BY path LIMIT ?"
        bound = (rel_dir + "0",) if prefix else ()
        staged = self._overlay.get(scope, {})
        after = prefix
        while True:
            with self._read_lock:
                got = self._rd.execute(sql, (scope, after, *bound, chunk)).fetchall()
            for t in got:
                if t[0] not in staged:
                    yield decoded(t)
            if len(got) < chunk:
                break
            after = got[-1][0]
        for rel, (row, _stamp) in list(staged.items()):
            if row is not None and rel.startswith(prefix):
                yield row

    def count(self, scope: str) -> int:
        """How many rows ``scope`` has, staged changes included."""
        n = self._counts.get(scope)
        if n is None:
            n = self._counted(scope, "", "SELECT count(*) FROM files WHERE scope = ?", (scope,))
            self._counts[scope] = n
        return n

    def count_under(self, scope: str, rel_dir: str) -> int:
        """How many rows are strictly below directory ``rel_dir`` ('' for all), staged changes
        included (a range of the index is counted, not read)."""
        if not rel_dir:
            return self.count(scope)
        return self._counted(
            scope,
            rel_dir + "/",
            "SELECT count(*) FROM files WHERE scope = ? AND path >= ? AND path < ?",
            (scope, rel_dir + "/", rel_dir + "0"),
        )

    def _counted(self, scope: str, prefix: str, sql: str, args: tuple[object, ...]) -> int:
        """The committed rows ``sql`` counts, plus the staged changes to paths under
        ``prefix``, in one read transaction (a commit landing meanwhile is seen by neither
        read or by both)."""
        with self._read_lock:
            self._rd.execute("BEGIN")
            try:
                (n,) = self._rd.execute(sql, args).fetchone()
                for rel, (row, _stamp) in self._overlay.get(scope, {}).items():
                    if rel.startswith(prefix):
                        n += (row is not None) - self._committed(scope, rel)
            finally:
                self._rd.execute("COMMIT")
        return int(n)

    def _committed(self, scope: str, rel: str) -> bool:
        if not _storable(rel):
            return False
        with self._read_lock:
            return (
                self._rd.execute(
                    "SELECT 1 FROM files WHERE scope = ? AND path = ?", (scope, rel)
                ).fetchone()
                is not None
            )

    def totals(self, scope: str) -> Totals:
        with self._lock:
            n, size, last = self._db.execute(
                "SELECT count(*), coalesce(sum(size), 0), max(synced_at) FROM files"
                " WHERE scope = ?",
                (scope,),
            ).fetchone()
        return Totals(n, size, last)

    # -- staging changes (visible at once to every read, durable at the next flush) --------
    def _stage(self, scope: str, rel: str, row: Row | None) -> None:
        n = self._counts.get(scope)
        if n is not None:
            self._counts[scope] = n + (row is not None) - (self.get(scope, rel) is not None)
        self._stamp += 1
        self._overlay.setdefault(scope, {})[rel] = (row, self._stamp)

    def put(self, scope: str, row: Row) -> None:
        rel, size, mtime, sha, synced, ctime, inode, exe = row
        self._stage(scope, rel, row)
        self._staged.append(
            (
                f"INSERT OR REPLACE INTO files (scope, {COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    scope,
                    rel,
                    size,
                    stored(mtime),
                    sha,
                    synced,
                    stored(ctime),
                    stored(inode),
                    int(bool(exe)),
                ),
            )
        )

    def delete(self, scope: str, rel: str) -> None:
        self._stage(scope, rel, None)
        self._staged.append(("DELETE FROM files WHERE scope = ? AND path = ?", (scope, rel)))
        if rel in self._chunked:
            self._chunked.discard(rel)
            self._staged.append(("DELETE FROM chunks WHERE scope = ? AND path = ?", (scope, rel)))

    # -- chunk lists of large files (delta uploads) ------------------------------------------
    def put_chunks(self, scope: str, rel: str, sha256: str, blob: bytes) -> None:
        """Keep the chunk list of the bytes ``sha256`` the server now holds at ``rel``."""
        self._chunked.add(rel)
        self._staged.append(
            (
                "INSERT OR REPLACE INTO chunks VALUES (?, ?, ?, ?)",
                (scope, rel, sha256, blob),
            )
        )

    def chunks(self, scope: str, rel: str, sha256: str) -> bytes | None:
        """The chunk list kept for ``rel`` if it describes the bytes ``sha256`` (committed
        lists only: a list staged since is found after the next flush)."""
        with self._read_lock:
            try:
                found = self._rd.execute(
                    "SELECT sha256, list FROM chunks WHERE scope = ? AND path = ?", (scope, rel)
                ).fetchone()
            except BAD_VALUE:
                return None
        if found is None or found[0] != sha256:
            return None
        return bytes(found[1])

    def delete_tree(self, scope: str, rel_dir: str) -> list[Row]:
        """Drop every row under directory ``rel_dir``; returns the rows dropped."""
        gone = list(self.under(scope, rel_dir.rstrip("/")))
        for r in gone:
            self.delete(scope, r.rel)
        return gone

    def move(self, scope: str, src: str, dst: str, local: LocalFile | None = None) -> None:
        """The row at ``src`` becomes ``dst``; ``local``: the file now at ``dst`` (a rename
        changes its ctime), else the identity stays as it was (a file in a renamed directory)."""
        row = self.get(scope, src)
        if row is None:
            return
        self.delete(scope, src)
        ctime, inode = (local.ctime_ns, local.inode) if local else (row.ctime_ns, row.inode)
        self.put(scope, row._replace(rel=dst, synced_at=time.time(), ctime_ns=ctime, inode=inode))

    def rekey(self, old: str, new: str) -> int:
        """Rows recorded under ``old`` become ``new``'s (the same mirror reached by another URL
        spelling). Written at once. Returns how many rows moved."""
        self.flush()
        with self._lock:
            self._db.execute("BEGIN")
            n = self._db.execute("UPDATE files SET scope = ? WHERE scope = ?", (new, old)).rowcount
            for table in ("outbox", "held", "mirrors"):
                self._db.execute(f"DELETE FROM {table} WHERE scope = ?", (new,))
                self._db.execute(f"UPDATE {table} SET scope = ? WHERE scope = ?", (new, old))
            self._db.execute("COMMIT")
        for scope in (old, new):
            self._counts.pop(scope, None)
        self.epoch += 1
        return n

    # -- which mirror, and the server's state --------------------------------------------------
    def mirror(self, scope: str) -> tuple[str, str | None] | None:
        """(mirror id, last state token) recorded for ``scope``, or None."""
        with self._lock:
            got = self._db.execute(
                "SELECT mirror, state FROM mirrors WHERE scope = ?", (scope,)
            ).fetchone()
        return (got[0], got[1]) if got else None

    def scope_of_mirror(self, mirror: str) -> str | None:
        """The scope whose rows describe ``mirror``, if any."""
        with self._lock:
            got = self._db.execute(
                "SELECT scope FROM mirrors WHERE mirror = ?", (mirror,)
            ).fetchone()
        return got[0] if got else None

    def set_mirror(self, scope: str, mirror: str, state: str | None = None) -> None:
        self._staged.append(
            ("INSERT OR REPLACE INTO mirrors VALUES (?, ?, ?)", (scope, mirror, state))
        )

    # -- held deletions --------------------------------------------------------------------------
    def hold(self, scope: str, count: int, reason: str) -> None:
        """Record (or update) the deletions held back for ``scope``; ``since`` is kept."""
        self._staged.append(
            (
                "INSERT INTO held VALUES (?, ?, ?, ?) ON CONFLICT(scope) DO UPDATE SET"
                " count = excluded.count, reason = excluded.reason",
                (scope, count, reason, time.time()),
            )
        )

    def release(self, scope: str) -> None:
        self._staged.append(("DELETE FROM held WHERE scope = ?", (scope,)))

    def held(self) -> list[tuple[str, int, str, float]]:
        """Every (scope, count, reason, since) of held deletions, as last committed."""
        with self._lock:
            return list(self._db.execute("SELECT scope, count, reason, since FROM held"))

    # -- the outbox ---------------------------------------------------------------------------
    def outbox_add(self, scope: str, rel: str, dest: str | None = None) -> None:
        self._staged.append(
            ("INSERT OR IGNORE INTO outbox VALUES (?, ?, ?, ?)", (scope, rel, time.time(), dest))
        )

    def outbox_remove(self, scope: str, rel: str) -> None:
        self._staged.append(("DELETE FROM outbox WHERE scope = ? AND path = ?", (scope, rel)))

    def outbox(self) -> list[tuple[str, str, float, str | None]]:
        """Every (scope, path, since, move destination) waiting to be sent again."""
        with self._lock:
            return list(self._db.execute("SELECT scope, path, since, dest FROM outbox"))

    @property
    def pending(self) -> int:
        """Statements not committed yet: staged, or kept from a commit that failed."""
        return len(self._staged) + len(self._unwritten)

    def flush(self) -> None:
        """Write every staged change in one transaction (blocking)."""
        batch = self._take()
        if batch is not None:
            self._done(self._write(batch), batch)

    async def aflush(self) -> None:
        """``flush`` without blocking the event loop: the commit's fsync runs in a thread."""
        import asyncio

        batch = self._take()
        if batch is not None:
            self._done(await asyncio.to_thread(self._write, batch), batch)

    def _take(self) -> _Batch | None:
        """The staged statements, for one commit (None: nothing to commit). Called on the
        thread that stages (the event loop), so nothing staged is lost; its ticket orders the
        commit after every batch taken before it."""
        with self._order:
            if not self._staged and not self._unwritten:
                return None
            staged, self._staged = self._staged, []
            batch = _Batch(staged, self._stamp, self._next_ticket)
            self._next_ticket += 1
            self._tickets.append(batch.ticket)
        return batch

    def _done(self, left_out: int, batch: _Batch) -> None:
        """The batch (and every one taken before it) is in the file: reads find its rows
        there. A change left out of it was counted: the counts are taken again."""
        self._committed_up_to(batch.stamp)
        if left_out:
            self._counts.clear()

    def _committed_up_to(self, stamp: int) -> None:
        """The staged rows up to ``stamp`` are in the file now: reads find them there (a row
        staged again since stays in the overlay)."""
        for scope, staged in list(self._overlay.items()):
            for rel in [rel for rel, (_row, st) in staged.items() if st <= stamp]:
                del staged[rel]
            if not staged:
                del self._overlay[scope]

    def _write(self, batch: _Batch) -> int:
        """Commit ``batch`` once every batch taken before it is written (or failed), with
        the statements of failed commits first. Returns how many changes were left out (a
        value SQLite cannot take); raises ManifestError if the commit failed, its statements
        kept for the next."""
        with self._order:
            self._order.wait_for(lambda: self._tickets[0] == batch.ticket)
            statements = [*self._unwritten, *batch.statements]
            try:
                left_out = self._commit(statements)
            except ManifestError:
                self._unwritten = statements
                raise
            else:
                self._unwritten = []
            finally:
                self._tickets.pop(0)
                self._order.notify_all()
        log.debug("manifest: committed %d changes", len(statements) - left_out)
        return left_out

    def _commit(self, statements: list[tuple[str, tuple[object, ...]]]) -> int:
        left_out = 0
        try:
            self._db.execute("BEGIN")
            for sql, args in statements:
                try:
                    self._db.execute(sql, args)
                except BAD_VALUE as e:
                    # This change only (a value SQLite cannot take): the rest of the batch
                    # is written. Without its row the file is checked again next time.
                    left_out += 1
                    log.warning("manifest: %s not recorded: %s", named(args), reason(e))
            self._db.execute("COMMIT")
        except BaseException as e:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            if isinstance(e, sqlite3.Error):
                raise ManifestError(f"{self.path}: cannot write the manifest: {e}") from e
            raise
        return left_out


def _storable(rel: str) -> bool:
    """Can SQLite hold ``rel`` (UTF-8: no lone surrogates)?"""
    try:
        rel.encode()
    except UnicodeEncodeError:
        return False
    return True
