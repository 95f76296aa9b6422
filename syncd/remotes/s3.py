"""The S3 remote: AWS S3 and S3-compatible servers (MinIO, Ceph RGW, Garage, R2, Wasabi...).

Needs the optional extra ``syncd[s3]`` (aiobotocore). ``url = "s3://bucket/prefix/"``; a file
``a/b.txt`` of a folder with ``remote_path = "docs"`` is the key ``prefix/docs/a/b.txt``.
Credentials come from the standard AWS chain (environment, ``~/.aws``, ``profile``, instance
roles). Every upload carries ``ChecksumSHA256`` (per part for multipart uploads), so the server
checks the bytes it received. botocore's own retries are turned off: retrying is
``syncd.retry``'s job.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from syncd.config import RemoteConfig
from syncd.errors import (
    AuthError,
    PermanentError,
    RemoteError,
    TransientError,
)
from syncd.hashing import Source
from syncd.remotes.base import (
    Features,
    Version,
    is_reserved,
    marker_body,
    marker_id,
    marker_path,
)
from syncd.remotes.s3_client import Counted, S3Client, client_error
from syncd.types import RemoteEntry
from syncd.versioning import VERSION_PREFIX, Why, split_version_path, versions_path

log = logging.getLogger("syncd.remotes.s3")

MiB = 1 << 20
GiB = 1 << 30
MAX_PARTS = 10_000
DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def parse_url(url: str) -> tuple[str, str]:
    """``"s3://bucket/some/prefix/"`` -> ``("bucket", "some/prefix/")`` (prefix "" or ends in /)."""
    parts = urlsplit(url)
    prefix = parts.path.strip("/")
    return parts.netloc, (prefix + "/" if prefix else "")


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


def part_size_for(size: int, minimum: int) -> int:
    """The part size for a ``size``-byte object: ``minimum``, larger (whole MiB) when the
    object would need more than 10,000 parts."""
    need = -(-size // MAX_PARTS)
    return max(minimum, -(-need // MiB) * MiB)


class S3Remote:
    """An S3 bucket (and key prefix). Implements Remote, Mover, Reader, Marker and Versions
    (bucket versioning, else the ``trash`` prefix).

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
    )

    #: Objects larger than this are sent as multipart uploads of ``part_size`` parts.
    multipart_threshold = 8 * MiB
    part_size = 8 * MiB
    #: CopyObject copies at most 5 GiB; above that, a multipart copy of ``copy_part_size``.
    copy_limit = 5 * GiB
    copy_part_size = 512 * MiB

    def __init__(self, cfg: RemoteConfig, concurrency: int) -> None:
        self.cfg = cfg
        self.bucket, self.prefix = parse_url(cfg.url)
        endpoint: str | None = cfg.options["endpoint_url"] or None
        self.description = f"s3://{self.bucket}/{self.prefix}" + (
            f" at {endpoint}" if endpoint else ""
        )
        self._s3 = S3Client(cfg, concurrency, self.description)
        self.trash: str = (cfg.options.get("trash") or "").strip("/")
        self._versioned: bool | None = None
        self._versioned_lock = asyncio.Lock()

    async def __aenter__(self) -> S3Remote:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._s3.aclose()

    def key(self, path: str) -> str:
        return self.prefix + path

    # -- put --------------------------------------------------------------------------------
    async def put(self, path: str, source: Source) -> str:
        """Store the file at its key: one PutObject up to ``multipart_threshold``, else a
        multipart upload with parts streamed from disk. Every body carries ChecksumSHA256.
        Raises SourceChanged if the file changed while it was read (nothing is stored then),
        TransientError/PermanentError/AuthError from the server."""
        await self._keep(path, "replaced", source.sha256)
        if source.size > self.multipart_threshold:
            return await self._put_multipart(path, source)
        if source.data is not None:
            data = source.data
            await source.pace(len(data))  # bwlimit holds for small files too
        else:
            data = b"".join([chunk async for chunk in source.chunks()])
            await source.check_unchanged()
        assert source.sha256 is not None
        want = _b64(bytes.fromhex(source.sha256))
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

    async def _put_multipart(self, path: str, source: Source) -> str:
        key = self.key(path)
        size = part_size_for(source.size, self.part_size)

        async def send(upload_id: str) -> list[dict[str, Any]]:
            # One part in memory at a time: read from the file, sent, dropped.
            parts: list[dict[str, Any]] = []
            pending: list[bytes] = []
            have = 0
            async for chunk in source.chunks():
                pending.append(chunk)
                have += len(chunk)
                while have >= size:
                    body = b"".join(pending)
                    pending = [body[size:]] if have > size else []
                    have -= size
                    body = body[:size] if pending else body
                    parts.append(await self._part(path, key, upload_id, len(parts) + 1, body))
                    del body
            if have or not parts:
                body = b"".join(pending)
                parts.append(await self._part(path, key, upload_id, len(parts) + 1, body))
            del pending
            # Commit only what was read from an unchanged file.
            await source.check_unchanged()
            return parts

        await self._multipart("upload", path, key, send, self._metadata(source))
        assert source.sha256 is not None
        return source.sha256

    async def _multipart(
        self,
        what: str,
        path: str,
        key: str,
        send: Callable[[str], Awaitable[list[dict[str, Any]]]],
        metadata: dict[str, str] | None = None,
    ) -> None:
        """Create a multipart upload of ``key``, ``send`` its parts (given the upload id; it
        returns them), then complete it; on any failure (or cancellation) abort it instead."""
        created = await self._s3.call(
            what,
            path,
            "create_multipart_upload",
            Bucket=self.bucket,
            Key=key,
            ChecksumAlgorithm="SHA256",
            **({"Metadata": metadata} if metadata is not None else {}),
        )
        upload_id = created["UploadId"]
        try:
            parts = await send(upload_id)
            await self._s3.call(
                what,
                path,
                "complete_multipart_upload",
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            await self._abort(key, upload_id)
            raise

    async def _part(
        self, path: str, key: str, upload_id: str, number: int, body: bytes
    ) -> dict[str, Any]:
        """Send one part. The body goes as a file object over the bytes (no copy), which
        aiohttp writes in pieces: a bytes body would be copied into the transport's buffer."""
        digest = _b64(await asyncio.to_thread(lambda: hashlib.sha256(body).digest()))
        resp = await self._s3.call(
            "upload",
            path,
            "upload_part",
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=Counted(body),  # shares ``body``'s memory
            ContentLength=len(body),
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=digest,
        )
        return {"ETag": resp["ETag"], "PartNumber": number, "ChecksumSHA256": digest}

    async def _abort(self, key: str, upload_id: str) -> None:
        """Drop an incomplete multipart upload (its parts would otherwise be billed)."""
        try:
            client = await self._s3.client()
            await client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except Exception as e:  # the original error matters more than this one
            log.warning(
                "could not abort the incomplete upload of %s (%s); a bucket lifecycle rule "
                "(AbortIncompleteMultipartUpload) cleans such leftovers",
                key,
                e,
            )

    # -- delete, list -----------------------------------------------------------------------
    async def _keys_under(self, path: str) -> AsyncIterator[tuple[str, int]]:
        """(key, size) of every object whose key starts with ``key(path)`` (paginated)."""
        start = self.key(path)
        token: str | None = None
        while True:
            kw: dict[str, Any] = {"Bucket": self.bucket, "Prefix": start}
            if token:
                kw["ContinuationToken"] = token
            page = await self._s3.call("list", path, "list_objects_v2", **kw)
            for obj in page.get("Contents", ()):
                yield obj["Key"], int(obj.get("Size", 0))
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")
            if not token:
                raise TransientError(f"list {path}: truncated listing without a token", path=path)

    async def _delete_keys(self, path: str, keys: list[str]) -> None:
        for i in range(0, len(keys), DELETE_BATCH):
            batch = [{"Key": k} for k in keys[i : i + DELETE_BATCH]]
            resp = await self._s3.call(
                "delete",
                path,
                "delete_objects",
                Bucket=self.bucket,
                Delete={"Objects": batch, "Quiet": True},
            )
            errors = resp.get("Errors") or []
            if errors:
                first = errors[0]
                raise self._s3.error(
                    client_error(first.get("Code", ""), first.get("Message", ""), "DeleteObjects"),
                    "delete",
                    path,
                )

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

    async def _unless_absent(self, what: str, path: str, op: str) -> dict[str, Any] | None:
        """The answer of ``op`` on the object at ``path``; None if there is none (404)."""
        try:
            return await self._s3.call(what, path, op, Bucket=self.bucket, Key=self.key(path))
        except PermanentError as e:
            if e.status == 404 and not isinstance(e, AuthError):
                return None
            raise

    async def _copy(
        self,
        path: str,
        s_key: str,
        d_key: str,
        size: int,
        *,
        what: str = "move",
        version_id: str | None = None,
    ) -> None:
        source = {"Bucket": self.bucket, "Key": s_key}
        if version_id:
            source["VersionId"] = version_id
        if size <= self.copy_limit:
            await self._s3.call(
                what,
                path,
                "copy_object",
                Bucket=self.bucket,
                Key=d_key,
                CopySource=source,
                ChecksumAlgorithm="SHA256",
                MetadataDirective="COPY",
            )
            return
        step = part_size_for(size, self.copy_part_size)

        async def send(upload_id: str) -> list[dict[str, Any]]:
            parts: list[dict[str, Any]] = []
            for number, first in enumerate(range(0, size, step), start=1):
                last = min(first + step, size) - 1
                resp = await self._s3.call(
                    what,
                    path,
                    "upload_part_copy",
                    Bucket=self.bucket,
                    Key=d_key,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource=source,
                    CopySourceRange=f"bytes={first}-{last}",
                )
                result = resp["CopyPartResult"]
                part = {"ETag": result["ETag"], "PartNumber": number}
                if result.get("ChecksumSHA256"):
                    part["ChecksumSHA256"] = result["ChecksumSHA256"]
                parts.append(part)
            return parts

        # (a multipart copy does not copy the metadata: it is read and given again)
        head = await self._s3.call(what, path, "head_object", **_source_args(source))
        await self._multipart(what, path, d_key, send, dict(head.get("Metadata") or {}))

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
            ChecksumSHA256=_b64(hashlib.sha256(body).digest()),
        )

    # -- Reader, ping -----------------------------------------------------------------------
    async def read(self, path: str) -> AsyncIterator[bytes]:
        """The stored bytes of ``path`` (GetObject, streamed). PermanentError if absent."""
        async for chunk in self._get("read", path, Key=self.key(path)):
            yield chunk

    async def _get(self, what: str, path: str, **kw: Any) -> AsyncIterator[bytes]:
        """GetObject's body (``kw``: Key, and VersionId for a kept version), streamed."""
        resp = await self._s3.call(what, path, "get_object", Bucket=self.bucket, **kw)
        try:
            async with resp["Body"] as body:
                while chunk := await body.read(MiB):
                    yield chunk
        except RemoteError:
            raise
        except Exception as e:
            raise self._s3.error(e, what, path) from e

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

    # -- Versions ---------------------------------------------------------------------------
    async def versioned(self) -> bool:
        """Whether the bucket keeps versions (GetBucketVersioning: Enabled), asked once."""
        if self._versioned is None:
            async with self._versioned_lock:
                if self._versioned is None:
                    try:
                        resp = await self._s3.call(
                            "ask about versioning", "", "get_bucket_versioning", Bucket=self.bucket
                        )
                    except PermanentError as e:  # (AuthError too: AccessDenied to this call)
                        log.warning(
                            "%s: cannot tell whether the bucket keeps versions (%s); taking it "
                            "that it does not (allow s3:GetBucketVersioning to tell)",
                            self.description,
                            e,
                        )
                        resp = {}
                    self._versioned = resp.get("Status") == "Enabled"
        return self._versioned

    async def _trashing(self) -> bool:
        """Whether replaced and deleted objects are copied into the trash (a trash is set and
        the bucket keeps no versions of its own)."""
        return bool(self.trash) and not await self.versioned()

    def _trash_key(self, path: str, when_ns: int, why: Why) -> str:
        return self.key(f"{self.trash}/{versions_path(path, when_ns, why)}")

    async def _keep(self, path: str, why: Why, sha256: str | None = None) -> None:
        """Copy the object at ``path`` into the trash before it is replaced (not when it holds
        the bytes ``sha256`` already, or there is none)."""
        if not await self._trashing():
            return
        try:
            head = await self._s3.call(
                "keep",
                path,
                "head_object",
                Bucket=self.bucket,
                Key=self.key(path),
                ChecksumMode="ENABLED",
            )
        except PermanentError as e:
            if e.status == 404 and not isinstance(e, AuthError):
                return
            raise
        if sha256 is not None and head.get("ChecksumSHA256") == _b64(bytes.fromhex(sha256)):
            return  # the same bytes: nothing would be lost
        size = int(head.get("ContentLength", 0))
        await self._copy(
            path, self.key(path), self._trash_key(path, time.time_ns(), why), size, what="keep"
        )

    async def _keep_tree(self, path: str, why: Why, under: Sequence[tuple[str, int]]) -> None:
        """Copy the object at ``path`` and those under ``path/`` into the trash, as one entry
        (``<trash>/<path>/.~syncd-v<when>-<why>[/<rest>]``)."""
        entry = self._trash_key(path, time.time_ns(), why)
        head = await self._unless_absent("keep", path, "head_object")
        if head is not None:
            await self._copy(
                path, self.key(path), entry, int(head.get("ContentLength", 0)), what="keep"
            )
        start = self.key(path + "/")
        for key, size in under:
            rel = key[len(start) :]
            if rel and not is_reserved(rel):
                await self._copy(path, key, f"{entry}/{rel}", size, what="keep")

    async def versions(self, prefix: str) -> AsyncIterator[Version]:
        """Every kept version at or under ``prefix`` (a file or a directory): from
        ListObjectVersions where the bucket keeps versions, else from the trash; nothing if
        neither (``retention`` says so)."""
        prefix = prefix.strip("/")
        if await self.versioned():
            async for v in self._object_versions(prefix):
                yield v
        elif self.trash:
            async for v in self._trash_versions(prefix):
                yield v

    async def _object_versions(self, prefix: str) -> AsyncIterator[Version]:
        """ListObjectVersions (paginated): each non-current version of each key, which stopped
        being current when the next one (a version or a delete marker) was made."""
        start = self.key(prefix)
        entries: dict[str, list[tuple[float, int, bool, dict[str, Any]]]] = {}
        kw: dict[str, Any] = {"Bucket": self.bucket, "Prefix": start}
        while True:
            page = await self._s3.call("list versions", prefix, "list_object_versions", **kw)
            for marker in page.get("DeleteMarkers", ()):
                t = marker["LastModified"].timestamp()
                entries.setdefault(marker["Key"], []).append((t, 0, True, marker))
            for obj in page.get("Versions", ()):
                t = obj["LastModified"].timestamp()
                entries.setdefault(obj["Key"], []).append((t, 1, False, obj))
            if not page.get("IsTruncated"):
                break
            kw["KeyMarker"] = page.get("NextKeyMarker")
            kw["VersionIdMarker"] = page.get("NextVersionIdMarker")
        for key, items in entries.items():
            rel = key[len(self.prefix) :]
            if prefix and rel != prefix and not rel.startswith(prefix + "/"):
                continue
            if is_reserved(rel):
                continue
            # Newest first: IsLatest leads, then by time (a delete marker made at the same
            # second as the version it hides sorts before it).
            items.sort(key=lambda i: (bool(i[3].get("IsLatest")), i[0], -i[1]), reverse=True)
            for newer, (_t, _k, is_marker, item) in itertools.pairwise(items):
                if is_marker:
                    continue
                yield Version(
                    path=rel,
                    when_ns=int(newer[3]["LastModified"].timestamp() * 1e9),
                    why="deleted" if newer[2] else "replaced",
                    size=int(item.get("Size", 0)),
                    ref=json.dumps({"key": key, "version": item.get("VersionId")}),
                )

    async def _trash_versions(self, prefix: str) -> AsyncIterator[Version]:
        """The versions in the trash: every object under ``<trash>/<prefix>/``, and the
        deleted-directory entries directly in each directory above ``prefix``."""
        base = self.key(self.trash + "/")
        parts = prefix.split("/") if prefix else []
        places: list[tuple[str, str | None]] = [(prefix + "/" if prefix else "", None)]
        for i in range(len(parts) - 1, -1, -1):
            up = "/".join(parts[:i])
            places.append(((up + "/" if up else "") + VERSION_PREFIX, up))
        for place, above in places:
            async for key, size in self._keys_under(f"{self.trash}/{place}"):
                v = split_version_path(key[len(base) :])
                if v is None:
                    continue
                if prefix and v.path != prefix and not v.path.startswith(prefix + "/"):
                    continue
                if above is not None and v.entry.rpartition("/")[0] != above:
                    continue  # (only a deleted directory's entry directly in ``above``)
                yield Version(
                    path=v.path,
                    when_ns=v.when_ns,
                    why=v.why,
                    size=size,
                    ref=json.dumps({"key": key, "version": None}),
                )

    def _ref(self, version: Version) -> tuple[str, str | None]:
        try:
            doc = json.loads(version.ref)
            return str(doc["key"]), doc.get("version") or None
        except (ValueError, KeyError, TypeError) as e:
            raise PermanentError(
                f"{version.path}: not a version this remote listed", path=version.path
            ) from e

    async def read_version(self, version: Version) -> AsyncIterator[bytes]:
        """The bytes of a kept version (GetObject, with its VersionId where it has one)."""
        key, vid = self._ref(version)
        kw: dict[str, Any] = {"Key": key, **({"VersionId": vid} if vid else {})}
        async for chunk in self._get("read version", version.path, **kw):
            yield chunk

    async def restore_version(self, version: Version, path: str) -> None:
        """CopyObject of the version (with its VersionId) onto ``path``; what ``path`` held
        is kept in turn (by the bucket, or in the trash as "overwritten")."""
        key, vid = self._ref(version)
        await self._keep(path, "overwritten")
        await self._copy(path, key, self.key(path), version.size, what="restore", version_id=vid)

    async def retention(self) -> str:
        """Which of bucket versioning or the trash keeps versions here."""
        if await self.versioned():
            return "versions: S3 bucket versioning (its lifecycle rules say for how long)"
        if self.trash:
            return f"versions: trash at {self.trash} (kept until removed from it)"
        return (
            "versions: none — deleted files cannot be brought back (turn bucket versioning "
            "on, or set remote.trash)"
        )


def _source_args(source: dict[str, str]) -> dict[str, str]:
    """A CopySource as HeadObject's arguments."""
    out = {"Bucket": source["Bucket"], "Key": source["Key"]}
    if "VersionId" in source:
        out["VersionId"] = source["VersionId"]
    return out
