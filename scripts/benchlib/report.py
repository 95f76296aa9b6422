"""The figures: Result and Floor, the ratio (higher is better for syncd), pass / MISS, the table
printed at the end and results.json with every sample, the machine and the tools' versions."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .procs import Ran
from .workloads import GiB


@dataclass
class Floor:
    text: str
    passed: bool


@dataclass
class Result:
    id: str
    name: str
    unit: str
    syncd: float
    peer: float
    peer_name: str
    better: str  # "higher" or "lower": for syncd's and the peer's figure
    floors: list[Floor] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    # Why the row could not be measured here (the machine lacks what it needs), or "": such a
    # row stays in the table and results.json, without figures, instead of failing the bench.
    not_measured: str = ""

    @property
    def ratio(self) -> float:
        """syncd relative to the peer, the higher the better."""
        if self.not_measured:
            return math.nan
        if self.better == "higher":
            return self.syncd / self.peer if self.peer else float("inf")
        return self.peer / self.syncd if self.syncd else float("inf")

    @property
    def passed(self) -> bool | None:
        if self.not_measured or not self.floors:
            return None
        return all(f.passed for f in self.floors)

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        if self.not_measured:
            d["syncd"] = d["peer"] = d["ratio"] = None
        else:
            d["ratio"] = round(self.ratio, 3)
        d["pass"] = self.passed
        return d


def unmeasured(id: str, name: str, unit: str, peer_name: str, better: str, why: str) -> Result:
    """A row that could not be measured on this machine (``why``): no figures, no floors."""
    return Result(id, name, unit, math.nan, math.nan, peer_name, better, not_measured=why)


def rss_floor(files: int) -> tuple[float, str]:
    """The issue's RSS floors: 25 MiB at 10,000 files, 250 MiB at a million."""
    return (25.0, "≤ 25 MiB") if files <= 10_000 else (250.0, "≤ 250 MiB")


def run_rss_result(id: str, name: str, files: int, kib: int, peer: float, peer_name: str) -> Result:
    """An RSS row with its floor and the bytes per file (shown next to syncd's figure)."""
    mib = kib / 1024
    limit, text = rss_floor(files)
    return Result(
        id,
        name,
        "MiB",
        mib,
        peer,
        peer_name,
        "lower",
        [Floor(text, mib <= limit)],
        {"bytes_per_file": round(kib * 1024 / files)},
    )


def fmt(v: float, unit: str) -> str:
    if unit == "s":
        return f"{v:.3f} s" if v < 10 else f"{v:.1f} s"
    if unit == "ms":
        return f"{v:.1f} ms"
    if unit == "MiB":
        return f"{v:.1f} MiB"
    if unit == "× size":
        return f"{v:.3f} × size"
    if unit == "% of size":
        return f"{v:.2f} {unit}" if v >= 1 else f"{v:.2g} {unit}"
    if unit == "GB/s":
        return f"{v:.2f} {unit}"
    return f"{v:,.0f} {unit}" if v >= 100 else f"{v:.1f} {unit}"


def table(results: list[Result]) -> str:
    rows = [("workload", "syncd", "peer", "ratio", "floor", "")]
    for r in results:
        floor = "; ".join(f.text for f in r.floors) or "-"
        peer = f"({r.peer_name})" if r.not_measured else f"{fmt(r.peer, r.unit)} ({r.peer_name})"
        rows.append(
            (
                r.name,
                syncd_cell(r),
                peer,
                "-" if r.not_measured else f"{r.ratio:.2f}",
                floor,
                verdict(r),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def syncd_cell(r: Result) -> str:
    """syncd's figure, with the bytes per file for the memory rows."""
    if r.not_measured:
        return "not measured"
    per = r.extra.get("bytes_per_file")
    return fmt(r.syncd, r.unit) + (f" ({per:,} B/file)" if per else "")


def verdict(r: Result) -> str:
    return {True: "pass", False: "MISS", None: ""}[r.passed]


def line(r: Result) -> str:
    """The line printed as soon as a result is in."""
    if r.not_measured:
        return f"  {r.name}: not measured ({r.not_measured})"
    return (
        f"  {r.name}: syncd {syncd_cell(r)}, {r.peer_name} {fmt(r.peer, r.unit)}"
        f" (ratio {r.ratio:.2f}) {verdict(r)}"
    )


# --------------------------------------------------------------------------- throughput


def median_mbps(runs: list[Ran], nbytes: int) -> float:
    """MB/s of the median run that sent ``nbytes``."""
    return statistics.median(nbytes / r.seconds / 1e6 for r in runs)


def throughput_extra(
    runs: Mapping[str, list[Ran]], nbytes: int, server_of: Mapping[str, str]
) -> dict[str, Any]:
    """Every sample in MB/s, and the CPU seconds per GiB of the client and of the server that
    received (``server_of`` names it for each tool)."""

    def per_gib(seconds: list[float]) -> float:
        return round(statistics.median(seconds) * GiB / nbytes, 2)

    ran = {k: v for k, v in runs.items() if v}
    return {
        "MBps_samples": {
            k: [round(nbytes / r.seconds / 1e6, 1) for r in v] for k, v in ran.items()
        },
        "cpu_s_per_GiB": {
            k: {
                "client": per_gib([r.cpu for r in v]),
                server_of[k]: per_gib([r.server_cpu[server_of[k]] for r in v]),
            }
            for k, v in ran.items()
        },
    }


# --------------------------------------------------------------------------- results.json


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                cpu = text.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError, ValueError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_mib": mem,
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def write_results(
    out: Path, results: list[Result], head: dict[str, Any], errors: list[str]
) -> None:
    """results.json: ``head`` (date, mode, machine, versions, ...), then every workload."""
    doc = {
        **head,
        "workloads": [r.as_json() for r in results],
        "floors_missed": missed(results),
        "not_measured": {r.id: r.not_measured for r in results if r.not_measured},
        "errors": errors,
    }
    out.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def missed(results: list[Result]) -> list[str]:
    return [r.id for r in results if r.passed is False]


def floors_line(results: list[Result]) -> str:
    miss = missed(results)
    unknown = [r.id for r in results if r.not_measured]
    return (
        f"floors: {sum(r.passed is True for r in results)} met, {len(miss)} missed"
        + (f" ({', '.join(miss)})" if miss else "")
        + (f"; not measured: {', '.join(unknown)}" if unknown else "")
    )


def steps_line(took: Mapping[str, float], total: float) -> str:
    """Where the run's time went: each step's seconds (``setup``: data sets and servers)."""
    return f"time: {total:.1f} s: " + ", ".join(f"{k} {v:.1f} s" for k, v in took.items())
