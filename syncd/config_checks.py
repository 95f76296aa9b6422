"""The checks of config values that are more than a type: paths, sizes, durations, URLs,
remote paths, ignore lines. Each raises a ``ConfigError`` naming the file, the key and the
problem, with the value shown escaped and cut short (``toml_repr``). Remote kinds use them for
their own keys (``syncd.remotes.kinds``)."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from syncd.errors import ConfigError
from syncd.types import RESERVED_PREFIX, shown

# C0 and C1 controls, DEL, and the separators some terminals and log viewers break lines at.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: An HTTP method (RFC 9110 token).
HTTP_METHOD = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def toml_repr(value: Any) -> str:
    """``value`` as a message shows it: TOML-like, escaped, and cut short."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value if len(value) <= 80 else value[:60] + f"... ({len(value)} characters)"
        return '"' + shown(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'
    if isinstance(value, int) and abs(value) >= 10**20:
        return f"a number of {len(str(abs(value)))} digits"
    if hasattr(value, "isoformat"):  # TOML dates and times
        return str(value.isoformat())
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def say_path(p: Path) -> str:
    text = shown(str(p))
    return text if len(text) <= 200 else f"{text[:80]}...{text[-80:]}"


def expand_path(value: str) -> Path:
    return Path(os.path.expandvars(value)).expanduser()


def existing_file(file: Path, key: str, value: str) -> Path | None:
    if not value:
        return None
    p = usable_path(file, key, value)
    try:
        if not p.is_file():
            raise ConfigError(file, key, f"file not found: {say_path(p)}")
        with p.open("rb"):
            pass
    except OSError as e:
        raise ConfigError(file, key, f"cannot read {say_path(p)}: {e.strerror}") from e
    return p


def usable_path(file: Path, key: str, value: str) -> Path:
    """``value`` (``~`` and ``$VARS`` expanded) as a path, or a ConfigError."""
    if not value:
        raise ConfigError(file, key, "must not be empty")
    try:
        return expand_path(value)
    except RuntimeError as e:  # "Could not determine home directory"
        raise ConfigError(file, key, f"cannot expand {toml_repr(value)}: {e}") from None


_REMOTE_PATH = re.compile(r"^[^/\\\x00]+(/[^/\\\x00]+)*$")


def remote_path(file: Path, key: str, value: str) -> str:
    value = value.strip("/")
    if (
        not value
        or not _REMOTE_PATH.match(value)
        or any(part in (".", "..") or part.startswith(RESERVED_PREFIX) for part in value.split("/"))
    ):
        raise ConfigError(file, key, f"not a usable remote path: {toml_repr(value)}")
    if CONTROL.search(value):
        raise ConfigError(file, key, f"contains a control character: {toml_repr(value)}")
    return value


def check_overlap(
    file: Path, where: str, rp: str, local: Path, seen: Mapping[str, tuple[int, Path]]
) -> None:
    """Refuse a remote path equal to, inside, or holding another folder's: each mirror deletes
    what its folder lacks, so nested mirrors would delete each other's files."""
    for other, (j, other_local) in seen.items():
        if other == rp:
            raise ConfigError(
                file,
                f"{where}.remote_path",
                f"{rp!r} is already used by folder[{j}] ({other_local}): folder[{j}] and "
                f"{where} ({local}) cannot share a remote path",
            )
        if rp.startswith(other + "/") or other.startswith(rp + "/"):
            raise ConfigError(
                file,
                f"{where}.remote_path",
                f"{rp!r} of {where} ({local}) and {other!r} of folder[{j}] ({other_local}) "
                "are nested: each mirror would delete the other's files",
            )


def trash_path(file: Path, key: str, value: str) -> str:
    """``remote.trash``: "" (off) or a remote path like a folder's ``remote_path``."""
    if not value.strip("/"):
        return ""
    return remote_path(file, key, value)


def check_trash(file: Path, trash: str, folders: Mapping[str, tuple[int, Path]]) -> None:
    """Refuse a trash inside a folder's remote path or holding one: the mirror would delete
    the kept versions (they are not in its folder), or keep versions of the trash itself."""
    for rp, (j, local) in folders.items():
        if trash == rp or trash.startswith(rp + "/"):
            raise ConfigError(
                file,
                "remote.trash",
                f"{trash!r} is inside folder[{j}]'s remote path {rp!r} ({local}): the mirror "
                'would delete the kept versions; put the trash beside the folders ("trash")',
            )
        if rp.startswith(trash + "/"):
            raise ConfigError(
                file,
                "remote.trash",
                f"{trash!r} holds folder[{j}]'s remote path {rp!r} ({local}): put the trash "
                "beside the folders, not above them",
            )


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*$", re.IGNORECASE | re.ASCII)


def parse_size(text: str) -> int:
    """``"10MiB"`` -> 10485760, ``"500k"`` -> 500000, ``"0"`` -> 0. Raises ValueError (also
    for a size of 2**63 bytes or more, and for one that is not 0 but less than a byte)."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f'not a size: {toml_repr(text)} (try "10MiB", "500k" or "0")')
    number, unit, binary = float(m.group(1)), m.group(2).lower(), m.group(3)
    power = "kmgt".index(unit) + 1 if unit else 0
    size = number * (1024 if binary or not unit else 1000) ** power
    if not size < 2**63:  # (inf for a number of 400 digits)
        raise ValueError(f"too large: {toml_repr(text)}")
    if 0 < size < 1:
        raise ValueError(f'less than one byte: {toml_repr(text)} ("0" is no limit)')
    return int(size)


# Durations: finite, not negative, and no longer than any use for them (beyond some, a
# socket timeout or a thread's wait overflows the platform's time_t).
DAY = 86400


def seconds(file: Path, key: str, value: float, *, most: int, zero: bool = True) -> None:
    if not math.isfinite(value):
        raise ConfigError(file, key, f"must be a finite number of seconds, not {value!r}")
    if value < 0 or (value == 0 and not zero):
        raise ConfigError(
            file, key, "must not be negative" if zero else "must be more than 0 seconds"
        )
    if value > most:
        days = most // DAY
        raise ConfigError(
            file, key, f"must be at most {most} seconds ({days} day{'s' if days > 1 else ''})"
        )


@dataclass(frozen=True)
class URLForm:
    """What a remote kind's ``remote.url`` must look like (declared by the kind)."""

    #: "" for an http:// or https:// URL; else this scheme with a host part (``s3://bucket/``)
    #: and nothing more checked.
    scheme: str = ""
    #: How a URL of ``scheme`` looks, for the message that refuses another.
    example: str = ""
    #: The URL holds a ``{path}`` placeholder (and may take it in a ?query).
    placeholder: bool = False
    #: Segments starting with ``.~syncd-`` are refused (the server's own names).
    own_names: bool = False


HTTP_URL = URLForm()
_USERINFO = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*:)?(?://)?[^/?#@]*@")


def check_url(
    file: Path, key: str, url: str, *, form: URLForm, credentials: str, kind: str = ""
) -> None:
    """Refuse, in one line each, what no request could be made to (and a URL that holds
    credentials, without repeating it: ``credentials`` says where they go instead)."""
    if not url.strip():
        raise ConfigError(file, key, "must not be empty")
    userinfo = _USERINFO.match(url)
    if userinfo:
        what = "credentials" if ":" in userinfo.group(0).rpartition("/")[2] else "a user name"
        raise ConfigError(file, key, f"must not hold {what} (user@host): {credentials}")
    if any(c.isspace() for c in url):
        raise ConfigError(file, key, f"contains a space: percent-encode it (%20): {toml_repr(url)}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        message = str(e)
        if "Port" in message or "port" in message:
            raise ConfigError(
                file, key, f"the port must be a number from 1 to 65535: {toml_repr(url)}"
            ) from None
        raise ConfigError(file, key, f"not a usable URL ({e}): {toml_repr(url)}") from None
    if form.scheme:
        if parts.scheme != form.scheme or not parts.netloc:
            raise ConfigError(file, key, f"must look like {form.example}, not {toml_repr(url)}")
        return
    if parts.scheme not in ("http", "https"):
        raise ConfigError(file, key, f"must be an http:// or https:// URL, not {toml_repr(url)}")
    if not parts.hostname:
        raise ConfigError(file, key, f"has no host name: {toml_repr(url)}")
    if port == 0:
        raise ConfigError(file, key, f"the port must be a number from 1 to 65535: {toml_repr(url)}")
    if form.placeholder and "{path}" not in url:
        raise ConfigError(file, key, f"an {kind} remote's url needs a {{path}} placeholder")
    if parts.fragment or url.endswith("#"):
        raise ConfigError(file, key, "must not have a #fragment (nothing is sent after a '#')")
    if form.placeholder:
        return  # an upload API may take its {path} in a query (?path={path})
    if parts.query or "?" in url:
        raise ConfigError(
            file, key, "must not have a ?query: requests are made to paths below the URL"
        )
    for seg in parts.path.split("/"):
        text = unquote(seg)
        if "/" in text:
            raise ConfigError(file, key, f"a path segment holds an encoded slash: {seg!r}")
        if text in (".", ".."):
            raise ConfigError(file, key, f"must not contain '.' or '..' segments: {seg!r}")
        if form.own_names and text.startswith(RESERVED_PREFIX):
            raise ConfigError(file, key, f"names starting with '.~syncd-' are syncd's own: {seg!r}")


def check_ignores(file: Path, where: str, lines: tuple[str, ...]) -> None:
    """Refuse an ignore line the scanner could not use, naming the key and the line."""
    from syncd.ignore import ignore_problem

    for i, line in enumerate(lines):
        problem = ignore_problem(line)
        if problem is not None:
            raise ConfigError(file, f"{where}.ignore[{i}]", f"{toml_repr(line)}: {problem}")


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


_DELETE_LIMIT = re.compile(r"^\s*(\d+|\d+(\.\d+)?\s*%)\s*$", re.ASCII)


def delete_limit(file: Path, key: str, value: int | str) -> DeleteLimit:
    """``[sync] max_delete`` as a ``DeleteLimit``, or a ConfigError."""
    if isinstance(value, str) and not _DELETE_LIMIT.match(value):
        raise ConfigError(
            file, key, f'must be a count (100) or a percentage ("50%"), not {toml_repr(value)}'
        )
    try:
        return DeleteLimit.parse(value)
    except ValueError as e:
        raise ConfigError(file, key, str(e)) from None
