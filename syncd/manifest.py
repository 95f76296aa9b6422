"""The manifest: what the remote is known to hold, per folder and relative path (SQLite, WAL).

A row changes only after the remote confirmed the bytes. Rows are kept in memory per folder
(loaded once) and changes are staged, then written in one transaction per batch
(``synchronous=FULL``): a crash loses at most the last batch, which costs a re-check, never a
wrong row.
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
from syncd.types import Row

if TYPE_CHECKING:
    from syncd.config import Config, FolderConfig

log = logging.getLogger("syncd.manifest")

SCHEMA_VERSION = 1
FILENAME = "manifest.sqlite3"

_DDL = """
CREATE TABLE IF NOT EXISTS files (
    scope     TEXT NOT NULL,
    path      TEXT NOT NULL,
    size      INTEGER NOT NULL,
    mtime_ns  INTEGER NOT NULL,
    sha256    TEXT NOT NULL,
    synced_at REAL NOT NULL,
    PRIMARY KEY (scope, path)
) WITHOUT ROWID;
-- Paths the daemon could not send yet (server down, 5xx): tried again until they go through,
-- across restarts.
CREATE TABLE IF NOT EXISTS outbox (
    scope     TEXT NOT NULL,
    path      TEXT NOT NULL,
    since     REAL NOT NULL,
    PRIMARY KEY (scope, path)
) WITHOUT ROWID;
"""


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
                db.executescript(_DDL)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("SELECT count(*) FROM files").fetchone()
            db.execute("SELECT count(*) FROM outbox").fetchone()
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
                cur = self._db.execute(
                    "SELECT path, size, mtime_ns, sha256, synced_at FROM files WHERE scope = ?",
                    (scope,),
                )
                cached = {row.rel: row for row in map(Row._make, cur)}
            self._cache[scope] = cached
        return cached

    def loaded(self, scope: str) -> bool:
        """Are the rows of ``scope`` in memory (``rows`` was called)?"""
        return scope in self._cache

    def states(self, scope: str) -> set[tuple[str, int, int]]:
        """``(path, size, mtime_ns)`` of every row of ``scope``, read from the table without
        loading the rows: when a scan's files (``LocalFile`` tuples) are exactly these, there
        is nothing to send and nothing to delete, and the rows are not needed (a folder in
        sync is known to be so sooner, with less memory). Only while the rows are not loaded:
        loaded rows may hold changes not written yet. Safe to call from a worker thread."""
        with self._lock:
            cur = self._db.execute(
                "SELECT path, size, mtime_ns FROM files WHERE scope = ?", (scope,)
            )
            return set(cur)

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
        self._staged.append(
            (
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)",
                (scope, row.rel, row.size, row.mtime_ns, row.sha256, row.synced_at),
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

    def move(self, scope: str, src: str, dst: str) -> None:
        row = self.rows(scope).get(src)
        if row is None:
            return
        self.delete(scope, src)
        self.put(scope, Row(dst, row.size, row.mtime_ns, row.sha256, time.time()))

    # -- the outbox ---------------------------------------------------------------------------
    def outbox_add(self, scope: str, rel: str) -> None:
        self._staged.append(
            ("INSERT OR IGNORE INTO outbox VALUES (?, ?, ?)", (scope, rel, time.time()))
        )

    def outbox_remove(self, scope: str, rel: str) -> None:
        self._staged.append(("DELETE FROM outbox WHERE scope = ? AND path = ?", (scope, rel)))

    def outbox(self) -> list[tuple[str, str, float]]:
        """Every (scope, path, since) waiting to be sent again."""
        with self._lock:
            return list(self._db.execute("SELECT scope, path, since FROM outbox"))

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
        with self._lock:
            try:
                self._db.execute("BEGIN")
                for sql, args in staged:
                    self._db.execute(sql, args)
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise ManifestError(f"{self.path}: cannot write the manifest: {e}") from e
        log.debug("manifest: committed %d changes", len(staged))
