"""Network and server faults injected by a proxy between `syncd sync`/`run` and `syncd serve`."""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerProc, mirror_config, run_syncd, server_temps, write_config
from tests.faultproxy import FORWARD, Action, FaultProxy, respond
from tests.test_sync import tree_of


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    f = tmp_path / "Documents"
    f.mkdir()
    for i in range(5):
        (f / f"small{i}.txt").write_text(f"small {i}")
    (f / "big.bin").write_bytes(os.urandom(4 << 20))
    return f


@pytest.fixture
def proxied(
    server: ServerProc,
) -> Iterator[Callable[[Callable[[int, str, str], Action]], FaultProxy]]:
    proxies: list[FaultProxy] = []

    def make(decide: Callable[[int, str, str], Action]) -> FaultProxy:
        p = FaultProxy(server.port, decide).start()
        proxies.append(p)
        return p

    yield make
    for p in proxies:
        p.stop()


def via(tmp_path: Path, server: ServerProc, proxy: FaultProxy, folder: Path) -> Path:
    cfg = mirror_config(tmp_path, server, folder)
    return write_config(cfg, cfg.read_text().replace(server.url, proxy.url))


def test_connection_reset_mid_body_is_retried_with_the_file_reopened(
    tmp_path: Path, server: ServerProc, proxied: Callable[..., FaultProxy], folder: Path
) -> None:
    resets: list[str] = []

    def decide(n: int, method: str, target: str) -> Action:
        if method == "PUT" and "big.bin" in target and not resets:
            resets.append(target)
            return Action("reset_after", nbytes=1 << 20)
        return FORWARD

    proxy = proxied(decide)
    r = run_syncd("sync", config=via(tmp_path, server, proxy, folder))
    assert r.returncode == 0, r.stderr
    assert resets, "the fault was not injected"
    assert len([s for s in proxy.requests("PUT") if "big.bin" in s.target]) == 2
    assert tree_of(server.root / "docs") == tree_of(folder)
    assert server_temps(server.root) == []


def test_answer_lost_after_the_server_committed(
    tmp_path: Path, server: ServerProc, proxied: Callable[..., FaultProxy], folder: Path
) -> None:
    dropped: dict[str, str] = {}

    def decide(n: int, method: str, target: str) -> Action:
        # The first commit of the big file, and the first one-step PUT of small0 (or the
        # first batch of small files).
        small = "small0" in target or target.endswith("?batch")
        kind = "commit" if "commit=" in target else "small0" if small else None
        if kind and method in ("POST", "PUT") and kind not in dropped:
            dropped[kind] = target
            return Action("drop_response")
        return FORWARD

    proxy = proxied(decide)
    cfg = via(tmp_path, server, proxy, folder)
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0, r.stderr
    assert len(dropped) == 2
    assert tree_of(server.root / "docs") == tree_of(folder)
    r = run_syncd("sync", config=cfg)
    assert "uploaded 0, deleted 0" in r.stdout  # the manifest is right, no duplicate work


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(
    tmp_path: Path,
    server: ServerProc,
    proxied: Callable[..., FaultProxy],
    folder: Path,
    status: int,
) -> None:
    refused: list[str] = []

    def decide(n: int, method: str, target: str) -> Action:
        if method == "PUT" and "small1" in target and len(refused) < 2:
            refused.append(target)
            return respond(status, Retry_After="2")
        return FORWARD

    proxy = proxied(decide)
    r = run_syncd("sync", config=via(tmp_path, server, proxy, folder))
    assert r.returncode == 0, r.stderr
    tries = [s for s in proxy.requests("PUT") if "small1" in s.target]
    assert [t.action for t in tries] == ["respond", "respond", "forward"]
    gaps = [b.when - a.when for a, b in itertools.pairwise(tries)]
    assert min(gaps) >= 1.9, f"Retry-After: 2 not honoured: {gaps}"
    assert tree_of(server.root / "docs") == tree_of(folder)


def test_random_500s_and_507_converge(
    tmp_path: Path, server: ServerProc, proxied: Callable[..., FaultProxy], folder: Path
) -> None:
    rng = random.Random(7)
    for i in range(20):
        (folder / f"more{i}.txt").write_text(str(i))

    def decide(n: int, method: str, target: str) -> Action:
        if n < 3:
            return respond(507)  # disk full: transient, with backoff
        return respond(500) if rng.random() < 0.25 else FORWARD

    proxy = proxied(decide)
    cfg = via(tmp_path, server, proxy, folder)
    r = run_syncd("sync", config=cfg)
    assert r.returncode == 0, r.stderr
    assert any(s.action == "respond" for s in proxy.seen)
    assert tree_of(server.root / "docs") == tree_of(folder)


@pytest.mark.parametrize("status", [400, 403, 413])
def test_permanent_errors_are_reported_not_retried(
    tmp_path: Path,
    server: ServerProc,
    proxied: Callable[..., FaultProxy],
    folder: Path,
    status: int,
) -> None:
    def decide(n: int, method: str, target: str) -> Action:
        return respond(status) if "small2" in target else FORWARD

    proxy = proxied(decide)
    r = run_syncd("sync", config=via(tmp_path, server, proxy, folder))
    assert r.returncode == 1
    assert f"docs/small2.txt: upload docs/small2.txt: {status}" in r.stderr
    assert len([s for s in proxy.seen if "small2" in s.target]) == 1, "retried a permanent error"
    assert sorted(tree_of(server.root / "docs")) == sorted(
        p for p in tree_of(folder) if p != "small2.txt"
    )


@pytest.mark.parametrize("status", [501, 405])
def test_not_implemented_is_the_wrong_protocol_and_never_retried(
    tmp_path: Path,
    server: ServerProc,
    proxied: Callable[..., FaultProxy],
    folder: Path,
    status: int,
) -> None:
    """Issue 13: a permanent 501 was retried four times per file (5xx looked transient).
    `syncd serve` never answers 501 or 405 to what syncd sends: the URL does not speak the
    protocol; one line says so, and the request is not repeated."""

    def decide(n: int, method: str, target: str) -> Action:
        return respond(status) if method == "PUT" and "small2" in target else FORWARD

    proxy = proxied(decide)
    r = run_syncd("sync", config=via(tmp_path, server, proxy, folder))
    assert r.returncode == 1
    assert "does not speak the syncd protocol (PUT /docs/small2.txt answered" in r.stderr
    assert "retry" not in r.stderr
    assert len([s for s in proxy.seen if "small2" in s.target]) == 1, "retried"
