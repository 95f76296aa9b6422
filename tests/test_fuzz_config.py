"""Config values, generated: every value of every key is either accepted with a sane meaning or
refused with one ConfigError naming the file, the key and the problem -- never a traceback.

The bulk goes through ``config.load`` (a real TOML file); a sample through the real
``syncd config check`` command line.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from syncd import config as cfgmod
from syncd.errors import ConfigError
from syncd.ignore import ignore_problem
from syncd.remotes.kinds import KINDS
from syncd.types import shown
from tests.conftest import run_syncd

_SUPPRESS = [*settings().suppress_health_check, HealthCheck.function_scoped_fixture]
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")

# -- a TOML writer (tomli-w is not a test dependency, and it refuses some values we want) ----


def toml_str(s: str) -> str:
    out = []
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return toml_str(v)
    if isinstance(v, datetime.date | datetime.time):
        return v.isoformat()
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{toml_str(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def toml_doc(doc: Mapping[str, Any]) -> str:
    out: list[str] = []
    for name, table in doc.items():
        tables = table if isinstance(table, list) else [table]
        for t in tables:
            out.append(f"[[{name}]]" if isinstance(table, list) else f"[{name}]")
            out += [f"{toml_str(k)} = {toml_value(v)}" for k, v in t.items()]
    return "\n".join(out) + "\n"


# -- generated values ---------------------------------------------------------------------------

# fmt: off
SPECIAL = st.sampled_from(
    [
        math.nan, math.inf, -math.inf, 0, 0.0, -0.0, -1, -1.5, 1, 0.001, 1e-300, 1e300,
        2**31, 2**53 + 1, 2**63 - 1, -(2**63), 2**64, 10**30, 10**400, -(10**400), 4.0,
        65536, 99999, True, False,
        "", " ", "0", "-1", "4", "nan", "inf", "1e999", "9" * 400, "10MiB", "0.5", "1.5 GiB",
        "50%", "150%", "-5%", "nan%", "inf%", "1_000", "²", "٣", "0x10",
        "\x00", "a\x00b", "a\nb", "\x1b[31m", "x" * 5000, "~", "$HOME", "/", ".", "..",
        "DEBUG", "json", "PUT", "post", "DE LETE", "127.0.0.1:8384", ":0", "[::1]:99999",
        "127.0.0.1:99999", "h\x01:80",
        "http://u:p@127.0.0.1/", "http://user@127.0.0.1/", "ftp://h/", "file:///x", "h:80",
        "http://127.0.0.1:0/", "http://127.0.0.1:99999/", "http://[::1/", "http:///x",
        "http://h /x", "s3://bucket/p/", "s3://k:s@bucket/",
        [], [1], ["a", 1], [[]], ["*.o", "\\"], ["[z-a]"], ["a\x00"], {}, {"a": 1},
        datetime.date(2020, 1, 1), datetime.time(1, 2, 3), datetime.datetime(2020, 1, 1, 1, 2),
    ]
)
# fmt: on
GENERATED = st.one_of(
    st.integers(),
    st.floats(),
    st.booleans(),
    st.text(max_size=40),
    st.lists(st.text(max_size=8), max_size=3),
    st.dictionaries(st.text(min_size=1, max_size=4), st.integers(), max_size=2),
    st.dates(),
    st.times(),
    st.datetimes(),
)
VALUES = st.one_of(SPECIAL, GENERATED)
KEYS = st.sampled_from([(s, k) for s, keys in cfgmod.schema(KINDS).items() for k in keys])


def load(path: Path) -> cfgmod.Config:
    return cfgmod.load(path, kinds=KINDS)


#: A value of one key can make another one wrong; the error may name either.
RELATED = {
    "remote.kind": {"remote.url"},
    "folder[0].path": {"folder[0].remote_path"},
    "sync.debounce": {"sync.max_delay"},
}


def base_doc(folder: Path) -> dict[str, Any]:
    return {"remote": {"url": "http://127.0.0.1:8765/"}, "folder": [{"path": str(folder)}]}


def check_sane(cfg: cfgmod.Config) -> None:
    """What an accepted config must mean: finite, in range, usable."""
    r, s = cfg.remote, cfg.sync
    assert math.isfinite(r.timeout) and 0 < r.timeout <= 86400
    for seconds in (s.debounce, s.max_delay, s.rescan_interval):
        assert isinstance(seconds, float) and math.isfinite(seconds) and seconds >= 0
    assert s.max_delay >= s.debounce
    assert type(s.concurrency) is int and 1 <= s.concurrency <= 256
    assert type(s.bwlimit) is int and 0 <= s.bwlimit < 2**63
    if s.max_delete.count is not None:
        assert type(s.max_delete.count) is int and s.max_delete.count >= 0
    else:
        assert s.max_delete.percent is not None and 0 <= s.max_delete.percent <= 100
    assert isinstance(r.verify_tls, bool)
    parts = urlsplit(r.url)
    assert parts.username is None and parts.password is None
    assert parts.scheme in (("s3",) if r.kind == "s3" else ("http", "https"))
    assert parts.hostname and (parts.port is None or 0 < parts.port < 65536)
    o = r.options
    if o["endpoint_url"]:
        assert urlsplit(o["endpoint_url"]).scheme in ("http", "https")
    texts = ("username", "method", "delete_method", "region", "profile", "form_field")
    for text in (r.url, *(o[k] for k in texts)):
        assert text.isprintable(), text  # no control characters
    assert o["method"] in ("PUT", "POST")
    if cfg.status.listen:
        assert 0 <= int(cfg.status.listen.rpartition(":")[2]) <= 65535
    assert cfg.log.level in cfgmod.LOG_LEVELS and cfg.log.format in cfgmod.LOG_FORMATS
    for f in cfg.folders:
        assert f.path.is_absolute() and f.path.is_dir()
        assert f.remote_path and not CONTROL.search(f.remote_path)
        assert all(ignore_problem(line) is None for line in f.ignore)
        assert isinstance(f.delete, bool) and isinstance(f.use_default_ignores, bool)
    assert "\0" not in str(s.state_dir)


def load_or_refuse(path: Path, where: str) -> cfgmod.Config | None:
    """Load ``path``: a Config that makes sense, or a ConfigError on one line naming the file
    and ``where`` (or a key it bears on)."""
    try:
        cfg = load(path)
    except ConfigError as e:
        assert e.file == str(path)
        assert e.key is not None, str(e)
        keys = {where, *RELATED.get(where, ())}
        assert any(e.key == k or e.key.startswith(k + "[") for k in keys), (where, str(e))
        assert e.problem and shown(str(e)) == str(e), str(e)  # one line, nothing raw
        assert len(str(e)) < 600, str(e)
        return None
    check_sane(cfg)
    return cfg


@given(key=KEYS, value=VALUES)
@example(key=("remote", "timeout"), value=math.nan)
@example(key=("sync", "bwlimit"), value="9" * 400)
@example(key=("folder", "path"), value="a\x00b")
@example(key=("remote", "url"), value="http://[::1/")
@example(key=("status", "listen"), value="127.0.0.1:99999")
@settings(suppress_health_check=_SUPPRESS)
def test_every_value_of_every_key_is_accepted_sanely_or_refused_clearly(
    tmp_path: Path, key: tuple[str, str], value: object
) -> None:
    section, name = key
    folder = tmp_path / "docs"
    folder.mkdir(exist_ok=True)
    doc = base_doc(folder)
    if section == "folder":
        doc["folder"][0][name] = value
        where = f"folder[0].{name}"
    else:
        doc.setdefault(section, {})[name] = value
        where = f"{section}.{name}"
    path = tmp_path / "c.toml"
    path.write_text(toml_doc(doc))
    load_or_refuse(path, where)


@given(
    values=st.dictionaries(KEYS, VALUES, min_size=2, max_size=6),
)
@settings(suppress_health_check=_SUPPRESS)
def test_many_odd_values_at_once_never_raise_anything_else(
    tmp_path: Path, values: dict[tuple[str, str], object]
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir(exist_ok=True)
    doc = base_doc(folder)
    for (section, name), value in values.items():
        if section == "folder":
            doc["folder"][0][name] = value
        else:
            doc.setdefault(section, {})[name] = value
    path = tmp_path / "c.toml"
    path.write_text(toml_doc(doc))
    try:
        cfg = load(path)
    except ConfigError as e:
        assert e.file == str(path) and shown(str(e)) == str(e), str(e)
    else:
        check_sane(cfg)


# -- URLs -------------------------------------------------------------------------------------

CREDENTIAL_URLS = {
    "syncd": "http://alice:s3cret-pw@127.0.0.1:8765/",
    "webdav": "https://alice:s3cret-pw@dav.example/remote.php/dav/files/alice/",
    "http": "https://alice:s3cret-pw@upload.example/put/{path}",
    "s3": "s3://AKIAX:s3cret-pw@bucket/prefix/",
}
WHERE_THEY_GO = {
    "syncd": "remote.token_file",
    "webdav": "remote.password_file",
    "http": "remote.headers_file",
    "s3": "AWS",
}


def _remote_config(tmp_path: Path, remote: dict[str, Any]) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir(exist_ok=True)
    path = tmp_path / "c.toml"
    path.write_text(toml_doc({"remote": remote, "folder": [{"path": str(folder)}]}))
    return path


@pytest.mark.parametrize("kind", sorted(CREDENTIAL_URLS))
@pytest.mark.parametrize("user_only", [False, True])
def test_credentials_in_the_url_are_refused_saying_where_they_go(
    tmp_path: Path, kind: str, user_only: bool
) -> None:
    url = CREDENTIAL_URLS[kind]
    if user_only:
        url = url.replace(":s3cret-pw@", "@")
    path = _remote_config(tmp_path, {"kind": kind, "url": url})
    with pytest.raises(ConfigError) as info:
        load(path)
    e = info.value
    assert e.key == "remote.url", str(e)
    assert "s3cret-pw" not in str(e)
    assert "credentials" in e.problem or "user name" in e.problem, str(e)
    assert WHERE_THEY_GO[kind] in e.problem, str(e)
    if kind == "webdav":
        assert "remote.username" in e.problem


def test_config_check_refuses_a_password_in_the_url_without_showing_it(tmp_path: Path) -> None:
    path = _remote_config(tmp_path, {"kind": "webdav", "url": "http://bob:hunter2-pw@127.0.0.1:1/"})
    r = run_syncd("config", "check", config=path)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "remote.url" in lines[0] and "remote.username" in lines[0], lines
    assert "hunter2-pw" not in r.stderr + r.stdout


@pytest.mark.parametrize(
    ("kind", "url", "problem"),
    [
        ("syncd", "ftp://127.0.0.1/", "http:// or https://"),
        ("webdav", "file:///srv/dav/", "http:// or https://"),
        ("syncd", "127.0.0.1:8765", "http:// or https://"),
        ("syncd", "/srv/mirror", "http:// or https://"),
        ("syncd", "http:///mirror/", "no host"),
        ("syncd", "http://:8765/", "no host"),
        ("syncd", "http://127.0.0.1:0/", "port"),
        ("syncd", "http://127.0.0.1:99999/", "port"),
        ("syncd", "http://127.0.0.1:http/", "port"),
        ("syncd", "http://127.0.0.1 :8765/", "space"),
        ("webdav", "http://dav.example/my files/", "space"),
        ("syncd", "http://[::1/", "not a usable URL"),
        ("syncd", "", "empty"),
        ("s3", "http://bucket/", "s3://"),
        ("s3", "s3:///prefix/", "s3://"),
        ("http", "https://upload.example/put/", "{path}"),
        # Accepted by config check once, then every request failed with a puzzling answer:
        ("syncd", "http://127.0.0.1:8765/?token=hunter2", "?query"),
        ("webdav", "http://127.0.0.1:8765/dav/?x", "?query"),
        ("syncd", "http://127.0.0.1:8765/#frag", "#fragment"),
        ("http", "https://upload.example/put?path={path}#x", "#fragment"),
        ("syncd", "http://127.0.0.1:8765/x%2Fy/", "encoded slash"),
        ("webdav", "http://127.0.0.1:8765/a/../../", "'..'"),
        ("syncd", "http://127.0.0.1:8765/.~syncd-x/", "syncd's own"),
    ],
)
def test_odd_urls_are_refused_one_clear_line_each(
    tmp_path: Path, kind: str, url: str, problem: str
) -> None:
    path = _remote_config(tmp_path, {"kind": kind, "url": url})
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.key == "remote.url"
    assert problem in info.value.problem, str(info.value)
    assert shown(str(info.value)) == str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8765/",
        "https://[::1]:8443/dav/",
        "http://host.example/a%20b/",
        "http://h/",
    ],
)
def test_ordinary_urls_pass(tmp_path: Path, url: str) -> None:
    assert load(_remote_config(tmp_path, {"url": url})).remote.url == url


def test_an_s3_endpoint_url_is_checked_like_a_url(tmp_path: Path) -> None:
    remote = {"kind": "s3", "url": "s3://bucket/p/", "endpoint_url": "http://k:s@minio:9000/"}
    with pytest.raises(ConfigError) as info:
        load(_remote_config(tmp_path, remote))
    assert info.value.key == "remote.endpoint_url" and "k:s" not in str(info.value)


def test_a_username_with_a_colon_or_a_newline_is_refused_at_check(tmp_path: Path) -> None:
    for name in ("a:b", "a\nb"):
        remote = {"kind": "webdav", "url": "http://127.0.0.1:1/", "username": name}
        with pytest.raises(ConfigError) as info:
            load(_remote_config(tmp_path, remote))
        assert info.value.key == "remote.username"


# -- ignore lines in the config ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("\\", "backslash"),
        ("foo\\", "backslash"),
        ("!", "negates nothing"),
        ("[z-a]", "bad character range"),
        ("[[:alpha:]]", "POSIX"),
        ("a\x00b", "NUL"),
        ("x" * 20000, "longer than"),
    ],
)
def test_a_bad_ignore_line_in_the_config_is_refused_naming_key_and_line(
    tmp_path: Path, line: str, reason: str
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    path = tmp_path / "c.toml"
    doc = base_doc(folder)
    doc["folder"][0]["ignore"] = ["*.o", "build/", line]
    path.write_text(toml_doc(doc))
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.key == "folder[0].ignore[2]", str(info.value)
    assert reason in info.value.problem
    assert shown(str(info.value)) == str(info.value) and len(str(info.value)) < 600


IGNORE_LINE = st.lists(
    st.sampled_from(["\\", "[", "]", "!", "*", "**", "/", "?", "#", " ", "a", "é", "[:alpha:]"]),
    max_size=6,
).map("".join)


@given(lines=st.lists(IGNORE_LINE, max_size=5))
@settings(suppress_health_check=_SUPPRESS)
def test_config_ignore_lists_are_refused_exactly_when_a_line_is_bad(
    tmp_path: Path, lines: list[str]
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir(exist_ok=True)
    path = tmp_path / "c.toml"
    doc = base_doc(folder)
    doc["folder"][0]["ignore"] = lines
    path.write_text(toml_doc(doc))
    bad = [i for i, line in enumerate(lines) if ignore_problem(line) is not None]
    if bad:
        with pytest.raises(ConfigError) as info:
            load(path)
        assert info.value.key == f"folder[0].ignore[{bad[0]}]"
    else:
        assert load(path).folders[0].ignore == tuple(lines)


# -- through the command line --------------------------------------------------------------------

CLI_SAMPLE = [
    ("remote", "timeout", math.nan, "remote.timeout"),
    ("remote", "timeout", math.inf, "remote.timeout"),
    ("remote", "timeout", True, "remote.timeout"),
    ("sync", "concurrency", 4.5, "sync.concurrency"),
    ("sync", "concurrency", 10**30, "sync.concurrency"),
    ("sync", "debounce", -1, "sync.debounce"),
    ("sync", "bwlimit", "9" * 400, "sync.bwlimit"),
    ("sync", "bwlimit", "0.5", "sync.bwlimit"),
    ("sync", "max_delete", "nan%", "sync.max_delete"),
    ("sync", "state_dir", "", "sync.state_dir"),
    ("folder", "path", "a\x00b", "folder[0].path"),
    ("folder", "path", "9" * 400, "folder[0].path"),
    ("folder", "ignore", ["\\"], "folder[0].ignore[0]"),
    ("remote", "url", "http://[::1/", "remote.url"),
    ("remote", "token_file", "\x00", "remote.token_file"),
    ("status", "listen", "127.0.0.1:99999", "status.listen"),
    ("log", "level", {"a": 1}, "log.level"),
]


@pytest.mark.parametrize(("section", "key", "value", "where"), CLI_SAMPLE)
def test_config_check_refuses_odd_values_in_one_line(
    tmp_path: Path, section: str, key: str, value: object, where: str
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    doc = base_doc(folder)
    if section == "folder":
        doc["folder"][0][key] = value
    else:
        doc.setdefault(section, {})[key] = value
    path = tmp_path / "c.toml"
    path.write_text(toml_doc(doc))
    r = run_syncd("config", "check", config=path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert str(path) in lines[0] and f"{where}:" in lines[0], lines[0]
    assert "Traceback" not in r.stderr


def test_config_check_accepts_odd_but_sane_values(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    doc = base_doc(folder)
    doc["sync"] = {"debounce": 0, "rescan_interval": 0, "concurrency": 256, "max_delete": 0}
    doc["remote"]["timeout"] = 0.001
    doc["folder"][0]["ignore"] = ["", "# a comment", "é*", "[a-c]x", "\\!x", "a\nb"]
    path = tmp_path / "c.toml"
    path.write_text(toml_doc(doc))
    r = run_syncd("config", "check", config=path)
    assert r.returncode == 0, r.stderr
    assert "rescan_interval = 0.0" in r.stdout
