"""A TCP proxy on 127.0.0.1 that injects faults between syncd and its server.

For each request it asks ``decide(n, method, target)`` (n counts requests from 0) what to do:
forward it, answer with a status instead (429/503 with Retry-After, 500, 507, 413...), reset the
connection after some bytes of the request, or forward it and then drop the server's answer
(so the server committed but the client never heard). One request per connection: the proxy
adds ``Connection: close`` so request boundaries are simple.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Action:
    kind: str = "forward"  # forward | respond | reset_after | drop_response | delay
    status: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    nbytes: int = 0
    seconds: float = 0.0


FORWARD = Action()


def respond(status: int, **headers: str) -> Action:
    return Action("respond", status=status, headers=tuple(headers.items()))


@dataclass
class Seen:
    when: float
    method: str
    target: str
    action: str
    body: int = 0  # bytes of the request's body forwarded to the server
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FaultProxy:
    upstream_port: int
    decide: Callable[[int, str, str], Action]
    port: int = 0
    seen: list[Seen] = field(default_factory=list)

    def start(self) -> FaultProxy:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(self._loop)

            async def main() -> None:
                self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
                self.port = self._server.sockets[0].getsockname()[1]
                ready.set()
                async with self._server:
                    await self._server.serve_forever()

            try:
                self._loop.run_until_complete(main())
            except asyncio.CancelledError:
                pass

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        def cancel() -> None:
            for t in asyncio.all_tasks(self._loop):
                t.cancel()

        self._loop.call_soon_threadsafe(cancel)
        self._thread.join(10)
        self._loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def requests(self, method: str | None = None) -> list[Seen]:
        return [s for s in self.seen if method is None or s.method == method]

    async def _chunked(
        self,
        reader: asyncio.StreamReader,
        up_w: asyncio.StreamWriter,
        seen: Seen,
        action: Action,
    ) -> int:
        """Forward a chunked body as it comes; its data bytes (-1: reset as ``action`` says)."""
        sent = 0
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";")[0].strip(), 16)
            data = await reader.readexactly(size + 2) if size else await reader.readuntil(b"\r\n")
            if action.kind == "reset_after" and sent + size >= action.nbytes:
                up_w.write(line + data[: max(0, action.nbytes - sent)])
                seen.body = action.nbytes
                await up_w.drain()
                return -1
            up_w.write(line + data)
            await up_w.drain()
            sent += size
            seen.body = sent
            if not size:
                return sent

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target = lines[0].split(" ")[:2]
        length = 0
        headers: dict[str, str] = {}
        for ln in lines[1:]:
            name, _, value = ln.partition(":")
            headers[name.strip().lower()] = value.strip()
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        action = self.decide(len(self.seen), method, target)
        seen = Seen(time.monotonic(), method, target, action.kind, headers=headers)
        self.seen.append(seen)
        try:
            if action.kind == "respond":
                await reader.readexactly(length)  # take the body, so the client reads the answer
                extra = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in action.headers)
                writer.write(
                    f"HTTP/1.1 {action.status} Fault\r\nContent-Length: 0\r\n"
                    f"Connection: close\r\n{extra}\r\n".encode()
                )
                await writer.drain()
                writer.close()
                return
            if action.kind == "delay":
                await asyncio.sleep(action.seconds)
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            head_lines = [ln for ln in lines if ln and not ln.lower().startswith("connection:")]
            up_w.write(("\r\n".join([*head_lines, "Connection: close"]) + "\r\n\r\n").encode())
            sent = 0
            if headers.get("transfer-encoding", "").lower() == "chunked":
                sent = await self._chunked(reader, up_w, seen, action)
                if sent < 0:
                    writer.transport.abort()
                    up_w.transport.abort()
                    return
            while sent < length:
                chunk = await reader.read(min(1 << 16, length - sent))
                if not chunk:
                    break
                if action.kind == "reset_after" and sent + len(chunk) >= action.nbytes:
                    up_w.write(chunk[: max(0, action.nbytes - sent)])
                    seen.body = action.nbytes
                    await up_w.drain()
                    writer.transport.abort()
                    up_w.transport.abort()
                    return
                up_w.write(chunk)
                await up_w.drain()
                sent += len(chunk)
                seen.body = sent
            answer = await up_r.read()  # the server closes after its answer (Connection: close)
            up_w.close()
            if action.kind == "drop_response":
                writer.transport.abort()
                return
            writer.write(answer)
            await writer.drain()
            writer.close()
        except (ConnectionError, asyncio.IncompleteReadError):
            writer.transport.abort()
