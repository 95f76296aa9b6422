"""The command line (``scripts/bench --help``) and one run: set up, the workloads in order, the
table and results.json. Exit status: 0, 1 when a workload could not be measured, 3 with --check
when a floor is missed."""

from __future__ import annotations

import argparse
import contextlib
import resource
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from . import __doc__ as package_doc
from . import (
    measure_baseline,
    measure_big,
    measure_bigfile,
    measure_live,
    measure_million,
    measure_small,
    measure_syncthing,
    peers,
    report,
)
from .procs import PROCS, BenchError, stopping_at_exit
from .session import Session
from .syncd_runs import ROOT, compile_syncd, has_webdav_remote
from .workloads import ensure_data

# The workloads, in the order they run (--only picks a subset).
STEPS: dict[str, Callable[[Session], None]] = {
    "big": measure_big.big_upload,
    "huge": measure_big.huge_rss,
    "small": measure_small.small_files,
    "baseline": measure_baseline.baseline,
    "medium": measure_big.medium_files,
    "bigfile": measure_bigfile.bigfile,
    "latency": measure_live.latency,
    "syncthing": measure_syncthing.syncthing,
    "tree": measure_live.tree_start,
    "million": measure_million.million,
}
WORKLOADS = tuple(STEPS)
# The data sets a step uses besides its own (ensure_data generates only what is wanted).
USES = {"baseline": {"small"}, "syncthing": {"small"}}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/bench", description=package_doc.split("\n\n")[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="small data sets, one rep each: about a minute (a smoke test of the bench)",
    )
    p.add_argument("--dir", type=Path, default=ROOT / "bench-out", help="data and results")
    p.add_argument(
        "--only",
        default="",
        help=f"comma-separated subset of {', '.join(WORKLOADS)} (million: the 1,000,000-file "
        "tree; baseline: the small files by syncd at --baseline; syncthing: Syncthing as a peer; "
        "bigfile: resumed uploads and deltas of one large file, bytes counted by a proxy)",
    )
    p.add_argument("--reps", type=int, default=0, help="repetitions (median kept)")
    p.add_argument("--debounce", type=float, default=0.2, help="syncd run's debounce (s)")
    p.add_argument("--no-webdav", action="store_true", help="skip syncd's webdav remote")
    p.add_argument(
        "--disk",
        action="store_true",
        help="servers store on disk (under --dir) instead of a tmpfs in /dev/shm",
    )
    p.add_argument(
        "--check", action="store_true", help="exit 3 when a floor is missed (default: report only)"
    )
    p.add_argument(
        "--baseline",
        default=measure_baseline.BASELINE,
        metavar="REV",
        help="the commit whose syncd (client and server) the small-file first sync is "
        f"compared with, in the same run (default {measure_baseline.BASELINE}: before "
        "issue 16's work)",
    )
    p.add_argument(
        "--idle",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long `syncd run` idles on the million tree before its RSS is taken again "
        "(default 300; 5 with --quick); its idle CPU is taken over the first 60 s of it",
    )
    # Development runs of the million rows on a smaller tree (N files in N/10 directories).
    p.add_argument("--million-files", type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def setup(s: Session, only: set[str]) -> None:
    """A fresh run directory, the data sets, the servers, and whether syncd speaks WebDAV."""
    shutil.rmtree(s.run_dir, ignore_errors=True)
    s.logs.mkdir(parents=True)
    s.store_dir.mkdir(parents=True, exist_ok=True)
    compile_syncd()
    s.data = ensure_data(s.data_dir, s.sizes, only.union(*(USES.get(w, set()) for w in only)))
    s.srv = peers.start_servers(s.run_dir, s.store_dir, s.syncd)
    s.webdav = has_webdav_remote() and not s.args.no_webdav
    print(
        f"syncd serve at {s.srv.serve_url}, nginx WebDAV at {s.srv.dav_url}; "
        f"syncd's webdav remote: {'yes' if s.webdav else 'not available'}; "
        f"server roots on {s.store_kind} ({s.store_dir})",
        flush=True,
    )


def bench(s: Session, only: set[str]) -> int:
    started = time.time()
    took: dict[str, float] = {}  # seconds, per step (and the setup), for the report
    try:
        t0 = time.perf_counter()
        setup(s, only)
        took["setup"] = time.perf_counter() - t0
        for name, step in STEPS.items():
            if name not in only:
                continue
            print(f"== {name}", flush=True)
            t0 = time.perf_counter()
            try:
                step(s)
            except BenchError as e:
                s.errors.append(f"{name}: {e}")
                print(f"  FAILED: {e}", flush=True)
            took[name] = time.perf_counter() - t0
            print(f"  ({took[name]:.1f} s)", flush=True)
    finally:
        PROCS.stop_all()
        if s.store_kind == "tmpfs":
            shutil.rmtree(s.store_dir, ignore_errors=True)
    print()
    print(report.table(s.results))
    out = s.dir / "results.json"
    head = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(time.time() - started, 1),
        "mode": "quick" if s.args.quick else "full",
        "command": " ".join(["scripts/bench", *sys.argv[1:]]),
        "machine": report.machine(),
        "versions": peers.versions(s.syncd),
        "sizes": asdict(s.sizes),
        "debounce": s.args.debounce,
        "idle_s": s.idle,
        "baseline": s.args.baseline,
        "server_store": s.store_kind,
        "webdav_remote": s.webdav,
        "step_seconds": {k: round(v, 1) for k, v in took.items()},
    }
    report.write_results(out, s.results, head, s.errors)
    print()
    print(report.floors_line(s.results))
    print(report.steps_line(took, time.time() - started))
    if s.args.quick:
        print("--quick: scaled-down data; the floors are meant for the full sizes")
    print(f"results: {out}")
    if s.errors:
        print("errors:\n  " + "\n  ".join(s.errors), file=sys.stderr)
        return 1
    return 3 if report.missed(s.results) and s.args.check else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    only = set(args.only.split(",")) if args.only else set(WORKLOADS)
    if only - set(WORKLOADS):
        raise SystemExit(f"--only: unknown workload(s) {sorted(only - set(WORKLOADS))}")
    # Many files open at once in the servers under test.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    with stopping_at_exit():
        return bench(Session(args), only)
