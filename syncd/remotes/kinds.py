"""The registry of remote kinds: one ``RemoteKind`` declaration each, and ``KINDS``.

A kind declares here what the config and the test suite need to know of it: its own [remote]
keys (type, default, help, check), what its URL looks like, where its credentials go, the
class that implements it (``"module:Class"``, imported only when a remote of that kind is
opened) and the test servers its conformance cases run against (``tests/remote_servers.py``).
What a remote can do (``Features``) is declared by its class, beside the methods that do it.

This module is light on purpose: every command reads the config with these declarations, and
a ``syncd sync`` with nothing to do must not import aiohttp or asyncio (tests/test_startup.py).
So it imports only the config layer; the implementations are named, not imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syncd.config_checks import (
    HTTP_METHOD,
    HTTP_URL,
    URLForm,
    check_url,
    existing_file,
    toml_repr,
    trash_path,
)
from syncd.config_schema import Key, KindSpec
from syncd.errors import ConfigError

if TYPE_CHECKING:
    from syncd.config import RemoteConfig
    from syncd.remotes.base import Remote


NO_VERSIONS = "versions: none — deleted files cannot be brought back"


@dataclass(frozen=True, kw_only=True)
class RemoteKind(KindSpec):
    """One remote kind: its config keys (``KindSpec``), its implementation, its test servers."""

    #: ``"module:Class"``; the class is called as ``Class(RemoteConfig, concurrency)``.
    implementation: str
    #: The servers of tests/remote_servers.py (``STARTERS``) the conformance suite runs this
    #: kind against; empty for a kind with its own section there (``http``).
    conformance: tuple[str, ...] = ()
    #: What ``config check`` and ``syncd status`` say of kept versions, from the config alone
    #: (no request), given ``remote.trash`` ("" where unset or not a key of the kind).
    kept: Callable[[str], str] = lambda trash: NO_VERSIONS
    #: What ``config check`` says of large files: resumed after an interruption, sent as
    #: deltas when changed, or neither.
    large: str = (
        "large files: not resumable (an interrupted upload starts again from its first"
        " byte); a changed file is sent whole"
    )

    def remote_class(self) -> type[Any]:
        """The class that implements the kind (its module is imported now)."""
        module, name = self.implementation.split(":")
        cls: type[Any] = getattr(importlib.import_module(module), name)
        return cls


def _username(file: Path, key: str, value: str) -> str:
    if ":" in value:
        raise ConfigError(
            file, key, "cannot contain ':' (basic auth puts it between user and password)"
        )
    return value


def _endpoint(file: Path, key: str, value: str) -> str:
    if value:
        check_url(file, key, value, form=HTTP_URL, credentials=_S3_CREDENTIALS)
    return value


def _put_or_post(file: Path, key: str, value: str) -> str:
    if value.upper() not in ("PUT", "POST"):
        raise ConfigError(file, key, f'must be "PUT" or "POST", not {toml_repr(value)}')
    return value.upper()


def _delete_method(file: Path, key: str, value: str) -> str:
    if value and not HTTP_METHOD.match(value):
        raise ConfigError(
            file,
            key,
            f'must be an HTTP method such as "DELETE" ("" never deletes), not {toml_repr(value)}',
        )
    return value.upper()


_S3_CREDENTIALS = (
    "S3 credentials come from the standard AWS chain (environment, ~/.aws/credentials, "
    "remote.profile)"
)

#: One key of both webdav and s3 (config_schema merges a Key declared by several kinds).
TRASH = Key(
    str,
    "",
    'where deleted and replaced files are kept, beside the folders ("" = nowhere); '
    "s3 with bucket versioning on needs none",
    text=True,
    check=trash_path,
)

SYNCD = RemoteKind(
    name="syncd",
    options={
        "token_file": Key(
            str, "", "file holding the bearer token", secret=True, check=existing_file
        ),
    },
    url=URLForm(own_names=True),
    credentials="syncd serve takes a bearer token: put it in a file named by remote.token_file",
    implementation="syncd.remotes.syncd:SyncdRemote",
    large=(
        "large files: resumed after an interruption (from 16 MiB, resumable uploads), and a"
        " changed one sends only its changed chunks (deltas)"
    ),
    conformance=("syncd",),
    kept=lambda trash: (
        "versions: kept by syncd serve (for as long as its --keep and --keep-space say)"
    ),
)
WEBDAV = RemoteKind(
    name="webdav",
    options={
        "username": Key(str, "", "basic-auth user", text=True, check=_username),
        "password_file": Key(
            str, "", "file holding the basic-auth password", secret=True, check=existing_file
        ),
        "trash": TRASH,
    },
    url_help="the collection URL",
    credentials="put the user name in remote.username and the password in a file named by "
    "remote.password_file",
    implementation="syncd.remotes.webdav:WebDAVRemote",
    conformance=("nginx", "wsgidav"),
    kept=lambda trash: (
        f"versions: trash at {trash}" if trash else f"{NO_VERSIONS} (set remote.trash to keep them)"
    ),
)
S3 = RemoteKind(
    name="s3",
    options={
        "endpoint_url": Key(
            str,
            "",
            "endpoint of an S3-compatible server (MinIO, Ceph...)",
            text=True,
            check=_endpoint,
        ),
        "region": Key(str, "", "region", text=True),
        "profile": Key(str, "", "AWS profile name", text=True),
        "trash": TRASH,
    },
    url=URLForm(scheme="s3", example='"s3://bucket/prefix/"'),
    url_help='"s3://bucket/prefix/"',
    credentials=_S3_CREDENTIALS,
    implementation="syncd.remotes.s3:S3Remote",
    large=(
        "large files: multipart uploads resumed after an interruption (the parts the"
        " server has are not sent again); a changed file is sent whole"
    ),
    conformance=("s3",),
    kept=lambda trash: (
        f"versions: S3 bucket versioning where the bucket has it on, else trash at {trash}"
        if trash
        else "versions: S3 bucket versioning if the bucket has it on; otherwise none — deleted "
        "files cannot be brought back (turn versioning on, or set remote.trash)"
    ),
)
HTTP = RemoteKind(
    name="http",
    options={
        "method": Key(str, "PUT", '"PUT" | "POST"', text=True, check=_put_or_post),
        "form_field": Key(
            str, "", 'multipart field name for POST; "" sends the raw body', text=True
        ),
        "headers_file": Key(
            str, "", "file of extra headers (Name: value per line)", check=existing_file
        ),
        "delete_method": Key(
            str, "", 'method used to delete ("" = never delete)', text=True, check=_delete_method
        ),
    },
    url=URLForm(placeholder=True),
    url_help="an upload URL with a {path} placeholder",
    credentials="put an Authorization header in a file named by remote.headers_file",
    implementation="syncd.remotes.http:HTTPUploadRemote",
)

#: The registry: every kind this build has, the default first (one line per kind).
KINDS: tuple[RemoteKind, ...] = (SYNCD, WEBDAV, S3, HTTP)
NAMES = tuple(kind.name for kind in KINDS)


def versions_line(cfg: RemoteConfig) -> str:
    """What ``syncd config check`` and ``syncd status`` say of kept versions, from the config
    alone (no request): who keeps them, or that nothing does (the kind's ``kept``)."""
    for kind in KINDS:
        if kind.name == cfg.kind:
            return kind.kept(cfg.options.get("trash") or "")
    return NO_VERSIONS


def large_files_line(cfg: RemoteConfig) -> str:
    """What ``syncd config check`` says of large files for the configured kind."""
    for kind in KINDS:
        if kind.name == cfg.kind:
            return kind.large
    return RemoteKind.large


def open_remote(cfg: RemoteConfig, concurrency: int, state_dir: Path | None = None) -> Remote:
    """Create the remote for ``cfg.kind`` (used as an async context manager or closed); one
    that resumes uploads keeps its records in ``state_dir``'s ``uploads/`` (in memory
    without one)."""
    from syncd.remotes.base import Resumer
    from syncd.resumes import Resumes

    for kind in KINDS:
        if kind.name == cfg.kind:
            remote: Remote = kind.remote_class()(cfg, concurrency)
            if state_dir is not None and isinstance(remote, Resumer):
                remote.resumes = Resumes(state_dir / "uploads")
                remote.resumes.sweep()  # (records of files gone before they were resumed)
            return remote
    raise ConfigError("config", "remote.kind", f"{cfg.kind!r} is not supported by this build")
