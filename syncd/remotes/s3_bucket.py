"""The S3 remote's bucket: one bucket and key prefix, and the object operations the remote
is built of — keys listed page by page, deleted a thousand at a time, copied server-side (a
multipart copy above CopyObject's 5 GiB), multipart uploads completed or else aborted, bodies
read. ``S3Versions`` and ``S3Remote`` stand on it; nothing here decides what a put, a delete or
a kept version means."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from syncd.config import RemoteConfig
from syncd.errors import AuthError, PermanentError, RemoteError, TransientError
from syncd.remotes.s3_client import S3Client, client_error

log = logging.getLogger("syncd.remotes.s3")

MiB = 1 << 20
GiB = 1 << 30
MAX_PARTS = 10_000
DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def parse_url(url: str) -> tuple[str, str]:
    """``"s3://bucket/some/prefix/"`` -> ``("bucket", "some/prefix/")`` (prefix "" or ends in /)."""
    parts = urlsplit(url)
    prefix = parts.path.strip("/")
    return parts.netloc, (prefix + "/" if prefix else "")


def part_size_for(size: int, minimum: int) -> int:
    """The part size for a ``size``-byte object: ``minimum``, larger (whole MiB) when the
    object would need more than 10,000 parts."""
    need = -(-size // MAX_PARTS)
    return max(minimum, -(-need // MiB) * MiB)


class S3Bucket:
    """The bucket and key prefix of one S3 remote, and its object operations (each raises
    TransientError/PermanentError/AuthError, as ``S3Client.call`` maps them)."""

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

    async def aclose(self) -> None:
        await self._s3.aclose()

    def key(self, path: str) -> str:
        return self.prefix + path

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

    async def _unless_absent(
        self, what: str, path: str, op: str, **kw: Any
    ) -> dict[str, Any] | None:
        """The answer of ``op`` on the object at ``path``; None if there is none (404)."""
        try:
            return await self._s3.call(what, path, op, Bucket=self.bucket, Key=self.key(path), **kw)
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


def _source_args(source: dict[str, str]) -> dict[str, str]:
    """A CopySource as HeadObject's arguments."""
    out = {"Bucket": source["Bucket"], "Key": source["Key"]}
    if "VersionId" in source:
        out["VersionId"] = source["VersionId"]
    return out
