"""One error tree for syncd.

Library code raises these; only ``syncd.cli.main`` turns them into messages and exit codes.
Whether a remote failure is worth retrying is carried by its class (``TransientError`` or
``PermanentError``), so the retry policy in ``syncd.retry`` never has to look at a remote's type.
"""

from __future__ import annotations


class SyncdError(Exception):
    """Root of every error syncd raises on purpose."""


class ConfigError(SyncdError):
    """The config file (or a flag) is wrong. Always names the file, the key and the problem."""

    def __init__(self, file: object, key: str | None, problem: str) -> None:
        self.file = str(file)
        self.key = key
        self.problem = problem
        where = f"{self.file}: {key}: " if key else f"{self.file}: "
        super().__init__(where + problem)


class InUse(SyncdError):
    """Another process owns what this one needs (a server's ROOT): exit 2, naming it."""


class ManifestError(SyncdError):
    """The local manifest cannot be opened, read or written."""


class SourceError(SyncdError, OSError):
    """A local file could not be read as it was planned (vanished, unreadable, changed)."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class SourceChanged(SourceError):
    """The file changed while it was being read or sent: send it again once it settles."""


class RemoteError(SyncdError):
    """A remote failed. Use the subclasses: they decide whether to retry."""

    def __init__(self, message: str, *, path: str | None = None, status: int | None = None):
        self.path = path
        self.status = status
        super().__init__(message)


class TransientError(RemoteError):
    """Worth retrying later: connection refused or reset, timeouts, 5xx, 429, 507."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, path=path, status=status)
        self.retry_after = retry_after


class Unreachable(TransientError):
    """The remote cannot be reached at all (connection refused, no route, DNS failure)."""


class Silent(TransientError):
    """The remote took the connection, then accepted no byte and gave no answer for
    ``remote.timeout`` seconds. At a pass's first contact it stops the pass, said once."""


class PermanentError(RemoteError):
    """Retrying the same request cannot help (400, 403, 404, 409, 413, ...)."""


class WrongProtocol(PermanentError):
    """The URL answers, but not in the protocol its kind speaks (a static file server where
    syncd serve was expected, HTML where a WebDAV multistatus was): nothing will work there, so
    a pass stops at the first such answer with one line naming the URL and the kind."""


class AuthError(PermanentError):
    """The remote refused our credentials (401): nothing will work until the user fixes them."""


#: Error kinds, as in ``syncd_errors_total{kind=...}`` and the status document's errors.
ERROR_KINDS = (
    "local",  # a local file could not be read (permissions, vanished, not a regular file)
    "changed",  # a file kept changing while it was sent
    "remote",  # the remote refused this path (4xx other than 401)
    "transient",  # the remote failed after every retry (5xx, timeouts, resets)
    "unreachable",  # the remote could not be reached at all
    "auth",  # the remote refused the credentials
    "folder",  # a folder is missing, unmounted or unreadable
    "held_back",  # deletions held back (a folder that suddenly became empty)
)


def error_kind(e: BaseException) -> str:
    """The kind of error ``e`` is, for the metrics and the status document."""
    if isinstance(e, AuthError):
        return "auth"
    if isinstance(e, Unreachable):
        return "unreachable"
    if isinstance(e, TransientError):
        return "transient"
    if isinstance(e, RemoteError):
        return "remote"
    if isinstance(e, SourceChanged):
        return "changed"
    return "local"  # SourceError: the file could not be read
