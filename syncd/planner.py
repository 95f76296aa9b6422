"""The one planner: every way a change arrives -- a pass, a live batch of events, a rescan,
the catch-up after a restart, the replay of the offline queue -- becomes operations here.

Pure and synchronous (no I/O): what was looked at locally (``Looked``), the manifest's rows,
the server's listing where it was read (``Server``), and the folder's rules in; a ``Plan`` out.
Every safety rule lives here, so that no way in can skip one:

- **Unchanged** means size, mtime, ctime and inode all match the row: nothing is read. A file
  whose size and mtime match but whose ctime or inode changed (``touch -r``, ``cp -p``) is an
  upload candidate; the uploader hashes it first and sends it only if the bytes differ.
- **The server's holdings are the truth** where they are known: a row the server no longer
  backs is forgotten (the file is sent again), and a file the server holds that the folder
  does not is deleted -- under the guard, and never on a first contact.
- **The deletion guard** holds every deletion of a folder (none made, a Problem says why, the
  count is kept) when the folder is empty while files were mirrored from it (an unmounted
  disk), when the deletions would be more than ``max_delete`` (counting those made just before,
  so a mass delete that arrives in several batches is still one), while earlier deletions of
  the folder are held, and for files met on a first contact with a non-empty server directory.
- **Renames are confirmed**: a gone row and a new file become a move only when the new file is
  the same inode, size and mtime (and, moved with its directory, the same ctime), or when its
  sha-256 equals the row's (the uploader checks that before it moves: ``Op.confirm``).
- **Ordering**: deletes and moves, which free paths, come before the uploads that need them;
  a file that became a directory (or the reverse) converges in one pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from syncd.config_checks import DeleteLimit
from syncd.planshape import ancestors, deletes, dir_moves, ordered_moves, within
from syncd.types import LocalFile, Op, OpKind, Problem, RemoteEntry, Row, Rows, as_rows

FORCE_HINT = "`syncd sync --force-delete`"


@dataclass(frozen=True)
class Rules:
    """A folder's rules, as the planner applies them."""

    ignored: Callable[..., bool]  # (rel, is_dir=False) -> bool: the folder's ignore rules
    delete: bool = True  # mirror deletions ([[folder]] delete)
    max_delete: DeleteLimit | None = None
    can_move: bool = False  # the remote moves files and directories itself
    keeps_times: bool = False  # the remote keeps the mtime: a new mtime alone is sent
    keeps_exec: bool = False  # the remote keeps the exec bit: a new exec bit alone is sent


@dataclass
class Looked:
    """What was looked at locally: the whole folder (``under = ("",)``) or some paths, each
    standing for itself and everything below it (a file, a directory, a path that is gone).

    ``files``: every mirrorable file found there. ``incomplete``: directories that could not
    be read completely (nothing under them is deleted). ``folder_empty``: whether the folder
    holds nothing at all (for a whole scan: no file found).

    A look at the whole folder may come as its differences from the rows (``gone`` given,
    ``syncd.look.first_look``): ``files`` then holds only the files that are new or not as
    their rows say, ``gone`` the rows whose file was not found, ``unchanged`` how many files
    matched their rows -- a million unchanged files are counted, not held.
    """

    files: Mapping[str, LocalFile]
    under: Sequence[str] = ("",)
    incomplete: Sequence[str] = ()
    folder_empty: bool | None = None
    gone: Sequence[Row] | None = None
    unchanged: int = 0

    @property
    def whole(self) -> bool:
        return "" in self.under


@dataclass
class Server:
    """What the server holds under the folder's remote path, as its listing said.

    ``first_contact``: the directory carries no mirror marker and the manifest knows nothing
    of it: what it holds and the folder does not is not deleted until the user confirms.

    With a look given as its differences (``Looked.gone``), the listing comes reduced too
    (``syncd.look.with_listing``): ``forget`` the rows it does not back, worked out already;
    ``entries`` only what the differences need (the entries of those rows, of the files that
    changed or are new, and every entry no row knows); ``total`` how many it listed."""

    entries: Mapping[str, RemoteEntry]
    first_contact: bool = False
    forget: Sequence[str] | None = None
    total: int | None = None


@dataclass(frozen=True)
class GuardState:
    """What the deletion guard knows beyond the look it judges (``syncd.guard`` keeps it).

    ``force``: ``--force-delete``, every deletion goes through. ``held``: deletions of this
    folder are held already (a live batch adds to them instead of deleting); ``held_rels``:
    which paths they are, so that a later batch of the same deletions (the directories of files
    an ``rm -rf`` took first) counts and reports none of them again. ``recent_deletes``:
    deletions made just before, which count toward ``max_delete``.
    """

    force: bool = False
    held: bool = False
    recent_deletes: int = 0
    held_rels: AbstractSet[str] = frozenset()


NOTHING_HELD = GuardState()  # a look that nothing earlier bears on (a pass, without --force)


@dataclass
class Plan:
    frees: list[Op] = field(default_factory=list)  # deletes, then moves: run first
    uploads: list[Op] = field(default_factory=list)  # after every free is done
    forget: list[str] = field(default_factory=list)  # rows the server no longer backs
    hints: dict[str, RemoteEntry] = field(default_factory=dict)  # uploads it may hold already
    unchanged: int = 0
    held_back: list[Problem] = field(default_factory=list)
    held: int = 0  # deletions held back by the guard
    held_new: int = 0  # of those, the ones no earlier batch held already
    held_rels: list[str] = field(default_factory=list)  # the paths whose deletion is held
    deleting: int = 0  # files the deletes remove
    problems: int = 0  # paths the scan could not read (set by the caller)
    remote_checked: bool = False  # planned against the server's listing

    @property
    def deletes(self) -> list[Op]:
        return [op for op in self.frees if op.kind is OpKind.DELETE]

    @property
    def moves(self) -> list[Op]:
        return [op for op in self.frees if op.kind is OpKind.MOVE]

    @property
    def ops(self) -> list[Op]:
        return [*self.frees, *self.uploads]

    @property
    def empty(self) -> bool:
        return not self.frees and not self.uploads and not self.forget

    def describe(self, remote_path: str) -> list[str]:
        """One line per op, for ``--dry-run``."""
        out = []
        for op in self.ops:
            target = f"{remote_path}/{op.rel}" + ("/" if op.tree else "")
            if op.kind is OpKind.MOVE:
                out.append(f"move {target} -> {remote_path}/{op.dest}")
            else:
                out.append(f"{op.kind.value} {target}")
        return out


class Backed(Rows):
    """The rows the server's listing backs: ``rows`` without the ``lost`` ones."""

    def __init__(self, rows: Rows, lost: Sequence[str]) -> None:
        self._rows = rows
        self._lost = set(lost)

    def __getitem__(self, rel: str) -> Row:
        if rel in self._lost:
            raise KeyError(rel)
        return self._rows[rel]

    def get(self, rel: str, default: Row | None = None) -> Row | None:  # type: ignore[override]
        return default if rel in self._lost else self._rows.get(rel, default)

    def __contains__(self, rel: object) -> bool:
        return rel not in self._lost and rel in self._rows

    def __iter__(self) -> Iterator[str]:
        return (rel for rel in self._rows if rel not in self._lost)

    def __len__(self) -> int:
        return len(self._rows) - len(self._lost)

    def under(self, rel_dir: str) -> Iterable[Row]:
        return (row for row in self._rows.under(rel_dir) if row.rel not in self._lost)

    def count_under(self, dirs: Iterable[str]) -> dict[str, int]:
        counts = self._rows.count_under(dirs)
        for rel in self._lost:
            for a in ["", *ancestors(rel)]:
                if a in counts:
                    counts[a] -= 1
        return counts


def _rows_under(roots: Sequence[str], rows: Rows, files: Mapping[str, LocalFile]) -> list[Row]:
    """The rows at or below ``roots`` whose file is not in ``files``. A root that is a file
    with a row can have no rows below it: when every root is one, no row is looked at; else
    only the rows below the roots are read."""
    had = {r: row for r in dict.fromkeys(roots) if (row := rows.get(r)) is not None}
    open_roots = {r for r in roots if not (r in files and r in had)}
    out = [row for r, row in had.items() if r not in files]
    # Each row once: a root below another open root is read with it.
    tops = [r for r in open_roots if not any(a in open_roots for a in ancestors(r))]
    for top in sorted(tops):
        out += [
            row for row in rows.under(top) if row.rel not in files and row.rel not in open_roots
        ]
    return out


def plan(
    looked: Looked,
    rows: Mapping[str, Row],
    rules: Rules,
    *,
    server: Server | None = None,
    guard: GuardState = NOTHING_HELD,
) -> Plan:
    """Compare what was looked at with the rows (and the server's listing, when given), under
    the deletion guard (``guard``: what it knows beyond this look)."""
    p = Plan(remote_checked=server is not None, unchanged=looked.unchanged)
    force, held, held_rels = guard.force, guard.held, guard.held_rels
    whole = looked.whole
    files = looked.files
    # (A listing is compared with every file, or given reduced to the differences' needs.)
    assert server is None or looked.gone is None or server.forget is not None

    # 1. The server's truth: rows it no longer backs are forgotten (their files sent again).
    backed: Rows = as_rows(rows)
    if server is not None:
        if server.forget is not None:
            p.forget = list(server.forget)
        else:
            entries = server.entries
            for rel, row in backed.items():
                e = entries.get(rel)
                if e is None or e.size != row.size or e.sha256 not in (None, row.sha256):
                    p.forget.append(rel)
        if p.forget:
            backed = Backed(backed, p.forget)

    # 2. Local files: unchanged, changed, or new.  (Runs once per file of a whole scan.)
    #     Where the remote keeps times or exec bits, a file whose mtime or exec bit is not
    #     the row's is sent even if its bytes are the same (``Op.meta``): the server then
    #     updates what it keeps (syncd serve keeps no new version for identical bytes).
    new: dict[str, LocalFile] = {}
    get = backed.get
    times, exe = rules.keeps_times, rules.keeps_exec
    for rel, lf in files.items():
        had = get(rel)
        if had is None:
            new[rel] = lf
        elif had.same == lf.same and not (exe and had.executable != lf.executable):
            p.unchanged += 1
        else:
            meta = (times and had.mtime_ns != lf.mtime_ns) or (
                exe and had.executable != lf.executable
            )
            p.uploads.append(Op(OpKind.UPLOAD, rel, local=lf, row=had, meta=meta))

    # 2b. A first contact replaces nothing the server holds under a name the folder also has,
    #     unless it is the same bytes: another size is held, the same size is sent only if
    #     the uploader finds the same sha-256 there (``confirm``: it then adopts it).
    kept: list[str] = []
    if server is not None and server.first_contact and not force:
        for rel in [r for r in new if r in server.entries]:
            if server.entries[rel].size != new[rel].size:
                kept.append(rel)
                del new[rel]

    # 3. What the folder no longer has: backed rows whose file is gone, and (where the
    #    server was listed) files only the server holds.
    gone: list[Row] = []
    extras: list[str] = []
    if rules.delete:
        skip = list(looked.incomplete)

        def keep(rel: str) -> bool:  # not to be deleted although the folder lacks it
            return rules.ignored(rel) or (bool(skip) and within(rel, skip))

        if looked.gone is not None:
            # Only a row still as the look read it: one a live batch changed meanwhile (the
            # file sent again while the walk passed it) is not the look's to delete.
            gone = [r for r in looked.gone if not keep(r.rel) and backed.get(r.rel) == r]
        elif whole:
            if len(files) - len(new) < len(backed):  # some row has no file
                gone = [r for rel, r in backed.items() if rel not in files and not keep(rel)]
        else:
            gone = [r for r in _rows_under(looked.under, backed, files) if not keep(r.rel)]
        if server is not None:  # (a listing goes with a look at the whole folder)
            extras = [
                rel
                for rel in server.entries
                if rel not in files and rel not in backed and not keep(rel)
            ]

    # 4. Renames: a gone row and a new file of the same inode or the same bytes.
    moves: list[Op] = []
    if rules.can_move and gone and new:
        moves, gone = _pair(gone, new, backed, files)
    for op in moves:
        assert op.dest is not None
        new.pop(op.dest, None)
        if op.tree:
            for rel in [r for r in new if r.startswith(op.dest + "/")]:
                del new[rel]

    # 5. The guard.
    if gone or extras or moves or kept:
        _guard(p, looked, rules, server, backed, gone, extras, guard, kept)
        if p.held:
            p.held_rels = [r.rel for r in gone] + extras
            fresh = [rel for rel in p.held_rels if rel not in held_rels]
            p.held_new = len(fresh) + len(kept)
            if held and not fresh and not kept:
                p.held_back = []  # the same deletions, held already: nothing new to say
            elif held and len(fresh) != len(p.held_rels):
                p.held_back = [
                    Problem(
                        ".",
                        f"{len(fresh)} more deletion(s) held back with the earlier ones; "
                        f"release them with {FORCE_HINT}",
                    )
                ]
            gone, extras = [], []
            # A move not confirmed yet may turn into an upload and a delete: not while held.
            for op in [op for op in moves if op.confirm]:
                moves.remove(op)
                assert op.dest is not None and op.local is not None
                new[op.dest] = op.local

    # 6. The order: deletes (a directory at once where the folder lost all of it), moves,
    #    then uploads, the big files first.
    p.deleting = len(gone) + len(extras)
    p.frees += deletes(gone, backed, files)
    p.frees += [Op(OpKind.DELETE, rel) for rel in sorted(extras)]
    p.frees += ordered_moves(moves, p.uploads)
    on_server = server.entries if server is not None and server.first_contact and not force else {}
    p.uploads += [
        Op(OpKind.UPLOAD, rel, local=lf, confirm=rel in on_server) for rel, lf in new.items()
    ]
    p.uploads.sort(key=lambda op: -(op.local.size if op.local else 0))
    if server is not None:
        entries = server.entries
        p.hints = {op.rel: entries[op.rel] for op in p.uploads if op.rel in entries}
    return p


def _guard(
    p: Plan,
    looked: Looked,
    rules: Rules,
    server: Server | None,
    backed: Rows,
    gone: list[Row],
    extras: list[str],
    guard: GuardState,
    kept: list[str],
) -> None:
    """Hold every deletion of the folder (``p.held``, ``p.held_back``) when a rule says so;
    ``kept``: files a first contact does not overwrite (held with the deletions)."""
    if guard.force:
        return
    held, recent = guard.held, guard.recent_deletes
    n = len(gone) + len(extras)
    listed = (
        0 if server is None else server.total if server.total is not None else len(server.entries)
    )
    mirrored = max(len(backed), listed)
    empty = (
        looked.folder_empty
        if looked.folder_empty is not None
        else (looked.whole and not looked.files)
    )
    if server is not None and server.first_contact and (extras or kept):
        p.held = n + len(kept)
        what = [f"{len(extras)} file(s) this folder does not have"] if extras else []
        what += [f"{len(kept)} of other sizes under the folder's names"] if kept else []
        p.held_back.append(
            Problem(
                ".",
                f"first sync to a server directory that already holds {' and '.join(what)}: "
                f"deleting and replacing none of them. To make the server match the folder, "
                f"run {FORCE_HINT}",
            )
        )
    elif n == 0:
        return
    elif held:
        p.held = n
        p.held_back.append(
            Problem(
                ".",
                f"{n} more deletion(s) held back with the earlier ones; release them with "
                f"{FORCE_HINT}",
            )
        )
    elif empty:
        p.held = n
        p.held_back.append(
            Problem(
                ".",
                f"the folder is empty but {mirrored} files are mirrored from it: deleting "
                f"nothing on the server (is a disk unmounted?). If you emptied it on purpose, "
                f"run {FORCE_HINT}",
            )
        )
    elif rules.max_delete is not None and recent + n > rules.max_delete.limit(mirrored):
        p.held = n
        more = f" (and {recent} just before)" if recent else ""
        p.held_back.append(
            Problem(
                ".",
                f"this would delete {n}{more} of {mirrored} mirrored files, more than "
                f"max_delete = {rules.max_delete}: deleting nothing. If that is what you want, "
                f"run {FORCE_HINT}",
            )
        )


def _pair(
    gone: list[Row],
    new: dict[str, LocalFile],
    rows: Rows,
    files: Mapping[str, LocalFile],
) -> tuple[list[Op], list[Row]]:
    """Pair gone rows with new files: (moves, the rows left to delete).

    The same inode, size and mtime is the same file; with the same ctime too it was not even
    touched (it moved with its directory) and the move needs no check. Otherwise -- a renamed
    file (a rename changes its ctime), or a copy with the same size and mtime -- the move is a
    candidate that the uploader confirms by sha-256 before it is made.
    """
    by_inode = {row.inode: row for row in gone if row.inode}
    by_sig: dict[tuple[int, int], list[Row]] = {}
    for g in gone:
        by_sig.setdefault((g.size, g.mtime_ns), []).append(g)
    paired: dict[str, tuple[Row, LocalFile, bool]] = {}  # by source: (row, file, confirmed)
    for rel in sorted(new):
        lf = new[rel]
        row = by_inode.get(lf.inode) if lf.inode else None
        if (
            row is not None
            and row.rel not in paired
            and row.size == lf.size
            and row.mtime_ns == lf.mtime_ns
        ):
            paired[row.rel] = (row, lf, row.ctime_ns == lf.ctime_ns)
            continue
        for cand in by_sig.get((lf.size, lf.mtime_ns), ()):
            if cand.rel not in paired:
                paired[cand.rel] = (cand, lf, False)
                break
    if not paired:
        return [], gone
    moved = set(paired)
    moves = dir_moves(paired, rows, files)
    for row, lf, confirmed in paired.values():
        moves.append(
            Op(OpKind.MOVE, row.rel, local=lf, row=row, dest=lf.rel, confirm=not confirmed)
        )
    return moves, [row for row in gone if row.rel not in moved]
