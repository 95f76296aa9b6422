"""Syncthing as a peer (Debian's package): change latency and the first sync of the 10,000-file
set, side by side with syncd's from the same run.

Syncthing runs only inside a network namespace holding only loopback: ``unshare -n`` (with
``-r``, a user namespace, when the bench is not root), where ``lo`` is brought up and
``benchlib.syncthing_peer`` starts both instances, measures and writes its figures to a JSON
file (the REST APIs live on that namespace's loopback, so the measuring runs in there too).
Where no such namespace can be made (no root and no unprivileged user namespaces, no
``unshare`` or ``ip``), the step says so in one line and its rows are left not measured.
The filesystem is shared: B's folder is where the servers store (a tmpfs unless --disk), A's a
copy of the data set.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from .measure_live import syncd_latency
from .measure_small import first_syncs
from .peers import netns
from .procs import BenchError
from .report import Result, unmeasured
from .session import Session
from .syncd_runs import ROOT
from .workloads import tree_size


def namespace_problem(timeout: float = 30) -> str:
    """Why a loopback-only network namespace cannot be made here (one line), or ""."""
    try:
        p = subprocess.run(netns(["true"]), capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"`unshare -n` could not run ({e})"
    if p.returncode != 0:
        said = (p.stderr.strip().splitlines() or [f"exit status {p.returncode}"])[-1]
        return f"`unshare -n` could not make a loopback-only network namespace ({said})"
    return ""


def run_peer(s: Session, folder: Path, writes: int) -> dict[str, Any]:
    if shutil.which("syncthing") is None:
        raise BenchError("syncthing is missing (apt-get install syncthing)")
    work = s.run_dir / "syncthing"
    work.mkdir()
    files = tree_size(folder)[0]
    timeout = s.timeout_for(files * 4096, files)
    spec = {
        "work": str(work),
        "logs": str(s.logs),
        "data": str(folder),
        "store": str(s.store_dir / "syncthing-B"),
        "writes": writes,
        "timeout": timeout,
        "result": str(work / "result.json"),
    }
    (work / "spec.json").write_text(json.dumps(spec))
    scripts = str(ROOT / "scripts")
    env = {**s.env, "PYTHONPATH": os.pathsep.join(filter(None, [scripts, s.env.get("PYTHONPATH")]))}
    cmd = netns([sys.executable, "-m", "benchlib.syncthing_peer", str(work / "spec.json")])
    s.cmd(cmd, "syncthing", timeout + writes * 30 + 120, env)
    got: dict[str, Any] = json.loads((work / "result.json").read_text())
    return got


def syncthing(s: Session) -> None:
    """Syncthing A → B against syncd → syncd serve: first sync of the small set, latency."""
    folder = s.data["small"]
    why = namespace_problem()
    if why:
        print(f"  Syncthing not run: {why}; its rows are not measured", flush=True)
        files, writes = tree_size(folder)[0], s.sizes.writes
        s.results += [
            unmeasured(id, name, unit, "Syncthing A → B", better, why)
            for id, name, unit, better in rows(files, writes, s.args.debounce)
        ]
        return
    got = run_peer(s, folder, s.sizes.writes)
    files, lat, st_first = int(got["files"]), got["latency_ms"], float(got["first_sync_s"])
    first, median, top = rows(files, len(lat), s.args.debounce)
    extra = {k: got[k] for k in ("rss_mib", "cpu_s", "version")}

    small = next((r for r in s.results if r.id == "small_first"), None)
    if small is not None:
        rate = small.syncd
    else:
        srv = s.srv
        t = s.timeout_for(files * 4096, files)
        rate = files / first_syncs(s, "small-st", folder, "small-st", srv.serve_root, t).seconds
    med = next((r.syncd for r in s.results if r.id == "latency_median"), None)
    top_ms = next((r.syncd for r in s.results if r.id == "latency_max"), None)
    if med is None or top_ms is None:
        mine = syncd_latency(s)
        med, top_ms = statistics.median(mine), max(mine)
    s.add(
        Result(
            *first[:3],
            rate,
            files / st_first,
            "Syncthing A → B, loopback, from start",
            first[3],
            extra=extra,
        )
    )
    s.add(
        Result(
            *median[:3],
            med,
            statistics.median(lat),
            "Syncthing A → B",
            median[3],
            extra={"syncthing_samples_ms": [round(x, 1) for x in lat]},
        )
    )
    s.add(Result(*top[:3], top_ms, max(lat), "Syncthing A → B", top[3]))


def rows(files: int, writes: int, debounce: float) -> list[tuple[str, str, str, str]]:
    """The step's rows: id, name, unit, which way is better (measured or not)."""
    d = f"debounce {debounce:g} s vs watcher delay 1 s"
    return [
        ("syncthing_first", f"{files:,} × 4 KiB first sync, vs Syncthing", "files/s", "higher"),
        (
            "syncthing_latency_median",
            f"change latency, median of {writes}, vs Syncthing ({d})",
            "ms",
            "lower",
        ),
        ("syncthing_latency_max", f"change latency, max of {writes}, vs Syncthing", "ms", "lower"),
    ]
