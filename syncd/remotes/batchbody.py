"""The body of a batch upload to `syncd serve` (docs/protocol.md, "Batch upload"): one
``multipart/mixed`` part per file, each with its path, length and digest; and the limits the
server states in ``OPTIONS``' ``X-Syncd-Batch``."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence

from aiohttp import payload
from aiohttp.abc import AbstractStreamWriter

from syncd.digests import digest_header
from syncd.hashing import Source
from syncd.remotes.base import BatchLimits


def parse_batch_limits(value: str | None) -> BatchLimits | None:
    """``X-Syncd-Batch: parts=<n>; bytes=<n>; part=<n>``; None if absent or unreadable."""
    if not value:
        return None
    fields: dict[str, str] = {}
    for item in value.split(";"):
        k, _, v = item.strip().partition("=")
        fields[k.strip()] = v.strip()
    try:
        limits = BatchLimits(int(fields["parts"]), int(fields["bytes"]), int(fields["part"]))
    except (KeyError, ValueError):
        return None
    return limits if min(limits.parts, limits.bytes, limits.part) > 0 else None


class Pieces(payload.Payload):
    """A body already in memory, in pieces (a batch's framing and files), written as they are:
    never joined into one copy (aiohttp's bytes payload would, and warns from 1 MiB)."""

    def __init__(self, pieces: list[bytes], content_type: str) -> None:
        super().__init__(pieces, content_type=content_type)
        self._pieces = pieces
        self._size = sum(len(p) for p in pieces)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a batch body has no text form")

    async def write(self, writer: AbstractStreamWriter) -> None:
        for piece in self._pieces:
            await writer.write(piece)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        await self.write(writer)


def multipart(
    items: Sequence[tuple[str, Source]],
    quoted: Callable[[str], str],
    meta: Callable[[Source], dict[str, str]],
) -> Pieces:
    """The body of a batch of ``(relative path, source)`` (each source read already:
    ``data`` and ``sha256``), its ``content_type`` included; ``quoted`` percent-encodes a
    path, ``meta`` gives a file's metadata headers. The boundary is random: no file can hold
    it by design."""
    boundary = uuid.uuid4().hex
    pieces: list[bytes] = []
    for rel, src in items:
        assert src.data is not None and src.sha256 is not None
        head = (
            f"--{boundary}\r\nX-Syncd-Path: {quoted(rel)}\r\n"
            f"Content-Length: {len(src.data)}\r\n"
            f"Repr-Digest: {digest_header(src.sha256)}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in meta(src).items())
            + "\r\n"
        )
        pieces += [head.encode("ascii"), src.data, b"\r\n"]
    pieces.append(f"--{boundary}--\r\n".encode("ascii"))
    return Pieces(pieces, f"multipart/mixed; boundary={boundary}")
