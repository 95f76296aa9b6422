"""The S3 remote's transport: its aiobotocore client (``S3Client.call`` runs one operation),
how a failure of any operation becomes a syncd error (botocore's and aiohttp's errors, S3's
error codes), and the silence watch on request bodies (``Counted``)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
from typing import TYPE_CHECKING, Any

from syncd.errors import (
    AuthError,
    ConfigError,
    PermanentError,
    RemoteError,
    Silent,
    TransientError,
    Unreachable,
)
from syncd.remotes.silence import silence_limit

if TYPE_CHECKING:
    from syncd.config import RemoteConfig

# Error codes that mean "these credentials do not work here".
AUTH_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "AuthorizationHeaderMalformed",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
}
# Error codes worth retrying, whatever their HTTP status.
TRANSIENT_CODES = {
    "SlowDown",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "BadDigest",  # the bytes were damaged on the way: send them again
    "InvalidDigest",
    "XAmzContentSHA256Mismatch",
    "IncompleteBody",
    "OperationAborted",
}


class S3Client:
    """The aiobotocore client of one S3 remote: created on first use, botocore's retries off
    (``syncd.retry`` decides), every failure mapped to a syncd error (``s3_error``), and a
    body that is a :class:`Counted` watched for silence."""

    def __init__(self, cfg: RemoteConfig, concurrency: int, description: str) -> None:
        try:
            from aiobotocore.config import AioConfig
            from aiobotocore.session import AioSession
        except ImportError as e:
            raise ConfigError(
                "config",
                "remote.kind",
                f"the s3 remote needs aiobotocore, which is not installed ({e}): "
                "pip install 'syncd[s3]'",
            ) from None
        self.cfg = cfg
        self.description = description
        self.endpoint: str | None = cfg.options["endpoint_url"] or None
        self.profile: str = cfg.options["profile"]
        self._session = AioSession(profile=self.profile or None)
        self._config = AioConfig(
            region_name=cfg.options["region"] or None,
            connect_timeout=cfg.timeout,
            read_timeout=cfg.timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},  # syncd.retry decides
            max_pool_connections=concurrency + 4,
            # We send ChecksumSHA256 ourselves; no extra CRC32 on every request.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path" if self.endpoint else "auto"},
            signature_version="s3v4",
        )
        verify: bool | str = cfg.verify_tls
        if cfg.verify_tls and cfg.ca_file is not None:
            verify = str(cfg.ca_file)
        self._verify = verify
        self._client: Any = None
        self._stack = contextlib.AsyncExitStack()
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        self._client = None
        await self._stack.aclose()

    async def client(self) -> Any:
        """The aiobotocore client, created on first use."""
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    from botocore.exceptions import ProfileNotFound

                    try:
                        self._client = await self._stack.enter_async_context(
                            self._session.create_client(
                                "s3",
                                endpoint_url=self.endpoint,
                                config=self._config,
                                verify=self._verify,
                            )
                        )
                    except ProfileNotFound as e:
                        raise self.error(e, "connect", "") from None
                    for op in _WATCHED:
                        self._client.meta.events.register(f"before-send.s3.{op}", _no_read_timeout)
        return self._client

    async def call(self, what: str, path: str, op: str, **kw: Any) -> dict[str, Any]:
        """Run the S3 operation ``op`` (a client method name) with ``kw``; every failure
        becomes the matching syncd error.

        A ``Body`` that is a :class:`Counted` is watched: the call fails after
        ``remote.timeout`` seconds in which none of it was read and no answer came. (botocore
        sends such bodies with ``Expect: 100-continue``, and aiohttp waits for the interim
        answer with no timeout at all: a server that never answers would hang the upload.)"""
        client = await self.client()
        body = kw.get("Body")
        try:
            if isinstance(body, Counted):
                async with silence_limit(body.signal, self.cfg.timeout):
                    resp: dict[str, Any] = await getattr(client, op)(**kw)
            else:
                resp = await getattr(client, op)(**kw)
        except Exception as e:
            raise self.error(e, what, path) from e
        return resp

    def error(self, e: Exception, what: str, path: str) -> RemoteError:
        return s3_error(e, what, path, self)


#: Operations whose body is a :class:`Counted`: ``silence_limit`` bounds them instead of
#: aiohttp's ``sock_read``, which also runs while the body is sent (aiohttp issue 7149: a part
#: that takes longer than ``timeout`` to send over a slow link would fail while it is moving).
#: The body's reads are the only sign of life seen here (aiobotocore hides the socket), so
#: the last few MiB a kernel buffers must drain within ``timeout``: on a link slower than
#: ~4 MiB per ``timeout``, raise ``timeout``.
_WATCHED = ("PutObject", "UploadPart")
_NO_READ_TIMEOUT = 7 * 24 * 3600.0


def _no_read_timeout(request: Any, **kwargs: Any) -> None:
    """botocore ``before-send`` hook: aiobotocore takes a per-request ``read_timeout`` from the
    request's context."""
    context = getattr(request, "context", None)
    if isinstance(context, dict):
        context["read_timeout"] = _NO_READ_TIMEOUT


class Counted(io.BytesIO):
    """A request body that counts how much of it was read (the sign of life that
    ``silence_limit`` watches while the body is sent)."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.taken = 0

    def read(self, size: int | None = -1, /) -> bytes:
        chunk = super().read(size)
        self.taken += len(chunk)
        return chunk

    def signal(self) -> int:
        return self.taken


def s3_error(e: Exception, what: str, path: str, remote: S3Client) -> RemoteError:
    """The syncd error for a failure of the S3 operation ``what`` on ``path``: refused
    credentials are AuthError, throttling and 5xx TransientError, an unreachable endpoint
    Unreachable, silence Silent, any other answer PermanentError."""
    from botocore import exceptions as bx

    where = f"{what} {path}" if path else what
    if isinstance(e, bx.ClientError):
        err = e.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        text = str(err.get("Message") or "").strip()
        detail = f"{code or status}" + (f": {text}" if text else "")
        if code in AUTH_CODES or status == 401:
            return AuthError(
                f"{remote.description} refused the credentials ({detail})"
                + _auth_hint(remote.profile),
                path=path,
                status=status,
            )
        if code in TRANSIENT_CODES or (status is not None and (status >= 500 or status == 429)):
            return TransientError(f"{where}: {detail}", path=path, status=status)
        return PermanentError(f"{where}: {detail}", path=path, status=status)
    if isinstance(e, bx.NoCredentialsError | bx.PartialCredentialsError):
        return AuthError(
            f"{remote.description}: no usable AWS credentials ({e}): set AWS_ACCESS_KEY_ID "
            "and AWS_SECRET_ACCESS_KEY, or remote.profile",
            path=path,
        )
    if isinstance(e, bx.ProfileNotFound):
        # Fatal like refused credentials: nothing can be sent until the config is fixed.
        return AuthError(f"{remote.description}: {e} (remote.profile)", path=path)
    if isinstance(e, bx.EndpointConnectionError | bx.ConnectTimeoutError):
        inner = e.kwargs.get("error") if hasattr(e, "kwargs") else None
        return Unreachable(
            f"{where}: cannot connect to {remote.endpoint or 'S3'}: {_reason(inner or e)}",
            path=path,
        )
    if isinstance(e, bx.BotoCoreError | OSError | TimeoutError) or _is_aiohttp_error(e):
        reason = str(e) or type(e).__name__
        if isinstance(e, TimeoutError | bx.ReadTimeoutError):
            reason = f"no answer for {remote.cfg.timeout:g} s (remote.timeout)"
            return Silent(f"{where}: {remote.description}: {reason}", path=path)
        return TransientError(f"{where}: {remote.description}: {reason}", path=path)
    return PermanentError(f"{where}: {type(e).__name__}: {e}", path=path)


def _auth_hint(profile: str) -> str:
    if profile:
        return f": check the credentials of profile {profile!r}"
    return ": check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or remote.profile)"


def _reason(e: BaseException) -> str:
    """'Connection refused' rather than a paragraph, where the OS error can be found."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        errno = getattr(cur, "errno", None)
        if isinstance(errno, int) and errno:
            return os.strerror(errno)
        os_error = getattr(cur, "os_error", None)
        if isinstance(os_error, OSError) and os_error.errno:
            return os.strerror(os_error.errno)
        cur = cur.__cause__ or cur.__context__
    return str(e)


def _is_aiohttp_error(e: BaseException) -> bool:
    try:
        import aiohttp
    except ImportError:  # pragma: no cover - aiohttp is a dependency of syncd
        return False
    return isinstance(e, aiohttp.ClientError)


def client_error(code: str, message: str, operation: str) -> Exception:
    from botocore.exceptions import ClientError

    err: Exception = ClientError({"Error": {"Code": code, "Message": message}}, operation)
    return err
