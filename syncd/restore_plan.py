"""Which bytes ``syncd restore`` brings back for each file: pure, no I/O.

What goes in: the server's current files under a folder (``RemoteEntry`` by folder-relative
path) and the kept versions of each file (``History``: oldest first, numbered from 1 as
``syncd versions`` lists them). What comes out: one ``Pick`` per file to write.

- the current copies under a path (``current``);
- a path the server no longer holds: as it was just before it was deleted (``deleted``: the
  files whose last version is a deletion, at most ``DELETION_WINDOW`` before the latest one,
  so one ``rm -rf`` the daemon mirrored file by file comes back whole);
- ``--at TIME``: the content current at TIME, the oldest version that stopped being current
  after TIME, else the current file (``as_at``);
- ``--version N`` of one file (``numbered``);
- ``--deleted-since TIME``: every file deleted since then and not back (``deleted_since``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from syncd.remotes.base import Version
from syncd.types import RemoteEntry

#: How far before the latest deletion under a path its other deletions still count as the
#: same one (a mass delete mirrored by `syncd run` reaches the server file by file).
DELETION_WINDOW_NS = 10 * 60 * 1_000_000_000

History = Mapping[str, list[Version]]
"""Each file's kept versions (folder-relative path -> oldest first)."""


class PlanError(ValueError):
    """The request cannot be planned (no such version, a directory given to --version...);
    the message says what to type instead."""


@dataclass(frozen=True)
class Pick:
    """One file to write: where (folder-relative) and which bytes."""

    rel: str
    size: int
    sha256: str | None
    mtime_ns: int | None
    executable: bool | None
    #: The version to bring back; None: the current copy.
    version: Version | None = None
    #: Its number among the file's versions (1 = the oldest kept); None for the current copy.
    number: int | None = None
    #: The sha-256 of the server's current copy, which putting ``version`` back replaces
    #: (and keeps as a version in turn); None where the server holds none or cannot tell.
    replaces: str | None = None

    @property
    def what(self) -> str:
        """For people: "current copy", "version 2, replaced 2026-12-01 14:30:05"."""
        if self.version is None:
            return "current copy"
        from syncd.timespec import format_time

        return f"version {self.number}, {self.version.why} {format_time(self.version.when_ns)}"


def under(rel: str, root: str) -> bool:
    """Whether folder-relative ``rel`` is ``root`` or inside it ("" is the whole folder)."""
    return root == "" or rel == root or rel.startswith(root + "/")


def history(versions: Iterable[Version], prefix: str) -> dict[str, list[Version]]:
    """Versions listed by a remote (paths relative to its root) -> each file's, oldest first,
    keyed by the path relative to the folder at ``prefix`` (its remote_path)."""
    lead = prefix.strip("/") + "/" if prefix.strip("/") else ""
    out: dict[str, list[Version]] = {}
    for v in versions:
        path = v.path.strip("/")
        if lead and not path.startswith(lead):
            continue
        out.setdefault(path[len(lead) :], []).append(v)
    for vs in out.values():
        vs.sort(key=lambda v: (v.when_ns, v.ref))
    return out


def _current(entry: RemoteEntry, rel: str) -> Pick:
    return Pick(rel, entry.size, entry.sha256, entry.mtime_ns, entry.executable)


def _old(v: Version, rel: str, number: int, now: RemoteEntry | None = None) -> Pick:
    replaces = now.sha256 if now is not None else None
    return Pick(rel, v.size, v.sha256, v.mtime_ns, v.executable, v, number, replaces)


def current(listing: Mapping[str, RemoteEntry], root: str) -> list[Pick]:
    """The server's current copy of every file at ``root`` or under it."""
    return [_current(e, rel) for rel, e in sorted(listing.items()) if under(rel, root)]


def deleted(
    listing: Mapping[str, RemoteEntry], kept: History, root: str
) -> tuple[list[Pick], int | None]:
    """``root`` as it was just before it was deleted: every file under it the server no
    longer holds whose last version is its deletion, within ``DELETION_WINDOW_NS`` of the
    latest such deletion. Returns the picks and that deletion's time (None: nothing)."""
    gone = [
        (rel, vs)
        for rel, vs in kept.items()
        if under(rel, root) and rel not in listing and vs and vs[-1].why == "deleted"
    ]
    if not gone:
        return [], None
    latest = max(vs[-1].when_ns for _, vs in gone)
    picks = [
        _old(vs[-1], rel, len(vs))
        for rel, vs in sorted(gone)
        if vs[-1].when_ns >= latest - DELETION_WINDOW_NS
    ]
    return picks, latest


def _one_shape(picks: list[Pick]) -> list[Pick]:
    """At one moment a path is a file or a directory, never both: a pick under a path that is
    itself picked as a file is left out (``d`` was a file then and is a directory now: the
    file comes back, not what the directory holds today). ``picks`` are sorted by path."""
    files = {p.rel for p in picks}
    return [p for p in picks if not any(a in files for a in _ancestors(p.rel))]


def _ancestors(rel: str) -> list[str]:
    parts = rel.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def as_at(listing: Mapping[str, RemoteEntry], kept: History, root: str, at_ns: int) -> list[Pick]:
    """Every file under ``root`` as it was at ``at_ns``: the oldest version that stopped
    being current after it, else the current copy. A file deleted before then is left out.
    (A file made after ``at_ns`` that has never been replaced comes as it is now: nothing
    tells when a file was first made.)"""
    picks = []
    for rel in sorted({*listing, *kept}):
        if not under(rel, root):
            continue
        vs = kept.get(rel, [])
        later = next((n for n, v in enumerate(vs, 1) if v.when_ns > at_ns), None)
        if later is not None:
            picks.append(_old(vs[later - 1], rel, later, listing.get(rel)))
        elif rel in listing:
            picks.append(_current(listing[rel], rel))
    return _one_shape(picks)


def numbered(
    listing: Mapping[str, RemoteEntry], kept: History, rel: str, number: int, name: str = ""
) -> Pick:
    """Version ``number`` of the file ``rel`` (1 = the oldest kept); ``name``: the file as
    the messages show it (the local path the person typed)."""
    name = name or rel
    vs = kept.get(rel, [])
    if not vs:
        if any(under(r, rel) and r != rel for r in (*listing, *kept)):
            raise PlanError(f"{name} is a directory: --version picks one file's version; use --at")
        raise PlanError(f"{name}: no versions kept; `syncd versions {name}` shows what there is")
    if not 1 <= number <= len(vs):
        raise PlanError(
            f"{name} has versions 1 to {len(vs)} (1 is the oldest); "
            f"`syncd versions {name}` lists them"
        )
    return _old(vs[number - 1], rel, number, listing.get(rel))


def deleted_since(
    listing: Mapping[str, RemoteEntry],
    kept: History,
    root: str,
    since_ns: int,
    missing: Callable[[str], bool] = lambda rel: False,
) -> list[Pick]:
    """Every file under ``root`` deleted at ``since_ns`` or later and not on the server now,
    as it was just before its deletion; and every such file the server holds again but
    ``missing(rel)`` says is not where it is restored to (a restore killed after it put the
    version back on the server, before it wrote the file: run again, it finishes)."""
    picks = []
    for rel, vs in sorted(kept.items()):
        if not (under(rel, root) and vs and vs[-1].why == "deleted"):
            continue
        if vs[-1].when_ns < since_ns:
            continue
        if rel not in listing:
            picks.append(_old(vs[-1], rel, len(vs)))
        elif missing(rel):
            picks.append(_current(listing[rel], rel))
    return _one_shape(picks)


def files_with_versions(listing: Mapping[str, RemoteEntry], kept: History, root: str) -> list[str]:
    """The files ``syncd versions ROOT`` shows: every file under it, current or kept."""
    return sorted(rel for rel in {*listing, *kept} if under(rel, root))


__all__ = [
    "DELETION_WINDOW_NS",
    "History",
    "Pick",
    "PlanError",
    "as_at",
    "current",
    "deleted",
    "deleted_since",
    "files_with_versions",
    "history",
    "numbered",
    "under",
]
