"""The config file: TOML -> one frozen dataclass tree, validated once.

Every key is declared once, in ``SCHEMA``: its type, default and one line of help. Validation,
``syncd init``, ``config.example.toml`` and the README's reference all follow from it. Every
error names the file, the key and the problem (``ConfigError``), on one line (values are shown
escaped and cut short), and any value TOML can hold is either accepted with a meaning or refused
that way: NaN, infinities and durations beyond any use, wrong types (a bool is not a number),
NUL and control characters, URLs with credentials or without a usable host or port, ignore
lines that cannot be used.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syncd.errors import ConfigError
from syncd.planner import DeleteLimit
from syncd.types import RESERVED_PREFIX, shown

REMOTE_KINDS = ("syncd", "webdav", "s3", "http")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class Key:
    """One config key: its TOML type, default (``REQUIRED`` if it has none) and help."""

    type: type | tuple[type, ...]
    default: Any
    help: str


REQUIRED = object()

SCHEMA: dict[str, dict[str, Key]] = {
    "remote": {
        "kind": Key(str, "syncd", '"syncd" | "webdav" | "s3" | "http"'),
        "url": Key(
            str,
            REQUIRED,
            'server URL; webdav: the collection URL; s3: "s3://bucket/prefix/"; '
            "http: an upload URL with a {path} placeholder",
        ),
        "token_file": Key(str, "", "syncd: file holding the bearer token"),
        "username": Key(str, "", "webdav: basic-auth user"),
        "password_file": Key(str, "", "webdav: file holding the basic-auth password"),
        "endpoint_url": Key(str, "", "s3: endpoint of an S3-compatible server (MinIO, Ceph...)"),
        "region": Key(str, "", "s3: region"),
        "profile": Key(str, "", "s3: AWS profile name"),
        "method": Key(str, "PUT", 'http: "PUT" | "POST"'),
        "form_field": Key(str, "", 'http: multipart field name for POST; "" sends the raw body'),
        "headers_file": Key(str, "", "http: file of extra headers (Name: value per line)"),
        "delete_method": Key(str, "", 'http: method used to delete ("" = never delete)'),
        "ca_file": Key(str, "", "PEM bundle to trust instead of the system's"),
        "verify_tls": Key(bool, True, "check the server's TLS certificate"),
        "timeout": Key(
            (int, float), 30.0, "seconds to connect, and of silence (nothing sent, no answer)"
        ),
    },
    "folder": {
        "path": Key(str, REQUIRED, "the local folder to mirror"),
        "remote_path": Key(str, "", "where it lands under the remote; default: the folder's name"),
        "ignore": Key(list, [], "gitignore-style patterns, plus a .syncdignore in the folder"),
        "use_default_ignores": Key(
            bool, True, "also ignore editor swap/backup files and partial downloads"
        ),
        "delete": Key(bool, True, "mirror deletions"),
    },
    "sync": {
        "debounce": Key((int, float), 0.5, "seconds of quiet before a changed file is sent"),
        "max_delay": Key(
            (int, float), 30.0, "a file that never stops changing is still sent this often"
        ),
        "concurrency": Key(int, 4, "transfers in flight"),
        "bwlimit": Key(str, "0", 'upload limit per second, e.g. "10MiB"; "0" is no limit'),
        "rescan_interval": Key((int, float), 3600.0, "seconds between safety rescans"),
        "max_delete": Key(
            (int, str),
            "50%",
            'a pass that would delete more files than this (a count, or a share like "50%") '
            "deletes nothing until `syncd sync --force-delete`",
        ),
        "state_dir": Key(str, "~/.local/state/syncd", "where the manifest and control socket live"),
    },
    "log": {
        "level": Key(str, "info", "debug | info | warning | error"),
        "format": Key(str, "text", "text | json"),
    },
    "status": {
        "listen": Key(str, "", 'e.g. "127.0.0.1:8384" for a status page; "" is off'),
    },
}


@dataclass(frozen=True)
class RemoteConfig:
    kind: str
    url: str
    token_file: Path | None
    username: str
    password_file: Path | None
    endpoint_url: str
    region: str
    profile: str
    method: str
    form_field: str
    headers_file: Path | None
    delete_method: str
    ca_file: Path | None
    verify_tls: bool
    timeout: float

    def token(self) -> str | None:
        """The bearer token, read from ``token_file`` (validated to exist at load time)."""
        if self.token_file is None:
            return None
        return self.token_file.read_text(encoding="utf-8").strip() or None


@dataclass(frozen=True)
class FolderConfig:
    path: Path
    remote_path: str
    ignore: tuple[str, ...]
    use_default_ignores: bool
    delete: bool


@dataclass(frozen=True)
class SyncConfig:
    debounce: float
    max_delay: float
    concurrency: int
    bwlimit: int  # bytes per second, 0 = unlimited
    rescan_interval: float
    max_delete: DeleteLimit
    state_dir: Path


@dataclass(frozen=True)
class LogConfig:
    level: str
    format: str


@dataclass(frozen=True)
class StatusConfig:
    listen: str


@dataclass(frozen=True)
class Config:
    file: Path
    remote: RemoteConfig
    folders: tuple[FolderConfig, ...]
    sync: SyncConfig
    log: LogConfig
    status: StatusConfig


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    """``$SYNCD_CONFIG``, else ``$XDG_CONFIG_HOME/syncd/config.toml``, else ~/.config/..."""
    env = os.environ if env is None else env
    if env.get("SYNCD_CONFIG"):
        return Path(env["SYNCD_CONFIG"]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "syncd" / "config.toml"


def find_config(explicit: Path | None, env: Mapping[str, str] | None = None) -> Path:
    """The lookup order: ``-c FILE``, then ``$SYNCD_CONFIG``, then XDG."""
    return explicit.expanduser() if explicit is not None else default_config_path(env)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*$", re.IGNORECASE | re.ASCII)


def parse_size(text: str) -> int:
    """``"10MiB"`` -> 10485760, ``"500k"`` -> 500000, ``"0"`` -> 0. Raises ValueError (also
    for a size of 2**63 bytes or more, and for one that is not 0 but less than a byte)."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f'not a size: {_toml_repr(text)} (try "10MiB", "500k" or "0")')
    number, unit, binary = float(m.group(1)), m.group(2).lower(), m.group(3)
    power = "kmgt".index(unit) + 1 if unit else 0
    size = number * (1024 if binary or not unit else 1000) ** power
    if not size < 2**63:  # (inf for a number of 400 digits)
        raise ValueError(f"too large: {_toml_repr(text)}")
    if 0 < size < 1:
        raise ValueError(f'less than one byte: {_toml_repr(text)} ("0" is no limit)')
    return int(size)


# Keys whose strings are names, URLs, methods or numbers: a control character in one is a typo
# or an attack on a header, never meant. (Paths may hold anything but NUL; remote_path and the
# ignore lines are checked on their own.)
_TEXT_KEYS = frozenset(
    {"kind", "url", "username", "method", "form_field", "delete_method", "endpoint_url"}
    | {"region", "profile", "bwlimit", "max_delete", "level", "format", "listen"}
)
# C0 and C1 controls, DEL, and the separators some terminals and log viewers break lines at.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _check_text(file: Path, key: str, value: str) -> None:
    if "\0" in value:
        raise ConfigError(file, key, f"contains a NUL character: {_toml_repr(value)}")
    if key.rpartition(".")[2] in _TEXT_KEYS and not value.isprintable():
        c = next(c for c in value if not c.isprintable())
        raise ConfigError(
            file, key, f"contains a control character (U+{ord(c):04X}): {_toml_repr(value)}"
        )


def _check_type(file: Path, key: str, value: Any, spec: Key) -> Any:
    expected = spec.type if isinstance(spec.type, tuple) else (spec.type,)
    ok = isinstance(value, expected) and not (isinstance(value, bool) and bool not in expected)
    if not ok and isinstance(value, float) and expected == (int,):
        raise ConfigError(file, key, f"must be a whole number, not {_toml_repr(value)}")
    if not ok:
        names = " or ".join(
            {
                int: "a number",
                float: "a number",
                str: "a string",
                bool: "true or false",
                list: "a list",
            }[t]
            for t in expected
        )
        names = "a number" if set(expected) == {int, float} else names
        raise ConfigError(file, key, f"must be {names}, not {_toml_repr(value)}")
    if list in expected:
        for item in value:
            if not isinstance(item, str):
                raise ConfigError(file, key, f"must be a list of strings, found {_toml_repr(item)}")
        return tuple(value)
    if isinstance(value, str):
        _check_text(file, key, value)
    if expected == (int, float) or float in expected:
        try:
            return float(value)
        except OverflowError:  # an int of more than 308 digits: refused as infinite
            return math.inf if value > 0 else -math.inf
    return value


def _toml_repr(value: Any) -> str:
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


def _section(file: Path, name: str, raw: Any, where: str) -> dict[str, Any]:
    """Check one table against SCHEMA[name]: unknown keys, missing keys, types."""
    if not isinstance(raw, dict):
        raise ConfigError(file, where, f"must be a table ([{name}]), not {_toml_repr(raw)}")
    schema = SCHEMA[name]
    for key in raw:
        if key not in schema:
            hint = _closest(key, schema)
            raise ConfigError(
                file,
                f"{where}.{_brief_key(key)}",
                "unknown key" + (f" (did you mean {hint!r}?)" if hint else ""),
            )
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        if key in raw:
            out[key] = _check_type(file, f"{where}.{key}", raw[key], spec)
        elif spec.default is REQUIRED:
            raise ConfigError(file, f"{where}.{key}", "missing (this key is required)")
        else:
            out[key] = tuple(spec.default) if isinstance(spec.default, list) else spec.default
    return out


def _brief_key(key: str) -> str:
    text = shown(key)
    return text if len(text) <= 60 else text[:60] + "..."


def _say_path(p: Path) -> str:
    text = shown(str(p))
    return text if len(text) <= 200 else f"{text[:80]}...{text[-80:]}"


def _closest(key: str, schema: Mapping[str, object]) -> str | None:
    import difflib

    found = difflib.get_close_matches(key, list(schema), n=1, cutoff=0.6)
    return found[0] if found else None


def _path(value: str) -> Path:
    return Path(os.path.expandvars(value)).expanduser()


def _existing_file(file: Path, key: str, value: str) -> Path | None:
    if not value:
        return None
    p = _usable_path(file, key, value)
    try:
        if not p.is_file():
            raise ConfigError(file, key, f"file not found: {_say_path(p)}")
        with p.open("rb"):
            pass
    except OSError as e:
        raise ConfigError(file, key, f"cannot read {_say_path(p)}: {e.strerror}") from e
    return p


def _usable_path(file: Path, key: str, value: str) -> Path:
    """``value`` (``~`` and ``$VARS`` expanded) as a path, or a ConfigError."""
    if not value:
        raise ConfigError(file, key, "must not be empty")
    try:
        return _path(value)
    except RuntimeError as e:  # "Could not determine home directory"
        raise ConfigError(file, key, f"cannot expand {_toml_repr(value)}: {e}") from None


_REMOTE_PATH = re.compile(r"^[^/\\\x00]+(/[^/\\\x00]+)*$")


def _remote_path(file: Path, key: str, value: str) -> str:
    value = value.strip("/")
    if (
        not value
        or not _REMOTE_PATH.match(value)
        or any(part in (".", "..") or part.startswith(RESERVED_PREFIX) for part in value.split("/"))
    ):
        raise ConfigError(file, key, f"not a usable remote path: {_toml_repr(value)}")
    if _CONTROL.search(value):
        raise ConfigError(file, key, f"contains a control character: {_toml_repr(value)}")
    return value


def _check_overlap(
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


def load(path: Path, *, require_folders: bool = True) -> Config:
    """Read and validate ``path``. Raises ConfigError naming the file, the key and the problem.

    ``require_folders=False`` accepts folders that do not exist (are unmounted) now: for
    ``syncd status``, which reports them instead of refusing the config."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(
            path, None, "config file not found (create one with `syncd init`)"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(path, None, f"cannot read the config file: {e}") from e
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, None, f"not valid TOML: {e}") from e
    return from_dict(raw, path, require_folders=require_folders)


def from_dict(raw: Mapping[str, Any], file: Path, *, require_folders: bool = True) -> Config:
    """Validate an already parsed TOML document (see ``load``)."""
    for top in raw:
        if top not in SCHEMA:
            hint = _closest(top, SCHEMA)
            raise ConfigError(
                file, top, "unknown section" + (f" (did you mean [{hint}]?)" if hint else "")
            )
    if "remote" not in raw:
        raise ConfigError(file, "remote", "missing: a [remote] table with at least `url`")
    r = _section(file, "remote", raw["remote"], "remote")
    if r["kind"] not in REMOTE_KINDS:
        raise ConfigError(
            file,
            "remote.kind",
            f"must be one of {', '.join(REMOTE_KINDS)}, not {_toml_repr(r['kind'])}",
        )
    from syncd.remotes import REGISTRY

    if r["kind"] not in REGISTRY:
        raise ConfigError(
            file,
            "remote.kind",
            f"{r['kind']!r} is not available in this version of syncd "
            f"(available: {', '.join(REGISTRY)})",
        )
    _seconds(file, "remote.timeout", r["timeout"], most=86400, zero=False)
    if r["method"].upper() not in ("PUT", "POST"):
        raise ConfigError(
            file, "remote.method", f'must be "PUT" or "POST", not {_toml_repr(r["method"])}'
        )
    if r["delete_method"] and not _TOKEN.match(r["delete_method"]):
        raise ConfigError(
            file,
            "remote.delete_method",
            f'must be an HTTP method such as "DELETE" ("" never deletes), '
            f"not {_toml_repr(r['delete_method'])}",
        )
    if ":" in r["username"]:
        raise ConfigError(
            file,
            "remote.username",
            "cannot contain ':' (basic auth puts it between user and password)",
        )
    _check_url(file, r["kind"], r["url"])
    if r["endpoint_url"]:
        _check_url(file, "endpoint", r["endpoint_url"], "remote.endpoint_url")
    remote = RemoteConfig(
        kind=r["kind"],
        url=r["url"],
        token_file=_existing_file(file, "remote.token_file", r["token_file"]),
        username=r["username"],
        password_file=_existing_file(file, "remote.password_file", r["password_file"]),
        endpoint_url=r["endpoint_url"],
        region=r["region"],
        profile=r["profile"],
        method=r["method"].upper(),
        form_field=r["form_field"],
        headers_file=_existing_file(file, "remote.headers_file", r["headers_file"]),
        delete_method=r["delete_method"].upper(),
        ca_file=_existing_file(file, "remote.ca_file", r["ca_file"]),
        verify_tls=r["verify_tls"],
        timeout=r["timeout"],
    )

    raw_folders = raw.get("folder")
    if raw_folders is None:
        raise ConfigError(file, "folder", "missing: add at least one [[folder]] with a `path`")
    if isinstance(raw_folders, dict):
        raw_folders = [raw_folders]
    if not isinstance(raw_folders, list) or not raw_folders:
        raise ConfigError(file, "folder", "must be one or more [[folder]] tables")
    folders: list[FolderConfig] = []
    seen: dict[str, tuple[int, Path]] = {}
    for i, rf in enumerate(raw_folders):
        where = f"folder[{i}]"
        f = _section(file, "folder", rf, where)
        local = _usable_path(file, f"{where}.path", f["path"])
        try:
            if not local.is_absolute():
                local = (file.parent / local).resolve()
            if require_folders and not local.is_dir():
                problem = "not a directory" if local.exists() else "folder does not exist"
                raise ConfigError(file, f"{where}.path", f"{problem}: {_say_path(local)}")
        except OSError as e:
            raise ConfigError(
                file, f"{where}.path", f"cannot use {_say_path(local)}: {e.strerror}"
            ) from None
        except RuntimeError as e:  # a symlink loop, met by resolve()
            raise ConfigError(
                file, f"{where}.path", f"cannot use {_say_path(local)}: {e}"
            ) from None
        _check_ignores(file, where, f["ignore"])
        rp = _remote_path(file, f"{where}.remote_path", f["remote_path"] or local.name)
        _check_overlap(file, where, rp, local, seen)
        seen[rp] = (i, local)
        folders.append(
            FolderConfig(
                path=local,
                remote_path=rp,
                ignore=f["ignore"],
                use_default_ignores=f["use_default_ignores"],
                delete=f["delete"],
            )
        )

    s = _section(file, "sync", raw.get("sync", {}), "sync")
    for key, most in _LONGEST.items():
        _seconds(file, f"sync.{key}", s[key], most=most)
    if s["concurrency"] < 1 or s["concurrency"] > 256:
        raise ConfigError(file, "sync.concurrency", "must be between 1 and 256")
    try:
        bwlimit = parse_size(s["bwlimit"])
    except ValueError as e:
        raise ConfigError(file, "sync.bwlimit", str(e)) from None
    md = s["max_delete"]
    if isinstance(md, str) and not _DELETE_LIMIT.match(md):
        raise ConfigError(
            file,
            "sync.max_delete",
            f'must be a count (100) or a percentage ("50%"), not {_toml_repr(md)}',
        )
    try:
        max_delete = DeleteLimit.parse(md)
    except ValueError as e:
        raise ConfigError(file, "sync.max_delete", str(e)) from None
    _usable_path(file, "sync.state_dir", s["state_dir"])
    state_dir = _state_dir(s["state_dir"])
    sync = SyncConfig(
        debounce=s["debounce"],
        max_delay=max(s["max_delay"], s["debounce"]),
        concurrency=s["concurrency"],
        bwlimit=bwlimit,
        rescan_interval=s["rescan_interval"],
        max_delete=max_delete,
        state_dir=state_dir,
    )

    lg = _section(file, "log", raw.get("log", {}), "log")
    if lg["level"].lower() not in LOG_LEVELS:
        raise ConfigError(file, "log.level", f"must be one of {', '.join(LOG_LEVELS)}")
    if lg["format"] not in LOG_FORMATS:
        raise ConfigError(file, "log.format", f"must be one of {', '.join(LOG_FORMATS)}")
    st = _section(file, "status", raw.get("status", {}), "status")
    if st["listen"] and not re.match(
        r"^[^\s:]*:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$", st["listen"], re.ASCII
    ):
        raise ConfigError(file, "status.listen", 'must look like "127.0.0.1:8384" (or "" for off)')
    if st["listen"] and int(st["listen"].rpartition(":")[2]) > 65535:
        raise ConfigError(file, "status.listen", "the port must be at most 65535")
    return Config(
        file=file,
        remote=remote,
        folders=tuple(folders),
        sync=sync,
        log=LogConfig(level=lg["level"].lower(), format=lg["format"]),
        status=StatusConfig(listen=st["listen"]),
    )


def _state_dir(value: str) -> Path:
    default = SCHEMA["sync"]["state_dir"].default
    if value == default and os.environ.get("XDG_STATE_HOME"):
        return Path(os.environ["XDG_STATE_HOME"]).expanduser() / "syncd"
    return _path(value)


# Durations: finite, not negative, and no longer than any use for them (beyond some, a
# socket timeout or a thread's wait overflows the platform's time_t).
_DAY = 86400
_LONGEST = {"debounce": _DAY, "max_delay": 7 * _DAY, "rescan_interval": 365 * _DAY}
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP method (RFC 9110 token)
_DELETE_LIMIT = re.compile(r"^\s*(\d+|\d+(\.\d+)?\s*%)\s*$", re.ASCII)


def _seconds(file: Path, key: str, value: float, *, most: int, zero: bool = True) -> None:
    if not math.isfinite(value):
        raise ConfigError(file, key, f"must be a finite number of seconds, not {value!r}")
    if value < 0 or (value == 0 and not zero):
        raise ConfigError(
            file, key, "must not be negative" if zero else "must be more than 0 seconds"
        )
    if value > most:
        days = most // _DAY
        raise ConfigError(
            file, key, f"must be at most {most} seconds ({days} day{'s' if days > 1 else ''})"
        )


#: Where each kind takes the credentials that must not be in its URL (which logs, `syncd
#: status` and the status page show).
_CREDENTIALS = {
    "syncd": "syncd serve takes a bearer token: put it in a file named by remote.token_file",
    "webdav": "put the user name in remote.username and the password in a file named by "
    "remote.password_file",
    "http": "put an Authorization header in a file named by remote.headers_file",
    "s3": "S3 credentials come from the standard AWS chain (environment, ~/.aws/credentials, "
    "remote.profile)",
    "endpoint": "S3 credentials come from the standard AWS chain (environment, "
    "~/.aws/credentials, remote.profile)",
}
_USERINFO = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*:)?(?://)?[^/?#@]*@")


def _check_url(file: Path, kind: str, url: str, key: str = "remote.url") -> None:
    """Refuse, in one line each, what no request could be made to (and a URL that holds
    credentials, without repeating it)."""
    from urllib.parse import urlsplit

    if not url.strip():
        raise ConfigError(file, key, "must not be empty")
    userinfo = _USERINFO.match(url)
    if userinfo:
        what = "credentials" if ":" in userinfo.group(0).rpartition("/")[2] else "a user name"
        raise ConfigError(file, key, f"must not hold {what} (user@host): {_CREDENTIALS[kind]}")
    if any(c.isspace() for c in url):
        raise ConfigError(
            file, key, f"contains a space: percent-encode it (%20): {_toml_repr(url)}"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        message = str(e)
        if "Port" in message or "port" in message:
            raise ConfigError(
                file, key, f"the port must be a number from 1 to 65535: {_toml_repr(url)}"
            ) from None
        raise ConfigError(file, key, f"not a usable URL ({e}): {_toml_repr(url)}") from None
    if kind == "s3":
        if parts.scheme != "s3" or not parts.netloc:
            raise ConfigError(
                file, key, f'must look like "s3://bucket/prefix/", not {_toml_repr(url)}'
            )
        return
    if parts.scheme not in ("http", "https"):
        raise ConfigError(file, key, f"must be an http:// or https:// URL, not {_toml_repr(url)}")
    if not parts.hostname:
        raise ConfigError(file, key, f"has no host name: {_toml_repr(url)}")
    if port == 0:
        raise ConfigError(
            file, key, f"the port must be a number from 1 to 65535: {_toml_repr(url)}"
        )
    if kind == "http" and "{path}" not in url:
        raise ConfigError(file, key, "an http remote's url needs a {path} placeholder")
    if parts.fragment or url.endswith("#"):
        raise ConfigError(file, key, "must not have a #fragment (nothing is sent after a '#')")
    if kind == "http":
        return  # an upload API may take its {path} in a query (?path={path})
    if parts.query or "?" in url:
        raise ConfigError(
            file, key, "must not have a ?query: requests are made to paths below the URL"
        )
    from urllib.parse import unquote

    for seg in parts.path.split("/"):
        text = unquote(seg)
        if "/" in text:
            raise ConfigError(file, key, f"a path segment holds an encoded slash: {seg!r}")
        if text in (".", ".."):
            raise ConfigError(file, key, f"must not contain '.' or '..' segments: {seg!r}")
        if kind == "syncd" and text.startswith(RESERVED_PREFIX):
            raise ConfigError(file, key, f"names starting with '.~syncd-' are syncd's own: {seg!r}")


def _check_ignores(file: Path, where: str, lines: tuple[str, ...]) -> None:
    """Refuse an ignore line the scanner could not use, naming the key and the line."""
    from syncd.ignore import ignore_problem

    for i, line in enumerate(lines):
        problem = ignore_problem(line)
        if problem is not None:
            raise ConfigError(file, f"{where}.ignore[{i}]", f"{_toml_repr(line)}: {problem}")


def render_initial(
    folder: Path,
    url: str,
    *,
    token_file: Path | None = None,
    remote_path: str = "",
    kind: str = "syncd",
) -> dict[str, Any]:
    """The document ``syncd init`` writes: the essentials plus the defaults a user may tune."""
    remote: dict[str, Any] = {"kind": kind, "url": url}
    if token_file is not None:
        remote["token_file"] = str(token_file)
    fold: dict[str, Any] = {"path": str(folder), "ignore": [".git/"], "delete": True}
    if remote_path:
        fold["remote_path"] = remote_path
    sync = {k: SCHEMA["sync"][k].default for k in ("debounce", "concurrency", "state_dir")}
    return {"remote": remote, "folder": [fold], "sync": sync}


def reference_markdown() -> str:
    """The configuration reference (README), generated from SCHEMA so it cannot drift."""
    out: list[str] = []
    for section, keys in SCHEMA.items():
        header = "[[folder]]" if section == "folder" else f"[{section}]"
        out += [f"`{header}`", "", "| key | default | meaning |", "| --- | --- | --- |"]
        for key, spec in keys.items():
            if spec.default is REQUIRED:
                default = "required"
            elif isinstance(spec.default, bool):
                default = "`true`" if spec.default else "`false`"
            elif isinstance(spec.default, str):
                default = f'`"{spec.default}"`'
            else:
                default = f"`{spec.default}`"
            out.append(f"| `{key}` | {default} | {spec.help.replace('|', '&#124;')} |")
        out.append("")
    return "\n".join(out)
