"""The million-file tree, written fast: 64 B-2 KiB files spread evenly over many directories,
with a fixed seed, by one process per core.

Python's ``Path.write_bytes`` costs ~25 µs a file in path handling and file objects; here each
worker opens its directory once and writes with ``os.open(name, dir_fd=...)`` and one
``os.write``, the bytes being slices of one seeded pool (each file starts with its own number,
so no two files are alike). The content of a directory depends only on the seed and the
directory's number, so the tree is the same whatever the number of workers.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
from pathlib import Path

POOL_BYTES = 4 << 20
FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def _write_dirs(args: tuple[str, int, int, int, int, int]) -> int:
    """Write directories ``first`` .. ``last - 1`` (``per`` files each, fewer at the end)."""
    root, first, last, per, files, seed = args
    pool = random.Random(f"{seed}:million-pool").randbytes(POOL_BYTES)
    written = 0
    for d in range(first, last):
        rng = random.Random(f"{seed}:million:{d}")
        path = os.path.join(root, f"d{d:05d}")
        os.mkdir(path)
        dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for i in range(d * per, min(files, (d + 1) * per)):
                size = rng.randint(64, 2048)
                head = b"%d\n" % i
                at = rng.randrange(POOL_BYTES - size)
                fd = os.open(f"f{i:07d}.bin", FLAGS, 0o644, dir_fd=dfd)
                try:
                    os.write(fd, head + pool[at : at + size - len(head)])
                finally:
                    os.close(fd)
                written += 1
        finally:
            os.close(dfd)
    return written


def _worker_signals() -> None:
    """A worker does not inherit the bench's SIGTERM/SIGINT handlers (SystemExit, meant to
    stop the bench's own subprocesses): the default, dying at once, is right for it."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def gen_tree(folder: Path, files: int, dirs: int, seed: int) -> None:
    """``files`` files in ``dirs`` directories under ``folder`` (which exists and is empty)."""
    per = -(-files // dirs)
    used = -(-files // per)  # directories that get a file
    workers = max(1, min(os.cpu_count() or 1, 8))
    step = max(1, min(1000, -(-used // (workers * 4))))
    jobs = [(str(folder), a, min(used, a + step), per, files, seed) for a in range(0, used, step)]
    if workers == 1 or len(jobs) == 1:
        done = sum(map(_write_dirs, jobs))
    else:
        with multiprocessing.get_context("fork").Pool(workers, _worker_signals) as pool:
            done = sum(pool.imap_unordered(_write_dirs, jobs))
            # Workers leave on their own (close + join), not by the SIGTERM of the pool's
            # exit: a worker signalled while it held the task queue's lock hung the bench.
            pool.close()
            pool.join()
    if done != files:
        raise RuntimeError(f"gen_tree wrote {done} files, not {files}")
