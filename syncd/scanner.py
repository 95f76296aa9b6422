"""Walk a folder with os.scandir, apply the ignore rules, and report what cannot be mirrored.

Only regular files are mirrored. Symlinks, FIFOs, sockets and devices are skipped and never
opened (reading a FIFO would hang), as are names that are not UTF-8, reserved names and paths
too long for the system to address. Each skip is logged at DEBUG; a scan ends with one WARNING
that sums them up (naming them when they are few), and a later scan by the same scanner (the
daemon's rescans) warns only about paths it has not warned about before. An unreadable file or
directory is a ``Problem``: the walk goes on, and nothing under it is ever deleted on the remote
because of it.

What is ignored is ``syncd.ignore``'s to say (``Ignorer``); the scanner warns once about each
ignore line that cannot be used.
"""

from __future__ import annotations

import logging
import os
import stat
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from syncd.config import FolderConfig
from syncd.ignore import BadLine, Ignorer
from syncd.types import RESERVED_PREFIX, LocalFile, Problem, shown

log = logging.getLogger("syncd.scanner")

FEW = 5  # up to this many skips are named in the scan's one warning; more are counted
LIST_HINT = '-v or [log] level = "debug" lists them'

#: Why a path is skipped: (one, many) for the scan's summary.
KINDS: dict[str, tuple[str, str]] = {
    "symlink": ("symbolic link (not followed)", "symbolic links (not followed)"),
    "fifo": ("named pipe (FIFO)", "named pipes (FIFO)"),
    "socket": ("socket", "sockets"),
    "device": ("device or special file", "devices or special files"),
    "utf8": ("name is not valid UTF-8", "names not valid UTF-8"),
    "reserved": (
        f"names starting with {RESERVED_PREFIX!r} are reserved",
        f"reserved names ({RESERVED_PREFIX}*)",
    ),
    "long": ("path too long to address", "paths too long to address"),
}


def _brief(rel: str) -> str:
    """``rel`` escaped for a log line, and cut in the middle when very long (a deep path)."""
    text = shown(rel)
    return text if len(text) <= 240 else f"{text[:80]}...{text[-150:]}"


def _utf8(name: str) -> bool:
    """Can the name be sent as UTF-8 (not undecodable bytes, smuggled in as surrogates)?"""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class FolderUnavailable(OSError):
    """The folder itself is missing, not a directory, or unreadable: nothing may be deleted."""


def _case_insensitive(path: Path) -> bool:
    """Does the filesystem holding ``path`` ignore case (macOS, Windows by default)?"""
    # Probe the nearest component that has letters (the folder itself, else a parent).
    for p in (path, *path.parents):
        if p.name.swapcase() != p.name:
            try:
                return os.path.samefile(p, p.parent / p.name.swapcase())
            except OSError:
                return False
    return False


@dataclass
class ScanResult:
    files: dict[str, LocalFile] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    # Directories (relative, '' for the root) that could not be read completely: the planner
    # must not delete anything under them.
    incomplete: list[str] = field(default_factory=list)
    skipped: int = 0
    #: What was skipped: path -> (kind, a key of KINDS; the reason, in words).
    skips: dict[str, tuple[str, str]] = field(default_factory=dict)


def _first(pair: tuple[str, object]) -> str:
    return pair[0]


def _special(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device"


def _path_max(path: Path) -> int:
    try:
        return os.pathconf(path, "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):
        return 4096  # Linux's; Windows' long paths are longer


class Scanner:
    """Scans one folder. Remembers what it has warned about (skipped paths, bad ignore lines),
    so that each is warned about once, however often the folder is scanned."""

    def __init__(self, folder: FolderConfig) -> None:
        self.folder = folder
        self._prefix = os.path.join(str(folder.path), "")  # "root/": stat() joins by hand
        self._announced: set[str] = set()  # skipped paths a warning has named or counted
        self._bad_warned: set[BadLine] = set()
        # A path of more bytes than this cannot be passed to the system (ENAMETOOLONG).
        self.longest = _path_max(folder.path) - 1
        self.reload_ignores()
        self.case_insensitive = _case_insensitive(folder.path)

    def reload_ignores(self) -> None:
        """Read the ignore rules again; warn once about each line that cannot be used."""
        self.ignorer = Ignorer(self.folder)
        for bad in self.ignorer.bad:
            if bad not in self._bad_warned:
                self._bad_warned.add(bad)
                log.warning("%s", bad)

    def _skip(self, result: ScanResult, rel: str, kind: str, reason: str = "") -> None:
        reason = reason or KINDS[kind][0]
        result.skipped += 1
        result.skips[rel] = (kind, reason)
        log.debug("skipped %s/%s: %s", shown(self.folder.remote_path), _brief(rel), reason)

    def warn_special(self, rel: str, mode: int) -> None:
        """Warn (once per path) that a symlink, FIFO, socket or device is not mirrored: for a
        path met outside a scan (a live event)."""
        self._warn_once(rel, KINDS[_special(mode)][0])

    def _warn_once(self, rel: str, reason: str) -> None:
        if rel in self._announced:
            log.debug("skipped %s/%s: %s", shown(self.folder.remote_path), _brief(rel), reason)
            return
        self._announced.add(rel)
        log.warning("skipped %s/%s: %s", shown(self.folder.remote_path), _brief(rel), reason)

    def look(self, rel: str, st: os.stat_result) -> LocalFile | None:
        """A path met outside a scan (a live event, with its ``lstat``), judged as a scan
        judges it: the regular file to mirror, or None -- ignored, or skipped with a warning
        once per path (a special file, a name that is not UTF-8 or is reserved, a path too
        long to address)."""
        reason = ""
        if not _utf8(rel):
            reason = KINDS["utf8"][0]
        elif any(part.startswith(RESERVED_PREFIX) for part in rel.split("/")):
            reason = KINDS["reserved"][0]
        elif (size := len(os.fsencode(self._prefix + rel))) > self.longest:
            reason = f"path too long to address ({size} bytes; at most {self.longest})"
        elif self.ignorer.ignored(rel, is_dir=stat.S_ISDIR(st.st_mode)):
            return None
        elif not stat.S_ISREG(st.st_mode):
            if not stat.S_ISDIR(st.st_mode):
                self.warn_special(rel, st.st_mode)
            return None
        else:
            return LocalFile.of(rel, st)
        self._warn_once(rel, reason)
        return None

    def summarise(self, result: ScanResult, under: str = "") -> None:
        """One warning for the paths this scan skipped that no warning has named yet."""
        found = result.skips
        if under:
            inside = under + "/"
            self._announced = {
                p for p in self._announced if p in found or not (p == under or p.startswith(inside))
            }
        else:
            self._announced &= found.keys()  # skipped no more: a new skip there is news again
        new = {rel: why for rel, why in found.items() if rel not in self._announced}
        if not new:
            return
        more = " more" if self._announced else ""
        self._announced.update(new)
        where = shown(self.folder.remote_path)
        if len(new) == 1:
            ((rel, (_kind, reason)),) = new.items()
            log.warning("skipped %s/%s: %s", where, _brief(rel), reason)
        elif len(new) <= FEW:
            listed = "; ".join(f"{_brief(rel)}: {why}" for rel, (_k, why) in sorted(new.items()))
            log.warning("skipped %d%s paths in %s: %s", len(new), more, where, listed)
        else:
            counts = Counter(kind for kind, _why in new.values())
            parts = ", ".join(
                f"{n} {KINDS[kind][0] if n == 1 else KINDS[kind][1]}"
                for kind, n in sorted(counts.items(), key=lambda kn: list(KINDS).index(kn[0]))
            )
            log.warning("skipped %d%s paths in %s: %s; %s", len(new), more, where, parts, LIST_HINT)

    def check_root(self) -> None:
        """Raise FolderUnavailable unless the folder is a readable directory."""
        root = self.folder.path
        try:
            st = os.stat(root)
        except FileNotFoundError:
            raise FolderUnavailable(f"{root}: folder does not exist (unmounted?)") from None
        except OSError as e:
            raise FolderUnavailable(f"{root}: {e.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise FolderUnavailable(f"{root}: not a directory")
        if not os.access(root, os.R_OK | os.X_OK):
            raise FolderUnavailable(f"{root}: permission denied")

    def scan(self, under: str = "") -> ScanResult:
        """Walk the folder (or the subdirectory ``under``) and return every mirrorable file."""
        result = ScanResult()
        result.files = {lf.rel: lf for lf in self.walk(result, under)}
        return result

    def walk(
        self,
        result: ScanResult,
        under: str = "",
        *,
        part: tuple[str, str | None] = ("", None),
        summarise: bool = True,
    ) -> Iterator[LocalFile]:
        """Every mirrorable file of the folder (or of ``under``), in path order: the order of
        Python's ``str`` comparison, which is SQLite's for UTF-8 text, so that the walk and the
        manifest's rows (``Manifest.sorted_rows``) can be compared as two sorted streams,
        neither held in memory. ``result`` gets the problems, incomplete directories and
        skips (not the files). Raises FolderUnavailable before the first file.

        ``part``: only the folder's entries whose sort key (a directory's is "name/") is in
        ``[low, high)`` (``high`` None: no end), so that two processes can walk one folder
        in two parts (``syncd.look``). ``summarise``: log the scan's one warning about skips
        (a walk in parts leaves it to whoever puts the parts together: ``summarise``)."""
        self.check_root()
        self.reload_ignores()
        low, high = part
        if not low:  # (the first part says what is wrong with the ignore rules, once)
            result.problems += self.ignorer.problems
        # The loop below runs once per file (a million times for a large folder): what it uses
        # is looked up once, and the common case -- a regular file -- is tested first.
        file_ignored = self.ignorer.file_ignored
        name_ignored = self.ignorer.name_ignored
        is_reg, is_dir = stat.S_ISREG, stat.S_ISDIR
        root = str(self.folder.path)
        longest = self.longest
        # A path of at most this many characters is short enough whatever they are (a
        # character is at most 4 bytes in UTF-8); a longer one is measured in bytes.
        short = longest // 4
        # Depth first, each directory's entries sorted with a directory's name as "name/": so
        # "a.txt" < "a/b" < "a0", as the paths compare.
        listing = self._listing(result, under, under)
        if listing is not None and (low or high is not None):
            listing = [e for e in listing if low <= e[0] and (high is None or e[0] < high)]
        stack = [(under, iter(listing))] if listing is not None else []
        while stack:
            rel_dir, entries = stack[-1]
            abs_dir = os.path.join(root, rel_dir) if rel_dir else root
            prefix = rel_dir + "/" if rel_dir else ""
            dir_len = len(abs_dir) + 1
            for _key, entry in entries:
                name = entry.name
                rel = prefix + name
                if not name.isascii() and not _utf8(name):
                    self._skip(result, rel, "utf8")
                    continue
                if name.startswith(RESERVED_PREFIX):
                    self._skip(result, rel, "reserved")
                    continue
                if dir_len + len(name) > short:
                    size = len(os.fsencode(abs_dir)) + 1 + len(os.fsencode(name))
                    if size > longest:
                        self._too_long(result, entry, rel, size)
                        continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # vanished between listing and stat
                except OSError as e:
                    result.problems.append(Problem(rel, f"cannot stat: {e.strerror}"))
                    result.incomplete.append(rel)
                    continue
                mode = st.st_mode
                if is_reg(mode):
                    if not (
                        file_ignored(rel, name) if name_ignored is None else name_ignored(name)
                    ):
                        yield LocalFile(
                            rel,
                            st.st_size,
                            st.st_mtime_ns,
                            st.st_ctime_ns,
                            st.st_ino,
                            bool(mode & 0o100),
                        )
                elif is_dir(mode):
                    if not self.ignorer.ignored(rel, is_dir=True):
                        below = self._listing(result, rel, under)
                        if below is not None:
                            stack.append((rel, iter(below)))
                            break  # its files come now, the rest of this directory after
                elif not self.ignorer.ignored(rel):
                    self._skip(result, rel, _special(mode))
            else:
                stack.pop()
        if summarise:
            self.summarise(result, under)

    def _listing(
        self, result: ScanResult, rel_dir: str, under: str
    ) -> list[tuple[str, os.DirEntry[str]]] | None:
        """The entries of directory ``rel_dir``, sorted as their paths compare; None where it
        cannot be listed (then it is incomplete, with a Problem, unless it just went away)."""
        root = str(self.folder.path)
        abs_dir = os.path.join(root, rel_dir) if rel_dir else root
        try:
            with os.scandir(abs_dir) as it:
                entries = [
                    (e.name + "/" if e.is_dir(follow_symlinks=False) else e.name, e) for e in it
                ]
        except FileNotFoundError:
            if not (rel_dir == under and under):  # (the directory scanned went away: nothing)
                result.incomplete.append(rel_dir)
            return None
        except OSError as e:
            result.incomplete.append(rel_dir)
            result.problems.append(Problem(rel_dir or ".", f"cannot list directory: {e.strerror}"))
            log.warning("cannot list %s: %s", shown(abs_dir), e.strerror)
            return None
        entries.sort(key=_first)
        return entries

    def _too_long(self, result: ScanResult, entry: os.DirEntry[str], rel: str, size: int) -> None:
        """A path the system cannot be given (it cannot even be stat'ed): skipped, unless the
        rules ignore it, and nothing below it is deleted on the remote because of it."""
        try:
            is_dir = entry.is_dir(follow_symlinks=False)  # from the listing: no stat needed
        except OSError:
            is_dir = False
        if self.ignorer.ignored(rel, is_dir=is_dir):
            return
        result.incomplete.append(rel)
        self._skip(
            result, rel, "long", f"path too long to address ({size} bytes; at most {self.longest})"
        )

    def stat(self, rel: str) -> LocalFile | None:
        """The file's current state, or None if it is gone or no longer a regular file."""
        try:
            st = os.lstat(self._prefix + rel)  # no pathlib: this runs twice per upload
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return LocalFile.of(rel, st)
