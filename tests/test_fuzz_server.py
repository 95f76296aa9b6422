"""An HTTP fuzzer against one real `syncd serve` (issue 13): generated raw requests over a plain
socket, with and without the token, hostile targets, headers and bodies.

After every request: never a 500, never a traceback (nor the token) in the server's log, no
byte written outside ROOT (ROOT lives in a sandbox directory that must not change otherwise),
no decoded body stored (every stored file holds exactly some body that was sent, or what ROOT
held at the start), and no temp file left once the request ended (a two-step upload that was
accepted is committed or aborted first).

The count of examples is the hypothesis profile's ("ci" by default; ``--hypothesis-profile=long``
for a deeper run); each example sends up to eight requests.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
import subprocess
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_server_hardening import Logged, start_logged

TOKEN = "fuzz-token-" + "x" * 20
LOCK = ".~syncd-serve.lock"
MARKER = ".~syncd-mirror"
BIG = os.urandom((9 << 20) + 3)  # a body large enough to be read straight from the socket


# --------------------------------------------------------------------------- the server


@dataclass
class Fuzzed:
    logged: Logged
    sandbox: Path
    root: Path
    outside: dict[str, tuple[int, int]]
    allowed: set[str] = field(default_factory=set)
    log_offset: int = 0
    digests: dict[tuple[str, int, int, int, int], str] = field(default_factory=dict)

    def digest(self, p: Path) -> str:
        """The sha-256 of a stored file (remembered by path, size, mtime, ctime and inode)."""
        st = p.lstat()
        key = (str(p), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        if key not in self.digests:
            self.digests[key] = sha(p.read_bytes())
        return self.digests[key]

    def new_log(self) -> str:
        with self.logged.log_path.open("rb") as f:
            f.seek(self.log_offset)
            data = f.read()
        self.log_offset += len(data)
        return data.decode("utf-8", "replace")


def snapshot_outside(sandbox: Path, root: Path) -> dict[str, tuple[int, int]]:
    """Every entry of the sandbox outside ROOT, with its size and mtime (not following links)."""
    found: dict[str, tuple[int, int]] = {}
    for here, e in walk(sandbox, skip=root):
        p = here / e.name
        if p == root:
            continue
        st = e.stat(follow_symlinks=False)
        found[str(p.relative_to(sandbox))] = (st.st_size, st.st_mtime_ns)
    return found


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    sandbox = tmp_path_factory.mktemp("fuzz-sandbox")
    aux = tmp_path_factory.mktemp("fuzz-aux")  # the token and the log live outside the sandbox
    token = aux / "token"
    token.write_text(TOKEN + "\n")
    root = sandbox / "root"
    outside = sandbox / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"outside ROOT")
    (sandbox / "sentinel.txt").write_bytes(b"next to ROOT")
    initial = {
        "docs/a.txt": b"alpha",
        "docs/sub/b.bin": bytes(range(256)),
        "docs/" + MARKER: b'{"mirror": "fuzz", "created": "2024-01-01T00:00:00+00:00"}',
        "other/c.txt": b"",
    }
    for rel, data in initial.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "docs" / "link").symlink_to(outside)  # never to be followed
    (root / "docs" / "file-link").symlink_to(outside / "secret.txt")
    logged = start_logged(root, token, aux / "serve.log")
    f = Fuzzed(logged, sandbox, root, snapshot_outside(sandbox, root))
    f.allowed = {sha(d) for d in initial.values()}
    try:
        yield f
    finally:
        logged.srv.stop()
        # rm(1), not pytest's clean-up: requests may have built trees deeper than Python's
        # recursion limit, on which pytest's own removal fails (in a later session).
        subprocess.run(["rm", "-rf", str(sandbox)], check=False)


# --------------------------------------------------------------------------- generated requests

METHODS = ["GET", "HEAD", "PUT", "POST", "DELETE", "MOVE", "MKCOL", "OPTIONS"]
OTHER_METHODS = ["PROPFIND", "COPY", "PATCH", "TRACE", "CONNECT", "get", "X-Y", "M\x01VE", "GE T"]
NAMES = ["docs", "sub", "a.txt", "b.bin", "new.txt", "other", "c.txt", "deep", "f", MARKER]
HOSTILE = [
    "link",
    "file-link",
    "..",
    ".",
    "%2e%2e",
    "%2E%2e",
    "%252e%252e",
    "%2F",
    "a%2Fb",
    "%5C..%5C",
    "%00",
    "%0A",
    "%0D%0A",
    "%09",
    "%7F",
    "%ff",
    "%c0%ae",
    "%e2%80%a8",
    "%",
    "%zz",
    "C:",
    "a%5Cb",
    ".~syncd-x",
    "%2E~syncd-mirror",
    ".~syncd-serve.lock",
    ".~syncd-0123456789abcdef0123456789abcdef.tmp",
    "",
    "x" * 255,
    "y" * 256,
    "%E9",
    "caf%C3%A9",
    "sp ace",
    "q?x",
    "h#sh",
    "+plus",
    ";semi",
    "..%2F..",
    "~",
    "\x01",
    "\x7f",
    "\u00e9",
    "%2e",
]
UID = "0123456789abcdef0123456789abcdef"


def weighted(common: list[str], rare: list[str], n: int = 4) -> st.SearchStrategy[str]:
    """Mostly one of ``common`` (``n`` times as likely as all of ``rare`` together)."""
    reps = max(1, round(n * len(rare) / len(common)))
    return st.sampled_from(common * reps + rare)


def _quoted(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


segment = st.one_of(
    weighted(NAMES, HOSTILE, n=3),
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12).map(
        _quoted
    ),
    st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=8),
)

KNOWN = [
    "/docs/a.txt",
    "/docs/sub/b.bin",
    "/other/c.txt",
    "/docs/new.txt",
    "/docs/sub/",
    "/docs/",
    "/docs",
    "/docs/" + MARKER,
    "/other/",
    "/new/dir/file.bin",
    "/docs/sub/deeper/x",
]
# The query strings each method takes (docs/protocol.md), and some none does.
QUERIES = {
    "GET": ["?list", "?state"],
    "PUT": [f"?upload={UID}"],
    "POST": [f"?commit={UID}"],
    "DELETE": [f"?upload={UID}"],
}
BAD_QUERIES = ["?list=", "?upload=XYZ", "?upload=", "?a=b&c", "?list&state", "?", "?%00", "?state"]


@st.composite
def paths(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 2)) == 0:
        return draw(st.sampled_from(KNOWN))
    path = "/" + "/".join(draw(st.lists(segment, min_size=0, max_size=4)))
    if draw(st.integers(0, 5)) == 0:
        path += "/"
    form = draw(weighted(["path"], ["absolute", "double", "star", "empty", "long", "raw-space"]))
    if form == "absolute":
        path = "http://127.0.0.1" + path
    elif form == "double":
        path = "/" + path
    elif form == "star":
        path = "*"
    elif form == "empty":
        path = ""
    elif form == "long":  # deep, or beyond what the server reads in a request line
        path = "/" + "e/" * draw(st.sampled_from([100, 300, 4200, 5000]))
    elif form == "raw-space":
        path = path + " x"
    return path


@st.composite
def targets(draw: st.DrawFn, method: str = "GET") -> str:
    path = draw(paths())
    choice = draw(st.integers(0, 9))
    if choice < 3 and method in QUERIES:
        return path + draw(st.sampled_from(QUERIES[method]))
    if choice == 3:
        return path + draw(st.sampled_from(BAD_QUERIES))
    return path


CODINGS = ["gzip", "deflate", "br", "zstd", "identity", "gzip, identity", "x-foo", ""]
TCODINGS = ["chunked", "gzip", "gzip, chunked", "chunked, chunked", "identity", "Chunked", ""]
EXTRAS = [
    "ce",
    "te",
    "range",
    "crange",
    "expect",
    "expect-bad",
    "digest",
    "digest",
    "digest-bad",
    "cdigest",
    "dest",
    "dest-abs",
    "dest-bad",
    "dest-dup",
    "overwrite",
    "overwrite-bad",
    "upgrade",
    "close",
    "ctype",
    "utf8-value",
    "long-value",
]
MALFORMED = [
    "garbage-name",
    "no-colon",
    "fold",
    "ctl-value",
    "huge-value",
    "dup-host",
    "auth-space",
    "huge-auth",
    "many",
]


class Request:
    """One raw request (a plain class: hypothesis prints it by its short repr)."""

    def __init__(
        self, data: bytes, method: str, target: str, body: bytes, complete: bool, upload: bool
    ) -> None:
        self.data = data
        self.method = method
        self.target = target
        self.body = body
        self.complete = complete  # the request, as framed, is all there (else the server waits)
        self.upload = upload  # a two-step upload: may leave a pending temp (202)

    def __repr__(self) -> str:
        more = "..." if len(self.data) > 600 else ""
        return f"Request({self.data[:600]!r}{more})"


def _chunked(body: bytes, pieces: int) -> bytes:
    if not body:
        return b"0\r\n\r\n"
    step = max(1, len(body) // max(1, pieces))
    out = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + step]), body[i : i + step])
        for i in range(0, len(body), step)
    )
    return out + b"0\r\n\r\n"


def _digest(body: bytes) -> str:
    import base64

    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, bytes]:
    """(what it is, the body): random bytes, nothing, compressed bytes, or a large body."""
    kind = draw(
        st.sampled_from(["bytes"] * 9 + ["empty"] * 3 + ["gzip"] * 4 + ["deflate"] * 3 + ["big"])
    )
    if kind == "big":
        return kind, BIG
    if kind == "empty":
        return kind, b""
    body = draw(st.binary(min_size=1, max_size=3000))
    if kind == "gzip":
        return kind, gzip.compress(body * 50)
    if kind == "deflate":
        return kind, zlib.compress(body * 50)
    return kind, body


def _extra(draw: st.DrawFn, x: str, body: bytes) -> list[tuple[str, str]]:
    pick = draw
    if x == "ce":
        return [("Content-Encoding", pick(st.sampled_from(CODINGS)))]
    if x == "te":
        return [("Transfer-Encoding", pick(st.sampled_from(TCODINGS)))]
    if x == "range":
        return [("Range", pick(st.sampled_from(["bytes=0-1", "bytes=-5", "x", "bytes=9-1"])))]
    if x == "crange":
        return [("Content-Range", "bytes 0-1/2")]
    if x == "expect":
        return [("Expect", "100-continue")]
    if x == "expect-bad":
        return [("Expect", "fly")]
    if x == "digest":
        return [("Repr-Digest", _digest(body))]
    if x == "digest-bad":
        bad = ["sha-256=:x:", "sha-256=abc", "sha-256=:" + "A" * 44 + ":", ",", "sha-256=::"]
        return [("Repr-Digest", pick(st.sampled_from(bad)))]
    if x == "cdigest":
        return [("Content-Digest", _digest(body))]
    if x == "dest":
        return [("Destination", pick(paths()))]
    if x == "dest-abs":
        return [("Destination", "http://127.0.0.1:1" + pick(paths()))]
    if x == "dest-bad":
        bad = ["ftp://x/y", "x", "http://", "//a/b", "/a?b", "", "http://h:1/a#b"]
        return [("Destination", pick(st.sampled_from(bad)))]
    if x == "dest-dup":
        return [("Destination", "/docs/d1"), ("Destination", "/docs/d2")]
    if x == "overwrite":
        return [("Overwrite", pick(st.sampled_from(["T", "F", "t", "f"])))]
    if x == "overwrite-bad":
        return [("Overwrite", "maybe")]
    if x == "upgrade":
        return [("Connection", "Upgrade"), ("Upgrade", pick(st.sampled_from(["websocket", "h2c"])))]
    if x == "close":
        return [("Connection", pick(st.sampled_from(["close", "keep-alive", "x"])))]
    if x == "ctype":
        types = ["application/json", "multipart/form-data; boundary=x", "text/plain; charset=foo"]
        return [("Content-Type", pick(st.sampled_from(types)))]
    if x == "utf8-value":
        return [("X-Utf8", "caf\u00e9 \u2028")]
    if x == "long-value":
        return [("X-Long", "v" * 4000)]
    if x == "garbage-name":
        return [(pick(st.sampled_from(["X Y", "X:Y", "", "X\x01", "\u00c4"])), "v")]
    if x == "no-colon":
        return [("", "")]  # a line without a colon, see below
    if x == "fold":
        return [("X-Fold", "a\r\n folded")]
    if x == "ctl-value":
        return [("X-Ctl", "a\x01\x7fb")]
    if x == "huge-value":
        return [("X-Huge", "v" * 9000)]
    if x == "dup-host":
        return [("Host", "a"), ("Host", "b")]
    if x == "auth-space":  # a malformed line that holds the token: never to reach the log
        return [("Authorization ", f"Bearer {TOKEN}")]
    if x == "huge-auth":
        return [("Authorization", f"Bearer {TOKEN}" + "v" * 9000)]
    if x == "many":
        return [(f"X-{i}", "v") for i in range(200)]
    raise AssertionError(x)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    method = draw(weighted(METHODS, OTHER_METHODS, n=6))
    target = draw(targets(method))
    kind, body = ("empty", b"")
    if method in ("PUT", "POST") or draw(st.integers(0, 5)) == 0:
        kind, body = draw(bodies())
    version = draw(weighted(["HTTP/1.1"], ["HTTP/1.0", "HTTP/2.0", "HTTP/1.1 x", "HXXP/1.1"], n=12))
    eol = draw(weighted(["\r\n"], ["\n"], n=20)).encode()
    headers: list[tuple[str, str]] = [("Host", "127.0.0.1")]
    auth = draw(weighted(["valid"], ["missing", "wrong", "scheme", "empty", "dup", "lower"], n=5))
    bearer = {
        "valid": f"Bearer {TOKEN}",
        "wrong": "Bearer wrong",
        "scheme": f"Basic {TOKEN}",
        "empty": "",
        "dup": f"Bearer {TOKEN}",
        "lower": f"bearer {TOKEN}",
    }
    if auth != "missing":
        headers.append(("Authorization", bearer[auth]))
        if auth == "dup":
            headers.append(("Authorization", "Bearer other"))

    frame = draw(
        weighted(
            ["length", "length", "chunked"],
            ["none", "short", "long", "dup", "neg", "junk", "bad-chunk"],
        )
    )
    complete = True
    payload = body
    if frame == "length":
        headers.append(("Content-Length", str(len(body))))
    elif frame == "chunked":
        headers.append(("Transfer-Encoding", "chunked"))
        payload = _chunked(body, draw(st.integers(1, 4)))
    elif frame == "short":  # declares more than it sends: the server waits, then we hang up
        headers.append(("Content-Length", str(len(body) + draw(st.integers(1, 1 << 20)))))
        complete = False
    elif frame == "long":  # sends more than it declares: the rest is a (bad) next request
        headers.append(("Content-Length", str(len(body) // 2)))
    elif frame == "dup":
        headers.append(("Content-Length", str(len(body))))
        headers.append(("Content-Length", draw(st.sampled_from([str(len(body)), "0", "7"]))))
    elif frame == "neg":
        headers.append(("Content-Length", draw(st.sampled_from(["-1", "-0", "+5", "0x10"]))))
    elif frame == "junk":
        headers.append(("Content-Length", draw(st.sampled_from(["abc", "1 2", "", "9" * 30]))))
    elif frame == "bad-chunk":
        headers.append(("Transfer-Encoding", "chunked"))
        payload = draw(st.sampled_from([b"zz\r\nxx\r\n0\r\n\r\n", b"5\r\nab\r\n", b"3\r\nabc"]))
        complete = payload.endswith(b"0\r\n\r\n")
    if method == "MOVE" and draw(st.integers(0, 4)):
        headers.append(("Destination", draw(paths())))
    if body and draw(st.integers(0, 3)) == 0:  # a content coding, often the one it has
        coding = kind if kind in ("gzip", "deflate") and draw(st.integers(0, 3)) else None
        headers.append(("Content-Encoding", coding or draw(st.sampled_from(CODINGS))))
    if body and draw(st.integers(0, 2)) == 0:
        headers.append(("Repr-Digest", _digest(body)))
    names = draw(st.lists(weighted(EXTRAS, MALFORMED, n=6), max_size=3))
    for x in names:
        headers += _extra(draw, x, body)
    headers = draw(st.permutations(headers))
    lines = [f"{method} {target} {version}".encode("utf-8", "surrogateescape")]
    for name, value in headers:
        text = f"{name}: {value}" if name else "NoColonHere"
        lines.append(text.encode("utf-8", "surrogateescape"))
    data = eol.join(lines) + eol + eol + payload
    upload = method == "PUT" and "?upload=" in target
    return Request(data, method, target, body, complete, upload)


@st.composite
def clean_requests(draw: st.DrawFn) -> Request:
    """Well-formed requests with the valid token, with one thing out of the ordinary: these
    get past the parser and the token, into the handlers."""
    method = draw(st.sampled_from(["PUT"] * 5 + ["GET", "HEAD", "DELETE", "MOVE", "POST", "MKCOL"]))
    fresh = st.lists(segment, min_size=1, max_size=3).map(lambda s: "/fz/" + "/".join(s))
    path = draw(st.one_of(st.sampled_from(KNOWN), fresh))
    kind, body = draw(bodies()) if method in ("PUT", "POST") else ("empty", b"")
    query = ""
    if method == "PUT" and draw(st.integers(0, 2)) == 0:
        query = f"?upload={UID}"
    elif method == "GET" and draw(st.integers(0, 2)) == 0:
        query = draw(st.sampled_from(["?list", "?state"]))
    elif method == "POST":
        query = f"?commit={UID}"
    headers = [("Host", "127.0.0.1"), ("Authorization", f"Bearer {TOKEN}")]
    payload = body
    if body and draw(st.integers(0, 2)) == 0:
        headers.append(("Transfer-Encoding", "chunked"))
        payload = _chunked(body, draw(st.integers(1, 5)))
    else:
        headers.append(("Content-Length", str(len(body))))
    if method == "MOVE":
        headers.append(("Destination", draw(st.one_of(st.sampled_from(KNOWN), fresh, paths()))))
    twists = ["none", "ce", "ce", "ce", "digest", "digest-bad", "cdigest", "expect", "crange"]
    twist = draw(st.sampled_from([*twists, "range", "te", "overwrite", "dest-bad"]))
    if twist == "ce":
        coding = kind if kind in ("gzip", "deflate") else draw(st.sampled_from(CODINGS))
        headers.append(("Content-Encoding", coding))
    elif twist == "te":
        headers.append(("Transfer-Encoding", draw(st.sampled_from(TCODINGS))))
    elif twist != "none":
        headers += _extra(draw, twist, body)
    if twist != "digest-bad" and body and draw(st.booleans()):
        headers.append(("Repr-Digest", _digest(body)))
    lines = [f"{method} {path}{query} HTTP/1.1".encode("utf-8", "surrogateescape")]
    lines += [f"{k}: {v}".encode("utf-8", "surrogateescape") for k, v in headers]
    data = b"\r\n".join(lines) + b"\r\n\r\n" + payload
    return Request(data, method, path + query, body, True, method == "PUT" and bool(query))


# --------------------------------------------------------------------------- sending


@dataclass
class Answer:
    status: int | None  # None: no complete answer (the connection closed, or we gave up)
    head: bytes
    body: bytes


def _read_answer(sock: socket.socket, head_only: bool, limit: float) -> Answer:
    """Read one answer (skipping 1xx), framed by Content-Length, chunked or the close."""
    sock.settimeout(limit)
    buf = b""

    def fill() -> bool:
        nonlocal buf
        try:
            data = sock.recv(1 << 16)
        except (TimeoutError, ConnectionError):
            return False
        if not data:
            return False
        buf += data
        return True

    while True:
        while b"\r\n\r\n" not in buf:
            if not fill():
                return Answer(None, buf, b"")
        head, _, buf = buf.partition(b"\r\n\r\n")
        try:
            status = int(head.split(b" ", 2)[1])
        except (IndexError, ValueError):
            return Answer(None, head, buf)
        if 100 <= status < 200:
            continue
        break
    lower = head.lower()
    if head_only or status in (204, 304):
        return Answer(status, head, b"")
    if b"\r\ntransfer-encoding: chunked" in lower:
        while not buf.endswith(b"0\r\n\r\n"):
            if not fill():
                break
        return Answer(status, head, buf)
    for line in lower.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            size = int(line.split(b":", 1)[1])
            while len(buf) < size:
                if not fill():
                    break
            return Answer(status, head, buf[:size])
    while fill():
        pass
    return Answer(status, head, buf)


def send(f: Fuzzed, req: Request) -> Answer:
    with socket.create_connection(("127.0.0.1", f.logged.srv.port), timeout=10) as sock:
        try:
            sock.sendall(req.data)
        except ConnectionError:
            pass  # the server may answer and close before it has read a large body
        # A request the server is still waiting on gets a moment, then we hang up on it.
        return _read_answer(sock, req.method == "HEAD", 10 if req.complete else 0.3)


def walk(top: Path, skip: Path | None = None) -> Iterator[tuple[Path, os.DirEntry[str]]]:
    """Every entry below ``top`` (directory, entry), not entering ``skip``, without recursion
    and without following symlinks: the fuzzer may build trees deeper than Python's
    recursion limit."""
    stack = [top]
    while stack:
        here = stack.pop()
        with os.scandir(here) as it:
            entries = list(it)
        for e in entries:
            yield here, e
            if e.is_dir(follow_symlinks=False) and here / e.name != skip:
                stack.append(here / e.name)


def temps(root: Path) -> list[Path]:
    """The server's temporary files under ROOT (not its lock, a mirror marker, the versions'
    directory or their entries, ``.~syncd-versions`` and ``.~syncd-v<when>-<why>``)."""
    return [
        d / e.name
        for d, e in walk(root)
        if e.name.startswith(".~syncd-")
        and e.name not in (LOCK, MARKER)
        and not (e.name.startswith(".~syncd-v") and not e.name.endswith(".tmp"))
    ]


def stored_files(root: Path) -> Iterator[Path]:
    for d, e in walk(root):
        if e.name != LOCK and e.is_file(follow_symlinks=False):
            yield d / e.name


def tree(root: Path) -> dict[str, tuple[str, int]]:
    found: dict[str, tuple[str, int]] = {}
    for d, e in walk(root):
        if e.name != LOCK:
            st = e.stat(follow_symlinks=False)
            kind = "d" if e.is_dir(follow_symlinks=False) else "f"
            found[str((d / e.name).relative_to(root))] = (kind, st.st_size)
    return found


def check_after(
    f: Fuzzed, req: Request, answer: Answer, before: dict[str, tuple[str, int]]
) -> None:
    proc = f.logged.srv.proc
    assert proc.poll() is None, f"the server died: {f.logged.log()[-3000:]}"
    if answer.status is not None:
        assert answer.status != 500, (req, answer.head, answer.body[:300])
        assert answer.status < 500 or answer.status in (501, 503, 507), (req, answer.head)
    if req.upload and answer.status == 202:
        # An accepted two-step upload keeps its temp until its commit: commit it (with the
        # digest of what was sent), or drop it.
        path = req.target.split("?", 1)[0]
        commit = len(req.body) % 2 == 0
        head = (
            f"POST {path}?commit={UID} HTTP/1.1\r\nRepr-Digest: {_digest(req.body)}"
            if commit
            else f"DELETE {path}?upload={UID} HTTP/1.1"
        )
        then = Request(
            f"{head}\r\nHost: x\r\nAuthorization: Bearer {TOKEN}"
            "\r\nContent-Length: 0\r\n\r\n".encode("utf-8", "surrogateescape"),
            "POST" if commit else "DELETE",
            path,
            b"",
            True,
            False,
        )
        status = send(f, then).status
        assert status in ((201, 204, 400) if commit else (204,)), (req, status)
    deadline = time.monotonic() + 10
    while temps(f.root) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert temps(f.root) == [], (req, answer.status)
    assert snapshot_outside(f.sandbox, f.root) == f.outside, req
    if answer.status == 401:
        assert tree(f.root) == before, req
    for p in stored_files(f.root):
        assert f.digest(p) in f.allowed, (req, p, answer.status)
    text = f.new_log()
    assert "Traceback" not in text, (req, text[-4000:])
    assert "Error handling request" not in text, (req, text[-4000:])
    assert "Unhandled exception" not in text, (req, text[-4000:])
    assert TOKEN not in text, (req, text[-4000:])  # not even from a request quoted in an error


def allow(f: Fuzzed, req: Request) -> None:
    """What a stored file may hold after ``req``: its body, and the part of it a declared
    Content-Length takes (a body longer than declared is cut there, as HTTP frames it)."""
    f.allowed.add(sha(req.body))
    text = req.data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace").lower()
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.startswith("content-length:"):
            value = line.split(":", 1)[1].strip()
            if value.isdigit() and int(value) <= len(req.body):
                f.allowed.add(sha(req.body[: int(value)]))


@pytest.mark.timeout(60 + settings().max_examples)  # the long profile runs for minutes
@settings(
    max_examples=settings().max_examples,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(st.one_of(requests(), clean_requests()), min_size=1, max_size=8))
def test_fuzz_raw_requests(fuzzed: Fuzzed, batch: list[Request]) -> None:
    for req in batch:
        allow(fuzzed, req)
        before = tree(fuzzed.root)
        answer = send(fuzzed, req)
        check_after(fuzzed, req, answer, before)
