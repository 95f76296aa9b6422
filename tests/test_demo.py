"""The README's first command: `scripts/demo` sets itself up and mirrors live."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_mirrors_and_stops_cleanly() -> None:
    env = {k: v for k, v in os.environ.items() if k != "SYNCD_CONFIG"}
    r = subprocess.run(
        [str(ROOT / "scripts" / "demo")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "DEMO_SECONDS": "1"},
        stdin=subprocess.DEVNULL,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "syncd is mirroring" in out
    assert "verify: identical" in out
    assert "stopped cleanly" in out
