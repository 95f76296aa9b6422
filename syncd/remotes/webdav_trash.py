"""The WebDAV remote's trash, its kept versions: with ``trash = "PREFIX"``, what a delete
removes is MOVEd to ``<trash>/<path>/.~syncd-v<when>-<why>`` (the layout of
:mod:`syncd.versioning`), what an upload, a move or a restore replaces is COPied there first,
server-side; the ``Versions`` ability lists, reads and puts back what is there. Without a
trash ``features.versions`` is False and nothing is kept."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace

from syncd.config import RemoteConfig
from syncd.errors import PermanentError
from syncd.remotes.base import Version
from syncd.remotes.webdav_tree import DAVTree
from syncd.remotes.webdav_xml import Listed
from syncd.versioning import VERSION_PREFIX, Why, split_version_path, versions_path


class DAVTrash(DAVTree):
    """What a WebDAV remote keeps in its trash, and gives back."""

    def __init__(self, cfg: RemoteConfig, concurrency: int) -> None:
        super().__init__(cfg, concurrency)
        self.trash: str = (cfg.options.get("trash") or "").strip("/")
        self.features = replace(type(self).features, versions=bool(self.trash))

    async def _keep(self, path: str, why: Why, *, move: bool = False) -> bool:
        """With a trash: COPY (``move``: MOVE) what is at ``path`` (a file or a collection) to
        ``<trash>/<path>/.~syncd-v<when>-<why>``, server-side. False if there is no trash or
        nothing at ``path``."""
        if not self.trash:
            return False
        is_coll = await self._stat_collection(path)
        if is_coll is None:
            return False
        dest = f"{self.trash}/{versions_path(path, time.time_ns(), why)}"
        await self._ensure_parents(dest, "keep")
        s_url, d_url = self._urls(path, dest, is_coll)
        if move:
            self._forget(path)
        await self._request(
            "MOVE" if move else "COPY",
            s_url,
            path,
            "keep",
            ok=(200, 201, 204),
            headers={"Destination": str(d_url), "Overwrite": "F", "Depth": "infinity"},
        )
        return True

    async def versions(self, prefix: str) -> AsyncIterator[Version]:
        """The versions in the trash at or under ``prefix`` (a file or a directory): every
        file under ``<trash>/<prefix>/``, and those of the deleted-directory entries directly
        in each directory above it. Nothing without a trash."""
        if not self.trash:
            return
        prefix = prefix.strip("/")
        parts = prefix.split("/") if prefix else []
        top = len(self.trash) + 1
        found: list[tuple[str, Listed]] = [
            x
            async for x in self._walk(f"{self.trash}/{prefix}" if prefix else self.trash, raw=True)
        ]
        for i in range(len(parts) - 1, -1, -1):
            above = "/".join(parts[:i])
            place = f"{self.trash}/{above}" if above else self.trash
            async for full, _item in self._walk(place, raw=True, depth=1):
                name = full.rstrip("/").rpartition("/")[2]
                if full.endswith("/") and name.startswith(VERSION_PREFIX):
                    found += [x async for x in self._walk(full.rstrip("/"), raw=True)]
        if self._hides_dot_names:
            raise PermanentError(
                f"versions of {prefix or '/'}: {self.description} leaves names starting with "
                f"'.' out of its listings (nginx does), so the versions kept in {self.trash}/ "
                "cannot be listed; copy them back from the server's disk, or use a WebDAV "
                "server that lists such names (Apache, Nextcloud, wsgidav)",
                path=prefix,
            )
        for full, item in found:
            v = split_version_path(full[top:])
            if v is None or (prefix and v.path != prefix and not v.path.startswith(prefix + "/")):
                continue
            yield Version(
                path=v.path,
                when_ns=v.when_ns,
                why=v.why,
                size=max(item.size, 0),
                mtime_ns=self._mtime_ns(item),
                ref=full,
            )

    async def read_version(self, version: Version) -> AsyncIterator[bytes]:
        """The bytes of a version in the trash (GET)."""
        async for chunk in self.read(version.ref):
            yield chunk

    async def restore_version(self, version: Version, path: str) -> None:
        """COPY the version from the trash back to ``path`` (``Overwrite: T``); what ``path``
        held is kept in the trash first ("overwritten")."""
        await self._ensure_parents(path, "restore")
        await self._keep(path, "overwritten")
        await self._request(
            "COPY",
            self.url(version.ref),
            path,
            "restore",
            ok=(200, 201, 204),
            headers={"Destination": str(self.url(path)), "Overwrite": "T"},
        )

    async def retention(self) -> str:
        if self.trash:
            return f"versions: trash at {self.trash} (kept until removed from it)"
        return "versions: none — deleted files cannot be brought back (set remote.trash)"
