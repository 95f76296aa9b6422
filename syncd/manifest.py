"""The manifest: what the remote is known to hold, per folder and relative path (SQLite, WAL).

A row changes only after the remote confirmed the bytes. Rows are kept in memory per folder
(loaded once) and changes are staged, then written in one transaction per batch
(``synchronous=FULL``): a crash loses at most the last batch, which costs a re-check, never a
wrong row. A change that cannot be stored is left out of its batch with one warning; the rest
of the batch is written.

Every time and inode a filesystem can hold is stored exactly. SQLite's integers are 64-bit, and
nanosecond times are not: ext4 keeps mtimes up to the year 2446 (1.5e19 ns), tmpfs and btrfs
up to 64-bit seconds (9.2e27 ns), and inode numbers are unsigned 64-bit. A value outside the
int64 range is stored as a BLOB of its decimal digits (a BLOB, because SQLite would turn a TEXT
of digits into a lossy REAL in an INTEGER column) and read back as the same int; a partial
index finds those rows without a look at the others.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from syncd.errors import ManifestError
from syncd.types import LocalFile, Row, shown

if TYPE_CHECKING:
    from syncd.config import Config, FolderConfig

log = logging.getLogger("syncd.manifest")

SCHEMA_VERSION = 2
FILENAME = "manifest.sqlite3"

_DDL = """
CREATE TABLE IF NOT EXISTS files (
    scope     TEXT NOT NULL,
    path      TEXT NOT NULL,
    size      INTEGER NOT NULL,
    mtime_ns  INTEGER NOT NULL,
    sha256    TEXT NOT NULL,
    synced_at REAL NOT NULL,
    ctime_ns  INTEGER NOT NULL DEFAULT 0,
    inode     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, path)
) WITHOUT ROWID;
-- Paths the daemon could not send yet (server down, 5xx): tried again until they go through,
-- across restarts. A move keeps its destination, so that it is replayed as one move.
CREATE TABLE IF NOT EXISTS outbox (
    scope     TEXT NOT NULL,
    path      TEXT NOT NULL,
    since     REAL NOT NULL,
    dest      TEXT,
    PRIMARY KEY (scope, path)
) WITHOUT ROWID;
"""

# Tables added by schema 2 (created by _DDL on a new manifest, by _MIGRATE_1 on an old one).
_DDL_2 = """
-- Deletions the guard holds back (max_delete, an emptied folder, a first contact), per folder,
-- until `syncd sync --force-delete` releases them or the folder no longer needs them.
CREATE TABLE IF NOT EXISTS held (
    scope     TEXT PRIMARY KEY,
    count     INTEGER NOT NULL,
    reason    TEXT NOT NULL,
    since     REAL NOT NULL
) WITHOUT ROWID;
-- Which mirror (the id in the marker the first sync leaves on the server) a folder's rows
-- describe, and the server's state token when the rows were last known to match it.
CREATE TABLE IF NOT EXISTS mirrors (
    scope     TEXT PRIMARY KEY,
    mirror    TEXT NOT NULL,
    state     TEXT
) WITHOUT ROWID;
"""

_MIGRATE_1 = """
ALTER TABLE files ADD COLUMN ctime_ns INTEGER NOT NULL DEFAULT 0;
ALTER TABLE files ADD COLUMN inode INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN dest TEXT;
"""

_COLUMNS = "path, size, mtime_ns, sha256, synced_at, ctime_ns, inode"

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_WIDE = "typeof(mtime_ns) = 'blob' OR typeof(ctime_ns) = 'blob' OR typeof(inode) = 'blob'"
# Not part of the schema version: an index changes no row, and an older syncd ignores it.
_WIDE_INDEX = f"CREATE INDEX IF NOT EXISTS files_wide ON files (scope) WHERE {_WIDE}"
# `+scope`: not the primary key, so that SQLite takes the (tiny) partial index.
_WIDE_ROWS = (
    f"SELECT path, size, mtime_ns, ctime_ns, inode FROM files WHERE +scope = ? AND ({_WIDE})"
)


def _stored(n: int) -> int | bytes:
    """``n`` as the manifest stores it: an int64 as it is, anything wider as its digits."""
    return n if _INT64_MIN <= n <= _INT64_MAX else str(n).encode("ascii")


def _int(value: int | bytes) -> int:
    return value if isinstance(value, int) else int(value)


def _statements(script: str) -> list[str]:
    lines = [ln for ln in script.splitlines() if not ln.lstrip().startswith("--")]
    return [st.strip() for st in "\n".join(lines).split(";") if st.strip()]


def scope_of(config: Config, folder: FolderConfig) -> str:
    """The manifest key of a folder: which remote, and where on it."""
    return f"{config.remote.kind}:{config.remote.url.rstrip('/')}/#{folder.remote_path}"


@dataclass(frozen=True)
class Totals:
    files: int
    bytes: int
    last_synced: float | None


class Manifest:
    """One SQLite file in the state dir. Use as a context manager; one writer per process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._cache: dict[str, dict[str, Row]] = {}
        self._counts: dict[str, int] = {}
        self._staged: list[tuple[str, tuple[object, ...]]] = []
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as e:
            raise ManifestError(f"{path}: cannot create the state dir: {e.strerror}") from e
        try:
            self._db = self._open()
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
                self._db = self._open()
            except sqlite3.DatabaseError as e2:
                raise ManifestError(f"{path}: cannot open the manifest: {e2}") from e2

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ManifestError(
                    f"{self.path}: written by a newer syncd (schema {version}, this one knows "
                    f"{SCHEMA_VERSION}); upgrade syncd"
                )
            if version < SCHEMA_VERSION:
                # One transaction (executescript would commit after each statement): a crash
                # mid-way leaves the old schema, and the next start migrates again.
                script = (_MIGRATE_1 if version == 1 else _DDL) + _DDL_2
                db.execute("BEGIN")
                for stmt in _statements(script):
                    db.execute(stmt)  # version 1: the rows' ctime and inode are not known (0)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                db.execute("COMMIT")
            for table in ("files", "outbox", "held", "mirrors"):
                db.execute(f"SELECT count(*) FROM {table}").fetchone()
            try:
                db.execute(_WIDE_INDEX)
            except sqlite3.OperationalError as e:  # read-only, busy: the rows are found anyway
                log.debug("manifest: no index of wide values (%s)", e)
        except BaseException:
            db.close()
            raise
        return db

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> Manifest:
        return cls(state_dir / FILENAME)

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._db.close()

    # -- reading ----------------------------------------------------------------------------
    def rows(self, scope: str) -> dict[str, Row]:
        """Every row of one folder, by relative path (loaded once, then kept current)."""
        cached = self._cache.get(scope)
        if cached is None:
            with self._lock:
                cur = self._db.execute(f"SELECT {_COLUMNS} FROM files WHERE scope = ?", (scope,))
                cached = {row.rel: row for row in map(Row._make, cur)}
                for rel, _size, mtime, ctime, inode in self._db.execute(_WIDE_ROWS, (scope,)):
                    cached[rel] = cached[rel]._replace(
                        mtime_ns=_int(mtime), ctime_ns=_int(ctime), inode=_int(inode)
                    )
            self._cache[scope] = cached
        return cached

    def loaded(self, scope: str) -> bool:
        """Are the rows of ``scope`` in memory (``rows`` was called)?"""
        return scope in self._cache

    def states(self, scope: str) -> set[tuple[str, int, int, int, int]]:
        """``(path, size, mtime_ns, ctime_ns, inode)`` of every row of ``scope``, read from the
        table without loading the rows: when a scan's files (``LocalFile`` tuples) are exactly
        these, the folder matches the rows and the rows are not needed (a folder in sync is
        known to be so sooner, with less memory). Only while the rows are not loaded:
        loaded rows may hold changes not written yet. Safe to call from a worker thread."""
        with self._lock:
            cur = self._db.execute(
                "SELECT path, size, mtime_ns, ctime_ns, inode FROM files WHERE scope = ?",
                (scope,),
            )
            states = set(cur)
            wide = list(self._db.execute(_WIDE_ROWS, (scope,)))
        for rel, size, mtime, ctime, inode in wide:
            states.discard((rel, size, mtime, ctime, inode))
            states.add((rel, size, _int(mtime), _int(ctime), _int(inode)))
        return states

    def count(self, scope: str) -> int:
        """``len(rows(scope))``, without loading the rows."""
        cached = self._cache.get(scope)
        if cached is not None:
            return len(cached)
        n = self._counts.get(scope)
        if n is None:  # while the rows are not loaded, nothing changes them
            with self._lock:
                (n,) = self._db.execute(
                    "SELECT count(*) FROM files WHERE scope = ?", (scope,)
                ).fetchone()
            self._counts[scope] = n
        return n

    def get(self, scope: str, rel: str) -> Row | None:
        return self.rows(scope).get(rel)

    def totals(self, scope: str) -> Totals:
        with self._lock:
            n, size, last = self._db.execute(
                "SELECT count(*), coalesce(sum(size), 0), max(synced_at) FROM files"
                " WHERE scope = ?",
                (scope,),
            ).fetchone()
        return Totals(n, size, last)

    # -- staging changes (visible at once in memory, durable at the next flush) -------------
    def put(self, scope: str, row: Row) -> None:
        self.rows(scope)[row.rel] = row
        rel, size, mtime, sha, synced, ctime, inode = row
        self._staged.append(
            (
                f"INSERT OR REPLACE INTO files (scope, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (scope, rel, size, _stored(mtime), sha, synced, _stored(ctime), _stored(inode)),
            )
        )

    def delete(self, scope: str, rel: str) -> None:
        self.rows(scope).pop(rel, None)
        self._staged.append(("DELETE FROM files WHERE scope = ? AND path = ?", (scope, rel)))

    def delete_tree(self, scope: str, rel_dir: str) -> list[Row]:
        """Drop every row under directory ``rel_dir``; returns the rows dropped."""
        rows = self.rows(scope)
        prefix = rel_dir.rstrip("/") + "/"
        gone = [r for p, r in rows.items() if p.startswith(prefix)]
        for r in gone:
            self.delete(scope, r.rel)
        return gone

    def move(self, scope: str, src: str, dst: str, local: LocalFile | None = None) -> None:
        """The row at ``src`` becomes ``dst``; ``local``: the file now at ``dst`` (a rename
        changes its ctime), else the identity stays as it was (a file in a renamed directory)."""
        row = self.rows(scope).get(src)
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
        for cache in (self._cache, self._counts):
            cache.pop(old, None)
            cache.pop(new, None)
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
        return len(self._staged)

    def flush(self) -> None:
        """Write every staged change in one transaction (blocking)."""
        self._write(self._take())

    async def aflush(self) -> None:
        """``flush`` without blocking the event loop: the commit's fsync runs in a thread."""
        import asyncio

        staged = self._take()
        if staged:
            await asyncio.to_thread(self._write, staged)

    def _take(self) -> list[tuple[str, tuple[object, ...]]]:
        # Called on the thread that stages (the event loop), so nothing staged is lost.
        staged, self._staged = self._staged, []
        return staged

    def _write(self, staged: list[tuple[str, tuple[object, ...]]]) -> None:
        if not staged:
            return
        left_out = 0
        with self._lock:
            try:
                self._db.execute("BEGIN")
                for sql, args in staged:
                    try:
                        self._db.execute(sql, args)
                    except _BAD_VALUE as e:
                        # This change only (a value SQLite cannot take): the rest of the batch
                        # is written. Without its row the file is checked again next time.
                        left_out += 1
                        log.warning("manifest: %s not recorded: %s", _named(args), _reason(e))
                self._db.execute("COMMIT")
            except BaseException as e:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                if isinstance(e, sqlite3.Error):
                    raise ManifestError(f"{self.path}: cannot write the manifest: {e}") from e
                raise
        log.debug("manifest: committed %d changes", len(staged) - left_out)


#: What executing one statement raises for a value it cannot store (a str that is not UTF-8,
#: an int beyond 64 bits, a type SQLite has no column for, a NULL in a NOT NULL column), as
#: opposed to the database failing (sqlite3.OperationalError: disk full, I/O error, locked).
_BAD_VALUE = (
    OverflowError,
    ValueError,
    TypeError,
    sqlite3.InterfaceError,
    sqlite3.IntegrityError,
    sqlite3.DataError,
)


def _named(args: tuple[object, ...]) -> str:
    """The path (or the folder) a staged change is about, escaped for a log line."""
    what = args[1] if len(args) > 1 and isinstance(args[1], str) else args[0]
    return shown(str(what))


def _reason(e: BaseException) -> str:
    if isinstance(e, UnicodeEncodeError):
        return "the name is not valid UTF-8"
    return str(e) or type(e).__name__
