"""One bench run: its directories (data, run, where the servers store), numbered logs, timed
commands (with the servers' CPU time meanwhile) and the results gathered so far."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from .peers import Servers
from .procs import Ran, cpu_seconds, run
from .report import Result, line
from .workloads import FULL, QUICK, MiB, Sizes, million_store_bytes


class Session:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sizes = QUICK if args.quick else FULL
        if args.reps:
            self.sizes = Sizes(**{**asdict(self.sizes), "reps": args.reps})
        if args.million_files:  # development runs: a smaller "million" tree
            n = args.million_files
            self.sizes = Sizes(
                **{**asdict(self.sizes), "million_files": n, "million_dirs": max(1, n // 10)}
            )
        self.dir: Path = args.dir.resolve()
        self.data_dir = self.dir / "data" / ("quick" if args.quick else "full")
        self.run_dir: Path = self.dir / "run"
        self.store_dir, self.store_kind = self._store()
        self.logs: Path = self.run_dir / "logs"
        self.results: list[Result] = []
        self.errors: list[str] = []
        venv_syncd = Path(sys.executable).with_name("syncd")
        self.syncd = [str(venv_syncd)] if venv_syncd.exists() else [sys.executable, "-m", "syncd"]
        self.env = {k: v for k, v in os.environ.items() if k != "SYNCD_CONFIG"}
        self.webdav = False  # syncd has a webdav remote (and --no-webdav is not given)
        self.data: dict[str, Path] = {}  # the data sets' folders, by name
        self.srv: Servers  # set once the servers are up
        self._n = 0

    def _store(self) -> tuple[Path, str]:
        """Where the servers store what they receive: a RAM filesystem unless --disk, so that
        the figures compare the software (the same for syncd and its peers) rather than the
        disk's writeback, which made runs on this VM vary by +-30 %. See docs/performance.md."""
        shm = Path("/dev/shm")
        # Room for the largest file three times over (two servers and rclone's temp) and the
        # small files; containers often give /dev/shm only 64 MiB: then the disk it is.
        need = 3 * max(self.sizes.big, self.sizes.huge) + self.sizes.medium_files * 5 * MiB
        if not self.args.only or "million" in self.args.only.split(","):
            # The big files are removed after their step; the million tree comes later.
            need = max(need, million_store_bytes(self.sizes))
        need += 512 * MiB
        if self.args.disk or not (shm.is_dir() and os.access(shm, os.W_OK)):
            return self.run_dir / "store", "disk"
        if shutil.disk_usage(shm).free < need:
            print(
                f"/dev/shm has {shutil.disk_usage(shm).free // MiB:,} MiB free, "
                f"{need // MiB:,} MiB are needed: the servers store on disk",
                flush=True,
            )
            return self.run_dir / "store", "disk"
        return shm / f"syncd-bench-{os.getpid()}", "tmpfs"

    @property
    def idle(self) -> float:
        """How long `syncd run` idles on the million tree: --idle, else 300 s (5 s with
        --quick)."""
        return (
            float(self.args.idle)
            if self.args.idle is not None
            else (5.0 if self.args.quick else 300.0)
        )

    def reps_at_least(self, n: int) -> int:
        """Repetitions of a measurement whose single samples swing on a shared machine: at
        least ``n`` in a full run (medians), the --reps given (default 1) with --quick, which
        only checks that the bench runs."""
        return self.sizes.reps if self.args.quick else max(n, self.sizes.reps)

    def log(self, name: str) -> Path:
        self._n += 1
        return self.logs / f"{self._n:03d}-{name}.log"

    def cmd(
        self,
        cmd: Sequence[str | Path],
        name: str,
        timeout: float,
        env: dict[str, str] | None = None,
        servers: dict[str, int] | None = None,
    ) -> Ran:
        """``run`` with a log of its own, also noting the CPU time each server (``servers``,
        default: syncd serve and nginx) used meanwhile. Dirty pages of earlier runs are written
        out first (``sync``), so that no run pays for the writeback of the one before it."""
        os.sync()
        pids = servers or {"serve": self.srv.serve_pid, "nginx": self.srv.nginx_pid}
        before = {k: cpu_seconds(p) for k, p in pids.items()}
        ran = run(cmd, self.log(name), timeout=timeout, env=env or self.env)
        ran.server_cpu = {k: cpu_seconds(p) - before[k] for k, p in pids.items()}
        return ran

    def add(self, r: Result) -> None:
        self.results.append(r)
        print(line(r), flush=True)

    def timeout_for(self, nbytes: int, files: int = 1) -> float:
        """Generous deadline: 20 MB/s and 10 files/s, at least a minute."""
        return max(60.0, nbytes / 20e6 + files / 10)
