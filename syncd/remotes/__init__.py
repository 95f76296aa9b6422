"""Remotes, registered by kind. Each module is imported only when its kind is used."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from syncd.errors import ConfigError

if TYPE_CHECKING:
    from syncd.config import RemoteConfig
    from syncd.remotes.base import Remote

# kind -> "module:factory"; the factory takes (RemoteConfig, concurrency) and returns a Remote.
REGISTRY: dict[str, str] = {
    "syncd": "syncd.remotes.syncd:SyncdRemote",
    "webdav": "syncd.remotes.webdav:WebDAVRemote",
    "s3": "syncd.remotes.s3:S3Remote",
    "http": "syncd.remotes.http:HTTPUploadRemote",
}


def open_remote(cfg: RemoteConfig, concurrency: int) -> Remote:
    """Create the remote for ``cfg.kind`` (used as an async context manager or closed)."""
    target = REGISTRY.get(cfg.kind)
    if target is None:
        raise ConfigError("config", "remote.kind", f"{cfg.kind!r} is not supported by this build")
    module, name = target.split(":")
    factory = getattr(importlib.import_module(module), name)
    remote: Remote = factory(cfg, concurrency)
    return remote
