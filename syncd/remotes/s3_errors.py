"""How a failure of an S3 operation becomes a syncd error (botocore's and aiohttp's errors, S3's
error codes), in one place for every operation of the S3 remote."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from syncd.errors import AuthError, PermanentError, RemoteError, Silent, TransientError, Unreachable

if TYPE_CHECKING:
    from syncd.remotes.s3 import S3Remote

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


def s3_error(e: Exception, what: str, path: str, remote: S3Remote) -> RemoteError:
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
