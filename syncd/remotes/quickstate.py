"""Ask `syncd serve` for a prefix's state token with the standard library only.

A no-op ``syncd sync`` can compare this token with the one it saw after its last complete pass
and skip listing the mirror, before paying for ``import aiohttp`` (~0.3 s). So this module
imports nothing but the standard library (``http.client``, ``ssl``, ``json``): keep it so.
See docs/protocol.md, "State token".
"""

from __future__ import annotations

import http.client
import json
import ssl
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

if TYPE_CHECKING:
    from pathlib import Path

    from syncd.config import RemoteConfig

#: The answer is one small JSON object; anything longer is not a state token.
_MAX_ANSWER = 4096


def quote_path(path: str) -> str:
    """Percent-encode each segment of a '/'-separated path (everything but unreserved)."""
    return "/".join(quote(seg, safe="") for seg in path.split("/"))


def state_target(base_path: str, prefix: str) -> str:
    """The request target of ``GET /<prefix>/?state`` under the (encoded) ``base_path``."""
    base = base_path if base_path.endswith("/") else base_path + "/"
    prefix = prefix.strip("/")
    return base + (quote_path(prefix) + "/" if prefix else "") + "?state"


def read_token(token_file: Path | None) -> str | None:
    """The bearer token in ``remote.token_file`` (checked to exist when the config loaded)."""
    if token_file is None:
        return None
    return token_file.read_text(encoding="utf-8").strip() or None


def _tls_context(cfg: RemoteConfig) -> ssl.SSLContext:
    if not cfg.verify_tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if cfg.ca_file is not None:
        return ssl.create_default_context(cafile=str(cfg.ca_file))
    return ssl.create_default_context()


def fetch_state(cfg: RemoteConfig, prefix: str, timeout: float) -> str | None:
    """The state token `syncd serve` gives for ``prefix``; None on any failure (unreachable,
    refused, a wrong token, TLS, an older server, a malformed answer) and for a remote kind
    other than ``"syncd"``. ``timeout`` bounds the connection and each read. Never raises."""
    if cfg.kind != "syncd":
        return None
    conn: http.client.HTTPConnection | None = None
    try:
        parts = urlsplit(cfg.url)
        host = parts.hostname
        if not host:
            return None
        headers = {"Accept": "application/json", "User-Agent": "syncd"}
        token = read_token(cfg.options.get("token_file"))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(
                host, parts.port or 443, timeout=timeout, context=_tls_context(cfg)
            )
        elif parts.scheme == "http":
            conn = http.client.HTTPConnection(host, parts.port or 80, timeout=timeout)
        else:
            return None
        conn.request("GET", state_target(parts.path or "/", prefix), headers=headers)
        resp = conn.getresponse()
        body = resp.read(_MAX_ANSWER + 1)
        if resp.status != 200 or len(body) > _MAX_ANSWER:
            return None
        doc = json.loads(body.decode("utf-8"))
        state = doc.get("state") if isinstance(doc, dict) else None
        return state if isinstance(state, str) and state else None
    except (OSError, http.client.HTTPException, ValueError, UnicodeError):
        return None
    finally:
        if conn is not None:
            conn.close()
