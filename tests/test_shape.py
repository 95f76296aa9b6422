"""The shape of the code (docs/architecture.md), as the build enforces it: import-linter's
contracts in pyproject.toml hold, a new module cannot slip past them by being in no layer, and
a contract that is broken is reported (the checks can fail)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = shutil.which("lint-imports", path=str(Path(sys.executable).parent))


def _contracts() -> list[dict[str, object]]:
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts: list[dict[str, object]] = doc["tool"]["importlinter"]["contracts"]
    return contracts


def _layered() -> set[str]:
    """Every module named in the package-wide layers contract."""
    (main,) = [c for c in _contracts() if c["type"] == "layers" and "containers" not in c]
    names: set[str] = set()
    for layer in main["layers"]:  # type: ignore[attr-defined]
        for part in layer.replace(":", "|").split("|"):
            names.add(part.strip().strip("()"))
    return names


def _modules() -> list[str]:
    out = []
    for path in sorted((ROOT / "syncd").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append(".".join(parts))
    return out


def test_every_module_is_in_a_layer() -> None:
    """A module no layer names is checked by no layer rule: each one is placed (its own name,
    or a package that holds it, such as syncd.server or syncd.remotes)."""
    layered = _layered()
    unplaced = [
        m
        for m in _modules()
        if m not in ("syncd", "syncd.status")  # packages whose rooms are placed one by one
        and not any(m == name or m.startswith(name + ".") for name in layered)
    ]
    assert unplaced == [], f"add these to [tool.importlinter] layers in pyproject.toml: {unplaced}"


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    assert LINT is not None, "lint-imports is installed with the test extra"
    env = {**os.environ, "PYTHONPATH": str(root)}  # this tree's syncd, not an installed one
    return subprocess.run(
        [LINT, "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_contracts_hold() -> None:
    r = _lint(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        # the engine reaching up into the daemon: the cycle the shape issue found
        ("syncd/engine.py", "import syncd.daemon", "layers"),
        # the server importing the client's config
        ("syncd/server/store.py", "import syncd.config", "the receiving server"),
        # the status board importing the pipeline instead of reading LiveView
        ("syncd/status/board.py", "import syncd.engine", "status reads the daemon"),
        # a remote kind importing another kind
        ("syncd/remotes/http.py", "import syncd.remotes.syncd", "a remote kind"),
        # one kind's own room importing another kind's (the rooms beside webdav.py and s3.py)
        ("syncd/remotes/s3_versions.py", "import syncd.remotes.webdav_tree", "a kind's rooms"),
    ],
)
def test_a_broken_rule_fails(tmp_path: Path, module: str, line: str, contract: str) -> None:
    """Each contract can fail: a copy of the tree with one forbidden import is refused, and
    the message names the contract."""
    copy = tmp_path / "tree"
    shutil.copytree(ROOT / "syncd", copy / "syncd", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    target = copy / module
    target.write_text(target.read_text(encoding="utf-8") + f"\n{line}  # noqa\n")
    r = _lint(copy)
    assert r.returncode != 0, r.stdout
    broken = [ln for ln in r.stdout.splitlines() if ln.endswith("BROKEN")]
    assert any(contract in ln for ln in broken), r.stdout
