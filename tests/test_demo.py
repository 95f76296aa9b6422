"""The README's first command: `scripts/demo` sets itself up, mirrors live, and stops both of
its processes gracefully on one Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent


def demo_env(demo: Path) -> dict[str, str]:
    """The environment for scripts/demo with its folder, server and state in ``demo`` (each
    test its own: the demo's default, ROOT/demo, is the user's)."""
    env = {k: v for k, v in os.environ.items() if k not in ("SYNCD_CONFIG", "DEMO_SECONDS")}
    return {**env, "DEMO_DIR": str(demo)}


def test_demo_mirrors_and_stops_cleanly(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    r = subprocess.run(
        [str(ROOT / "scripts" / "demo")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**demo_env(demo), "DEMO_SECONDS": "1"},
        stdin=subprocess.DEVNULL,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "syncd is mirroring" in out
    assert "verify: identical" in out
    assert "stopped cleanly" in out
    assert (demo / "server" / "folder" / "notes" / "todo.md").read_bytes() == (
        demo / "folder" / "notes" / "todo.md"
    ).read_bytes()


def demo_processes(demo: Path) -> dict[int, str]:
    """The demo's `syncd run` and `syncd serve` still running: pid -> "run" or "serve"."""
    found: dict[int, str] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = [a.decode(errors="replace") for a in (d / "cmdline").read_bytes().split(b"\0")]
        except OSError:
            continue
        if (str(demo / "config.toml") in argv and "run" in argv) or (
            str(demo / "server") in argv and "serve" in argv
        ):
            found[int(d.name)] = "run" if "run" in argv else "serve"
    return found


def test_one_ctrl_c_stops_both_gracefully(tmp_path: Path) -> None:
    """Ctrl-C in a terminal signals the whole foreground process group: the daemon must get
    one signal (a second one means "stop at once"), and both processes must stop."""
    demo = tmp_path / "demo"
    log = tmp_path / "demo.out"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(ROOT / "scripts" / "demo")],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=demo_env(demo),
            start_new_session=True,  # its own process group, as a terminal's foreground job
        )
    try:
        # Ready: the banner, then the daemon's status, then it waits for Ctrl-C.
        wait_for(
            lambda: "Ctrl-C stops both." in log.read_text() and "daemon pid" in log.read_text(),
            120,
            "the demo to be mirroring",
        )
        kids = demo_processes(demo)
        assert sorted(kids.values()) == ["run", "serve"], kids
        os.killpg(proc.pid, signal.SIGINT)  # one Ctrl-C
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in demo_processes(demo):  # never leave one behind
            os.kill(pid, signal.SIGKILL)
    text = log.read_text()
    assert code == 0, text
    wait_for(lambda: not set(kids) & set(demo_processes(demo)), 10, "both processes gone")
    assert "finishing transfers in flight" in text, text
    assert "stopping at once" not in text, text
    assert "stopped cleanly" in text, text
    assert "syncd run exited 0, syncd serve exited 0" in text, text
