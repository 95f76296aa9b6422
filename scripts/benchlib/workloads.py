"""The data sets: their sizes (full and --quick), generated once with a fixed seed and cached.

A data set lives in ``<dir>/data/{full,quick}/<name>/`` next to ``<name>.stamp.json``, which
records what it was generated for; a different spec (sizes, seed) regenerates it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .gentree import gen_tree

MiB = 1 << 20
GiB = 1 << 30
SEED = 20260701
# syncd's own files in a synced folder (the mirror marker, the lock): syncd.types.RESERVED_PREFIX,
# written out because the bench does not import syncd (see the package's docstring).
SYNCD_OWN_PREFIX = ".~syncd-"


@dataclass(frozen=True)
class Sizes:
    big: int  # one file, bytes
    huge: int  # one file for the peak-RSS check (0: skipped)
    small_files: int  # 4 KiB files ...
    small_dirs: int  # ... spread over this many directories
    medium_files: int  # 5 MiB files
    tree_files: int  # the tree `syncd run` starts on
    tree_dirs: int
    writes: int  # change-latency samples
    reps: int  # repetitions of the throughput and no-op measurements (median kept)
    million_files: int  # the million-file tree (--only million) ...
    million_dirs: int  # ... in this many directories


FULL = Sizes(GiB, 4 * GiB, 10_000, 100, 200, 100_000, 1000, 20, 3, 1_000_000, 100_000)
# --quick is the suite's smoke test of the bench (about a minute): every step runs and prints
# its rows, on sets just big enough to exercise the machinery (the figures mean little).
QUICK = Sizes(64 * MiB, 0, 200, 10, 10, 3_000, 30, 5, 1, 3_000, 300)


def million_store_bytes(s: Sizes) -> int:
    """Room the million tree takes where the servers store: syncd serve's copy and the copy
    rsync and rclone keep (a 4 KiB page per file and per directory on a tmpfs, each)."""
    return 2 * (s.million_files + s.million_dirs) * 4096 + 64 * MiB


def _rng(name: str) -> random.Random:
    return random.Random(f"{SEED}:{name}")


def _stamped(stamp: Path, spec: dict[str, Any]) -> bool:
    try:
        return bool(json.loads(stamp.read_text()) == spec)
    except (OSError, ValueError):
        return False


def gen_file(path: Path, size: int, name: str) -> None:
    """``size`` pseudo-random bytes (seeded by ``name``), written 1 MiB at a time."""
    rng = _rng(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with tmp.open("wb") as f:
        left = size
        while left:
            n = min(MiB, left)
            f.write(rng.randbytes(n))
            left -= n
    tmp.rename(path)


def gen_files(folder: Path, files: int, size: int, name: str) -> None:
    """``files`` files of ``size`` bytes, each seeded by ``name`` and its number."""
    for i in range(files):
        gen_file(folder / f"m{i:04d}.bin", size, f"{name}{i}")


def gen_many(
    folder: Path, files: int, dirs: int, size: Callable[[random.Random], int], name: str
) -> None:
    """``files`` files spread evenly over ``dirs`` directories, seeded by ``name``."""
    rng = _rng(name)
    per = -(-files // dirs)
    for i in range(files):
        d = folder / f"d{i // per:04d}"
        if i % per == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:06d}.bin").write_bytes(rng.randbytes(size(rng)))


def ensure_data(data: Path, s: Sizes, wanted: set[str]) -> dict[str, Path]:
    """Generate (once) the ``wanted`` data sets for these sizes; returns their folders."""
    sets: dict[str, tuple[dict[str, Any], Callable[[Path], None]]] = {
        "big": ({"size": s.big}, lambda p: gen_file(p / "big.bin", s.big, "big")),
        "small": (
            {"files": s.small_files, "dirs": s.small_dirs, "size": 4096},
            lambda p: gen_many(p, s.small_files, s.small_dirs, lambda r: 4096, "small"),
        ),
        "medium": (
            {"files": s.medium_files, "size": 5 * MiB},
            lambda p: gen_files(p, s.medium_files, 5 * MiB, "medium"),
        ),
        "tree": (
            {"files": s.tree_files, "dirs": s.tree_dirs, "size": "64..2048"},
            lambda p: gen_many(p, s.tree_files, s.tree_dirs, lambda r: r.randint(64, 2048), "t"),
        ),
    }
    if s.million_files:
        sets["million"] = (
            {"files": s.million_files, "dirs": s.million_dirs, "size": "64..2048", "v": 1},
            lambda p: gen_tree(p, s.million_files, s.million_dirs, SEED),
        )
    if s.huge:
        sets["huge"] = ({"size": s.huge}, lambda p: gen_file(p / "huge.bin", s.huge, "huge"))
    out: dict[str, Path] = {}
    for name, (spec, make) in sets.items():
        if name not in wanted:
            continue
        folder = data / name
        stamp = data / f"{name}.stamp.json"
        spec = {"seed": SEED, **spec}
        if not _stamped(stamp, spec):
            t0 = time.perf_counter()
            print(f"generating {name} ({spec}) ...", flush=True)
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            make(folder)
            stamp.write_text(json.dumps(spec))
            print(f"  done in {time.perf_counter() - t0:.1f} s", flush=True)
        out[name] = folder
    return out


def tree_size(folder: Path) -> tuple[int, int]:
    """Files and bytes under ``folder``, less syncd's own (the mirror marker, the lock)."""
    files = total = 0
    for dirpath, _dirs, names in os.walk(folder):
        for n in names:
            if n.startswith(SYNCD_OWN_PREFIX):
                continue
            files += 1
            total += os.lstat(os.path.join(dirpath, n)).st_size
    return files, total


def edit(path: Path) -> bytes:
    """Rewrite ``path`` with new bytes of the same size; make sure its mtime moves."""
    before = path.stat()
    data = os.urandom(before.st_size)
    path.write_bytes(data)
    after = path.stat()
    if after.st_mtime_ns == before.st_mtime_ns:
        os.utime(path, ns=(after.st_atime_ns, after.st_mtime_ns + 1_000_000))
    return data
