"""`syncd serve` as a WebDAV server: PROPFIND, COPY, OPTIONS and Basic auth against the real
subprocess, and Debian's litmus (basic, copymove, http) against it, with and without a token."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.server.dav import BATCH
from syncd.versioning import VERSIONS_DIR, version_name
from tests.conftest import ServerProc, start_server
from tests.test_server import enc, url

D = "{DAV:}"
LITMUS = "/usr/bin/litmus"
SUITES = ("basic", "copymove", "http")


# --------------------------------------------------------------------------- helpers


@pytest.fixture
async def session(server: ServerProc) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=server.headers()) as s:
        yield s


@dataclass
class Found:
    """One ``<D:response>`` of a multistatus: its href (decoded), props found, props missing."""

    href: str
    raw_href: str
    props: dict[str, ET.Element]
    missing: list[str]

    def text(self, prop: str) -> str | None:
        el = self.props.get(prop)
        return None if el is None else (el.text or "")


def parse_multistatus(body: bytes) -> dict[str, Found]:
    root = ET.fromstring(body)
    assert root.tag == D + "multistatus"
    out: dict[str, Found] = {}
    for resp in root.findall(D + "response"):
        raw = resp.findtext(D + "href")
        assert raw is not None
        props: dict[str, ET.Element] = {}
        missing: list[str] = []
        for ps in resp.findall(D + "propstat"):
            status = ps.findtext(D + "status") or ""
            prop = ps.find(D + "prop")
            assert prop is not None
            for el in prop:
                if " 200 " in status:
                    props[el.tag] = el
                else:
                    assert " 404 " in status, status
                    missing.append(el.tag)
        out[unquote(raw, errors="strict")] = Found(unquote(raw), raw, props, missing)
    return out


async def propfind(
    s: aiohttp.ClientSession,
    srv: ServerProc,
    path: str,
    depth: str | None = "1",
    body: bytes | None = None,
) -> tuple[int, bytes, aiohttp.ClientResponse]:
    headers = {} if depth is None else {"Depth": depth}
    async with s.request("PROPFIND", url(srv, path), headers=headers, data=body) as r:
        return r.status, await r.read(), r


async def copy(
    s: aiohttp.ClientSession,
    srv: ServerProc,
    src: str,
    dst: str,
    *,
    overwrite: str | None = None,
    depth: str | None = None,
) -> int:
    headers = {"Destination": dst}
    if overwrite is not None:
        headers["Overwrite"] = overwrite
    if depth is not None:
        headers["Depth"] = depth
    async with s.request("COPY", url(srv, src), headers=headers) as r:
        await r.read()
        return r.status


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- litmus


SUMMARY = re.compile(r"<- summary for `(\w+)': of (\d+) tests run: (\d+) passed, (\d+) failed")


@pytest.fixture(params=["token", "no-token"])
def dav_server(
    request: pytest.FixtureRequest, tmp_path: Path, token_file: Path
) -> Iterator[ServerProc]:
    root = tmp_path / "root"
    root.mkdir()
    srv = start_server(root, token_file if request.param == "token" else None)
    try:
        yield srv
    finally:
        srv.stop()


def test_litmus_basic_copymove_http_pass(dav_server: ServerProc, tmp_path: Path) -> None:
    """Debian's litmus WebDAV suite: every test of basic, copymove and http passes (the token,
    when there is one, goes as litmus sends it: the password of Basic auth)."""
    assert Path(LITMUS).exists(), "litmus is missing: install it (scripts/test: apt_install litmus)"
    creds = ["anyone", dav_server.token] if dav_server.token else []
    work = tmp_path / "litmus-work"
    work.mkdir()
    done = subprocess.run(
        [LITMUS, dav_server.url, *creds],
        cwd=work,
        env={**os.environ, "TESTS": " ".join(SUITES)},
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    out = done.stdout + done.stderr
    summaries = {m[1]: tuple(map(int, m.groups()[1:])) for m in SUMMARY.finditer(out)}
    failed = [line for line in out.splitlines() if "FAIL" in line]
    assert sorted(summaries) == sorted(SUITES), out[-3000:]
    for suite, (run, passed, nfailed) in summaries.items():
        assert nfailed == 0 and passed == run, (suite, failed, out[-3000:])
    assert failed == [], failed
    assert done.returncode == 0, out[-3000:]


# --------------------------------------------------------------------------- PROPFIND


async def test_propfind_depth_0_and_1_with_their_props(
    server: ServerProc, session: aiohttp.ClientSession
) -> None:
    docs = server.root / "docs"
    (docs / "sub dir").mkdir(parents=True)
    body = b"hello, dav\n"
    (docs / "a b%.txt").write_bytes(body)
    mtime_ns = 1_700_000_000_123_456_789
    os.utime(docs / "a b%.txt", ns=(mtime_ns, mtime_ns))
    (docs / "café 😀").write_bytes(b"x")
    # Never shown: reserved names (the marker, a temp), symlinks, special files.
    (docs / ".~syncd-mirror").write_text("m")
    (docs / ".~syncd-0123456789abcdef0123456789abcdef.tmp").write_text("t")
    (docs / "link").symlink_to("a b%.txt")
    os.mkfifo(docs / "fifo")

    status, data, resp = await propfind(session, server, "/docs/", "1")
    assert status == 207, data
    assert resp.headers["Content-Type"].startswith("application/xml")
    found = parse_multistatus(data)
    assert sorted(found) == ["/docs/", "/docs/a b%.txt", "/docs/café 😀", "/docs/sub dir/"]
    assert found["/docs/a b%.txt"].raw_href == "/docs/a%20b%25.txt"
    assert found["/docs/café 😀"].raw_href == enc("docs", "café 😀")

    f = found["/docs/a b%.txt"]
    assert f.props[D + "resourcetype"].find(D + "collection") is None
    assert f.text(D + "getcontentlength") == str(len(body))
    assert f.text(D + "getetag") == f'"{sha(body)}"'
    assert f.text(D + "getcontenttype") == "application/octet-stream"
    assert f.text(D + "displayname") == "a b%.txt"
    modified = email.utils.parsedate_to_datetime(f.text(D + "getlastmodified") or "")
    assert int(modified.timestamp()) == mtime_ns // 10**9
    assert f.text(D + "creationdate") == "2023-11-14T22:13:20Z"
    d = found["/docs/sub dir/"]
    assert d.props[D + "resourcetype"].find(D + "collection") is not None
    assert D + "getcontentlength" not in d.props
    assert d.text(D + "displayname") == "sub dir"

    # The ETag of PROPFIND is GET's.
    async with session.get(url(server, "/docs/a%20b%25.txt")) as r:
        assert r.headers["ETag"] == f.text(D + "getetag")

    # Depth 0: the path itself only, a file or a directory.
    status, data, _ = await propfind(session, server, "/docs/a%20b%25.txt", "0")
    assert status == 207
    assert list(parse_multistatus(data)) == ["/docs/a b%.txt"]
    status, data, _ = await propfind(session, server, "/docs", "0")
    assert list(parse_multistatus(data)) == ["/docs/"]
    # The root: the server's own names (its lock, the versions) are never listed.
    status, data, _ = await propfind(session, server, "/", "1")
    assert status == 207
    assert sorted(parse_multistatus(data)) == ["/", "/docs/"]


async def test_propfind_prop_propname_and_refusals(
    server: ServerProc, session: aiohttp.ClientSession
) -> None:
    (server.root / "d").mkdir()
    (server.root / "d" / "f").write_bytes(b"12345")
    ask = (
        b'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop>'
        b'<D:getcontentlength/><D:getetag/><x:color xmlns:x="urn:example"/></D:prop></D:propfind>'
    )
    status, data, _ = await propfind(session, server, "/d/", "1", ask)
    assert status == 207
    found = parse_multistatus(data)
    f = found["/d/f"]
    assert f.text(D + "getcontentlength") == "5"
    assert f.text(D + "getetag") == f'"{sha(b"12345")}"'
    assert f.missing == ["{urn:example}color"]
    assert sorted(found["/d/"].missing) == sorted(
        [D + "getcontentlength", D + "getetag", "{urn:example}color"]
    )

    names = b'<D:propfind xmlns:D="DAV:"><D:propname/></D:propfind>'
    status, data, _ = await propfind(session, server, "/d/f", "0", names)
    assert status == 207
    props = parse_multistatus(data)["/d/f"].props
    assert set(props) == {
        D + p
        for p in (
            "resourcetype",
            "getcontentlength",
            "getlastmodified",
            "getetag",
            "getcontenttype",
            "displayname",
            "creationdate",
        )
    }
    assert all(not list(el) and not el.text for el in props.values())
    allprop = b'<D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>'
    status, data, _ = await propfind(session, server, "/d/f", "0", allprop)
    assert parse_multistatus(data)["/d/f"].text(D + "getcontentlength") == "5"

    # Depth infinity, or none (which means it): 403 with propfind-finite-depth.
    for depth in ("infinity", None):
        status, data, _ = await propfind(session, server, "/d/", depth)
        assert status == 403
        assert ET.fromstring(data).find(D + "propfind-finite-depth") is not None
    status, _, _ = await propfind(session, server, "/d/", "2")
    assert status == 400

    bad = [
        b'<!DOCTYPE x [<!ENTITY e "boom">]><D:propfind xmlns:D="DAV:"><D:prop/></D:propfind>',
        b'<?xml version="1.0"?><!DOCTYPE D:propfind SYSTEM "http://127.0.0.1:1/x.dtd">'
        b'<D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>',
        # litmus' propfind_invalid2: a prefix bound to the empty namespace
        b'<D:propfind xmlns:D="DAV:"><D:prop><bar:foo xmlns:bar=""/></D:prop></D:propfind>',
        b'<D:propfind xmlns:D="DAV:"><D:prop>',  # not well-formed
        b"<propfind><allprop/></propfind>",  # not in DAV:
        b'<D:propfind xmlns:D="DAV:"/>',  # asks for nothing
    ]
    for body in bad:
        status, data, _ = await propfind(session, server, "/d/", "0", body)
        assert status == 400, (body, data)
    too_big = b'<D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>' + b" " * (65 << 10)
    status, _, _ = await propfind(session, server, "/d/", "0", too_big)
    assert status == 413

    status, _, _ = await propfind(session, server, "/d/absent", "0")
    assert status == 404
    (server.root / "d" / "link").symlink_to(server.root.parent)
    status, _, _ = await propfind(session, server, "/d/link", "0")
    assert status == 403
    status, _, _ = await propfind(session, server, "/d/link/", "1")
    assert status == 403
    status, _, _ = await propfind(session, server, "/.~syncd-serve.lock", "0")
    assert status == 400


async def test_propfind_of_a_large_directory_is_streamed(
    server: ServerProc, session: aiohttp.ClientSession
) -> None:
    big = server.root / "big"
    big.mkdir()
    count = 2 * BATCH + 7
    for i in range(count):
        (big / f"f{i:05d}").write_bytes(b"%d" % i)
    ask = b'<D:propfind xmlns:D="DAV:"><D:prop><D:getcontentlength/></D:prop></D:propfind>'
    status, data, resp = await propfind(session, server, "/big/", "1", ask)
    assert status == 207
    assert resp.headers.get("Transfer-Encoding") == "chunked"  # written while walked
    found = parse_multistatus(data)
    assert len(found) == count + 1
    assert found["/big/f00123"].text(D + "getcontentlength") == "3"


NAME_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00")
NAMES = st.text(NAME_CHARS, min_size=1, max_size=30).filter(
    lambda n: (
        n not in (".", "..") and not n.startswith(".~syncd-") and len(n.encode("utf-8")) <= 255
    )
)


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(NAMES, min_size=1, max_size=5, unique=True))
async def test_any_name_comes_back_in_an_href_that_names_it(
    server: ServerProc, session: aiohttp.ClientSession, names: list[str]
) -> None:
    """Whatever the name (spaces, '%', '#', '?', newlines, any Unicode), PROPFIND's href is
    what a client sends back to reach that very file, and displayname is the name itself."""
    top = server.root / "gen"
    shutil.rmtree(top, ignore_errors=True)
    top.mkdir()
    for i, name in enumerate(names):
        if i % 2:
            (top / name).mkdir()  # a directory: its href ends with '/'
        else:
            (top / name).write_bytes(b"%d" % i)
    status, data, _ = await propfind(session, server, "/gen/", "1")
    assert status == 207, data
    found = parse_multistatus(data)
    expected = [f"/gen/{n}" + ("/" if i % 2 else "") for i, n in enumerate(names)]
    assert sorted(found) == sorted(["/gen/", *expected])
    for i, name in enumerate(names):
        f = found[expected[i]]
        assert re.fullmatch(r"[A-Za-z0-9_.~%/-]+", f.raw_href), f.raw_href
        shown = f.text(D + "displayname")
        if any(ord(c) < 0x20 and c not in "\t\n\r" for c in name) or set(name) & {
            "\ufffe",
            "\uffff",
        }:
            assert shown is None  # XML 1.0 cannot carry it
        else:
            assert shown == name
        if i % 2:
            assert f.props[D + "resourcetype"].find(D + "collection") is not None
            status, data, _ = await propfind(session, server, f.raw_href, "0")
            assert status == 207
            assert list(parse_multistatus(data)) == [expected[i]]
        else:
            async with session.get(url(server, f.raw_href)) as r:
                assert r.status == 200
                assert await r.read() == b"%d" % i


# --------------------------------------------------------------------------- COPY


async def test_copy_file_keeps_bytes_mtime_and_exec_bit(
    server: ServerProc, session: aiohttp.ClientSession
) -> None:
    docs = server.root / "docs"
    docs.mkdir()
    body = os.urandom((3 << 20) + 11)  # several chunks
    src = docs / "tool.sh"
    src.write_bytes(body)
    src.chmod(0o755)
    mtime_ns = 1_600_000_000_987_654_321
    os.utime(src, ns=(mtime_ns, mtime_ns))
    (docs / "plain.txt").write_bytes(b"plain")
    os.utime(docs / "plain.txt", ns=(mtime_ns, mtime_ns))
    async with session.get(url(server, "/docs/?state")) as r:
        before = (await r.json())["state"]

    assert await copy(session, server, "/docs/tool.sh", server.url + "docs/copy%20of.sh") == 201
    copied = docs / "copy of.sh"
    assert copied.read_bytes() == body
    assert copied.stat().st_mtime_ns == mtime_ns
    assert copied.stat().st_mode & 0o777 == 0o755
    async with session.get(url(server, "/docs/copy%20of.sh")) as r:
        assert r.headers["ETag"] == f'"{sha(body)}"'
    async with session.get(url(server, "/docs/?state")) as r:
        assert (await r.json())["state"] != before

    assert await copy(session, server, "/docs/plain.txt", "/docs/plain2.txt") == 201
    assert (docs / "plain2.txt").stat().st_mode & 0o777 == 0o644
    assert (docs / "plain2.txt").stat().st_mtime_ns == mtime_ns

    # Overwrite F onto an existing file: 412, nothing changed; T (the default): 204.
    assert (
        await copy(session, server, "/docs/plain.txt", "/docs/copy%20of.sh", overwrite="F") == 412
    )
    assert copied.read_bytes() == body
    assert await copy(session, server, "/docs/plain.txt", "/docs/copy%20of.sh") == 204
    assert copied.read_bytes() == b"plain"
    assert copied.stat().st_mode & 0o777 == 0o644

    # RFC 4918: the destination's parent must exist (409; MOVE creates it, COPY does not).
    assert await copy(session, server, "/docs/plain.txt", "/nowhere/x.txt") == 409
    assert not (server.root / "nowhere").exists()
    assert await copy(session, server, "/docs/plain.txt", "/docs/plain.txt/x") == 409
    assert await copy(session, server, "/docs/plain.txt", "/docs/plain.txt") == 403
    assert await copy(session, server, "/docs/absent", "/docs/x") == 404
    assert await copy(session, server, "/docs/plain.txt", "/.~syncd-versions/docs/x") == 403
    assert await copy(session, server, "/docs/plain.txt", "/docs/.~syncd-x") == 400
    assert await copy(session, server, "/docs/plain.txt", "/../escaped") == 400
    assert await copy(session, server, "/docs/plain.txt", "ftp://x/y") == 400
    async with session.request("COPY", url(server, "/docs/plain.txt")) as r:
        assert r.status == 400  # no Destination
    (docs / "link").symlink_to(server.root.parent)
    assert await copy(session, server, "/docs/link", "/docs/l2") == 403
    assert await copy(session, server, "/docs/plain.txt", "/docs/link") == 403
    assert sorted(p.name for p in docs.iterdir()) == [
        "copy of.sh",
        "link",
        "plain.txt",
        "plain2.txt",
        "tool.sh",
    ]


async def test_copy_collections_depth_and_overwrite(
    server: ServerProc, session: aiohttp.ClientSession
) -> None:
    src = server.root / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "top.txt").write_bytes(b"top")
    (src / "a" / "b" / "deep.txt").write_bytes(b"deep")
    (src / "a" / "b" / "deep.txt").chmod(0o755)
    (src / ".~syncd-mirror").write_text("marker")  # reserved: never copied
    (src / "link").symlink_to("top.txt")  # a symlink: left out, like listings

    assert await copy(session, server, "/src/", "/dst/", depth="infinity") == 201
    dst = server.root / "dst"
    assert sorted(str(p.relative_to(dst)) for p in dst.rglob("*")) == [
        "a",
        "a/b",
        "a/b/deep.txt",
        "empty",
        "top.txt",
    ]
    assert (dst / "a" / "b" / "deep.txt").read_bytes() == b"deep"
    assert (dst / "a" / "b" / "deep.txt").stat().st_mode & 0o777 == 0o755

    # Depth 0: the collection alone.
    assert await copy(session, server, "/src", "/shallow", depth="0") == 201
    assert list((server.root / "shallow").iterdir()) == []
    assert await copy(session, server, "/src", "/x", depth="1") == 400

    # Onto an existing collection: 412 with F; with T it is replaced whole.
    (dst / "extra.txt").write_bytes(b"extra")
    assert await copy(session, server, "/src", "/dst", overwrite="F") == 412
    assert (dst / "extra.txt").exists()
    assert await copy(session, server, "/src", "/dst", overwrite="T") == 204
    assert not (dst / "extra.txt").exists()
    assert (dst / "top.txt").read_bytes() == b"top"
    # A file onto a collection, a collection onto a file: 204, the type changes.
    assert await copy(session, server, "/src/top.txt", "/shallow/") == 204
    assert (server.root / "shallow").read_bytes() == b"top"
    assert await copy(session, server, "/src/a", "/shallow") == 204
    assert (server.root / "shallow" / "b" / "deep.txt").read_bytes() == b"deep"

    assert await copy(session, server, "/src", "/src/a/inside") == 409
    assert await copy(session, server, "/src/a/b", "/src/a") == 409
    assert await copy(session, server, "/", "/y") == 403
    assert not (server.root / "src" / "a" / "inside").exists()


async def test_versions_are_read_by_propfind_and_copied_back(
    server: ServerProc, session: aiohttp.ClientSession
) -> None:
    """A version under /.~syncd-versions/ is listed (its reserved entry name included) and is
    put back by a COPY to its path; nothing is ever written there."""
    (server.root / "docs").mkdir()
    (server.root / "docs" / "a.txt").write_bytes(b"current")
    # Before anything is kept, the versions' directory is there, empty.
    status, data, _ = await propfind(session, server, f"/{VERSIONS_DIR}/", "1")
    assert status == 207
    assert list(parse_multistatus(data)) == [f"/{VERSIONS_DIR}/"]
    status, _, _ = await propfind(session, server, f"/{VERSIONS_DIR}/docs/", "1")
    assert status == 404
    entry = version_name(1_764_000_000_000_000_000, "replaced")
    kept = server.root / VERSIONS_DIR / "docs" / "a.txt"
    kept.mkdir(parents=True)
    (kept / entry).write_bytes(b"old")
    deleted = server.root / VERSIONS_DIR / "docs" / version_name(1_764_000_000_5, "deleted")
    (deleted / "sub").mkdir(parents=True)
    (deleted / "sub" / "f.txt").write_bytes(b"in a deleted tree")

    status, data, _ = await propfind(session, server, f"/{VERSIONS_DIR}/docs/a.txt/", "1")
    assert status == 207, data
    found = parse_multistatus(data)
    assert sorted(found) == [f"/{VERSIONS_DIR}/docs/a.txt/", f"/{VERSIONS_DIR}/docs/a.txt/{entry}"]
    v = found[f"/{VERSIONS_DIR}/docs/a.txt/{entry}"]
    assert v.text(D + "getcontentlength") == "3"

    src = f"/{VERSIONS_DIR}/docs/a.txt/{entry}"
    assert await copy(session, server, src, "/docs/a.txt", overwrite="F") == 412
    assert await copy(session, server, src, "/docs/a.txt", overwrite="T") == 204
    assert (server.root / "docs" / "a.txt").read_bytes() == b"old"
    assert (kept / entry).read_bytes() == b"old"  # the version stays
    # What the COPY replaced ("current") is kept in turn, as overwritten.
    replaced = [p for p in kept.iterdir() if p.name.endswith("-overwritten")]
    assert [p.read_bytes() for p in replaced] == [b"current"]
    # A version goes back even where its directories are gone (a delete pruned them).
    assert await copy(session, server, src, "/gone/deeper/a.txt") == 201
    assert (server.root / "gone" / "deeper" / "a.txt").read_bytes() == b"old"
    assert await copy(session, server, f"/{VERSIONS_DIR}/docs/{deleted.name}/", "/back/") == 201
    assert (server.root / "back" / "sub" / "f.txt").read_bytes() == b"in a deleted tree"
    assert await copy(session, server, "/docs/a.txt", f"/{VERSIONS_DIR}/docs/a.txt/x") == 403
    assert await copy(session, server, src, f"/{VERSIONS_DIR}/docs/b") == 403


# --------------------------------------------------------------------------- OPTIONS and auth


async def test_options_claims_class_1_only(
    server: ServerProc, session: aiohttp.ClientSession
) -> None:
    async with session.options(url(server, "/anything")) as r:
        assert r.status == 204
        assert [c.strip() for c in r.headers["DAV"].split(",")] == ["1"]  # no locks: not 2
        allow = [m.strip() for m in r.headers["Allow"].split(",")]
        assert {"PROPFIND", "COPY", "MOVE", "MKCOL"} <= set(allow)
    async with session.request("PROPPATCH", url(server, "/x")) as r:
        assert r.status == 405
        assert "PROPFIND" in r.headers["Allow"]


async def test_basic_auth_takes_the_token_as_password(server: ServerProc) -> None:
    (server.root / "f").write_bytes(b"f")
    assert server.token is not None

    def basic(text: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(text.encode()).decode()}

    async with aiohttp.ClientSession() as s:
        for ok in (basic(f"anyone:{server.token}"), basic(f":{server.token}")):
            async with s.get(url(server, "/f"), headers=ok) as r:
                assert r.status == 200
        headers = {**basic(f"u:{server.token}"), "Depth": "0"}
        async with s.request("PROPFIND", url(server, "/"), headers=headers) as r:
            assert r.status == 207
        refused = [
            {},
            basic("anyone:wrong"),
            basic(server.token),  # no ':'
            basic(f"{server.token}:"),  # the token as the user name
            {"Authorization": f"Basic {server.token}"},  # not base64 of user:password
            {"Authorization": "Basic !!!"},
            basic(f"x:{server.token}\n"),  # the password is compared exactly
            basic(f"x: {server.token}"),
        ]
        for headers in refused:
            async with s.request(
                "PROPFIND", url(server, "/"), headers={**headers, "Depth": "0"}
            ) as r:
                assert r.status == 401, headers
                challenges = r.headers["WWW-Authenticate"]
                assert challenges == 'Bearer realm="syncd", Basic realm="syncd"'


# --------------------------------------------------------------------------- a real client


def test_rclone_browses_and_copies_on_the_server(server: ServerProc, tmp_path: Path) -> None:
    """rclone's WebDAV backend (vendor other, the token as its Basic password): it uploads,
    lists (PROPFIND), reads, and copies on the server (COPY: the copy keeps the source's old
    mtime, which a download and upload again would not)."""
    exe = shutil.which("rclone")
    assert exe is not None, "rclone is missing: install it (scripts/test: apt_install rclone)"
    assert server.token is not None
    conf = tmp_path / "rclone.conf"
    conf.write_text("")
    env = {**os.environ, "RCLONE_CONFIG": str(conf)}

    def rclone(*args: str) -> str:
        done = subprocess.run(
            [exe, *args, "--webdav-url", server.url, "--webdav-user", "any",
             "--webdav-pass", obscured],
            capture_output=True, text=True, timeout=60, env=env, check=False,
        )  # fmt: skip
        assert done.returncode == 0, (args, done.stderr[-2000:])
        return done.stdout

    obscured = subprocess.run(
        [exe, "obscure", server.token], capture_output=True, text=True, env=env, check=True
    ).stdout.strip()
    src = tmp_path / "src"
    (src / "sub dir").mkdir(parents=True)
    (src / "a b.txt").write_bytes(b"alpha")
    (src / "sub dir" / "é 1%.txt").write_bytes(b"beta!")

    rclone("copy", str(src), ":webdav:docs")
    listed = json.loads(rclone("lsjson", "-R", "--files-only", ":webdav:docs"))
    assert sorted((e["Path"], e["Size"]) for e in listed) == [
        ("a b.txt", 5),
        ("sub dir/é 1%.txt", 5),
    ]
    old_ns = 1_500_000_000_000_000_000
    os.utime(server.root / "docs" / "a b.txt", ns=(old_ns, old_ns))
    rclone("copyto", ":webdav:docs/a b.txt", ":webdav:docs/copied.txt")
    copied = server.root / "docs" / "copied.txt"
    assert copied.read_bytes() == b"alpha"
    assert copied.stat().st_mtime_ns == old_ns  # server-side: COPY
    assert rclone("cat", ":webdav:docs/sub dir/é 1%.txt") == "beta!"
    rclone("check", str(src), ":webdav:docs", "--exclude", "copied.txt")
