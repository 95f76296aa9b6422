"""The config file: TOML -> one frozen dataclass tree, validated once.

Every key is declared once: its type, default and one line of help (``Key``). The remote kinds'
own keys are declared by the kinds (``syncd.remotes.kinds``) and handed in by the caller
(``load(path, kinds=KINDS)``), so this layer imports nothing of the remotes. Validation,
``syncd init``, ``config.example.toml`` and the README's reference all follow from
``schema(kinds)``. Every
error names the file, the key and the problem (``ConfigError``), on one line (values are shown
escaped and cut short), and any value TOML can hold is either accepted with a meaning or refused
that way: NaN, infinities and durations beyond any use, wrong types (a bool is not a number),
NUL and control characters, URLs with credentials or without a usable host or port, ignore
lines that cannot be used.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syncd.config_checks import (
    DAY,
    DeleteLimit,
    check_ignores,
    check_overlap,
    check_trash,
    check_url,
    delete_limit,
    existing_file,
    expand_path,
    parse_size,
    remote_path,
    say_path,
    seconds,
    toml_repr,
    usable_path,
)
from syncd.config_schema import REQUIRED, Key, KindSpec, closest, remote_keys, section
from syncd.errors import ConfigError

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")

#: The sections other than [remote] (whose keys come from the kinds: ``schema``).
_SECTIONS: dict[str, dict[str, Key]] = {
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
        "bwlimit": Key(
            str, "0", 'upload limit per second, e.g. "10MiB"; "0" is no limit', text=True
        ),
        "rescan_interval": Key((int, float), 3600.0, "seconds between safety rescans"),
        "max_delete": Key(
            (int, str),
            "50%",
            'a pass that would delete more files than this (a count, or a share like "50%") '
            "deletes nothing until `syncd sync --force-delete`",
            text=True,
        ),
        "state_dir": Key(str, "~/.local/state/syncd", "where the manifest and control socket live"),
    },
    "log": {
        "level": Key(str, "info", "debug | info | warning | error", text=True),
        "format": Key(str, "text", "text | json", text=True),
    },
    "status": {
        "listen": Key(str, "", 'e.g. "127.0.0.1:8384" for a status page; "" is off', text=True),
    },
}

#: The [remote] keys every kind has, after the kinds' own.
_REMOTE_COMMON: dict[str, Key] = {
    "ca_file": Key(str, "", "PEM bundle to trust instead of the system's"),
    "verify_tls": Key(bool, True, "check the server's TLS certificate"),
    "timeout": Key(
        (int, float), 30.0, "seconds to connect, and of silence (nothing sent, no answer)"
    ),
}


def schema(kinds: Sequence[KindSpec]) -> dict[str, dict[str, Key]]:
    """Every section and key, in the order the reference and ``syncd init`` show them."""
    return {"remote": remote_keys(kinds, _REMOTE_COMMON), **_SECTIONS}


@dataclass(frozen=True)
class RemoteConfig:
    kind: str
    url: str
    ca_file: Path | None
    verify_tls: bool
    timeout: float
    #: Every remote kind's own keys (``KindSpec.options``), checked and converted by the
    #: kind's ``check`` (a file is a ``Path`` or None). A kind reads its own; the others' keys
    #: are checked the same (a config may hold them) and otherwise unused.
    options: Mapping[str, Any]
    #: The files named by keys marked ``secret`` (a token, a password), where set.
    secret_files: tuple[Path, ...] = ()

    def value(self, key: str) -> Any:
        """A [remote] key's effective value (``syncd config check`` shows them all)."""
        return self.options[key] if key in self.options else getattr(self, key)


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


def load(path: Path, *, kinds: Sequence[KindSpec], require_folders: bool = True) -> Config:
    """Read and validate ``path``. Raises ConfigError naming the file, the key and the problem.

    ``kinds`` are the remote kinds this build has (``syncd.remotes.kinds.KINDS``): their own
    keys are part of [remote]. ``require_folders=False`` accepts folders that do not exist
    (are unmounted) now: for ``syncd status``, which reports them instead of refusing the
    config."""
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
    return from_dict(raw, path, kinds=kinds, require_folders=require_folders)


def from_dict(
    raw: Mapping[str, Any],
    file: Path,
    *,
    kinds: Sequence[KindSpec],
    require_folders: bool = True,
) -> Config:
    """Validate an already parsed TOML document (see ``load``)."""
    sections = schema(kinds)
    for top in raw:
        if top not in sections:
            hint = closest(top, sections)
            raise ConfigError(
                file, top, "unknown section" + (f" (did you mean [{hint}]?)" if hint else "")
            )
    if "remote" not in raw:
        raise ConfigError(file, "remote", "missing: a [remote] table with at least `url`")
    remote = _remote(
        file, section(file, "remote", raw["remote"], "remote", sections["remote"]), kinds
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
        f = section(file, "folder", rf, where, sections["folder"])
        local = usable_path(file, f"{where}.path", f["path"])
        try:
            if not local.is_absolute():
                local = (file.parent / local).resolve()
            if require_folders and not local.is_dir():
                problem = "not a directory" if local.exists() else "folder does not exist"
                raise ConfigError(file, f"{where}.path", f"{problem}: {say_path(local)}")
        except OSError as e:
            raise ConfigError(
                file, f"{where}.path", f"cannot use {say_path(local)}: {e.strerror}"
            ) from None
        except RuntimeError as e:  # a symlink loop, met by resolve()
            raise ConfigError(file, f"{where}.path", f"cannot use {say_path(local)}: {e}") from None
        check_ignores(file, where, f["ignore"])
        rp = remote_path(file, f"{where}.remote_path", f["remote_path"] or local.name)
        check_overlap(file, where, rp, local, seen)
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

    if remote.options.get("trash"):
        check_trash(file, remote.options["trash"], seen)

    s = section(file, "sync", raw.get("sync", {}), "sync", sections["sync"])
    for key, most in _LONGEST.items():
        seconds(file, f"sync.{key}", s[key], most=most)
    if s["concurrency"] < 1 or s["concurrency"] > 256:
        raise ConfigError(file, "sync.concurrency", "must be between 1 and 256")
    try:
        bwlimit = parse_size(s["bwlimit"])
    except ValueError as e:
        raise ConfigError(file, "sync.bwlimit", str(e)) from None
    max_delete = delete_limit(file, "sync.max_delete", s["max_delete"])
    usable_path(file, "sync.state_dir", s["state_dir"])
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

    lg = section(file, "log", raw.get("log", {}), "log", sections["log"])
    if lg["level"].lower() not in LOG_LEVELS:
        raise ConfigError(file, "log.level", f"must be one of {', '.join(LOG_LEVELS)}")
    if lg["format"] not in LOG_FORMATS:
        raise ConfigError(file, "log.format", f"must be one of {', '.join(LOG_FORMATS)}")
    st = section(file, "status", raw.get("status", {}), "status", sections["status"])
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


def _remote(file: Path, r: dict[str, Any], kinds: Sequence[KindSpec]) -> RemoteConfig:
    """The [remote] table (already typed): the kind, the timeout, every kind's own keys (each
    by its kind's check), the URL as the kind wants it, the CA file."""
    names = [k.name for k in kinds]
    if r["kind"] not in names:
        raise ConfigError(
            file,
            "remote.kind",
            f"must be one of {', '.join(names)}, not {toml_repr(r['kind'])}",
        )
    kind = kinds[names.index(r["kind"])]
    seconds(file, "remote.timeout", r["timeout"], most=DAY, zero=False)
    options: dict[str, Any] = {}
    secrets: list[Path] = []
    for each in kinds:
        for name, key in each.options.items():
            value = r[name]
            if key.check is not None:
                value = key.check(file, f"remote.{name}", value)
            options[name] = value
            if key.secret and isinstance(value, Path):
                secrets.append(value)
    check_url(
        file, "remote.url", r["url"], form=kind.url, credentials=kind.credentials, kind=kind.name
    )
    return RemoteConfig(
        kind=r["kind"],
        url=r["url"],
        ca_file=existing_file(file, "remote.ca_file", r["ca_file"]),
        verify_tls=r["verify_tls"],
        timeout=r["timeout"],
        options=options,
        secret_files=tuple(secrets),
    )


def _state_dir(value: str) -> Path:
    default = _SECTIONS["sync"]["state_dir"].default
    if value == default and os.environ.get("XDG_STATE_HOME"):
        return Path(os.environ["XDG_STATE_HOME"]).expanduser() / "syncd"
    return expand_path(value)


_LONGEST = {"debounce": DAY, "max_delay": 7 * DAY, "rescan_interval": 365 * DAY}


def reference_markdown(kinds: Sequence[KindSpec]) -> str:
    """The configuration reference (README), generated from the schema so it cannot drift."""
    out: list[str] = []
    for name, keys in schema(kinds).items():
        header = "[[folder]]" if name == "folder" else f"[{name}]"
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
