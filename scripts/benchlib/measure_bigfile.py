"""Large files over a link that fails or is slow (issue 17): resumable uploads and delta transfer,
the bytes on the wire counted by a proxy between client and server (countproxy), never by the
tool measured.

One file of random bytes (1 GiB; 48 MiB with --quick), generated once with a fixed seed into
``<dir>/data/<mode>/bigfile/``. The servers are these rows' own, each behind a CountProxy on
127.0.0.1: a ``syncd serve`` (its root where the servers store), an rsync daemon, moto_server
for S3 (bucket made by the bench). The rows, in the order they run:

- chunking: the chunker alone on one core (FastCDC cut + xxh3-128 per chunk), GB/s (floor ≥
  1.0), and ``syncd.chunking.chunk_path`` (+ the whole sha-256, two threads) in CPU seconds,
  beside hashlib's sha-256 of the same bytes;
- insert: 4 KiB inserted at 10 MiB after a first sync, then ``syncd sync``: bytes sent / size
  (≤ 2 %), and the time of that sync / the time of the first (whole) upload (≤ 0.3) with the
  proxy pacing client -> server at 125 MB/s (1 Gbit/s); the same unpaced (loopback) beside
  it; rsync to its daemon and rclone to ``syncd serve``'s WebDAV face (full run) on the same
  link;
- append: 1 MiB appended, then ``syncd sync``: bytes sent (≤ 2.5 MiB); rsync the same;
- reset: ``syncd sync`` with its connection reset once the proxy has counted half the file:
  bytes sent / size (≤ 1.05) and the file on the server equal to the source (sha-256); rsync
  --partial (run again when it fails, as it does not retry), rclone copyto (full run);
- kill: ``syncd sync`` SIGKILLed once the proxy has counted half the file (the proxy holds the
  client there; what it had in flight is dropped), then run again: bytes of both runs / size
  (≤ 1.05); rsync --partial the same;
- s3: the kill against S3 (moto_server), against one uninterrupted upload (≤ 1.05).

The rig (the file, the servers, the proxies, the shared row shapes) is bigfile_rig; the delta
rows are measure_delta, the resume rows measure_resume. --quick leaves rclone out and asserts
nothing about speed.
"""

from __future__ import annotations

import time

from .bigfile_rig import QUICK_SIZE, SIZE, ensure_file, start, stop
from .measure_delta import chunking, delta
from .measure_resume import kill, reset, s3
from .session import Session


def bigfile(s: Session) -> None:
    """The large-file rows (see the module)."""
    size = QUICK_SIZE if s.args.quick else SIZE
    folder = ensure_file(s.data_dir, size)
    g = start(s, size, folder)
    took: list[str] = []
    try:
        for phase in (chunking, delta, reset, kill, s3):
            t0 = time.perf_counter()
            phase(g)
            took.append(f"{phase.__name__} {time.perf_counter() - t0:.1f} s")
    finally:
        stop(g)
        print(f"  bigfile phases: {', '.join(took)}", flush=True)
