"""The S3 remote's kept versions: bucket versioning where the bucket keeps versions (asked
once, GetBucketVersioning), else the ``trash`` prefix, into which an object is copied before
it is replaced or deleted (``<trash>/<path>/.~syncd-v<when>-<why>``, the layout of
:mod:`syncd.versioning`). The ``Versions`` ability: list, read, put back, say how long."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from syncd.config import RemoteConfig
from syncd.errors import PermanentError
from syncd.remotes.base import Version, is_reserved
from syncd.remotes.s3_bucket import S3Bucket, b64
from syncd.versioning import VERSION_PREFIX, Why, split_version_path, versions_path

log = logging.getLogger("syncd.remotes.s3")


class S3Versions(S3Bucket):
    """What an S3 remote keeps of the objects it replaces and deletes, and gives back."""

    def __init__(self, cfg: RemoteConfig, concurrency: int) -> None:
        super().__init__(cfg, concurrency)
        self.trash: str = (cfg.options.get("trash") or "").strip("/")
        self._versioned: bool | None = None
        self._versioned_lock = asyncio.Lock()

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
        head = await self._unless_absent("keep", path, "head_object", ChecksumMode="ENABLED")
        if head is None:
            return
        if sha256 is not None and head.get("ChecksumSHA256") == b64(bytes.fromhex(sha256)):
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
