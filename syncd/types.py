"""Small frozen records shared by the stages (scanner, planner, uploader, manifest)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LocalFile:
    """A regular file as the scanner saw it: path relative to the folder, with '/' separators."""

    rel: str
    size: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class Row:
    """A manifest row: what the remote is known to hold for one path."""

    rel: str
    size: int
    mtime_ns: int
    sha256: str
    synced_at: float


@dataclass(frozen=True, slots=True)
class RemoteEntry:
    """A file as a remote lists it. ``sha256`` is None where the remote cannot tell."""

    path: str
    size: int
    sha256: str | None


class OpKind(enum.Enum):
    UPLOAD = "upload"
    DELETE = "delete"
    MOVE = "move"


@dataclass(frozen=True, slots=True)
class Op:
    """One planned change for one path of one folder.

    UPLOAD carries the local state that prompted it and the manifest row (if any); DELETE the
    row; MOVE the row at ``rel`` that should become ``dest``.
    """

    kind: OpKind
    rel: str
    local: LocalFile | None = None
    row: Row | None = None
    dest: str | None = None


@dataclass(frozen=True, slots=True)
class Problem:
    """Something that could not be mirrored, with the reason, for the end-of-run report."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"
