"""RFC 9530 digest fields (``Repr-Digest``, ``Content-Digest``) for sha-256, both ways.

One spelling for the client (remotes) and the server: ``sha-256=:<base64 of 32 bytes>:``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator


def digest_header(sha256: bytes | str) -> str:
    """The field value for a sha-256 digest given as 32 bytes or as 64 hex digits."""
    raw = bytes.fromhex(sha256) if isinstance(sha256, str) else sha256
    return "sha-256=:" + base64.b64encode(raw).decode("ascii") + ":"


def sha256_members(value: str) -> Iterator[bytes]:
    """Every sha-256 digest in one field value (other algorithms are skipped).

    Raises ValueError saying what is wrong with a malformed sha-256 member."""
    for member in value.split(","):
        key, sep, item = member.strip().partition("=")
        if key.strip().lower() != "sha-256":
            continue
        item = item.split(";", 1)[0].strip()
        if not sep or len(item) < 2 or item[0] != ":" or item[-1] != ":":
            raise ValueError("expected sha-256=:<base64>:")
        try:
            digest = base64.b64decode(item[1:-1], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("bad base64") from None
        if len(digest) != 32:
            raise ValueError("a sha-256 has 32 bytes")
        yield digest


def parse_digest(value: str | None) -> str | None:
    """The first sha-256 (hex) in a field value; None if there is none or it is malformed."""
    if not value:
        return None
    try:
        return next((d.hex() for d in sha256_members(value)), None)
    except ValueError:
        return None
