"""S3 multipart uploads that resume (issue 17): against moto_server behind the fault proxy, which
resets a connection in the middle of a part or holds a part while `syncd sync` is killed. What
went over the wire is read from the proxy's ``seen`` list, what the server holds with boto3."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from syncd.config import RemoteConfig, load
from syncd.errors import PermanentError, TransientError
from syncd.hashing import Source
from syncd.remotes.base import Resumer
from syncd.remotes.kinds import KINDS, open_remote
from syncd.remotes.s3 import S3Remote
from syncd.remotes.s3_bucket import b64
from syncd.remotes.s3_resume import composite
from syncd.resumes import Resumes
from syncd.types import LocalFile
from tests.conftest import run_syncd, wait_for, write_config
from tests.faultproxy import FORWARD, Action, FaultProxy, Seen
from tests.remote_servers import BUCKET, REGION, S3Server, start_moto

MiB = 1 << 20


class Proxy(FaultProxy):
    """The fault proxy, answering ``Expect: 100-continue`` itself (botocore sends every part
    with it, and the proxy reads a body before it forwards anything back, so the client would
    wait for the interim answer for ever); a request it holds is dropped at its stop."""

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head.split(b"\r\n")
        if any(ln.lower().replace(b" ", b"") == b"expect:100-continue" for ln in lines):
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        relay = asyncio.StreamReader()
        relay.feed_data(b"\r\n".join(ln for ln in lines if not ln.lower().startswith(b"expect:")))

        async def pump() -> None:
            try:
                while chunk := await reader.read(1 << 16):
                    relay.feed_data(chunk)
            except ConnectionError:
                pass
            relay.feed_eof()

        task = asyncio.create_task(pump())
        try:
            await super()._handle(relay, writer)
        except asyncio.CancelledError:  # a held request, at the proxy's stop
            writer.transport.abort()
            raise
        finally:
            task.cancel()


class Faults:
    """What the proxy does to the parts of uploads: reset every try of the part numbers in
    ``reset`` after 1 MiB of their body (aiohttp sends a PUT whose connection broke once more
    on its own), hold those in ``hold`` (until the test is over)."""

    def __init__(self) -> None:
        self.reset: set[int] = set()
        self.hold: set[int] = set()

    def decide(self, n: int, method: str, target: str) -> Action:
        number = part_of(target)
        if method == "PUT" and number in self.reset:
            return Action("reset_after", nbytes=MiB)
        if method == "PUT" and number in self.hold:
            return Action("delay", seconds=600)
        return FORWARD


def query(target: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(target).query, keep_blank_values=True)


def part_of(target: str) -> int | None:
    q = query(target)
    return int(q["partNumber"][0]) if "partNumber" in q else None


def parts_sent(seen: list[Seen]) -> list[int]:
    """The part numbers of the UploadPart requests, in order (a reset one too)."""
    return [n for s in seen if s.method == "PUT" and (n := part_of(s.target)) is not None]


def asked(seen: list[Seen], method: str, upload_id: str) -> bool:
    """Whether a request ``method`` was made on the upload (GET: ListParts, DELETE: abort)."""
    return any(s.method == method and query(s.target).get("uploadId") == [upload_id] for s in seen)


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    srv = start_moto(tmp_path_factory.mktemp("moto"))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def s3(moto: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    for k, v in moto.env.items():
        monkeypatch.setenv(k, v)
    return moto


@pytest.fixture
def faults() -> Faults:
    return Faults()


@pytest.fixture
def proxy(s3: S3Server, faults: Faults) -> Iterator[Proxy]:
    p = Proxy(s3.port, faults.decide)
    p.start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def space(s3: S3Server) -> str:
    return s3.new_space()


def config_file(tmp_path: Path, proxy: Proxy) -> Path:
    (tmp_path / "folder").mkdir(exist_ok=True)
    return write_config(
        tmp_path / "config.toml",
        f"""
[remote]
kind = "s3"
url = "s3://{BUCKET}/mirror/"
endpoint_url = "http://127.0.0.1:{proxy.port}"
region = "{REGION}"
timeout = 10

[[folder]]
path = "{tmp_path / "folder"}"
remote_path = "unused"

[sync]
state_dir = "{tmp_path / "state"}"
""",
    )


def remote_cfg(tmp_path: Path, proxy: Proxy) -> RemoteConfig:
    return load(config_file(tmp_path, proxy), kinds=KINDS).remote


class SmallParts(S3Remote):
    """5 MiB parts (S3's smallest): a 16 MiB file is four parts."""

    part_size = 5 * MiB


async def source(path: Path, rel: str, local: LocalFile | None = None) -> Source:
    return await Source.open(path, local or LocalFile.of(rel, path.stat()))


def stored(s3: S3Server, key: str) -> bytes:
    data: bytes = s3.client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return data


def uploads_of(s3: S3Server, key: str) -> list[str]:
    """The incomplete multipart uploads of exactly ``key`` on the server."""
    resp = s3.client.list_multipart_uploads(Bucket=BUCKET, Prefix=key)
    return [u["UploadId"] for u in resp.get("Uploads", ()) if u["Key"] == key]


async def interrupted(
    remote: S3Remote, faults: Faults, path: str, file: Path, part: int = 3
) -> dict[str, Any]:
    """A put whose connection is reset in the middle of ``part``: the upload and its record are
    kept for the next try. The record."""
    faults.reset = {part}
    with pytest.raises(TransientError):
        await remote.put(path, await source(file, "big.bin"))
    faults.reset = set()
    record = remote.resumes.get(remote.resume_key(remote.key(path)))
    assert record is not None, "the upload was not recorded to be resumed"
    assert [p["n"] for p in record["parts"]] == list(range(1, part))
    return record


# -- a dropped connection --------------------------------------------------------------------
async def test_a_reset_in_the_middle_of_a_part_resumes_from_that_part(
    tmp_path: Path, s3: S3Server, proxy: Proxy, faults: Faults, space: str
) -> None:
    data = os.urandom(16 * MiB + 3)
    (tmp_path / "big.bin").write_bytes(data)
    remote = SmallParts(remote_cfg(tmp_path, proxy), 2)
    path = f"{space}/big.bin"
    async with remote:
        record = await interrupted(remote, faults, path, tmp_path / "big.bin")
        assert uploads_of(s3, f"mirror/{path}") == [record["upload_id"]]
        before = len(proxy.seen)
        sha = await remote.put(path, await source(tmp_path / "big.bin", "big.bin"))
        assert remote.resumes.get(remote.resume_key(f"mirror/{path}")) is None
    assert parts_sent(proxy.seen[before:]) == [3, 4]  # 1 and 2 were not sent again
    assert asked(proxy.seen[before:], "GET", str(record["upload_id"]))  # ListParts
    assert sha == hashlib.sha256(data).hexdigest()
    assert stored(s3, f"mirror/{path}") == data
    assert uploads_of(s3, f"mirror/{path}") == []
    # The composite checksum put compares CompleteMultipartUpload's with is the server's.
    pieces = [data[i : i + 5 * MiB] for i in range(0, len(data), 5 * MiB)]
    digests = [{"ChecksumSHA256": b64(hashlib.sha256(p).digest())} for p in pieces]
    assert s3.head(space, "big.bin")["ChecksumSHA256"].split("-")[0] == composite(digests)


# -- a restart ---------------------------------------------------------------------------------
def test_sync_killed_mid_upload_resumes_after_a_restart(
    tmp_path: Path, s3: S3Server, proxy: Proxy, faults: Faults
) -> None:
    """`syncd sync` killed (SIGKILL) while part 2 of 3 is on its way: the next `syncd sync`
    sends parts 2 and 3 only, from the record in the state dir."""
    cfg = config_file(tmp_path, proxy)
    space = s3.new_space()
    write_config(cfg, cfg.read_text().replace('remote_path = "unused"', f'remote_path = "{space}"'))
    data = os.urandom(21 * MiB + 5)  # 8 MiB parts: 8, 8, 5
    (tmp_path / "folder" / "big.bin").write_bytes(data)
    key = f"mirror/{space}/big.bin"
    faults.hold = {2}
    env = {k: v for k, v in os.environ.items() if k != "SYNCD_CONFIG"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", "sync", "-c", str(cfg)],
        env={**env, **s3.env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: 2 in parts_sent(proxy.seen), timeout=60, what="part 2 on its way")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    records = Resumes(tmp_path / "state" / "uploads")
    rkey = f"s3 http://127.0.0.1:{proxy.port} {BUCKET}/{key}"
    record = records.get(rkey)
    assert record is not None and [p["n"] for p in record["parts"]] == [1]
    assert uploads_of(s3, key) == [record["upload_id"]]
    faults.hold = set()
    before = len(proxy.seen)
    r = run_syncd("sync", config=cfg, env=s3.env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert parts_sent(proxy.seen[before:]) == [2, 3]
    assert stored(s3, key) == data
    assert uploads_of(s3, key) == []
    assert records.get(rkey) is None


def test_a_remote_opened_with_a_state_dir_keeps_its_records_there(
    tmp_path: Path, proxy: Proxy
) -> None:
    remote = open_remote(remote_cfg(tmp_path, proxy), 2, tmp_path / "state")
    assert remote.features.resumes and isinstance(remote, Resumer)
    assert remote.resumes.directory == tmp_path / "state" / "uploads"
    assert isinstance(open_remote(remote_cfg(tmp_path, proxy), 2), Resumer)  # in memory


# -- a file that changed -----------------------------------------------------------------------
@pytest.mark.parametrize("how", ["rewritten", "mtime restored", "same identity"])
async def test_a_file_changed_since_the_interruption_is_sent_again_whole(
    tmp_path: Path,
    s3: S3Server,
    proxy: Proxy,
    faults: Faults,
    space: str,
    how: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The old upload is aborted and the object is the new file, never old parts with new
    ones: "rewritten" changes size-and-mtime-identity, "mtime restored" (``touch -r``) only the
    ctime, "same identity" keeps every field the record compares (a LocalFile without ctime and
    inode), where only the digests of the parts read back can tell."""
    big = tmp_path / "big.bin"
    data = os.urandom(16 * MiB + 3)
    big.write_bytes(data)
    os.utime(big, ns=(1_600_000_000 * 10**9, 1_600_000_000 * 10**9))
    st = big.stat()
    same_identity = LocalFile("big.bin", st.st_size, st.st_mtime_ns)
    remote = SmallParts(remote_cfg(tmp_path, proxy), 2)
    path = f"{space}/big.bin"
    async with remote:
        faults.reset = {3}
        first = same_identity if how == "same identity" else None
        with pytest.raises(TransientError):
            await remote.put(path, await source(big, "big.bin", first))
        faults.reset = set()
        record = remote.resumes.get(remote.resume_key(f"mirror/{path}"))
        assert record is not None
        if how == "rewritten":
            new = os.urandom(16 * MiB + 3)
            big.write_bytes(new)
            os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        else:  # new bytes in part 1, the same size and mtime
            new = data[:1000] + b"EDIT" + data[1004:]
            with big.open("r+b") as f:
                f.seek(1000)
                f.write(b"EDIT")
            os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns))
        again = same_identity if how == "same identity" else None
        before = len(proxy.seen)
        caplog.set_level(logging.INFO, logger="syncd.remotes.s3")
        sha = await remote.put(path, await source(big, "big.bin", again))
    told = {
        "rewritten": f"{path}: changed since its upload began; starting it again",
        "mtime restored": f"{path}: changed since its upload began; starting it again",
        "same identity": f"{path}: part 1 changed since its upload began; sending it all again",
    }
    assert told[how] in caplog.messages
    assert asked(proxy.seen[before:], "DELETE", str(record["upload_id"]))  # aborted
    assert parts_sent(proxy.seen[before:]) == [1, 2, 3, 4]
    assert sha == hashlib.sha256(new).hexdigest()
    assert stored(s3, f"mirror/{path}") == new
    assert uploads_of(s3, f"mirror/{path}") == []


# -- an upload the server no longer has ------------------------------------------------------
async def test_a_record_of_an_upload_the_server_dropped_starts_afresh(
    tmp_path: Path, s3: S3Server, proxy: Proxy, faults: Faults, space: str
) -> None:
    data = os.urandom(16 * MiB + 3)
    (tmp_path / "big.bin").write_bytes(data)
    remote = SmallParts(remote_cfg(tmp_path, proxy), 2)
    path = f"{space}/big.bin"
    async with remote:
        record = await interrupted(remote, faults, path, tmp_path / "big.bin")
        upload_id = str(record["upload_id"])
        s3.client.abort_multipart_upload(Bucket=BUCKET, Key=f"mirror/{path}", UploadId=upload_id)
        before = len(proxy.seen)
        sha = await remote.put(path, await source(tmp_path / "big.bin", "big.bin"))
    assert asked(proxy.seen[before:], "GET", upload_id)  # ListParts: NoSuchUpload
    assert parts_sent(proxy.seen[before:]) == [1, 2, 3, 4]
    assert sha == hashlib.sha256(data).hexdigest()
    assert stored(s3, f"mirror/{path}") == data
    assert uploads_of(s3, f"mirror/{path}") == []


async def test_a_part_the_server_holds_other_bytes_of_is_sent_again(
    tmp_path: Path, s3: S3Server, proxy: Proxy, faults: Faults, space: str
) -> None:
    """Only parts the server lists with the recorded ETag and size are skipped: part 2 replaced
    behind syncd's back (same upload, other bytes) is sent again."""
    data = os.urandom(16 * MiB + 3)
    (tmp_path / "big.bin").write_bytes(data)
    remote = SmallParts(remote_cfg(tmp_path, proxy), 2)
    path = f"{space}/big.bin"
    async with remote:
        record = await interrupted(remote, faults, path, tmp_path / "big.bin")
        s3.client.upload_part(
            Bucket=BUCKET,
            Key=f"mirror/{path}",
            UploadId=record["upload_id"],
            PartNumber=2,
            Body=os.urandom(5 * MiB),
        )
        before = len(proxy.seen)
        sha = await remote.put(path, await source(tmp_path / "big.bin", "big.bin"))
    assert parts_sent(proxy.seen[before:]) == [2, 3, 4]
    assert sha == hashlib.sha256(data).hexdigest()
    assert stored(s3, f"mirror/{path}") == data
    assert uploads_of(s3, f"mirror/{path}") == []


async def test_uploads_left_over_of_the_same_key_are_aborted(
    tmp_path: Path, s3: S3Server, proxy: Proxy, space: str
) -> None:
    """An upload of the key that no record names (a syncd killed before it recorded it) and
    begun over a day ago (moto dates every upload 2010) is aborted by the next fresh upload; an
    upload of another key under the same prefix is left alone."""
    key = f"mirror/{space}/big.bin"
    orphan = s3.client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    other = s3.client.create_multipart_upload(Bucket=BUCKET, Key=key + ".other")["UploadId"]
    data = os.urandom(9 * MiB)
    (tmp_path / "big.bin").write_bytes(data)
    async with S3Remote(remote_cfg(tmp_path, proxy), 2) as remote:
        await remote.put(f"{space}/big.bin", await source(tmp_path / "big.bin", "big.bin"))
    assert asked(proxy.seen, "DELETE", orphan) and not asked(proxy.seen, "DELETE", other)
    assert uploads_of(s3, key) == [] and uploads_of(s3, key + ".other") == [other]
    s3.client.abort_multipart_upload(Bucket=BUCKET, Key=key + ".other", UploadId=other)
    assert stored(s3, key) == data


# -- what is kept, what is given up ------------------------------------------------------------
async def test_a_permanent_failure_aborts_the_upload_and_drops_its_record(
    tmp_path: Path, s3: S3Server, proxy: Proxy, faults: Faults, space: str
) -> None:
    data = os.urandom(16 * MiB + 3)
    (tmp_path / "big.bin").write_bytes(data)
    remote = SmallParts(remote_cfg(tmp_path, proxy), 2)
    path = f"{space}/big.bin"

    def refuse(n: int, method: str, target: str) -> Action:
        return Action("respond", status=400) if part_of(target) == 2 else FORWARD

    async with remote:
        record = await interrupted(remote, faults, path, tmp_path / "big.bin", part=2)
        proxy.decide = refuse
        with pytest.raises(PermanentError):
            await remote.put(path, await source(tmp_path / "big.bin", "big.bin"))
        assert remote.resumes.get(remote.resume_key(f"mirror/{path}")) is None
    assert asked(proxy.seen, "DELETE", str(record["upload_id"]))
    assert uploads_of(s3, f"mirror/{path}") == []
