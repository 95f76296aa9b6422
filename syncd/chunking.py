"""Content-defined chunk lists for delta transfer (docs/protocol.md, "Delta upload").

A file is cut with FastCDC 2020 (pyfastcdc's compiled chunker, which releases the GIL while
it looks for a cut) at fixed parameters, so that the client and ``syncd serve`` cut the same
bytes at the same places; an inserted byte moves one cut point, not every block after it as
fixed blocks would. A chunk list is ``ENTRY`` records (length, xxh3-128), offsets implied by
the lengths. A chunk is known by its xxh3-128 (as rsync 3.2 knows its blocks by xxh128): 16
GB/s, where a sha-256 per chunk halved the chunker's speed; a collision could only make the
server build a file whose whole sha-256 (checked before the file is shown) is not the one
named, and the client then sends the file whole. :func:`delta_plan` compares a new list with
a base's and says what to copy from the base and what to send.

Every function here blocks: call it in a worker thread.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import xxhash
from pyfastcdc import FastCDC

AVG, MIN, MAX = 64 << 10, 16 << 10, 256 << 10
"""FastCDC's sizes: 64 KiB average (real average ~80 KiB: min + avg), 16 KiB to 256 KiB."""
PARAMS = f"fastcdc2020; avg={AVG}; min={MIN}; max={MAX}; nc=1; id=xxh3-128"
"""The parameters as ``X-Syncd-Chunking`` names them: both ends must cut alike."""
ENTRY = struct.Struct(">I16s")
"""One chunk in a list: its length (u32, big-endian), then its xxh3-128 (16 bytes)."""


def _chunker() -> FastCDC:
    """A chunker at the fixed parameters (one per file: pyfastcdc's is not for sharing)."""
    return FastCDC(AVG, min_size=MIN, max_size=MAX, normalized_chunking=1)


class Changed(Exception):
    """The file changed while it was being chunked."""


@dataclass(frozen=True)
class Chunks:
    """A file's chunk list (``ENTRY`` records) and its whole sha-256 (hex; "" if not taken)."""

    blob: bytes
    sha256: str

    def entries(self) -> Iterator[tuple[int, int, bytes]]:
        """(offset, length, xxh3-128) of each chunk, in order."""
        offset = 0
        for length, digest in ENTRY.iter_unpack(self.blob):
            yield offset, length, digest
            offset += length

    @property
    def size(self) -> int:
        return sum(length for length, _ in ENTRY.iter_unpack(self.blob))


def valid_blob(blob: bytes) -> bool:
    """Is ``blob`` a well-formed chunk list (whole records, no empty chunk)?"""
    if len(blob) % ENTRY.size:
        return False
    return all(0 < length <= MAX for length, _ in ENTRY.iter_unpack(blob))


class _Reader:
    """The first ``size`` bytes of ``fd``, for the chunker's ``readinto`` (pread: a file cut
    shorter meanwhile reads short, where a mapping of it would kill the process with SIGBUS)."""

    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self._left = size
        self._at = 0
        self.read = 0

    def readinto(self, b: memoryview) -> int:
        n = min(len(b), self._left)
        if n <= 0:
            return 0
        with memoryview(b)[:n] as target:
            got = os.preadv(self._fd, [target], self._at)
        self._at += got
        self._left -= got
        self.read += got
        return got


def _hash_fd(fd: int, size: int, halt: threading.Event) -> str | None:
    """sha-256 of the first ``size`` bytes of ``fd`` (None: halted, or the file is shorter)."""
    digest = hashlib.sha256()
    buf = bytearray(8 << 20)
    view = memoryview(buf)
    at = 0
    while at < size:
        if halt.is_set():
            return None
        got = os.preadv(fd, [view[: min(len(buf), size - at)]], at)
        if got <= 0:
            return None
        digest.update(view[:got])
        at += got
    return digest.hexdigest()


def chunk_fd(fd: int, size: int, *, whole: bool = True) -> Chunks:
    """Cut the open file ``fd`` (``size`` bytes) and hash every chunk, and the whole file
    unless ``whole`` is False (the server knows its files' digests): :class:`Cutter` at once.
    Raises :class:`Changed` if the size moved meanwhile."""
    cutter = Cutter(fd, size, whole=whole)
    for _batch in cutter.batches(threading.Event()):
        pass
    assert cutter.chunks is not None
    return cutter.chunks


def chunk_path(path: str | os.PathLike[str]) -> Chunks:
    """:func:`chunk_fd` of the file at ``path``."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        return chunk_fd(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Plan:
    """How to build a new file from a base: ``steps`` in order, each ``("C", base_offset,
    length)`` (copy from the base) or ``("L", new_offset, length)`` (the new file's own
    bytes, sent); ``literal`` bytes are sent in all."""

    steps: list[tuple[str, int, int]]
    literal: int
    size: int


class Steps:
    """New chunks, in order, into the steps that build them from ``base``: a chunk the base
    holds is copied from it (neighbours merged into one range where they are neighbours in the
    base too), any other is sent (neighbours merged). Fed one chunk at a time, as the cut
    gives them."""

    def __init__(self, base: Chunks) -> None:
        self._where: dict[bytes, tuple[int, int]] = {}
        for offset, length, ident in base.entries():
            self._where.setdefault(ident, (offset, length))
        self._open: tuple[str, int, int] | None = None
        self.literal = 0
        self.size = 0

    def add(self, offset: int, length: int, ident: bytes) -> tuple[str, int, int] | None:
        """Take the next chunk; returns the step it closed, if any."""
        self.size += length
        found = self._where.get(ident)
        if found is not None and found[1] == length:
            kind, start = "C", found[0]
        else:
            kind, start = "L", offset
            self.literal += length
        last = self._open
        if last is not None and last[0] == kind and last[1] + last[2] == start:
            self._open = (kind, last[1], last[2] + length)
            return None
        self._open = (kind, start, length)
        return last

    def finish(self) -> tuple[str, int, int] | None:
        """The last step (None: no chunk at all)."""
        last, self._open = self._open, None
        return last


def delta_plan(new: Chunks, base: Chunks) -> Plan:
    """Every step that builds ``new`` from ``base`` (:class:`Steps`, all at once)."""
    maker = Steps(base)
    steps = [s for e in new.entries() if (s := maker.add(*e)) is not None]
    if (last := maker.finish()) is not None:
        steps.append(last)
    return Plan(steps, maker.literal, maker.size)


class Cutter:
    """Cuts an open file in a worker thread, chunk records in batches as they come, while a
    second thread takes the whole file's sha-256 (unless ``whole`` is False); ``chunks`` once
    done. Both read with pread: a file truncated meanwhile is :class:`Changed`, not a crash."""

    def __init__(self, fd: int, size: int, *, whole: bool = True) -> None:
        self._fd = fd
        self._size = size
        self._whole = whole
        self.chunks: Chunks | None = None

    def batches(
        self, stop: threading.Event, every: int = 512
    ) -> Iterator[list[tuple[int, int, bytes]]]:
        """(offset, length, xxh3-128) of the chunks, ``every`` at a time, then an empty batch
        once the cut is complete (``chunks`` is set when the generator ends, the whole file's
        hash done too); gives up when ``stop`` is set. Raises :class:`Changed` if the file's
        size moved."""
        size = self._size
        halt = threading.Event()  # (this generator was closed, failed or stopped)
        digest: list[str | None] = []

        def hash_whole() -> None:
            try:
                digest.append(_hash_fd(self._fd, size, halt))
            except OSError:
                digest.append(None)

        thread = threading.Thread(target=hash_whole, name="syncd-chunk-hash")
        if self._whole:
            thread.start()
        out = bytearray()
        reader = _Reader(self._fd, size)
        try:
            batch: list[tuple[int, int, bytes]] = []
            pieces: Any = _chunker().cut_stream(reader)
            for c in pieces:
                ident = xxhash.xxh3_128_digest(c.data)
                batch.append((c.offset, c.length, ident))
                out += ENTRY.pack(c.length, ident)
                if len(batch) >= every:
                    if stop.is_set():
                        halt.set()
                        return
                    yield batch
                    batch = []
            if batch:
                yield batch
            if reader.read != size or os.fstat(self._fd).st_size != size:
                raise Changed("the file's size changed while it was chunked")
            yield []  # (the cut is complete: the whole file's hash may still be running)
        except BaseException:
            halt.set()
            raise
        finally:
            if self._whole:
                thread.join()
        whole = digest[0] if self._whole else ""
        if whole is None or os.fstat(self._fd).st_size != size:
            raise Changed("the file's size changed while it was chunked")
        self.chunks = Chunks(bytes(out), whole)


DELTA_MIN = 16 << 20
"""Changed files from this size on go as deltas of the server's copy (where the remote takes
them: ``Features.delta``); smaller ones cost little to send whole."""

STEP = struct.Struct(">cQQ")
"""A delta body's record head: ``C`` + base offset + length, ``L`` + 0 + length followed by
``length`` bytes, or (last) ``D`` + 0 + 32 followed by the new file's sha-256
(docs/protocol.md, "Delta upload")."""
