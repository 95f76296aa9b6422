"""Walk a folder with os.scandir, apply the ignore rules, and report what cannot be mirrored.

Only regular files are mirrored. Symlinks, FIFOs, sockets and devices are skipped and never
opened (reading a FIFO would hang), as are names that are not UTF-8, reserved names and paths
too long for the system to address. Each skip is logged at DEBUG; a scan ends with one WARNING
that sums them up (naming them when they are few), and a later scan by the same scanner (the
daemon's rescans) warns only about paths it has not warned about before. An unreadable file or
directory is a ``Problem``: the walk goes on, and nothing under it is ever deleted on the remote
because of it.

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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syncd.config import DEFAULT_IGNORES, FolderConfig
from syncd.types import RESERVED_PREFIX, LocalFile, Problem, shown

if TYPE_CHECKING:
    import pathspec

log = logging.getLogger("syncd.scanner")

IGNORE_FILE = ".syncdignore"
MAX_IGNORE_FILE = 1 << 20  # bytes: a larger .syncdignore is not an ignore list
MAX_IGNORE_LINE = 16384  # characters: no path is longer than PATH_MAX (4096 bytes)
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

# pathspec's regexes do not let '.' match a newline, and their '$' matches before a final one:
# a name with a newline is matched with it swapped for a noncharacter, in the lines as well.
_NL, _NL_SUB = "\n", "\uffff"


def _nl(text: str) -> str:
    return text.replace(_NL, _NL_SUB) if _NL in text else text


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
    """A regex (for ``re.match``) of a plain name glob that takes linear time on any name.

    A naive translation (``*a*a*a*b`` -> ``[^/]*a[^/]*a[^/]*a[^/]*b``) backtracks in
    polynomial time of a high degree: 8 stars took seconds on a 60-character name. Between two
    stars, each piece of fixed length is taken at its leftmost place, atomically: that is never
    wrong (it leaves the most room for the rest) and never tried again.
    """

    def piece(text: str) -> str:
        return "".join("[^/]" if c == "?" else re.escape(c) for c in text)

    first, *middle_last = glob.split("*")
    if not middle_last:
        return piece(first) + r"\Z"
    *middle, last = middle_last
    out = piece(first) + "".join(f"(?>[^/]*?{piece(m)})" for m in middle if m)
    return out + (f"[^/]*{piece(last)}\\Z" if last else "")  # a trailing '*': any rest


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
    """pathspec's regex for one line, rewritten to take linear time in each name.

    Its translation of ``*`` within a name (``[^/]*a[^/]*a[^/]*b``) backtracks in polynomial
    time of the degree of the number of stars: ``docs/*a*a*a*a*a*a*a*b`` took hours on a name
    of 100 characters. As in ``_glob_regex``: between two stars of a name, each piece of fixed
    length is taken at its leftmost place, atomically (that is never wrong: it leaves the most
    room for the rest). The piece before a name's end stays as it was. A regex this does not
    recognise piece by piece is returned unchanged."""
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

    def __init__(self, folder: FolderConfig) -> None:
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
            return LocalFile(rel, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        self._warn_once(rel, reason)
        return None

    def _summarise(self, result: ScanResult, under: str) -> None:
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
        longest = self.longest
        # A path of at most this many characters is short enough whatever they are (a
        # character is at most 4 bytes in UTF-8); a longer one is measured in bytes.
        short = longest // 4
        stack = [under]
        while stack:
            rel_dir = stack.pop()
            abs_dir = os.path.join(root, rel_dir) if rel_dir else root
            prefix = rel_dir + "/" if rel_dir else ""
            dir_len = len(abs_dir) + 1
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
                log.warning("cannot list %s: %s", shown(abs_dir), e.strerror)
                continue
            for entry in entries:
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
                        files[rel] = LocalFile(
                            rel, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino
                        )
                elif is_dir(mode):
                    if not self.ignorer.ignored(rel, is_dir=True):
                        stack.append(rel)
                elif not self.ignorer.ignored(rel):
                    self._skip(result, rel, _special(mode))
        self._summarise(result, under)
        return result

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
        return LocalFile(rel, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
