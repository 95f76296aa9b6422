"""Small immutable records shared by the stages (scanner, planner, uploader, manifest).

They are ``typing.NamedTuple``s, not dataclasses: a scan or a manifest load makes one per file
(100,000 of them for a large folder), and a named tuple is built in a third of the time of a
frozen dataclass and its class in a fraction of the import time. Compare records of the same
kind only: like any tuple, a record equals another with the same fields in the same order.
"""

from __future__ import annotations

import enum
import ipaddress
import os
from abc import abstractmethod
from collections.abc import ItemsView, Iterable, Iterator, Mapping, ValuesView
from typing import NamedTuple

RESERVED_PREFIX = ".~syncd-"
"""Names starting with this belong to syncd (server temps, locks, the mirror marker, the
client's own temps): never mirrored, never listed, never addressable as a mirror path."""


class LocalFile(NamedTuple):
    """A regular file as the scanner saw it: path relative to the folder, with '/' separators.

    ``ctime_ns`` and ``inode`` are what a restored mtime cannot hide (``touch -r``, ``cp -p``):
    a file whose size and mtime match its row but whose ctime or inode changed is hashed.
    """

    rel: str
    size: int
    mtime_ns: int
    ctime_ns: int = 0
    inode: int = 0
    executable: bool = False
    """The owner's executable bit (``chmod +x``), kept by remotes with ``keeps_exec``."""

    @classmethod
    def of(cls, rel: str, st: os.stat_result) -> LocalFile:
        """The file ``rel`` as ``os.lstat`` gave it (a regular file's stat)."""
        return cls(
            rel, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, bool(st.st_mode & 0o100)
        )

    @property
    def same(self) -> tuple[int, int, int, int]:
        """What must match a manifest row for the file to be unchanged (no read, no hash)."""
        return (self.size, self.mtime_ns, self.ctime_ns, self.inode)


class Row(NamedTuple):
    """A manifest row: what the remote is known to hold for one path, and the local file's
    identity (ctime, inode) when it was sent. 0 is "not known" (rows of an older manifest)."""

    rel: str
    size: int
    mtime_ns: int
    sha256: str
    synced_at: float
    ctime_ns: int = 0
    inode: int = 0
    executable: bool = False
    """The file's exec bit when it was sent (False in rows of an older manifest)."""

    @property
    def same(self) -> tuple[int, int, int, int]:
        return (self.size, self.mtime_ns, self.ctime_ns, self.inode)


class Rows(Mapping[str, Row]):
    """A folder's manifest rows by relative path, as the planner reads them: a ``Mapping``
    that can also give the rows below a directory without looking at the others (the
    manifest answers from SQLite's index; a million rows are never all in memory)."""

    @abstractmethod
    def under(self, rel_dir: str) -> Iterable[Row]:
        """The rows strictly below directory ``rel_dir`` ('' for every row)."""

    @abstractmethod
    def count_under(self, dirs: Iterable[str]) -> dict[str, int]:
        """How many rows are strictly below each directory of ``dirs``."""


class DictRows(Rows):
    """Rows held in a dict (a snapshot of the manifest, or a test's rows)."""

    __slots__ = ("_d",)

    def __init__(self, rows: Mapping[str, Row] | None = None) -> None:
        # (a dict is kept, not copied: a snapshot of a million rows is not made twice)
        self._d: dict[str, Row] = (
            rows if isinstance(rows, dict) else dict(rows) if rows is not None else {}
        )

    def __getitem__(self, rel: str) -> Row:
        return self._d[rel]

    def get(self, rel: str, default: Row | None = None) -> Row | None:  # type: ignore[override]
        return self._d.get(rel, default)

    def __contains__(self, rel: object) -> bool:
        return rel in self._d

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def items(self) -> ItemsView[str, Row]:
        return self._d.items()

    def values(self) -> ValuesView[Row]:
        return self._d.values()

    def under(self, rel_dir: str) -> Iterable[Row]:
        if not rel_dir:
            return self._d.values()
        prefix = rel_dir + "/"
        return [row for rel, row in self._d.items() if rel.startswith(prefix)]

    def count_under(self, dirs: Iterable[str]) -> dict[str, int]:
        counts = dict.fromkeys(dirs, 0)
        if "" in counts:
            counts[""] = len(self._d)
        for rel in self._d:  # one pass, each row counted for its ancestors asked about
            parts = rel.split("/")
            for n in range(1, len(parts)):
                a = "/".join(parts[:n])
                if a in counts:
                    counts[a] += 1
        return counts


def as_rows(rows: Mapping[str, Row]) -> Rows:
    """``rows`` as ``Rows`` (a plain mapping is wrapped)."""
    return rows if isinstance(rows, Rows) else DictRows(rows)


class RemoteEntry(NamedTuple):
    """A file as a remote lists it. ``sha256``, ``mtime_ns`` and ``executable`` are None where
    the remote cannot tell (``features.keeps_times`` / ``keeps_exec`` say whether it keeps the
    local file's mtime and executable bit)."""

    path: str
    size: int
    sha256: str | None
    mtime_ns: int | None = None
    executable: bool | None = None


class OpKind(enum.Enum):
    UPLOAD = "upload"
    DELETE = "delete"
    MOVE = "move"


class Op(NamedTuple):
    """One planned change for one path of one folder.

    UPLOAD carries the local state that prompted it and the manifest row (if any). DELETE
    carries the row (None for a file only the server holds); with ``tree`` it removes the
    directory ``rel`` and every row under it. MOVE turns the row at ``rel`` (a directory with
    ``tree``) into ``dest``; ``local`` is the file now at ``dest``. A MOVE with ``confirm`` is
    a candidate only: it is made when the file at ``dest`` hashes to the row's sha-256, and
    becomes an upload of ``dest`` and a delete of ``rel`` otherwise. An UPLOAD with
    ``confirm`` (a first contact) must not replace other bytes: it adopts what the server
    holds if that is the same, and is refused otherwise.
    """

    kind: OpKind
    rel: str
    local: LocalFile | None = None
    row: Row | None = None
    dest: str | None = None
    tree: bool = False
    confirm: bool = False
    #: An UPLOAD sent even if the bytes are the row's: the mtime or exec bit changed and the
    #: remote keeps them (``Rules.keeps_times`` / ``keeps_exec``).
    meta: bool = False


class Problem(NamedTuple):
    """Something that could not be mirrored, with the reason, for the end-of-run report."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def shown(path: str) -> str:
    """``path`` as a log line or a message may show it: control characters and other
    unprintable ones as Python escapes (``\\n``, ``\\x1b``, ``\\u2028``), bytes that are not
    UTF-8 (smuggled in as surrogates) as ``\\xff``. A name can then neither split a line
    nor forge one. Printable text, backslashes included, is shown as it is."""
    if path.isprintable():
        return path
    out: list[str] = []
    for c in path:
        if c.isprintable():
            out.append(c)
        elif "\udc80" <= c <= "\udcff":
            out.append(f"\\x{ord(c) - 0xDC00:02x}")
        else:
            out.append(repr(c)[1:-1])
    return "".join(out)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name, an address, or an IPv6 address in brackets) is this machine's
    loopback: "localhost", 127.0.0.0/8, ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
