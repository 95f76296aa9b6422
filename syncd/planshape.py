"""How the planner's decisions become ops (pure, no I/O): one delete or one move for a whole
directory where the folder lost or moved all of it, and moves in an order where none overwrites
the source of another. What is deleted or moved, and whether at all, is the planner's
(``syncd.planner``); this only shapes the ops.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from syncd.types import LocalFile, Op, OpKind, Row, Rows


def within(rel: str, dirs: Iterable[str]) -> bool:
    """Is ``rel`` one of ``dirs`` or below one ('' is the whole folder)?"""
    return any(d == "" or rel == d or rel.startswith(d + "/") for d in dirs)


def ancestors(rel: str) -> list[str]:
    """'a/b/c' -> ['a', 'a/b'] (proper ancestors, top first)."""
    parts = rel.split("/")
    return ["/".join(parts[:n]) for n in range(1, len(parts))]


def dir_moves(
    paired: dict[str, tuple[Row, LocalFile, bool]],
    rows: Rows,
    files: Mapping[str, LocalFile],
) -> list[Op]:
    """Collapse confirmed moves of every file of a directory into one move of the directory
    (``mv photos pictures``). Removes the files it covers from ``paired``."""
    cands: dict[tuple[str, str], list[str]] = {}
    for src, (_row, lf, confirmed) in paired.items():
        if not confirmed:
            continue
        s, d = src.split("/"), lf.rel.split("/")
        k = 0
        while k < min(len(s), len(d)) - 1 and s[-1 - k] == d[-1 - k]:
            k += 1
        for j in range(k, 0, -1):  # the shallowest directories first
            cands.setdefault(("/".join(s[:-j]), "/".join(d[:-j])), []).append(src)
    if not cands:
        return []
    srcs = {sd for sd, _ in cands}
    dsts = {dd for _, dd in cands}
    rows_under = rows.count_under(srcs | dsts)
    files_under: dict[str, int] = dict.fromkeys(srcs | dsts, 0)
    for rel in files:
        for a in ancestors(rel):
            if a in files_under:
                files_under[a] += 1
    out: list[Op] = []
    taken: set[str] = set()
    for (sd, dd), members in sorted(cands.items(), key=lambda c: c[0][0].count("/")):
        if taken.intersection(members) or sd == dd or dd in rows or sd in files:
            continue
        if (
            rows_under[sd] == len(members)
            and files_under[dd] == len(members)
            and files_under[sd] == 0
            and rows_under[dd] == 0
        ):
            out.append(Op(OpKind.MOVE, sd, dest=dd, tree=True))
            taken.update(members)
    for src in taken:
        del paired[src]
    return out


def deletes(gone: list[Row], rows: Rows, files: Mapping[str, LocalFile]) -> list[Op]:
    """Delete ops for ``gone``: one for a whole directory where every row under it is gone and
    the folder holds no file there any more, one per file otherwise. ``files`` may be the
    differences of a whole look (``Looked.gone``): a directory whose rows are all gone holds
    no unchanged file, so only a new file can keep it."""
    if not gone:
        return []
    doomed = {row.rel for row in gone}
    tops = {rel.split("/", 1)[0] for rel in doomed if "/" in rel}
    count_gone: dict[str, int] = {}
    for rel in doomed:
        for a in ancestors(rel):
            count_gone[a] = count_gone.get(a, 0) + 1
    count_rows: dict[str, int] = {}
    live: set[str] = set()  # directories that still hold a local file
    if tops:
        count_rows = rows.count_under(count_gone)
        for rel in files:
            if rel.split("/", 1)[0] in tops:
                live.update(a for a in ancestors(rel) if a in count_gone)
    # (A directory that is a file now -- a type clash -- goes at once too, before the upload.)
    whole_dirs = {d for d, n in count_gone.items() if count_rows.get(d) == n and d not in live}
    ops: list[Op] = []
    covered: set[str] = set()
    for d in sorted(whole_dirs, key=lambda d: d.count("/")):
        if any(a in covered for a in ancestors(d)):
            continue
        covered.add(d)
        ops.append(Op(OpKind.DELETE, d, tree=True))
    for row in sorted(gone, key=lambda r: r.rel):
        if not any(a in covered for a in ancestors(row.rel)):
            ops.append(Op(OpKind.DELETE, row.rel, row=row))
    return ops


def ordered_moves(moves: list[Op], uploads: list[Op]) -> list[Op]:
    """Moves in an order where none overwrites the source of another. A move into a path that
    another move leaves, or that a file of its own is uploaded to, is sent as an upload of its
    destination and a delete of its source instead (a swap through a temporary name)."""
    sources = {op.rel for op in moves}
    ok: list[Op] = []
    for op in moves:
        assert op.dest is not None
        if op.dest in sources or any(within(op.dest, [s]) for s in sources if s != op.rel):
            if op.tree or op.local is None:
                continue  # the files under it are then planned again by the next look
            uploads.append(Op(OpKind.UPLOAD, op.dest, local=op.local))
            ok.insert(0, Op(OpKind.DELETE, op.rel, row=op.row))
            continue
        ok.append(op)
    return ok


__all__ = ["ancestors", "deletes", "dir_moves", "ordered_moves", "within"]
