"""Walk a folder with os.scandir, apply the ignore rules, and report what cannot be mirrored.

Only regular files are mirrored. Symlinks, FIFOs, sockets and devices are skipped with one
warning each and never opened (reading a FIFO would hang). An unreadable file or directory is a
``Problem``: the walk goes on, and nothing under it is ever deleted on the remote because of it.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from syncd.config import DEFAULT_IGNORES, FolderConfig
from syncd.types import LocalFile, Problem

if TYPE_CHECKING:
    import pathspec

log = logging.getLogger("syncd.scanner")

IGNORE_FILE = ".syncdignore"
RESERVED_PREFIX = ".~syncd-"


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


_ANY_DIR = "^(?:.+/)?"
_TAIL_FILE_OR_DIR = "(?:(?P<ps_d>/)|$)"
_TAIL_DIR = "(?P<ps_d>/)"


def _prefilters(
    spec: pathspec.GitIgnoreSpec,
) -> tuple[re.Pattern[str] | None, re.Pattern[str] | None]:
    """Two regexes that match whenever some *including* pattern could match a file whose
    parents are not ignored: one for patterns on the name alone (``*.swp``), one for the rest
    (anchored or with a '/'). A miss on both means "not ignored" for sure; a hit is checked
    with the full gitignore rules (order, negation)."""
    names: list[str] = []
    paths: list[str] = []
    for p in spec.patterns:
        regex = getattr(p, "regex", None)
        if not p.include or regex is None:
            continue
        src: str = regex.pattern
        body = src[len(_ANY_DIR) :] if src.startswith(_ANY_DIR) else None
        if body is not None and body.endswith(_TAIL_DIR) and "/" not in body[: -len(_TAIL_DIR)]:
            continue  # a directory-only name pattern ("build/"): the walk prunes those
        if body is not None and body.endswith(_TAIL_FILE_OR_DIR):
            stem = body[: -len(_TAIL_FILE_OR_DIR)]
            if "/" not in stem:
                names.append(stem)
                continue
        paths.append(re.sub(r"\(\?P<\w+>", "(?:", src))
    name_re = re.compile("(?:" + "|".join(names) + r")\Z") if names else None
    path_re = re.compile("|".join(f"(?:{s})" for s in paths)) if paths else None
    return name_re, path_re


def _name_globs(lines: list[str]) -> tuple[list[str], list[str]] | None:
    """The patterns when each is a plain name glob -- ``*.swp``, ``4913``, ``.git/``: no '/'
    but a trailing one, no negation, escape, character class or ``**`` -- as (for files and
    directories, for directories only). None when some pattern is more than that: then the
    gitignore rules proper (pathspec) decide.

    A plain name glob ignores a path when it matches one of its components (a trailing '/':
    only a component that is a directory), which is what gitignore, and pathspec, make of it.
    """
    names: list[str] = []
    dirs: list[str] = []
    for line in lines:
        if not line or line.startswith("#"):
            continue  # blank lines and comments
        dir_only = line.endswith("/")
        glob = line[:-1] if dir_only else line
        if (
            not glob
            or glob != glob.strip()
            or glob.startswith("!")
            or glob in ("*", ".", "..")
            or "**" in glob
            or any(c in glob for c in "/\\[]")
        ):
            return None
        (dirs if dir_only else names).append(glob)
    return names, dirs


class _Names:
    """Does a name match one of some plain name globs? Two calls into C per name: one for the
    ``*suffix`` globs (most of the defaults), one regex for the rest, which starts with the
    literal ones (``4913``, ``.#*``) and so rejects most names at their first character."""

    def __init__(self, globs: list[str]) -> None:
        suffixes: list[str] = []
        heads: list[str] = []
        for g in globs:
            if g.startswith("*") and "*" not in g[1:] and "?" not in g:
                suffixes.append(g[1:])
                continue
            regex = "".join(
                "[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in g
            )
            heads.append(regex[: -len("[^/]*")] if g.endswith("*") else regex + r"\Z")
        heads.sort(key=lambda h: h.startswith("[^/]"))  # the literal starts first
        self.suffixes = tuple(suffixes)
        self.head = re.compile("|".join(heads)).match if heads else None

    def __call__(self, name: str) -> bool:
        return name.endswith(self.suffixes) or (
            self.head is not None and self.head(name) is not None
        )


class Ignorer:
    """The folder's ignore rules: built-in defaults, the config's list, and ``.syncdignore``.

    When every pattern is a plain name glob (the defaults, ``.git/``, ``*.log``), the names
    alone decide, and pathspec is not even imported (it costs more start-up time than a no-op
    ``syncd sync`` of 10,000 files spends on everything else). Otherwise pathspec's gitignore
    rules decide, behind a prefilter for the files that no pattern can match.
    """

    def __init__(self, folder: FolderConfig) -> None:
        self.folder = folder
        self.problems: list[Problem] = []
        lines: list[str] = list(DEFAULT_IGNORES) if folder.use_default_ignores else []
        lines += folder.ignore
        try:
            text = (folder.path / IGNORE_FILE).read_text(encoding="utf-8", errors="replace")
            lines += text.splitlines()
        except FileNotFoundError:
            pass
        except OSError as e:
            self.problems.append(Problem(IGNORE_FILE, f"cannot read: {e.strerror}"))
        self.spec: pathspec.GitIgnoreSpec | None = None
        self._file_names: _Names | None = None  # names a file (or a directory) may not have
        self._dir_names: _Names | None = None  # names a directory may not have
        self._name_re: re.Pattern[str] | None = None
        self._path_re: re.Pattern[str] | None = None
        #: For a file met in the walk, when its name alone decides: ``file_ignored(rel, name)``
        #: is ``name_ignored(name)``.
        self.name_ignored: Callable[[str], bool] | None = None
        globs = _name_globs(lines)
        if globs is not None:
            names, dirs = globs
            self._file_names = self.name_ignored = _Names(names)
            self._dir_names = _Names(names + dirs)
        else:
            import pathspec

            self.spec = pathspec.GitIgnoreSpec.from_lines(lines)
            self._name_re, self._path_re = _prefilters(self.spec)

    def ignored(self, rel: str, is_dir: bool = False) -> bool:
        if self.spec is not None:
            return self.spec.match_file(rel + "/" if is_dir else rel)
        assert self._dir_names is not None and self._file_names is not None
        *parents, name = rel.split("/")
        if any(self._dir_names(p) for p in parents):
            return True
        return (self._dir_names if is_dir else self._file_names)(name)

    def file_ignored(self, rel: str, name: str) -> bool:
        """``ignored(rel)`` for a file met in the walk, whose parent directories are known not
        to be ignored (the walk prunes them). Most files match no pattern at all: one regex
        on the name and one on the path rule that out before the full check."""
        if self.spec is None:
            assert self._file_names is not None
            return self._file_names(name)
        if (self._name_re is not None and self._name_re.match(name)) or (
            self._path_re is not None and self._path_re.match(rel)
        ):
            return self.spec.match_file(rel)
        return False


@dataclass
class ScanResult:
    files: dict[str, LocalFile] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    # Directories (relative, '' for the root) that could not be read completely: the planner
    # must not delete anything under them.
    incomplete: list[str] = field(default_factory=list)
    skipped: int = 0


class Scanner:
    """Scans one folder. Keeps the set of paths it has warned about, to warn once each."""

    def __init__(self, folder: FolderConfig) -> None:
        self.folder = folder
        self._prefix = os.path.join(str(folder.path), "")  # "root/": stat() joins by hand
        self._warned: set[str] = set()
        self.ignorer = Ignorer(folder)
        self.case_insensitive = _case_insensitive(folder.path)

    def reload_ignores(self) -> None:
        self.ignorer = Ignorer(self.folder)

    def _skip(self, result: ScanResult, rel: str, reason: str) -> None:
        result.skipped += 1
        self._warn(rel, reason)

    def _warn(self, rel: str, reason: str) -> None:
        if rel not in self._warned:
            self._warned.add(rel)
            log.warning("skipped %s/%s: %s", self.folder.remote_path, rel, reason)

    def warn_special(self, rel: str, mode: int) -> None:
        """Warn (once per path) that a symlink, FIFO, socket or device is not mirrored."""
        if stat.S_ISLNK(mode):
            self._warn(rel, "symbolic link (not followed)")
        elif stat.S_ISFIFO(mode):
            self._warn(rel, "named pipe (FIFO)")
        elif stat.S_ISSOCK(mode):
            self._warn(rel, "socket")
        else:
            self._warn(rel, "device or special file")

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
        self.check_root()
        self.reload_ignores()
        result = ScanResult(problems=list(self.ignorer.problems))
        # The loop below runs once per file (100,000 times for a large folder): what it uses
        # is looked up once, and the common case -- a regular file -- is tested first.
        files = result.files
        file_ignored = self.ignorer.file_ignored
        name_ignored = self.ignorer.name_ignored
        is_reg, is_dir = stat.S_ISREG, stat.S_ISDIR
        root = str(self.folder.path)
        stack = [under]
        while stack:
            rel_dir = stack.pop()
            abs_dir = os.path.join(root, rel_dir) if rel_dir else root
            prefix = rel_dir + "/" if rel_dir else ""
            try:
                with os.scandir(abs_dir) as it:
                    entries = list(it)
            except FileNotFoundError:
                if rel_dir == under and under:
                    continue  # the directory went away: nothing to scan
                result.incomplete.append(rel_dir)
                continue
            except OSError as e:
                result.incomplete.append(rel_dir)
                result.problems.append(
                    Problem(rel_dir or ".", f"cannot list directory: {e.strerror}")
                )
                log.warning("cannot list %s: %s", abs_dir, e.strerror)
                continue
            for entry in entries:
                name = entry.name
                rel = prefix + name
                if not name.isascii() and not _utf8(name):
                    self._skip(result, rel, "name is not valid UTF-8")
                    continue
                if name.startswith(RESERVED_PREFIX):
                    self._skip(result, rel, f"names starting with {RESERVED_PREFIX!r} are reserved")
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
                        files[rel] = LocalFile(
                            rel, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino
                        )
                elif is_dir(mode):
                    if not self.ignorer.ignored(rel, is_dir=True):
                        stack.append(rel)
                elif not self.ignorer.ignored(rel):
                    result.skipped += 1
                    self.warn_special(rel, mode)
        return result

    def stat(self, rel: str) -> LocalFile | None:
        """The file's current state, or None if it is gone or no longer a regular file."""
        try:
            st = os.lstat(self._prefix + rel)  # no pathlib: this runs twice per upload
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return LocalFile(rel, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
