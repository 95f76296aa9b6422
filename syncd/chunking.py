"""Content-defined chunk lists for delta transfer (docs/protocol.md, "Delta upload").

A file is cut with FastCDC 2020 (pyfastcdc's compiled chunker, which releases the GIL while
it looks for a cut) at fixed parameters, so that the client and ``syncd serve`` cut the same
bytes at the same places; an inserted byte moves one cut point, not every block after it as
fixed blocks would. A chunk list is ``ENTRY`` records (length, sha-256), offsets implied by
the lengths. :func:`delta_plan` compares a new list with a base's and says what to copy from
the base and what to send.

Every function here blocks: call it in a worker thread.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from pyfastcdc import FastCDC

AVG, MIN, MAX = 64 << 10, 16 << 10, 256 << 10
"""FastCDC's sizes: 64 KiB average (real average ~80 KiB: min + avg), 16 KiB to 256 KiB."""
PARAMS = f"fastcdc2020; avg={AVG}; min={MIN}; max={MAX}; nc=1"
"""The parameters as ``X-Syncd-Chunking`` names them: both ends must cut alike."""
ENTRY = struct.Struct(">I32s")
"""One chunk in a list: its length (u32, big-endian), then its sha-256 (32 bytes)."""

_CHUNKER = FastCDC(AVG, min_size=MIN, max_size=MAX, normalized_chunking=1)
_LOCK = threading.Lock()  # pyfastcdc's chunker object is not for concurrent use


class Changed(Exception):
    """The file changed while it was being chunked."""


@dataclass(frozen=True)
class Chunks:
    """A file's chunk list (``ENTRY`` records) and its whole sha-256 (hex)."""

    blob: bytes
    sha256: str

    def entries(self) -> Iterator[tuple[int, int, bytes]]:
        """(offset, length, sha-256) of each chunk, in order."""
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


def chunk_fd(fd: int, size: int) -> Chunks:
    """Cut the open file ``fd`` (``size`` bytes) and hash every chunk and the whole file.

    The whole-file sha-256 runs in a second thread over the same mapping while this one cuts
    and hashes the chunks (hashlib and the chunker release the GIL): on two cores the list and
    the digest cost one pass of wall time. Raises :class:`Changed` if the size moved meanwhile.
    """
    if size == 0:
        return Chunks(b"", hashlib.sha256().hexdigest())
    mapped = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    whole = hashlib.sha256()
    failed: list[BaseException] = []

    def hash_whole() -> None:
        try:
            step = 8 << 20
            for start in range(0, size, step):
                with memoryview(mapped)[start : start + step] as piece:
                    whole.update(piece)
        except BaseException as e:
            failed.append(e)

    thread = threading.Thread(target=hash_whole, name="syncd-chunk-hash")
    thread.start()
    try:
        out = _cut(mapped)
    finally:
        thread.join()
        mapped.close()
    if failed:
        raise failed[0]
    if os.fstat(fd).st_size != size:
        raise Changed("the file's size changed while it was chunked")
    return Chunks(bytes(out), whole.hexdigest())


def _cut(mapped: mmap.mmap) -> bytearray:
    """The ``ENTRY`` records of every chunk of ``mapped`` (every view into it released)."""
    out = bytearray()
    pack, sha = ENTRY.pack, hashlib.sha256
    with memoryview(mapped) as view, _LOCK:
        chunks = _CHUNKER.cut_buf(view)
        for c in chunks:
            out += pack(c.length, sha(c.data).digest())
            del c  # (a chunk's data is a view into the mapping)
        del chunks
    return out


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


def delta_plan(new: Chunks, base: Chunks) -> Plan:
    """The steps that build ``new`` from ``base``: every chunk the base holds is copied from
    it (neighbours merged into one range where they are neighbours in the base too), every
    other chunk is sent (neighbours merged)."""
    where: dict[bytes, tuple[int, int]] = {}
    for offset, length, digest in base.entries():
        where.setdefault(digest, (offset, length))
    steps: list[tuple[str, int, int]] = []
    literal = 0
    size = 0
    for offset, length, digest in new.entries():
        size += length
        found = where.get(digest)
        if found is not None and found[1] == length:
            kind, start = "C", found[0]
        else:
            kind, start = "L", offset
            literal += length
        if steps and steps[-1][0] == kind and steps[-1][1] + steps[-1][2] == start:
            steps[-1] = (kind, steps[-1][1], steps[-1][2] + length)
        else:
            steps.append((kind, start, length))
    return Plan(steps, literal, size)


STEP = struct.Struct(">cQQ")
"""A delta body's record head: ``C`` + base offset + length, or ``L`` + 0 + length followed
by ``length`` bytes (docs/protocol.md, "Delta upload")."""


def body_length(plan: Plan) -> int:
    """The delta body's length in bytes: a head per step, plus the literal bytes."""
    return STEP.size * len(plan.steps) + plan.literal
