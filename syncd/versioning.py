"""How kept versions are named, on `syncd serve` and in a remote's trash alike.

A file replaced or deleted at mirror path ``P`` is kept at ``<versions>/P/<entry>``, where
``<versions>`` is ``ROOT/.~syncd-versions`` on `syncd serve` (``/.~syncd-versions/`` in its
URLs) or the remote's ``trash`` prefix, and ``<entry>`` is ``.~syncd-v<when>-<why>``:

- ``<when>`` is the UTC time it stopped being current, ``YYYYMMDDTHHMMSS.nnnnnnnnnZ``
  (nanoseconds; sortable as text);
- ``<why>`` is ``replaced`` (an upload replaced it), ``deleted`` (a DELETE removed it) or
  ``overwritten`` (a MOVE or COPY onto its path replaced it).

An entry is a file (one version of the file ``P``) or a directory: a directory ``P`` deleted
whole is kept in one rename as ``<versions>/P/.~syncd-v<when>-deleted/``, holding the tree as
it was, so that the version of ``P/a/b`` it holds is ``P/.~syncd-v<when>-deleted/a/b``.

The entry names start with the reserved prefix ``.~syncd-``, which no mirrored file can have,
so they never collide with the directories that hold the versions of files further down.
"""

from __future__ import annotations

import calendar
import re
import time
from typing import Literal, NamedTuple

from syncd.types import RESERVED_PREFIX

VERSIONS_DIR = f"{RESERVED_PREFIX}versions"
"""`syncd serve` keeps versions in ``ROOT/.~syncd-versions``, read-only at that URL path."""

VERSION_PREFIX = f"{RESERVED_PREFIX}v"

Why = Literal["replaced", "deleted", "overwritten"]
WHYS: tuple[Why, ...] = ("replaced", "deleted", "overwritten")

_ENTRY = re.compile(
    r"\.~syncd-v(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)\.(\d{9})Z-(replaced|deleted|overwritten)\Z"
)


def version_name(when_ns: int, why: Why) -> str:
    """The entry name of a version that stopped being current at ``when_ns`` (Unix ns)."""
    secs, ns = divmod(when_ns, 1_000_000_000)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(secs))
    return f"{VERSION_PREFIX}{stamp}.{ns:09d}Z-{why}"


def parse_version_name(name: str) -> tuple[int, Why] | None:
    """``(when_ns, why)`` of an entry name made by :func:`version_name`; None for any other."""
    m = _ENTRY.match(name)
    if m is None:
        return None
    y, mo, d, h, mi, s, ns, why = m.groups()
    try:
        secs = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(s), 0, 0, 0))
    except (ValueError, OverflowError):
        return None
    return secs * 1_000_000_000 + int(ns), why  # type: ignore[return-value]


class VersionPath(NamedTuple):
    """Where a kept version sits, read back from its path under ``<versions>``."""

    path: str
    """The mirror path of the file it is a version of (relative, '/'-separated)."""
    when_ns: int
    why: Why
    entry: str
    """The entry's own path under ``<versions>`` (``P/.~syncd-v...-why`` for a file's
    version, the entry directory for a file inside a deleted directory's tree)."""


def split_version_path(path: str) -> VersionPath | None:
    """Read a file's path under ``<versions>`` back: which mirror path it was, when and why.

    ``a/b.txt/.~syncd-v...-replaced`` is a version of ``a/b.txt``;
    ``a/.~syncd-v...-deleted/b/c.txt`` is ``a/b/c.txt`` as it was when ``a`` was deleted.
    Exactly one component must be an entry name; None otherwise (not a version).
    """
    parts = path.strip("/").split("/")
    found = [i for i, p in enumerate(parts) if p.startswith(VERSION_PREFIX)]
    if len(found) != 1:
        return None
    i = found[0]
    parsed = parse_version_name(parts[i])
    if parsed is None:
        return None
    before, after = parts[:i], parts[i + 1 :]
    if not before:
        return None  # an entry must sit in the directory named after its path
    if any(p.startswith(RESERVED_PREFIX) for p in before + after):
        return None
    return VersionPath("/".join(before + after), parsed[0], parsed[1], "/".join(parts[: i + 1]))


def versions_path(path: str, when_ns: int, why: Why) -> str:
    """Where the version of mirror path ``path`` kept at ``when_ns`` goes under ``<versions>``."""
    path = path.strip("/")
    return f"{path}/{version_name(when_ns, why)}"


__all__ = [
    "VERSIONS_DIR",
    "VERSION_PREFIX",
    "WHYS",
    "VersionPath",
    "Why",
    "parse_version_name",
    "split_version_path",
    "version_name",
    "versions_path",
]
