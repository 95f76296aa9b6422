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
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

from syncd.config import DEFAULT_IGNORES, FolderConfig
from syncd.types import LocalFile, Problem

log = logging.getLogger("syncd.scanner")

IGNORE_FILE = ".syncdignore"
RESERVED_PREFIX = ".~syncd-"


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


class Ignorer:
    """The folder's ignore rules: built-in defaults, the config's list, and ``.syncdignore``."""

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
        self.spec = pathspec.GitIgnoreSpec.from_lines(lines)
        self._name_re, self._path_re = _prefilters(self.spec)

    def ignored(self, rel: str, is_dir: bool = False) -> bool:
        return self.spec.match_file(rel + "/" if is_dir else rel)

    def file_ignored(self, rel: str, name: str) -> bool:
        """``ignored(rel)`` for a file met in the walk, whose parent directories are known not
        to be ignored (the walk prunes them). Most files match no pattern at all: one regex
        on the name and one on the path rule that out before the full check."""
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
        root = str(self.folder.path)
        stack = [under]
        while stack:
            rel_dir = stack.pop()
            abs_dir = os.path.join(root, rel_dir) if rel_dir else root
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
                rel = f"{rel_dir}/{name}" if rel_dir else name
                try:
                    name.encode("utf-8")
                except UnicodeEncodeError:
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
                if stat.S_ISDIR(mode):
                    if not self.ignorer.ignored(rel, is_dir=True):
                        stack.append(rel)
                elif stat.S_ISREG(mode):
                    if not self.ignorer.file_ignored(rel, name):
                        result.files[rel] = LocalFile(rel, st.st_size, st.st_mtime_ns)
                elif not self.ignorer.ignored(rel):
                    result.skipped += 1
                    self.warn_special(rel, mode)
        return result

    def stat(self, rel: str) -> LocalFile | None:
        """The file's current state, or None if it is gone or no longer a regular file."""
        try:
            st = os.lstat(Path(self.folder.path, rel))
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return LocalFile(rel, st.st_size, st.st_mtime_ns)
