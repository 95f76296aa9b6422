"""The S3 remote's uploads of large files: multipart uploads that go on where they stopped.

Each upload is recorded in ``resumes`` (``syncd.resumes``: the state dir's ``uploads/``, or
memory) under ``s3 <endpoint> <bucket>/<key>``: its upload id, the local file's identity, the
part size, and every part finished so far (number, ETag, size, ChecksumSHA256), written after
each part, so that it outlives a dropped connection and a SIGKILL alike.

A put that finds a record for the very file it was started for (same identity, same part size)
asks the server for the upload's parts (ListParts) and skips every recorded part the server
lists with the same ETag and size: it reads that part from the file again and hashes it, and
goes on only if the digest is the recorded one (the server checked that digest when it took the
part); any other part is sent. The whole file is read in order either way, so the sha-256 put
returns is that of the bytes now in the object, and the file's size and mtime are checked again
before CompleteMultipartUpload, whose composite checksum (where the server gives it) must be
that of the parts given.
A record for another state of the file, or a part that reads back different bytes, aborts the
old upload and starts a new one; a record whose upload the server no longer has starts anew.

A transient failure (a reset, a timeout, a 5xx) and, with a state dir, a cancellation keep the
upload and its record for the next try; a permanent failure, a changed file or any other error
abort the upload and drop the record, as does success. Records older than ``resumes.MAX_AGE``
are dropped (swept once a day); an incomplete upload of the same key that no record names and
that began over ``ORPHAN_AGE`` ago (left by a syncd killed before it recorded it) is aborted
when that key's next upload starts afresh. Resuming saves sending: where it cannot be done (a
policy without ListParts) the upload starts again instead of failing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from syncd.config import RemoteConfig
from syncd.errors import AuthError, PermanentError, RemoteError, TransientError
from syncd.hashing import Source
from syncd.remotes.s3_bucket import MiB, S3Bucket, b64, part_size_for
from syncd.remotes.s3_client import Counted
from syncd.resumes import Resumes, identity

log = logging.getLogger("syncd.remotes.s3")

ORPHAN_AGE = 24 * 3600.0
"""Seconds after which an incomplete upload of a key syncd starts afresh is taken as left over
(by a syncd killed before it could record it) and aborted."""

SWEEP_EVERY = 86400.0
"""Seconds between two sweeps of the records (``Resumes.sweep``: those older than its MAX_AGE)."""


class _Stale(Exception):
    """A part recorded as sent reads back different bytes from the file now."""


@dataclass
class _Upload:
    """One multipart upload in progress: its record, and the recorded parts the server has."""

    upload_id: str
    record: dict[str, Any]
    reuse: dict[int, dict[str, Any]] = field(default_factory=dict)


def _recorded_parts(record: dict[str, Any]) -> dict[int, dict[str, Any]] | None:
    """The record's parts by number; None if they are not as this module writes them."""
    parts = record.get("parts")
    if not isinstance(parts, list):
        return None
    out: dict[int, dict[str, Any]] = {}
    for p in parts:
        if not (
            isinstance(p, dict)
            and isinstance(p.get("n"), int)
            and isinstance(p.get("etag"), str)
            and isinstance(p.get("size"), int)
            and isinstance(p.get("sha256"), str)
        ):
            return None
        out[p["n"]] = p
    return out


def _etag(value: object) -> str:
    return str(value or "").strip('"')


def composite(parts: list[dict[str, Any]]) -> str:
    """S3's composite ChecksumSHA256 of a multipart object: the sha-256 of its parts' digests."""
    digests = b"".join(base64.b64decode(p["ChecksumSHA256"]) for p in parts)
    return b64(hashlib.sha256(digests).digest())


class S3Uploads(S3Bucket):
    """Large files sent as multipart uploads that resume (the ``Resumer`` ability)."""

    #: Objects larger than this are sent as multipart uploads of ``part_size`` parts.
    multipart_threshold = 8 * MiB
    part_size = 8 * MiB

    def __init__(self, cfg: RemoteConfig, concurrency: int) -> None:
        super().__init__(cfg, concurrency)
        self.resumes = Resumes()  # in memory; open_remote gives the state dir's
        self._swept: float | None = None  # when records older than MAX_AGE were last dropped

    def resume_key(self, key: str) -> str:
        return f"s3 {self._s3.endpoint or 'aws'} {self.bucket}/{key}"

    async def _put_multipart(self, path: str, source: Source, metadata: dict[str, str]) -> str:
        """Send ``source`` as a multipart upload, resuming the recorded one where it can.
        Raises SourceChanged, TransientError (the upload is kept to resume), PermanentError or
        AuthError (the upload is aborted)."""
        now = time.monotonic()
        if self._swept is None or now - self._swept > SWEEP_EVERY:
            self._swept = now
            await asyncio.to_thread(self.resumes.sweep)
        key = self.key(path)
        rkey = self.resume_key(key)
        size = part_size_for(source.size, self.part_size)
        upload = await self._resumable(path, key, rkey, source, size)
        if upload is not None:
            try:
                return await self._finish(path, key, rkey, source, upload)
            except _Stale as e:
                log.info("%s: %s since its upload began; sending it all again", path, e)
                await self._abort(key, upload.upload_id)
                self.resumes.drop(rkey)
        upload = await self._create(path, key, rkey, source, size, metadata)
        return await self._finish(path, key, rkey, source, upload)

    async def _resumable(
        self, path: str, key: str, rkey: str, source: Source, size: int
    ) -> _Upload | None:
        """The recorded upload of this very file, with the parts the server has; None if
        there is none to go on with (a record for another state of the file is aborted)."""
        record = self.resumes.get(rkey)
        if record is None:
            return None
        upload_id = record.get("upload_id")
        parts = _recorded_parts(record)
        if not isinstance(upload_id, str) or not upload_id:
            self.resumes.drop(rkey)
            return None
        if parts is None or record.get("identity") != identity(source.local):
            log.info("%s: changed since its upload began; starting it again", path)
            await self._cancel(path, key, upload_id)
            self.resumes.drop(rkey)
            return None
        if record.get("part_size") != size:
            log.info("%s: its upload used other parts; starting it again", path)
            await self._cancel(path, key, upload_id)
            self.resumes.drop(rkey)
            return None
        try:
            listed = await self._listed_parts(path, key, upload_id)
        except TransientError:
            raise
        except PermanentError as e:  # (AuthError too: a policy without ListParts)
            if e.status == 404 and not isinstance(e, AuthError):
                log.info("%s: the server no longer has its upload; starting it again", path)
            else:
                log.warning("%s: cannot list its upload's parts (%s); starting it again", path, e)
                await self._abort(key, upload_id)
            self.resumes.drop(rkey)
            return None
        reuse = {
            n: p
            for n, p in parts.items()
            if n in listed
            and _etag(listed[n].get("ETag")) == _etag(p["etag"])
            and int(listed[n].get("Size", -1)) == p["size"]
            and listed[n].get("ChecksumSHA256") in (None, p["sha256"])
        }
        record["parts"] = [reuse[n] for n in sorted(reuse)]
        log.info(
            "%s: resuming its upload: %d of %d parts are on the server",
            path,
            len(reuse),
            -(-source.size // size),
        )
        return _Upload(upload_id, record, reuse)

    async def _create(
        self, path: str, key: str, rkey: str, source: Source, size: int, metadata: dict[str, str]
    ) -> _Upload:
        await self._abort_orphans(path, key)
        created = await self._s3.call(
            "upload",
            path,
            "create_multipart_upload",
            Bucket=self.bucket,
            Key=key,
            ChecksumAlgorithm="SHA256",
            Metadata=metadata,
        )
        upload_id = created["UploadId"]
        record = {
            "upload_id": upload_id,
            "identity": identity(source.local),
            "part_size": size,
            "parts": [],
        }
        await asyncio.to_thread(self.resumes.put, rkey, record)
        return _Upload(upload_id, record)

    async def _finish(self, path: str, key: str, rkey: str, source: Source, upload: _Upload) -> str:
        """Send the parts the upload lacks, then complete it; what a failure does to the
        upload and its record is in the module's docstring."""
        try:
            parts = await self._send(path, key, rkey, source, upload)
            # Commit only what was read from an unchanged file.
            await source.check_unchanged()
            resp = await self._s3.call(
                "upload",
                path,
                "complete_multipart_upload",
                Bucket=self.bucket,
                Key=key,
                UploadId=upload.upload_id,
                MultipartUpload={"Parts": parts},
            )
        except (TransientError, _Stale):
            raise  # kept: the next try goes on from the parts recorded
        except asyncio.CancelledError:
            if self.resumes.directory is None:  # nobody could resume it
                await self._abort(key, upload.upload_id)
                self.resumes.drop(rkey)
            raise
        except BaseException:
            await self._abort(key, upload.upload_id)
            self.resumes.drop(rkey)
            raise
        self.resumes.drop(rkey)
        got = str(resp.get("ChecksumSHA256") or "").split("-")[0]
        assert source.sha256 is not None
        if got and got not in (composite(parts), b64(bytes.fromhex(source.sha256))):
            raise TransientError(f"upload {path}: the server assembled different bytes", path=path)
        return source.sha256

    async def _send(
        self, path: str, key: str, rkey: str, source: Source, upload: _Upload
    ) -> list[dict[str, Any]]:
        """Read the whole file in parts (one in memory at a time): send each part the upload
        lacks, check each it has. A skipped part is not paced by ``bwlimit``: it is not sent."""
        size = int(upload.record["part_size"])
        throttle = source.throttle
        parts: list[dict[str, Any]] = []
        pending: list[bytes] = []
        have = offset = 0

        def pace_from(at: int) -> None:
            source.throttle = None if at // size + 1 in upload.reuse else throttle

        try:
            async with contextlib.aclosing(source.chunks()) as chunks:
                pace_from(0)
                async for chunk in chunks:
                    pending.append(chunk)
                    have += len(chunk)
                    offset += len(chunk)
                    while have >= size:
                        body = b"".join(pending)
                        pending = [body[size:]] if have > size else []
                        have -= size
                        body = body[:size] if pending else body
                        parts.append(
                            await self._part(path, key, rkey, upload, len(parts) + 1, body)
                        )
                        del body
                    pace_from(offset)
                if have or not parts:
                    body = b"".join(pending)
                    parts.append(await self._part(path, key, rkey, upload, len(parts) + 1, body))
        finally:
            source.throttle = throttle
        return parts

    async def _part(
        self, path: str, key: str, rkey: str, upload: _Upload, number: int, body: bytes
    ) -> dict[str, Any]:
        """One part: skipped if the server has it with these very bytes, else sent and
        recorded. The body goes as a file object over the bytes (no copy), which aiohttp writes
        in pieces: a bytes body would be copied into the transport's buffer."""
        digest = b64(await asyncio.to_thread(lambda: hashlib.sha256(body).digest()))
        done = upload.reuse.get(number)
        if done is not None:
            if done["sha256"] != digest or done["size"] != len(body):
                raise _Stale(f"part {number} changed")
            return {"ETag": done["etag"], "PartNumber": number, "ChecksumSHA256": digest}
        resp = await self._s3.call(
            "upload",
            path,
            "upload_part",
            Bucket=self.bucket,
            Key=key,
            UploadId=upload.upload_id,
            PartNumber=number,
            Body=Counted(body),  # shares ``body``'s memory
            ContentLength=len(body),
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=digest,
        )
        etag = resp["ETag"]
        kept = [p for p in upload.record["parts"] if p["n"] != number]
        kept.append({"n": number, "etag": etag, "size": len(body), "sha256": digest})
        upload.record["parts"] = kept
        await asyncio.to_thread(self.resumes.put, rkey, upload.record)
        return {"ETag": etag, "PartNumber": number, "ChecksumSHA256": digest}

    async def _listed_parts(self, path: str, key: str, upload_id: str) -> dict[int, dict[str, Any]]:
        """Every part the server holds of the upload (ListParts, paginated), by number.
        PermanentError with status 404 if it has no such upload."""
        out: dict[int, dict[str, Any]] = {}
        marker = 0
        while True:
            kw: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "UploadId": upload_id}
            if marker:
                kw["PartNumberMarker"] = marker
            page = await self._s3.call("upload", path, "list_parts", **kw)
            for p in page.get("Parts", ()):
                out[int(p["PartNumber"])] = p
            if not page.get("IsTruncated"):
                return out
            after = int(page.get("NextPartNumberMarker") or 0)
            if after <= marker:
                raise TransientError(f"upload {path}: truncated list of parts", path=path)
            marker = after

    async def _cancel(self, path: str, key: str, upload_id: str) -> None:
        """Abort a recorded upload that will not be resumed: gone already is fine, a transient
        failure is raised (the record stays, to be aborted on the next try)."""
        try:
            await self._s3.call(
                "upload",
                path,
                "abort_multipart_upload",
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
            )
        except PermanentError as e:
            if e.status == 404 and not isinstance(e, AuthError):
                return  # NoSuchUpload: completed, aborted or expired already
            log.warning("%s: could not abort its earlier upload (%s)", path, e)

    async def _abort_orphans(self, path: str, key: str) -> None:
        """Abort the incomplete uploads of exactly ``key`` begun over ``ORPHAN_AGE`` ago (left
        by a syncd killed before it recorded them). Best effort: a failure is only logged."""
        cutoff = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=ORPHAN_AGE)
        try:
            page = await self._s3.call(
                "upload", path, "list_multipart_uploads", Bucket=self.bucket, Prefix=key
            )
            for u in page.get("Uploads", ()):
                begun = u.get("Initiated")
                if u.get("Key") == key and isinstance(begun, datetime.datetime) and begun < cutoff:
                    log.info("%s: aborting an upload of it left since %s", path, begun)
                    await self._cancel(path, key, u["UploadId"])
        except RemoteError as e:
            log.debug("%s: cannot look for uploads left over (%s)", path, e)
