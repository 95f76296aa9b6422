"""How a config key is declared (``Key``), how a remote kind declares its own keys
(``KindSpec``: given to ``config.load`` by the caller, from ``syncd.remotes.kinds``), and the
first checks every value goes through: unknown keys, missing keys, types, text."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from syncd.config_checks import HTTP_URL, URLForm, toml_repr
from syncd.errors import ConfigError
from syncd.types import shown

REQUIRED = object()


@dataclass(frozen=True)
class Key:
    """One config key: its TOML type, default (``REQUIRED`` if it has none) and help."""

    type: type | tuple[type, ...]
    default: Any
    help: str
    #: A name, URL, method or number: a control character in it is a typo or an attack on a
    #: header, never meant. (Any string refuses NUL.)
    text: bool = False
    #: The file it names holds a secret (a token, a password): redacted from the log, and
    #: ``syncd config check`` warns when others can read it.
    secret: bool = False
    #: ``(file, key, value) -> value``: a remote kind's own check of the typed value, which
    #: returns what ``RemoteConfig.options`` holds (a ``Path`` for a file) or raises ConfigError.
    check: Callable[[Path, str, Any], Any] | None = None


@dataclass(frozen=True, kw_only=True)
class KindSpec:
    """What the config needs to know of one remote kind (declared in syncd.remotes.kinds)."""

    name: str
    #: The kind's own [remote] keys, in the order the reference lists them.
    options: Mapping[str, Key] = field(default_factory=dict)
    url: URLForm = HTTP_URL
    #: What its ``url`` is, for the reference ("" says nothing beyond "server URL").
    url_help: str = ""
    #: Where the kind takes the credentials that must not be in its URL.
    credentials: str


def remote_keys(kinds: Sequence[KindSpec], common: Mapping[str, Key]) -> dict[str, Key]:
    """The [remote] table's keys: ``kind`` (the first kind is the default), ``url``, every
    kind's own keys (each help line names its kind), then the ``common`` ones."""
    url_help = "server URL" + "".join(f"; {k.name}: {k.url_help}" for k in kinds if k.url_help)
    keys = {
        "kind": Key(str, kinds[0].name, " | ".join(f'"{k.name}"' for k in kinds), text=True),
        "url": Key(str, REQUIRED, url_help, text=True),
    }
    shared: dict[str, list[str]] = {}
    for kind in kinds:
        for name, key in kind.options.items():
            assert name not in common, f"{kind.name}: {name} is taken"
            # One Key object declared by several kinds is one key of theirs (``trash``).
            assert name not in keys or name in shared, f"{kind.name}: {name} is taken"
            shared.setdefault(name, []).append(kind.name)
            keys[name] = replace(key, help=f"{', '.join(shared[name])}: {key.help}")
    return {**keys, **common}


def check_text(file: Path, key: str, value: str, *, text: bool) -> None:
    """No NUL anywhere; no control character in a ``text`` key."""
    if "\0" in value:
        raise ConfigError(file, key, f"contains a NUL character: {toml_repr(value)}")
    if text and not value.isprintable():
        c = next(c for c in value if not c.isprintable())
        raise ConfigError(
            file, key, f"contains a control character (U+{ord(c):04X}): {toml_repr(value)}"
        )


def check_type(file: Path, key: str, value: Any, spec: Key) -> Any:
    expected = spec.type if isinstance(spec.type, tuple) else (spec.type,)
    ok = isinstance(value, expected) and not (isinstance(value, bool) and bool not in expected)
    if not ok and isinstance(value, float) and expected == (int,):
        raise ConfigError(file, key, f"must be a whole number, not {toml_repr(value)}")
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
        raise ConfigError(file, key, f"must be {names}, not {toml_repr(value)}")
    if list in expected:
        for item in value:
            if not isinstance(item, str):
                raise ConfigError(file, key, f"must be a list of strings, found {toml_repr(item)}")
        return tuple(value)
    if isinstance(value, str):
        check_text(file, key, value, text=spec.text)
    if expected == (int, float) or float in expected:
        try:
            return float(value)
        except OverflowError:  # an int of more than 308 digits: refused as infinite
            return math.inf if value > 0 else -math.inf
    return value


def section(
    file: Path, name: str, raw: Any, where: str, schema: Mapping[str, Key]
) -> dict[str, Any]:
    """Check one table against its ``schema``: unknown keys, missing keys, types."""
    if not isinstance(raw, dict):
        raise ConfigError(file, where, f"must be a table ([{name}]), not {toml_repr(raw)}")
    for key in raw:
        if key not in schema:
            hint = closest(key, schema)
            raise ConfigError(
                file,
                f"{where}.{brief_key(key)}",
                "unknown key" + (f" (did you mean {hint!r}?)" if hint else ""),
            )
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        if key in raw:
            out[key] = check_type(file, f"{where}.{key}", raw[key], spec)
        elif spec.default is REQUIRED:
            raise ConfigError(file, f"{where}.{key}", "missing (this key is required)")
        else:
            out[key] = tuple(spec.default) if isinstance(spec.default, list) else spec.default
    return out


def brief_key(key: str) -> str:
    text = shown(key)
    return text if len(text) <= 60 else text[:60] + "..."


def closest(key: str, schema: Mapping[str, object]) -> str | None:
    import difflib

    found = difflib.get_close_matches(key, list(schema), n=1, cutoff=0.6)
    return found[0] if found else None
