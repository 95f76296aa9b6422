"""Config: every key with its default, lookup order, and one clear line per error (exit 2)."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

import pytest

from syncd import config as cfgmod
from syncd.errors import ConfigError
from syncd.remotes.kinds import KINDS, NAMES
from tests.conftest import run_syncd, write_config

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = cfgmod.schema(KINDS)


def load(path: Path) -> cfgmod.Config:
    return cfgmod.load(path, kinds=KINDS)


def minimal(tmp_path: Path, body: str = "") -> Path:
    folder = tmp_path / "docs"
    folder.mkdir(exist_ok=True)
    return write_config(
        tmp_path / "c.toml",
        f'[remote]\nurl = "http://127.0.0.1:1/"\n[[folder]]\npath = "{folder}"\n' + body,
    )


def test_defaults_fill_every_key(tmp_path: Path) -> None:
    cfg = load(minimal(tmp_path))
    assert cfg.remote.kind == "syncd"
    assert cfg.remote.timeout == 30.0 and cfg.remote.verify_tls is True
    f = cfg.folders[0]
    assert f.remote_path == "docs" and f.delete is True and f.ignore == ()
    assert cfg.sync.debounce == 0.5 and cfg.sync.max_delay == 30.0
    assert cfg.sync.concurrency == 4 and cfg.sync.bwlimit == 0
    assert cfg.sync.rescan_interval == 3600.0
    assert cfg.log.level == "info" and cfg.log.format == "text"
    assert cfg.status.listen == ""


def test_tilde_and_relative_paths_expand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "Documents").mkdir()
    p = write_config(
        tmp_path / "c.toml",
        '[remote]\nurl = "http://127.0.0.1:1/"\n[[folder]]\npath = "~/Documents"\n'
        '[sync]\nstate_dir = "~/state"\n',
    )
    cfg = load(p)
    assert cfg.folders[0].path == tmp_path / "Documents"
    assert cfg.sync.state_dir == tmp_path / "state"


def test_lookup_order(tmp_path: Path) -> None:
    env = {"SYNCD_CONFIG": str(tmp_path / "env.toml"), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    assert cfgmod.find_config(Path("explicit.toml"), env) == Path("explicit.toml")
    assert cfgmod.find_config(None, env) == tmp_path / "env.toml"
    del env["SYNCD_CONFIG"]
    assert cfgmod.find_config(None, env) == tmp_path / "xdg" / "syncd" / "config.toml"


@pytest.mark.parametrize(
    ("body", "key", "problem"),
    [
        ("[sync]\ndebounse = 1\n", "sync.debounse", "unknown key (did you mean 'debounce'?)"),
        ('[sync]\nconcurrency = "4"\n', "sync.concurrency", 'must be a number, not "4"'),
        ("[sync]\ndebounce = true\n", "sync.debounce", "must be a number, not true"),
        ('[sync]\nbwlimit = "fast"\n', "sync.bwlimit", "not a size"),
        ("[remote.x]\n", "remote.x", "unknown key"),
        ('[log]\nlevel = "loud"\n', "log.level", "must be one of"),
        ("[synk]\n", "synk", "unknown section (did you mean [sync]?)"),
    ],
)
def test_bad_values_name_file_key_problem(
    tmp_path: Path, body: str, key: str, problem: str
) -> None:
    path = minimal(tmp_path, body)
    with pytest.raises(ConfigError) as e:
        load(path)
    assert e.value.key == key
    assert problem in e.value.problem
    assert str(path) in str(e.value)


def test_missing_required_keys(tmp_path: Path) -> None:
    p = write_config(tmp_path / "c.toml", '[remote]\nkind = "syncd"\n')
    with pytest.raises(ConfigError, match=r"remote\.url: missing"):
        load(p)
    p = write_config(tmp_path / "c.toml", '[remote]\nurl = "http://127.0.0.1:1/"\n')
    with pytest.raises(ConfigError, match=r"folder: missing"):
        load(p)
    p = write_config(tmp_path / "c.toml", '[remote]\nurl = "http://127.0.0.1:1/"\n[[folder]]\n')
    with pytest.raises(ConfigError, match=r"folder\[0\]\.path: missing"):
        load(p)


def test_folder_must_exist_and_remote_paths_differ(tmp_path: Path) -> None:
    p = write_config(
        tmp_path / "c.toml",
        f'[remote]\nurl = "http://127.0.0.1:1/"\n[[folder]]\npath = "{tmp_path / "nope"}"\n',
    )
    with pytest.raises(ConfigError, match=r"folder\[0\]\.path: folder does not exist"):
        load(p)
    (tmp_path / "a" / "docs").mkdir(parents=True)
    (tmp_path / "b" / "docs").mkdir(parents=True)
    p = write_config(
        tmp_path / "c.toml",
        '[remote]\nurl = "http://127.0.0.1:1/"\n'
        f'[[folder]]\npath = "{tmp_path / "a" / "docs"}"\n'
        f'[[folder]]\npath = "{tmp_path / "b" / "docs"}"\n',
    )
    with pytest.raises(ConfigError, match=r"folder\[1\]\.remote_path: 'docs' is already used"):
        load(p)


@pytest.mark.parametrize(
    ("first", "second"),
    [("docs", "docs/photos"), ("docs/photos", "docs"), ("a/b", "a/b/c/d"), ("docs", "/docs/")],
)
def test_nested_remote_paths_are_refused(tmp_path: Path, first: str, second: str) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    p = write_config(
        tmp_path / "c.toml",
        '[remote]\nurl = "http://127.0.0.1:1/"\n'
        f'[[folder]]\npath = "{tmp_path / "one"}"\nremote_path = "{first}"\n'
        f'[[folder]]\npath = "{tmp_path / "two"}"\nremote_path = "{second}"\n',
    )
    with pytest.raises(ConfigError) as info:
        load(p)
    msg = str(info.value)
    assert "folder[1].remote_path" in msg
    for needle in ("folder[0]", "folder[1]", str(tmp_path / "one"), str(tmp_path / "two")):
        assert needle in msg
    assert repr(first.strip("/")) in msg and repr(second.strip("/")) in msg


def test_sibling_remote_paths_with_a_common_prefix_are_fine(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    p = write_config(
        tmp_path / "c.toml",
        '[remote]\nurl = "http://127.0.0.1:1/"\n'
        f'[[folder]]\npath = "{tmp_path / "one"}"\nremote_path = "docs"\n'
        f'[[folder]]\npath = "{tmp_path / "two"}"\nremote_path = "docs-old/photos"\n',
    )
    cfg = load(p)
    assert [f.remote_path for f in cfg.folders] == ["docs", "docs-old/photos"]


def test_missing_token_file(tmp_path: Path) -> None:
    p = minimal(tmp_path)
    text = p.read_text().replace("[[folder]]", f'token_file = "{tmp_path / "tok"}"\n[[folder]]')
    p.write_text(text)
    with pytest.raises(ConfigError, match=r"remote\.token_file: file not found"):
        load(p)


def test_cli_config_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    p = minimal(tmp_path, "[sync]\ndebounse = 1\n")
    for cmd in ("sync", "verify", "status"):
        r = run_syncd(cmd, config=p)
        assert r.returncode == 2, r.stderr
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1, r.stderr
        assert str(p) in lines[0] and "sync.debounse" in lines[0] and "unknown key" in lines[0]
    r = run_syncd("sync", config=tmp_path / "absent.toml")
    assert r.returncode == 2 and "config file not found" in r.stderr
    p.write_text("[remote\n")
    r = run_syncd("sync", config=p)
    assert r.returncode == 2 and "not valid TOML" in r.stderr


def test_config_error_touches_nothing(tmp_path: Path) -> None:
    p = minimal(tmp_path, f'[sync]\nstate_dir = "{tmp_path / "state"}"\nconcurrency = 0\n')
    r = run_syncd("sync", config=p)
    assert r.returncode == 2 and "sync.concurrency" in r.stderr
    assert not (tmp_path / "state").exists()


def test_init_writes_0600_and_refuses_existing(tmp_path: Path) -> None:
    folder = tmp_path / "Documents"
    folder.mkdir()
    tok = tmp_path / "token"
    tok.write_text("t0k\n")
    target = tmp_path / "deep" / "er" / "config.toml"
    args = ["init", "--folder", str(folder), "--url", "http://127.0.0.1:8765/"]
    r = run_syncd(*args, "--token-file", str(tok), config=target)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    cfg = load(target)
    assert cfg.folders[0].path == folder and cfg.remote.options["token_file"] == tok
    before = target.read_bytes()
    r = run_syncd(*args, config=target)
    assert r.returncode == 2 and "already exists" in r.stderr
    assert target.read_bytes() == before
    # Found through $SYNCD_CONFIG as well.
    r = run_syncd("status", env={"SYNCD_CONFIG": str(target)})
    assert r.returncode == 4 and "Documents" in r.stdout  # 4: no daemon runs


def test_example_config_holds_every_key() -> None:
    text = (ROOT / "config.example.toml").read_text()
    uncommented = "\n".join(ln.lstrip("# ") for ln in text.splitlines())
    for section, keys in SCHEMA.items():
        for key in keys:
            assert f"{key} =" in uncommented, f"config.example.toml lacks {section}.{key}"
    doc = tomllib.loads(text)
    assert set(doc) <= set(SCHEMA)


def test_size_parsing() -> None:
    assert cfgmod.parse_size("0") == 0
    assert cfgmod.parse_size("10MiB") == 10 * 1024 * 1024
    assert cfgmod.parse_size("500k") == 500_000
    assert cfgmod.parse_size("1.5 GiB") == int(1.5 * 1024**3)
    with pytest.raises(ValueError):
        cfgmod.parse_size("lots")


def test_state_dir_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xs"))
    assert load(minimal(tmp_path)).sync.state_dir == tmp_path / "xs" / "syncd"
    assert os.environ["XDG_STATE_HOME"]


def test_readme_reference_is_generated_from_schema() -> None:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("-->\n", readme.index("<!-- reference:start")) + 4
    end = readme.index("<!-- reference:end -->")
    assert readme[start:end].strip() == cfgmod.reference_markdown(KINDS).strip(), (
        "README's configuration reference is stale: paste syncd.config.reference_markdown(KINDS)"
    )


def test_every_remote_kind_is_available(tmp_path: Path) -> None:
    assert NAMES == ("syncd", "webdav", "s3", "http")
    assert SCHEMA["remote"]["kind"].default == "syncd"
    p = minimal(tmp_path)
    p.write_text(p.read_text().replace("[remote]\n", '[remote]\nkind = "webdav"\n'))
    assert load(p).remote.kind == "webdav"
