"""The config file: TOML -> one frozen dataclass tree, validated once.

Every key is declared once, in ``SCHEMA``: its type, default and one line of help. Validation,
``syncd init``, ``config.example.toml`` and the README's reference all follow from it. Every
error names the file, the key and the problem (``ConfigError``).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syncd.errors import ConfigError
from syncd.planner import DeleteLimit

REMOTE_KINDS = ("syncd", "webdav", "s3", "http")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")

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
        "timeout": Key((int, float), 30.0, "seconds to connect, and of silence while reading"),
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


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``"10MiB"`` -> 10485760, ``"500k"`` -> 500000, ``"0"`` -> 0. Raises ValueError."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f'not a size: {text!r} (try "10MiB", "500k" or "0")')
    number, unit, binary = float(m.group(1)), m.group(2).lower(), m.group(3)
    power = "kmgt".index(unit) + 1 if unit else 0
    return int(number * (1024 if binary or not unit else 1000) ** power)


def _check_type(file: Path, key: str, value: Any, spec: Key) -> Any:
    expected = spec.type if isinstance(spec.type, tuple) else (spec.type,)
    ok = isinstance(value, expected) and not (isinstance(value, bool) and bool not in expected)
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
    if expected == (int, float) or float in expected:
        return float(value)
    return value


def _toml_repr(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
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
                f"{where}.{key}",
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


def _closest(key: str, schema: Mapping[str, object]) -> str | None:
    import difflib

    found = difflib.get_close_matches(key, list(schema), n=1, cutoff=0.6)
    return found[0] if found else None


def _path(value: str) -> Path:
    return Path(os.path.expandvars(value)).expanduser()


def _existing_file(file: Path, key: str, value: str) -> Path | None:
    if not value:
        return None
    p = _path(value)
    if not p.is_file():
        raise ConfigError(file, key, f"file not found: {p}")
    try:
        with p.open("rb"):
            pass
    except OSError as e:
        raise ConfigError(file, key, f"cannot read {p}: {e.strerror}") from e
    return p


_REMOTE_PATH = re.compile(r"^[^/\\\x00]+(/[^/\\\x00]+)*$")


def _remote_path(file: Path, key: str, value: str) -> str:
    value = value.strip("/")
    if (
        not value
        or not _REMOTE_PATH.match(value)
        or any(part in (".", "..") or part.startswith(".~syncd-") for part in value.split("/"))
    ):
        raise ConfigError(file, key, f"not a usable remote path: {value!r}")
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
            file, "remote.kind", f"must be one of {', '.join(REMOTE_KINDS)}, not {r['kind']!r}"
        )
    from syncd.remotes import REGISTRY

    if r["kind"] not in REGISTRY:
        raise ConfigError(
            file,
            "remote.kind",
            f"{r['kind']!r} is not available in this version of syncd "
            f"(available: {', '.join(REGISTRY)})",
        )
    if r["timeout"] <= 0:
        raise ConfigError(file, "remote.timeout", "must be more than 0 seconds")
    if r["method"].upper() not in ("PUT", "POST"):
        raise ConfigError(file, "remote.method", f'must be "PUT" or "POST", not {r["method"]!r}')
    _check_url(file, r["kind"], r["url"])
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
        local = _path(f["path"])
        if not local.is_absolute():
            local = (file.parent / local).resolve()
        if require_folders and not local.is_dir():
            problem = "not a directory" if local.exists() else "folder does not exist"
            raise ConfigError(file, f"{where}.path", f"{problem}: {local}")
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
    for key in ("debounce", "max_delay", "rescan_interval"):
        if s[key] < 0:
            raise ConfigError(file, f"sync.{key}", "must not be negative")
    if s["concurrency"] < 1 or s["concurrency"] > 256:
        raise ConfigError(file, "sync.concurrency", "must be between 1 and 256")
    try:
        bwlimit = parse_size(s["bwlimit"])
    except ValueError as e:
        raise ConfigError(file, "sync.bwlimit", str(e)) from None
    try:
        max_delete = DeleteLimit.parse(s["max_delete"])
    except ValueError as e:
        raise ConfigError(file, "sync.max_delete", str(e)) from None
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
        r"^[^\s:]*:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$", st["listen"]
    ):
        raise ConfigError(file, "status.listen", 'must look like "127.0.0.1:8384" (or "" for off)')
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


def _check_url(file: Path, kind: str, url: str) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if kind == "s3":
        if parts.scheme != "s3" or not parts.netloc:
            raise ConfigError(
                file, "remote.url", f'must look like "s3://bucket/prefix/", not {url!r}'
            )
        return
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(file, "remote.url", f"must be an http:// or https:// URL, not {url!r}")
    if kind == "http" and "{path}" not in url:
        raise ConfigError(file, "remote.url", "an http remote's url needs a {path} placeholder")


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
