"""The S3 remote: AWS S3 and S3-compatible servers (MinIO, Ceph RGW, Garage, R2, Wasabi...).

Needs the optional extra ``syncd[s3]`` (aiobotocore). ``url = "s3://bucket/prefix/"``; a file
``a/b.txt`` of a folder with ``remote_path = "docs"`` is the key ``prefix/docs/a/b.txt``.
Credentials come from the standard AWS chain (environment, ``~/.aws``, ``profile``, instance
roles). Every upload carries ``ChecksumSHA256`` (per part for multipart uploads), so the server
checks the bytes it received; an interrupted multipart upload resumes (``s3_resume``).
botocore's own retries are turned off: retrying is ``syncd.retry``'s job.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator

from syncd.errors import AuthError, PermanentError, TransientError
from syncd.hashing import Source
from syncd.remotes.base import Features, is_reserved, marker_body, marker_id, marker_path
from syncd.remotes.s3_bucket import b64
from syncd.remotes.s3_client import Counted
from syncd.remotes.s3_resume import S3Uploads
from syncd.remotes.s3_versions import S3Versions
from syncd.types import RemoteEntry

log = logging.getLogger("syncd.remotes.s3")


def mtime_text(mtime_ns: int) -> str:
    """rclone's ``X-Amz-Meta-Mtime``: seconds since the epoch as a decimal string, with the
    nanoseconds after a point (``swift.TimeToFloatString``: no point for whole seconds)."""
    secs, ns = divmod(int(mtime_ns), 1_000_000_000)
    return str(secs) if ns == 0 else f"{secs}.{ns:09d}"


def parse_mtime(text: str | None) -> int | None:
    """The ns of an ``mtime`` metadata value (rclone's float seconds), exactly; None if it
    is not one."""
    if not text:
        return None
    whole, _, frac = text.strip().partition(".")
    neg = whole.startswith("-")
    digits = whole[1:] if neg else whole
    if not digits.isdigit() or (frac and not frac.isdigit()):
        return None
    ns = int(digits) * 1_000_000_000 + int((frac[:9]).ljust(9, "0") or 0)
    return -ns if neg else ns


def mode_text(executable: bool) -> str:
    """The ``mode`` metadata (octal, as rclone's local backend gives it with --metadata)."""
    return "0100755" if executable else "0100644"


def parse_mode(text: str | None) -> bool | None:
    """Whether a ``mode`` metadata value has the owner's exec bit; None if absent/invalid."""
    try:
        return bool(int(text, 8) & 0o100) if text else None
    except ValueError:
        return None


class S3Remote(S3Uploads, S3Versions):
    """An S3 bucket (and key prefix). Implements Remote, Mover, Reader, Marker, Versions
    (bucket versioning, else the ``trash`` prefix: ``S3Versions``) and Resumer (multipart
    uploads that go on where they stopped: ``S3Uploads``), on the object operations of
    ``S3Bucket``.

    The local mtime and exec bit go in the user metadata as rclone stores them (``mtime``,
    float seconds; ``mode``, octal): ListObjectsV2 carries no metadata, so listings leave
    them out and ``stat`` (HeadObject) reads them back for one file (verify --times)."""

    # ListObjectsV2 gives no checksums: verify reads objects back.
    features = Features(
        move=True,
        read=True,
        mark=True,
        versions=True,
        keeps_times=True,
        keeps_exec=True,
        stat=True,
        resumes=True,
    )

    async def __aenter__(self) -> S3Remote:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- put --------------------------------------------------------------------------------
    async def put(self, path: str, source: Source) -> str:
        """Store the file at its key: one PutObject up to ``multipart_threshold``, else a
        multipart upload with parts streamed from disk, resumed where an earlier try left it
        (``S3Uploads``). Every body carries ChecksumSHA256. Raises SourceChanged if the file
        changed while it was read (nothing is stored then), TransientError (a multipart
        upload is kept to resume)/PermanentError/AuthError from the server."""
        await self._keep(path, "replaced", source.sha256)
        if source.size > self.multipart_threshold:
            return await self._put_multipart(path, source, self._metadata(source))
        if source.data is not None:
            data = source.data
            await source.pace(len(data))  # bwlimit holds for small files too
        else:
            data = b"".join([chunk async for chunk in source.chunks()])
            await source.check_unchanged()
        assert source.sha256 is not None
        want = b64(bytes.fromhex(source.sha256))
        resp = await self._s3.call(
            "upload",
            path,
            "put_object",
            Bucket=self.bucket,
            Key=self.key(path),
            Body=Counted(data),  # written in pieces, not copied into the transport
            ContentLength=len(data),
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=want,
            Metadata=self._metadata(source),
        )
        got = resp.get("ChecksumSHA256")
        if got is not None and got != want:
            raise TransientError(f"upload {path}: the server stored different bytes", path=path)
        return source.sha256

    # -- delete, list -----------------------------------------------------------------------
    async def delete(self, path: str) -> None:
        """Delete the object at ``path`` and every object under ``path/`` (a "directory").
        Absent is not an error. Raises TransientError/PermanentError/AuthError."""
        under = [(k, n) async for k, n in self._keys_under(path + "/")]
        if await self._trashing():
            await self._keep_tree(path, "deleted", under)
        await self._delete_keys(path, [*(k for k, _ in under), self.key(path)])

    async def list(self, prefix: str) -> AsyncIterator[RemoteEntry]:
        """Every object under ``prefix/`` (ListObjectsV2, paginated); sizes, no digests.
        Keys ending in ``/`` (folder markers made by consoles) and keys with a component
        starting with ``.~syncd-`` (the mirror marker) are skipped."""
        start = self.key(prefix + "/" if prefix else "")
        async for key, size in self._keys_under(prefix + "/" if prefix else ""):
            rel = key[len(start) :]
            if rel and not rel.endswith("/") and not is_reserved(rel):
                yield RemoteEntry(rel, size, None)

    # -- move -------------------------------------------------------------------------------
    async def move(self, src: str, dst: str) -> None:
        """Copy ``src`` (an object, or every object under ``src/``) to ``dst``, then delete the
        sources. PermanentError if nothing is at ``src``."""
        moves: list[tuple[str, str, int]] = []
        head = await self._head(src)
        if head is not None:
            moves.append((self.key(src), self.key(dst), head))
        async for key, size in self._keys_under(src + "/"):
            moves.append((key, self.key(dst) + key[len(self.key(src)) :], size))
        if not moves:
            raise PermanentError(f"move {src}: not on the server", path=src, status=404)
        # Replacing a directory: what was under ``dst/`` and is not overwritten goes.
        targets = {d for _, d, _ in moves}
        replaced = [(k, n) async for k, n in self._keys_under(dst + "/")]
        if await self._trashing():
            await self._keep_tree(dst, "overwritten", replaced)
        stale = [k for k, _ in replaced if k not in targets]
        for s_key, d_key, size in moves:
            await self._copy(src, s_key, d_key, size)
        await self._delete_keys(dst, stale)
        await self._delete_keys(src, [s for s, _, _ in moves])

    async def _head(self, path: str) -> int | None:
        """The size of the object at ``path``; None if there is none."""
        resp = await self._unless_absent("move", path, "head_object")
        return None if resp is None else int(resp.get("ContentLength", 0))

    # -- Marker -----------------------------------------------------------------------------
    async def read_marker(self, prefix: str) -> str | None:
        """The mirror id in the object ``<prefix>/.~syncd-mirror``; None if there is none.
        PermanentError if it is not a marker."""
        path = marker_path(prefix)
        resp = await self._unless_absent("read marker", path, "get_object")
        if resp is None:
            return None
        try:
            async with resp["Body"] as body:
                data = await body.read(1 << 16)
        except Exception as e:
            raise self._s3.error(e, "read marker", path) from e
        return marker_id(data, path)

    async def write_marker(self, prefix: str, mirror_id: str) -> None:
        """One PutObject (atomic: S3 never shows half an object), with ChecksumSHA256."""
        path = marker_path(prefix)
        body = marker_body(mirror_id)
        await self._s3.call(
            "write marker",
            path,
            "put_object",
            Bucket=self.bucket,
            Key=self.key(path),
            Body=body,
            ContentLength=len(body),
            ContentType="application/json",
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=b64(hashlib.sha256(body).digest()),
        )

    # -- Reader, ping -----------------------------------------------------------------------
    async def read(self, path: str) -> AsyncIterator[bytes]:
        """The stored bytes of ``path`` (GetObject, streamed). PermanentError if absent."""
        async for chunk in self._get("read", path, Key=self.key(path)):
            yield chunk

    async def ping(self) -> None:
        """HeadBucket. Raises Unreachable/TransientError, or AuthError; any other answer
        (even "no such bucket") means the server is there."""
        try:
            await self._s3.call("reach", "", "head_bucket", Bucket=self.bucket)
        except AuthError:
            raise
        except PermanentError as e:
            log.debug("ping %s: %s", self.description, e)

    # -- times and exec bit -----------------------------------------------------------------
    @staticmethod
    def _metadata(source: Source) -> dict[str, str]:
        return {
            "mtime": mtime_text(source.local.mtime_ns),
            "mode": mode_text(source.local.executable),
        }

    async def stat(self, path: str) -> RemoteEntry | None:
        """One object's size, mtime and exec bit (HeadObject: its metadata); None if absent."""
        head = await self._unless_absent("stat", path, "head_object")
        if head is None:
            return None
        meta = head.get("Metadata") or {}
        return RemoteEntry(
            path,
            int(head.get("ContentLength", 0)),
            None,
            parse_mtime(meta.get("mtime")),
            parse_mode(meta.get("mode")),
        )
