"""The server's side of a delta, in process: an upload that copies ranges of another file
(copy_file_range, and read-and-write where the kernel or filesystem cannot) while its
caller hashes what it builds; the bytes and the digest are the same either way."""

from __future__ import annotations

import errno
import hashlib
import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.server.delta import _apply, _Hasher
from syncd.server.errors import BadRequest, StoreError
from syncd.server.paths import parse_path
from syncd.server.store import Reader, Store
from syncd.server.uploads import Upload

BASE = 3 << 20

Op = tuple[int, int, bytes]


def _ops(draw: st.DrawFn) -> list[Op]:
    ops: list[Op] = []
    for _ in range(draw(st.integers(1, 12))):
        if draw(st.booleans()):
            offset = draw(st.integers(0, BASE - 1))
            ops.append((offset, draw(st.integers(1, BASE - offset)), b""))
        else:
            ops.append((0, 0, draw(st.binary(min_size=1, max_size=5000))))
    return ops


ops_strategy = st.composite(_ops)()


def _expected(base: bytes, ops: list[Op]) -> bytes:
    return b"".join(data or base[offset : offset + length] for offset, length, data in ops)


def _build(root: Path, base_path: Path, ops: list[Op], name: str) -> tuple[bytes, bytes]:
    store = Store(root)
    fd = os.open(base_path, os.O_RDONLY)
    try:
        up = Upload(store, parse_path(f"/{name}"), hashed=False)
        hasher = _Hasher(fd, name)
        try:  # (as delta._build does)
            _apply(up, Reader(fd), hasher, ops)
            digest = hasher.digest()
            stored = up.complete([], length=None, expected=[digest], commit=True, digest=digest)
        except BaseException:
            up.discard()
            raise
        finally:
            hasher.close()
        return (root / name).read_bytes(), stored.digest
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    data = random.Random(5).randbytes(BASE)
    path = tmp_path_factory.mktemp("base") / "base.bin"
    path.write_bytes(data)
    return path, data


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=ops_strategy, kernel=st.booleans())
def test_a_build_holds_the_steps_bytes_and_their_digest(
    ops: list[Op],
    kernel: bool,
    base: tuple[Path, bytes],
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, data = base
    root = tmp_path_factory.mktemp("root")
    with monkeypatch.context() as m:
        if not kernel:  # as on a filesystem (or a kernel) that cannot copy these files

            def refuse(*args: object) -> int:
                raise OSError(errno.EXDEV, "Invalid cross-device link")

            m.setattr(os, "copy_file_range", refuse)
        got, digest = _build(root, path, ops, "new.bin")
    want = _expected(data, ops)
    assert got == want
    assert digest == hashlib.sha256(want).digest()


def test_a_copy_past_the_base_end_is_refused_and_leaves_nothing(
    base: tuple[Path, bytes], tmp_path: Path
) -> None:
    path, _ = base
    with pytest.raises((BadRequest, StoreError), match="shrank"):
        _build(tmp_path, path, [(BASE - 10, 20, b"")], "new.bin")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".~syncd-v")) == []


def test_a_copy_error_other_than_cannot_is_not_hidden(
    base: tuple[Path, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = base

    def broken(*args: object) -> int:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "copy_file_range", broken)
    with pytest.raises(StoreError, match="Input/output error"):
        _build(tmp_path, path, [(0, 100, b"")], "new.bin")
