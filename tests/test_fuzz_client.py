"""A hostile server against the client: generated answers (status lines, headers, bodies,
truncated or never finished) to every request of every HTTP remote kind. Whatever comes back,
a remote returns or raises a syncd error (never another exception, never a hang past
``timeout``), and raises WrongProtocol only as a PermanentError."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from syncd.errors import SyncdError
from syncd.remotes.kinds import open_remote
from tests.remote_servers import Listener
from tests.test_hardening_client import raw_section, remote_cfg, sized_file, source_of


@dataclass
class ScriptedServer(Listener):
    """Answers every request with ``answer`` (raw bytes), after reading its headers and as
    much of its body as Content-Length says; then closes the connection, or with ``hold``
    keeps it open without another byte (a truncated answer never finished)."""

    answer: bytes = b""
    hold: bool = False

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        with contextlib.suppress(OSError, ValueError), conn, conn.makefile("rb") as f:
            length = 0
            expect = False
            while (line := f.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip() or 0)
                if name.strip().lower() == "expect":
                    expect = True
            if not expect:
                f.read(length)
            conn.sendall(self.answer)
            if self.hold:
                self._stop.wait(60)  # longer than any bound below


STATUS = st.sampled_from([100, 200, 201, 204, 207, 301, 400, 401, 404, 405, 409, 429, 500, 501])
TYPES = st.sampled_from(
    ["text/html", "application/x-ndjson", "application/json", "application/xml", "", "x/\x7f"]
)
BODIES = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(
        [
            b'{"path": "a", "size": 1, "sha256": "00"}\n',
            b'{"path": 1}\n',
            b'{"state": 5}',
            b"<html>hi</html>",
            b'<?xml version="1.0"?><D:multistatus xmlns:D="DAV:"><D:response>',
            b'<?xml version="1.0"?><D:multistatus xmlns:D="DAV:"><D:response><D:href>/../x'
            b"</D:href></D:response></D:multistatus>",
        ]
    ),
)


@st.composite
def answers(draw: st.DrawFn) -> bytes:
    status = draw(STATUS)
    ctype = draw(TYPES)
    body = draw(BODIES)
    headers = [f"Content-Type: {ctype}"] if ctype else []
    length = draw(st.sampled_from(["exact", "short", "none", "chunked-bad"]))
    if length == "exact":
        headers.append(f"Content-Length: {len(body)}")
    elif length == "short":
        headers.append(f"Content-Length: {len(body) + 10}")  # truncated answer
    elif length == "chunked-bad":
        headers.append("Transfer-Encoding: chunked")
    extra = draw(
        st.lists(
            st.sampled_from(
                [
                    "Repr-Digest: sha-256=:AAAA:",
                    "Repr-Digest: sha-256=:not base64:",
                    "Retry-After: soon",
                    "Retry-After: 99999999999999999999",
                    "Retry-After: -5",
                    "Location: /elsewhere",
                    "Content-Encoding: gzip",
                    "X-Odd: \x01",
                ]
            ),
            max_size=3,
        )
    )
    head = f"HTTP/1.1 {status} Whatever\r\n" + "".join(h + "\r\n" for h in headers + extra)
    closing = b"" if length == "none" else b"Connection: close\r\n"
    return head.encode("latin-1") + closing + b"\r\n" + body


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedServer]:
    srv = ScriptedServer().start()
    yield srv
    srv.stop()


OPS = ("put-small", "put-large", "list", "delete", "move", "state", "marker", "ping")


async def run_op(remote: Any, op: str, small: Path, large: Path) -> None:
    if op == "put-small":
        await remote.put("docs/a.txt", await source_of(small, "a.txt"))
    elif op == "put-large":
        await remote.put("docs/b.bin", await source_of(large, "b.bin"))
    elif op == "list":
        _ = [e async for e in remote.list("docs")]
    elif op == "delete":
        await remote.delete("docs/line\nbreak")
    elif op == "move" and hasattr(remote, "move"):
        await remote.move("docs/a.txt", "docs/c.txt")
    elif op == "state" and hasattr(remote, "state"):
        await remote.state("docs")
    elif op == "marker" and hasattr(remote, "read_marker"):
        await remote.read_marker("docs")
    else:
        await remote.ping()


# An answer that starts and never ends, to a large upload: it hung for ever before issue 13.
TRUNCATED = b"HTTP/1.1 202 Accepted\r\nContent-Length: 20\r\n\r\nabc"


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@example(answer=TRUNCATED, hold=True, kind="syncd", op="put-large")
@example(answer=TRUNCATED.replace(b"202", b"201"), hold=True, kind="webdav", op="put-large")
@example(answer=TRUNCATED.replace(b"202", b"500"), hold=True, kind="http", op="put-large")
@given(
    answer=answers(),
    hold=st.booleans(),
    kind=st.sampled_from(["syncd", "webdav", "http"]),
    op=st.sampled_from(OPS),
)
def test_any_answer_gives_a_syncd_error_or_a_result(
    tmp_path: Path, scripted: ScriptedServer, answer: bytes, hold: bool, kind: str, op: str
) -> None:
    scripted.answer, scripted.hold = answer, hold
    small = tmp_path / "a.txt"
    small.write_text("a")
    large = tmp_path / "b.bin"
    if not large.exists():
        sized_file(tmp_path, (1 << 20) + 1, "b.bin")
    cfg = remote_cfg(tmp_path, raw_section(kind, scripted.url), extra="timeout = 0.5")

    async def go() -> None:
        remote = open_remote(cfg, 2)
        try:
            # 0.5 s of silence is the remote's own limit; 15 s only turns a hang into a failure.
            await asyncio.wait_for(run_op(remote, op, small, large), 15)
        except SyncdError:
            pass
        finally:
            await remote.aclose()

    asyncio.run(go())
