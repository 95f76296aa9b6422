"""The config as TOML text: the commented file ``syncd init`` writes, and the effective values
``syncd config check`` prints. tomli-w spells every value (quoting, escapes, numbers); this
module only decides which keys appear, in the schema's order, and what comment follows each."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w

from syncd import config as cfgmod
from syncd.config_schema import REQUIRED
from syncd.remotes.kinds import KINDS

if TYPE_CHECKING:
    from syncd.config import Config

INIT_HEADER = (
    "# syncd configuration, written by `syncd init`.",
    "# Uncomment a key to change it; `syncd config check` shows what is in effect.",
    '# Paths expand ~ and $VARIABLES. Every key: README.md, "Configuration reference".',
)
#: What ``syncd init`` suggests instead of a key's default, and says of it.
INIT_SUGGESTED: dict[tuple[str, str], tuple[object, str]] = {
    ("status", "listen"): ("127.0.0.1:8384", "status page, /status.json, /metrics"),
}


def _dumps(table: dict[str, object]) -> str:
    """tomli-w's text, with a tab in a string escaped as well (TOML allows it raw; a reader of
    ``config check`` could not tell it from spaces). Keys are bare, so a tab is in a string."""
    return tomli_w.dumps(table).replace("\t", "\\t")


def _value(value: object) -> str:
    """One TOML value, as tomli-w writes it."""
    return _dumps({"v": value})[len("v = ") : -1]


def assignment(key: str, value: object, note: str = "") -> str:
    """``key = value``, on one line (tomli-w spells the value; a list stays on the line, as a
    person writes a short one), and ``  # note`` after it when there is one."""
    if isinstance(value, list | tuple):
        line = f"{key} = [{', '.join(_value(v) for v in value)}]"
    else:
        line = _dumps({key: value}).rstrip("\n")
    return f"{line}  # {note}" if note else line


def _header(section: str, *, init: bool = False) -> str:
    if section == "folder":
        return "[[folder]]  # one table per folder" if init else "[[folder]]"
    return f"[{section}]"


def init_text(folder: Path, url: str, token_file: Path | None, remote_path: str, kind: str) -> str:
    """The commented config ``syncd init`` writes: what was given, then every other key
    commented out with its default and meaning (from the schema, so it stays current)."""
    given: dict[str, dict[str, object]] = {
        "remote": {"kind": kind, "url": url},
        "folder": {"path": str(folder), "ignore": [".git/"]},
        "sync": {},
        "log": {},
        "status": {},
    }
    if token_file is not None:
        given["remote"]["token_file"] = str(token_file)
    if remote_path:
        given["folder"]["remote_path"] = remote_path
    out = list(INIT_HEADER)
    for name, keys in cfgmod.schema(KINDS).items():
        out += ["", _header(name, init=True)]
        for key, spec in keys.items():
            if key in given[name]:
                out.append(assignment(key, given[name][key]))
                continue
            default = "" if spec.default is REQUIRED else spec.default
            default, why = INIT_SUGGESTED.get((name, key), (default, spec.help))
            out.append("# " + assignment(key, default, why))
    return "\n".join(out) + "\n"


def effective_text(cfg: Config, raw: dict[str, Any]) -> str:
    """Every key with its effective value, as TOML; ``# default`` where the file sets nothing.
    ``raw`` is the file as tomllib read it (what it sets, as written)."""
    folders = raw["folder"] if isinstance(raw.get("folder"), list) else [raw.get("folder", {})]
    sections: dict[str, list[tuple[Any, dict[str, Any]]]] = {
        "remote": [(cfg.remote, raw.get("remote", {}))],
        "folder": list(zip(cfg.folders, folders, strict=False)),
        "sync": [(cfg.sync, raw.get("sync", {}))],
        "log": [(cfg.log, raw.get("log", {}))],
        "status": [(cfg.status, raw.get("status", {}))],
    }
    out = [f"# effective configuration of {cfg.file.absolute()}"]
    for name, keys in cfgmod.schema(KINDS).items():
        for obj, given in sections[name]:
            out += ["", _header(name)]
            for key, spec in keys.items():
                value = obj.value(key) if name == "remote" else getattr(obj, key)
                notes = [] if key in given else ["default"]
                if key == "bwlimit":
                    notes.insert(0, f"{value} bytes/s" if value else "no limit")
                    value = given.get(key, spec.default)
                elif value is None:
                    value = ""
                elif isinstance(value, Path):
                    value = str(value)
                elif not isinstance(value, bool | int | float | str | tuple | list):
                    value = given.get(key, spec.default)  # e.g. max_delete: as written
                out.append(assignment(key, value, "; ".join(notes)))
    return "\n".join(out)
