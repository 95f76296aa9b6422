"""Small immutable records shared by the stages (scanner, planner, uploader, manifest).

They are ``typing.NamedTuple``s, not dataclasses: a scan or a manifest load makes one per file
(100,000 of them for a large folder), and a named tuple is built in a third of the time of a
frozen dataclass and its class in a fraction of the import time. Compare records of the same
kind only: like any tuple, a record equals another with the same fields in the same order.
"""

from __future__ import annotations

import enum
from typing import NamedTuple


class LocalFile(NamedTuple):
    """A regular file as the scanner saw it: path relative to the folder, with '/' separators."""

    rel: str
    size: int
    mtime_ns: int


class Row(NamedTuple):
    """A manifest row: what the remote is known to hold for one path."""

    rel: str
    size: int
    mtime_ns: int
    sha256: str
    synced_at: float


class RemoteEntry(NamedTuple):
    """A file as a remote lists it. ``sha256`` is None where the remote cannot tell."""

    path: str
    size: int
    sha256: str | None


class OpKind(enum.Enum):
    UPLOAD = "upload"
    DELETE = "delete"
    MOVE = "move"


class Op(NamedTuple):
    """One planned change for one path of one folder.

    UPLOAD carries the local state that prompted it and the manifest row (if any); DELETE the
    row; MOVE the row at ``rel`` that should become ``dest``.
    """

    kind: OpKind
    rel: str
    local: LocalFile | None = None
    row: Row | None = None
    dest: str | None = None


class Problem(NamedTuple):
    """Something that could not be mirrored, with the reason, for the end-of-run report."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"
