"""The manifest's SQLite file: its schema and the migration from older ones (``open_db``), how
integers wider than SQLite's int64 are stored (``stored``/``number``), and which values a
statement cannot store (``BAD_VALUE``, named in one warning by ``named``/``reason``).

Every time and inode a filesystem can hold is stored exactly. SQLite's integers are 64-bit, and
nanosecond times are not: ext4 keeps mtimes up to the year 2446 (1.5e19 ns), tmpfs and btrfs
up to 64-bit seconds (9.2e27 ns), and inode numbers are unsigned 64-bit. A value outside the
int64 range is stored as a BLOB of its decimal digits (a BLOB, because SQLite would turn a TEXT
of digits into a lossy REAL in an INTEGER column) and read back as the same int (``decoded``).
(Manifests of an earlier syncd carry an index of those rows, ``files_wide``: harmless.)
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from syncd.errors import ManifestError
from syncd.types import Row, shown

log = logging.getLogger("syncd.manifest")  # (the name its log lines have always carried)

SCHEMA_VERSION = 4

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
    executable INTEGER NOT NULL DEFAULT 0,
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

# Schema 3: the exec bit the row's file had when it was sent (remotes that keep it).
_MIGRATE_2 = """
ALTER TABLE files ADD COLUMN executable INTEGER NOT NULL DEFAULT 0;
"""

# Schema 4: the chunk list of the server's copy of a large file (delta uploads), by the
# sha-256 of the bytes it describes: a cache of what the server holds, like every row.
_DDL_4 = """
CREATE TABLE IF NOT EXISTS chunks (
    scope     TEXT NOT NULL,
    path      TEXT NOT NULL,
    sha256    TEXT NOT NULL,
    list      BLOB NOT NULL,
    PRIMARY KEY (scope, path)
) WITHOUT ROWID;
"""

COLUMNS = "path, size, mtime_ns, sha256, synced_at, ctime_ns, inode, executable"

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def stored(n: int) -> int | bytes:
    """``n`` as the manifest stores it: an int64 as it is, anything wider as its digits."""
    return n if _INT64_MIN <= n <= _INT64_MAX else str(n).encode("ascii")


def number(value: int | bytes) -> int:
    return value if isinstance(value, int) else int(value)


def decoded(t: tuple[object, ...]) -> Row:
    """A row as SQLite gives it (``COLUMNS``), as a Row: wide integers made ints again."""
    if type(t[2]) is int and type(t[5]) is int and type(t[6]) is int:
        return Row._make(t)
    row = Row._make(t)
    return row._replace(
        mtime_ns=number(row.mtime_ns), ctime_ns=number(row.ctime_ns), inode=number(row.inode)
    )


def reader(path: Path) -> sqlite3.Connection:
    """A second connection to the manifest, for reading only: in WAL mode it reads the last
    commit while the writer commits (a commit running in a thread does not block it)."""
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA busy_timeout=5000")
    db.execute("PRAGMA query_only=1")
    return db


def sorted_rows(
    path: Path, scope: str, low: str = "", high: str | None = None
) -> Iterator[tuple[object, ...]]:
    """The committed rows of ``scope`` with ``low <= path < high`` as SQLite holds them
    (``COLUMNS``; wide integers as bytes: ``decoded``), in path order -- the order of
    ``Scanner.walk``. Its own connection and read transaction: safe in any thread or process,
    one consistent snapshot."""
    db = reader(path)
    try:
        sql = f"SELECT {COLUMNS} FROM files WHERE scope = ? AND path >= ?"
        args: tuple[object, ...] = (scope, low)
        if high is not None:
            sql += " AND path < ?"
            args += (high,)
        yield from db.execute(sql + " ORDER BY path", args)
    finally:
        db.close()


def _statements(script: str) -> list[str]:
    lines = [ln for ln in script.splitlines() if not ln.lstrip().startswith("--")]
    return [st.strip() for st in "\n".join(lines).split(";") if st.strip()]


def open_db(path: Path) -> sqlite3.Connection:
    """Open (create, or migrate in one transaction) the manifest at ``path``. Raises
    sqlite3.DatabaseError for a file that is not a usable database, ManifestError for one
    written by a newer syncd."""
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=5000")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ManifestError(
                f"{path}: written by a newer syncd (schema {version}, this one knows "
                f"{SCHEMA_VERSION}); upgrade syncd"
            )
        if version < SCHEMA_VERSION:
            # One transaction (executescript would commit after each statement): a crash
            # mid-way leaves the old schema, and the next start migrates again.
            if version == 0:
                script = _DDL + _DDL_2 + _DDL_4
            elif version == 1:
                script = _MIGRATE_1 + _DDL_2 + _MIGRATE_2 + _DDL_4
            elif version == 2:
                script = _MIGRATE_2 + _DDL_4  # the rows' exec bits are not known (0)
            else:
                script = _DDL_4
            db.execute("BEGIN")
            for stmt in _statements(script):
                db.execute(stmt)  # version 1: the rows' ctime and inode are not known (0)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
        for table in ("files", "outbox", "held", "mirrors", "chunks"):
            db.execute(f"SELECT count(*) FROM {table}").fetchone()
    except BaseException:
        db.close()
        raise
    return db


#: What executing one statement raises for a value it cannot store (a str that is not UTF-8,
#: an int beyond 64 bits, a type SQLite has no column for, a NULL in a NOT NULL column), as
#: opposed to the database failing (sqlite3.OperationalError: disk full, I/O error, locked).
BAD_VALUE = (
    OverflowError,
    ValueError,
    TypeError,
    sqlite3.InterfaceError,
    sqlite3.IntegrityError,
    sqlite3.DataError,
)


def named(args: tuple[object, ...]) -> str:
    """The path (or the folder) a staged change is about, escaped for a log line."""
    what = args[1] if len(args) > 1 and isinstance(args[1], str) else args[0]
    return shown(str(what))


def reason(e: BaseException) -> str:
    if isinstance(e, UnicodeEncodeError):
        return "the name is not valid UTF-8"
    return str(e) or type(e).__name__


__all__ = [
    "BAD_VALUE",
    "COLUMNS",
    "SCHEMA_VERSION",
    "decoded",
    "named",
    "number",
    "open_db",
    "reader",
    "reason",
    "sorted_rows",
    "stored",
]
