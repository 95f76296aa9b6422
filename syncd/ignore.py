"""The ignore rules of a folder: built-in defaults, the config's ``ignore = [...]`` and the
folder's ``.syncdignore``, in gitignore syntax (pathspec), each line compiled once and rewritten
to take linear time on any name.

An ignore line that cannot be used (a lone backslash, a bad character range, a NUL) is left out
with one warning naming the file, the line and why; the other lines apply. The config refuses
such a line in ``ignore = [...]`` (``ignore_problem``).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import stat
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from syncd.types import Problem, shown

if TYPE_CHECKING:
    import pathspec

log = logging.getLogger("syncd.ignore")

# Ignored by default in every folder unless `use_default_ignores = false`: editors' swap and
# backup files, the temp files of write-then-rename saves, and partial downloads.
DEFAULT_IGNORES: tuple[str, ...] = (
    "*.swp",
    "*.swo",
    "*.swx",
    "*~",
    ".#*",
    "#*#",
    "4913",
    "*.tmp",
    "*.part",
    "*.crdownload",
    ".DS_Store",
    "Thumbs.db",
    "*___jb_tmp___",
    "*___jb_old___",
    ".~lock.*#",
)

IGNORE_FILE = ".syncdignore"
MAX_IGNORE_FILE = 1 << 20  # bytes: a larger .syncdignore is not an ignore list
MAX_IGNORE_LINE = 16384  # characters: no path is longer than PATH_MAX (4096 bytes)

# pathspec's regexes do not let '.' match a newline, and their '$' matches before a final one:
# a name with a newline is matched with it swapped for a noncharacter, in the lines as well.
_NL, _NL_SUB = "\n", "\uffff"


def _nl(text: str) -> str:
    return text.replace(_NL, _NL_SUB) if _NL in text else text


class Folder(Protocol):
    """What the rules are read from (a ``config.FolderConfig``)."""

    @property
    def path(self) -> Path: ...
    @property
    def ignore(self) -> tuple[str, ...]: ...
    @property
    def use_default_ignores(self) -> bool: ...


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


def _plain_glob(line: str) -> bool:
    """Is ``line`` a plain name glob -- ``*.swp``, ``4913``, ``.git/``: no '/' but a trailing
    one, no negation, escape, character class or ``**``?"""
    glob = line[:-1] if line.endswith("/") else line
    return not (
        not glob
        or glob != glob.strip()
        or glob.startswith("!")
        or glob in ("*", ".", "..")
        or "**" in glob
        or any(c in glob for c in "/\\[]")
    )


def _name_globs(lines: list[str]) -> tuple[list[str], list[str]] | None:
    """The patterns when each is a plain name glob, as (for files and directories, for
    directories only). None when some pattern is more than that: then the gitignore rules
    proper (pathspec) decide.

    A plain name glob ignores a path when it matches one of its components (a trailing '/':
    only a component that is a directory), which is what gitignore, and pathspec, make of it.
    """
    names: list[str] = []
    dirs: list[str] = []
    for line in lines:
        if not line or line.startswith("#"):
            continue  # blank lines and comments
        if not _plain_glob(line):
            return None
        if line.endswith("/"):
            dirs.append(line[:-1])
        else:
            names.append(line)
    return names, dirs


def _glob_regex(glob: str) -> str:
    """A regex (for ``re.match``) of a plain name glob that takes linear time on any name: the
    naive translation (``*a*b`` -> ``[^/]*a[^/]*b``), rewritten by ``_linear``. (A trailing
    star's ``[^/]*\\Z`` is any rest: a name has no '/'.)"""
    pieces = ("".join("[^/]" if c == "?" else re.escape(c) for c in p) for p in glob.split("*"))
    return _linear("[^/]*".join(pieces) + r"\Z")


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
            heads.append(_glob_regex(g))
        heads.sort(key=lambda h: h.startswith(("[^/]", "(?>")))  # the literal starts first
        self.suffixes = tuple(suffixes)
        self.head = re.compile("|".join(heads)).match if heads else None

    def __call__(self, name: str) -> bool:
        return name.endswith(self.suffixes) or (
            self.head is not None and self.head(name) is not None
        )


# warnings.catch_warnings changes process-wide state: one thread at a time (scans of several
# folders run in worker threads at once).
_COMPILE_LOCK = threading.Lock()


# The pieces of pathspec's regexes (pathspec >= 0.12): its fixed fragments first, then
# "*" within a name, a character class, an escaped character, any other single character.
_REGEX_TOKEN = re.compile(
    r"\^\(\?:\.\+/\)\?|\(\?:\(\?P<ps_d>/\)\|\$\)|\(\?P<ps_d>/\)|/\.\*|\.\*|"
    r"(?P<star>\[\^/\]\*)|(?P<one>\[(?:\\.|[^\]\\])+\]|\\.|[^/^$()|.*+?{}\[\]\\])|.",
    re.DOTALL,
)


def _linear(src: str) -> str:
    """A regex of globs (pathspec's for one line, or ``_glob_regex``'s), rewritten to take
    linear time in each name.

    The translation of ``*`` within a name (``[^/]*a[^/]*a[^/]*b``) backtracks in polynomial
    time of the degree of the number of stars: ``docs/*a*a*a*a*a*a*a*b`` took hours on a name
    of 100 characters, 8 stars on a plain name seconds on 60. Between two stars of a name, each
    piece of fixed length is taken at its leftmost place, atomically (that is never wrong: it
    leaves the most room for the rest). The piece before a name's end stays as it was. A regex
    this does not recognise piece by piece is returned unchanged."""
    tokens = [(m.group(), m.lastgroup) for m in _REGEX_TOKEN.finditer(src)]
    if "".join(t for t, _ in tokens) != src:
        return src
    out: list[str] = []
    i = 0
    while i < len(tokens):
        text, kind = tokens[i]
        if kind != "star":
            out.append(text)
            i += 1
            continue
        j = i + 1
        while j < len(tokens) and tokens[j][1] == "one":
            j += 1
        piece = "".join(t for t, _ in tokens[i + 1 : j])
        if j < len(tokens) and tokens[j][1] == "star":
            if piece:  # another star follows in the same name: leftmost, atomic
                out.append(f"(?>[^/]*?{piece})")
        else:
            out.append(f"[^/]*{piece}")
        i = j
    return "".join(out)


@functools.lru_cache(maxsize=4096)
def _compile(line: str) -> tuple[Any, str | None]:
    """pathspec's pattern for one gitignore line, or (None, why it cannot be used).

    Remembered per line: ``re`` warns about a pattern only when it compiles it, not when it
    finds it in its cache, and the verdict must not change at the next reload."""
    import pathspec

    with _COMPILE_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        re.purge()  # so that this line's regex is compiled (and warned about) now
        try:
            spec = pathspec.GitIgnoreSpec.from_lines([_nl(line)])
        except re.error as e:
            return None, f"not a valid pattern: {e.msg}"
        except ValueError:  # pathspec's GitIgnorePatternError
            bare = line.rstrip(" ")
            if (len(bare) - len(bare.rstrip("\\"))) % 2:
                return None, "ends in a backslash that escapes nothing"
            if line.strip() == "!":
                return None, "a lone '!' negates nothing"
            return None, "not a valid gitignore pattern"
        except Exception as e:  # pathspec is a dependency: whatever it raises is this line's
            return None, f"not a valid gitignore pattern ({type(e).__name__}: {e})"
    if caught:
        message = str(caught[0].message)
        if "nested set" in message:
            message += "; POSIX classes such as [:alpha:] are not supported"
        return None, f"not supported ({message})"
    if not spec.patterns:
        return None, None
    pattern = spec.patterns[0]
    regex = getattr(pattern, "regex", None)
    if regex is not None:
        pattern.regex = re.compile(_linear(regex.pattern), regex.flags)
    return pattern, None


def ignore_problem(line: str) -> str | None:
    """Why the gitignore line ``line`` cannot be used, or None if it can (a blank line or a
    comment can: it does nothing). Plain name globs are judged without importing pathspec."""
    if not line or line.startswith("#"):
        return None
    if "\0" in line:
        return "contains a NUL character, which no name can"
    if len(line) > MAX_IGNORE_LINE:
        return f"longer than {MAX_IGNORE_LINE} characters"
    if _plain_glob(line):
        return None
    return _compile(line)[1]


@dataclass(frozen=True)
class BadLine:
    """An ignore line left out: where it is (``line`` counts from 1), the text and why."""

    source: str
    line: int
    text: str
    reason: str

    def __str__(self) -> str:
        text = repr(self.text if len(self.text) <= 200 else self.text[:200] + "...")
        return (
            f"{shown(self.source)} line {self.line}: {text}: {shown(self.reason)}; "
            "the line is not used"
        )


def _read_ignore_file(path: Path) -> tuple[str | None, str | None]:
    """The text of an ignore file, or (None, why it is not used). None, None: there is none.
    Opened without blocking (a FIFO would hang a read) and read only if it is a regular file
    of a sensible size."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, None
    except OSError as e:
        return None, f"cannot read: {e.strerror}"
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, "not a regular file; not used"
        if st.st_size > MAX_IGNORE_FILE:
            return None, f"larger than {MAX_IGNORE_FILE >> 20} MiB; not used"
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_IGNORE_FILE and (chunk := os.read(fd, MAX_IGNORE_FILE + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_IGNORE_FILE:
            return None, f"larger than {MAX_IGNORE_FILE >> 20} MiB; not used"
    except OSError as e:
        return None, f"cannot read: {e.strerror}"
    finally:
        os.close(fd)
    text = b"".join(chunks).decode("utf-8", errors="replace")
    return text.removeprefix("\ufeff"), None


class Ignorer:
    """The folder's ignore rules: built-in defaults, the config's list, and ``.syncdignore``.

    When every pattern is a plain name glob (the defaults, ``.git/``, ``*.log``), the names
    alone decide, and pathspec is not even imported (it costs more start-up time than a no-op
    ``syncd sync`` of 10,000 files spends on everything else). Otherwise pathspec's gitignore
    rules decide, behind a prefilter for the files that no pattern can match.

    Lines that cannot be used are left out and listed in ``bad``; nothing here raises.
    """

    def __init__(self, folder: Folder) -> None:
        self.folder = folder
        self.problems: list[Problem] = []
        self.bad: list[BadLine] = []
        lines: list[str] = list(DEFAULT_IGNORES) if folder.use_default_ignores else []
        numbered: list[tuple[str, int, str]] = [
            ("ignore (config)", i, line) for i, line in enumerate(folder.ignore, 1)
        ]
        text, problem = _read_ignore_file(folder.path / IGNORE_FILE)
        if problem is not None:
            self.problems.append(Problem(IGNORE_FILE, problem))
        if text:
            source = str(folder.path / IGNORE_FILE)
            for i, line in enumerate(text.split("\n"), 1):
                numbered.append((source, i, line[:-1] if line.endswith("\r") else line))
        for source, i, line in numbered:
            why = ignore_problem(line)
            if why is None:
                lines.append(line)
            else:
                self.bad.append(BadLine(source, i, line, why))
        self.spec: pathspec.GitIgnoreSpec | None = None
        self._file_names: _Names | None = None  # names a file (or a directory) may not have
        self._dir_names: _Names | None = None  # names a directory may not have
        self._name_re: re.Pattern[str] | None = None
        self._path_re: re.Pattern[str] | None = None
        self._prefiltered = True
        #: For a file met in the walk, when its name alone decides: ``file_ignored(rel, name)``
        #: is ``name_ignored(name)``.
        self.name_ignored: Callable[[str], bool] | None = None
        globs = _name_globs(lines)
        if globs is not None:
            names, dirs = globs
            self._file_names = self.name_ignored = _Names(names)
            self._dir_names = _Names(names + dirs)
            return
        import pathspec

        patterns = []
        for line in lines:
            pattern, _why = _compile(line)
            if pattern is not None:
                patterns.append(pattern)
        self.spec = pathspec.GitIgnoreSpec(patterns)
        try:
            with _COMPILE_LOCK, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._name_re, self._path_re = _prefilters(self.spec)
        except Exception as e:  # never expected; without a prefilter every file is matched
            log.debug("ignore rules: no prefilter (%s)", e)
            self._prefiltered = False

    def ignored(self, rel: str, is_dir: bool = False) -> bool:
        if self.spec is not None:
            rel = _nl(rel)
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
        if _NL in rel:
            rel, name = _nl(rel), _nl(name)
        if (
            not self._prefiltered
            or (self._name_re is not None and self._name_re.match(name))
            or (self._path_re is not None and self._path_re.match(rel))
        ):
            return self.spec.match_file(rel)
        return False
