"""Decide what to do for each path: pure and synchronous (no I/O), so it is easy to test.

The rule: a file whose size and mtime match its manifest row is unchanged (no read, no hash).
Anything else is an upload candidate; the uploader hashes it first when the manifest or the
remote may already hold the same bytes, so a touch without a change costs a read, not a send.
A manifest row whose file is gone is a delete, unless the folder was not read completely there,
the path is now ignored, or the folder has deletions turned off.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from syncd.types import LocalFile, Op, OpKind, Problem, Row


@dataclass(frozen=True)
class DeleteLimit:
    """``[sync] max_delete``: a count (``100``) or a share of the folder (``"50%"``).

    A share never holds back 10 deletions or fewer, so small folders are not blocked.
    """

    count: int | None = None
    percent: float | None = None

    FLOOR = 10

    def limit(self, mirrored: int) -> int:
        if self.count is not None:
            return self.count
        assert self.percent is not None
        return max(self.FLOOR, int(mirrored * self.percent / 100))

    def __str__(self) -> str:
        return f"{self.count}" if self.count is not None else f'"{self.percent:g}%"'

    @classmethod
    def parse(cls, value: int | str) -> DeleteLimit:
        """``100`` or ``"100"`` -> a count; ``"50%"`` -> a share. Raises ValueError."""
        if isinstance(value, int):
            if value < 0:
                raise ValueError("must not be negative")
            return cls(count=value)
        text = value.strip()
        if text.endswith("%"):
            pct = float(text[:-1])
            if not 0 <= pct <= 100:
                raise ValueError("a percentage must be between 0% and 100%")
            return cls(percent=pct)
        if text.isdigit():
            return cls(count=int(text))
        raise ValueError(f'must be a count (100) or a percentage ("50%"), not {value!r}')


@dataclass
class Plan:
    uploads: list[Op] = field(default_factory=list)
    deletes: list[Op] = field(default_factory=list)
    unchanged: int = 0
    held_back: list[Problem] = field(default_factory=list)
    remote_checked: bool = False  # the remote's listing was compared with the manifest first

    @property
    def empty(self) -> bool:
        return not self.uploads and not self.deletes


def plan_file(local: LocalFile | None, row: Row | None) -> OpKind | None:
    """What one path needs: UPLOAD, DELETE or nothing (None)."""
    if local is None:
        return OpKind.DELETE if row is not None else None
    if row is not None and row.size == local.size and row.mtime_ns == local.mtime_ns:
        return None
    return OpKind.UPLOAD


def _under(rel: str, dirs: Iterable[str]) -> bool:
    return any(d == "" or rel == d or rel.startswith(d + "/") for d in dirs)


def plan_folder(
    files: Mapping[str, LocalFile],
    rows: Mapping[str, Row],
    *,
    delete: bool,
    ignored: Callable[[str], bool],
    incomplete: Iterable[str] = (),
    max_delete: DeleteLimit | None = None,
) -> Plan:
    """Compare a full scan with the manifest rows of one folder.

    Deletions are held back (none made, a Problem says why) when the folder is empty while
    the manifest lists files, or when there are more of them than ``max_delete`` allows.
    """
    plan = Plan()
    # plan_file(), inlined: this runs once per file, 100,000 times for a large folder.
    get = rows.get
    known = 0  # files with a manifest row
    for rel, local in files.items():
        row = get(rel)
        if row is None:
            plan.uploads.append(Op(OpKind.UPLOAD, rel, local=local))
            continue
        known += 1
        if row.size == local.size and row.mtime_ns == local.mtime_ns:
            plan.unchanged += 1
        else:
            plan.uploads.append(Op(OpKind.UPLOAD, rel, local=local, row=row))
    if not delete or known == len(rows):
        return _sorted(plan)  # every row has its file: nothing to delete
    incomplete = list(incomplete)
    gone = [row for rel, row in rows.items() if rel not in files]
    for row in gone:
        if ignored(row.rel) or _under(row.rel, incomplete):
            continue
        plan.deletes.append(Op(OpKind.DELETE, row.rel, row=row))
    if plan.deletes and not files:
        plan.held_back.append(
            Problem(
                ".",
                f"the folder is empty but {len(rows)} files were mirrored from it: deleting "
                "nothing on the server (is a disk unmounted?)",
            )
        )
        plan.deletes.clear()
    elif max_delete is not None and len(plan.deletes) > max_delete.limit(len(rows)):
        plan.held_back.append(
            Problem(
                ".",
                f"this pass would delete {len(plan.deletes)} of {len(rows)} mirrored files, "
                f"more than max_delete = {max_delete}: deleting nothing. If that is what you "
                "want, run `syncd sync --force-delete`",
            )
        )
        plan.deletes.clear()
    return _sorted(plan)


def _sorted(plan: Plan) -> Plan:
    # Big files first: the long transfers start early and the small ones fill in around them.
    plan.uploads.sort(key=lambda op: -(op.local.size if op.local else 0))
    return plan
