"""The server's digest cache (syncd.server.hashes.DigestCache) against a plain model: generated
sequences of puts, restats, drops and renames over a small tree of names, checked against a dict
of full paths whose drop and move take every key under a prefix (the cache before it became a
tree). Where the two could differ the model does what a file system does: a file put where a
directory's entries were, or below a file, replaces them. Nothing dropped may leave an empty
directory node behind (the server prunes emptied directories; the cache must not keep them)."""

from __future__ import annotations

import hashlib
import itertools
import os

from hypothesis import example, given
from hypothesis import strategies as st

from syncd.server.hashes import DigestCache

NAMES = st.sampled_from(["a", "b", "a.txt", "ä", "a b"])  # (NAME_LIST)
KEYS = st.lists(NAMES, min_size=1, max_size=3).map("/".join)
TIMES = st.integers(-(2**62), 2**62) | st.integers(-(2**80), 2**80)  # (past 64 bits too)
STATS = st.tuples(
    st.integers(0, 2**40),
    TIMES,
    TIMES,
    st.integers(1, 2**63),
)
OPS = st.one_of(
    st.tuples(st.just("put"), KEYS, STATS, st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("restat"), KEYS, STATS),
    st.tuples(st.just("drop"), KEYS),
    st.tuples(st.just("move"), KEYS, KEYS),
)


def fake_stat(size: int, mtime: int, ctime: int, ino: int) -> os.stat_result:
    # the ten fields of the tuple form, the three float times, then atime_ns, mtime_ns, ctime_ns
    fields = [0o100644, ino, 0, 1, 0, 0, size, 0, 0, 0, 0.0, 0.0, 0.0, 0, mtime, ctime]
    st = os.stat_result(fields)
    assert (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino) == (size, mtime, ctime, ino)
    return st


class Model:
    def __init__(self) -> None:
        self.items: dict[str, tuple[tuple[int, ...], str]] = {}

    def under(self, key: str) -> list[str]:
        return [k for k in self.items if k == key or k.startswith(key + "/")]

    def put(self, key: str, ident: tuple[int, ...], digest: str) -> None:
        # a file where a directory was replaces it; a directory where a file was, likewise
        for k in self.under(key):
            del self.items[k]
        parts = key.split("/")
        for i in range(1, len(parts)):
            self.items.pop("/".join(parts[:i]), None)
        self.items[key] = (ident, digest)

    def drop(self, key: str) -> None:
        for k in self.under(key):
            del self.items[k]

    def move(self, src: str, dst: str) -> None:
        moving = {k: self.items[k] for k in self.under(src)}
        self.drop(dst)
        for k in moving:
            del self.items[k]
        if moving:  # the directories of dst become directories, as put makes them
            parts = dst.split("/")
            for i in range(1, len(parts)):
                self.items.pop("/".join(parts[:i]), None)
        for k, v in moving.items():
            self.items[dst + k[len(src) :]] = v


def empty_nodes(node: dict[str, object]) -> int:
    """Directory nodes that hold nothing, at or below ``node`` (the root may be empty)."""
    subs = [v for v in node.values() if isinstance(v, dict)]
    return sum(not v for v in subs) + sum(empty_nodes(v) for v in subs)


def nested(a: str, b: str) -> bool:
    """One path is the other or below it: not a rename a file system makes."""
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


NAME_LIST = ["a", "b", "a.txt", "ä", "a b"]
EVERY_KEY = [
    "/".join(p)
    for p in itertools.chain.from_iterable(
        itertools.product(NAME_LIST, repeat=n) for n in (1, 2, 3)
    )
]


@given(st.lists(OPS, max_size=30))
@example([("put", "a/b", (1, 2**70, -(2**70), 3), b"x"), ("move", "a", "b")])
@example([("put", "a/b", (1, 2, 3, 4), b"x"), ("drop", "a/b"), ("put", "b", (1, 2, 3, 4), b"x")])
@example([("put", "a/b", (1, 2, 3, 4), b"x"), ("drop", "a/b"), ("move", "a", "b/a")])
def test_the_cache_answers_as_a_dict_of_paths(ops: list[tuple]) -> None:
    cache, model = DigestCache(), Model()
    idents: set[tuple[int, ...]] = set()  # every stat put or restated: none may answer
    for op in ops:
        if op[0] == "put":
            _, key, ident, data = op
            digest = hashlib.sha256(data).hexdigest()
            idents.add(ident)
            cache.put(key, fake_stat(*ident), digest)
            model.put(key, ident, digest)
        elif op[0] == "restat":
            _, key, ident = op
            idents.add(ident)
            cache.restat(key, fake_stat(*ident))
            if key in model.items:
                model.items[key] = (ident, model.items[key][1])
        elif op[0] == "drop":
            cache.drop(op[1])
            model.drop(op[1])
        else:
            _, src, dst = op
            if nested(src, dst):
                continue
            cache.move(src, dst)
            model.move(src, dst)
        for key in EVERY_KEY:
            held = model.items.get(key)
            if held is not None:
                assert cache.get(key, fake_stat(*held[0])) == held[1], (key, ops)
                for i in range(4):  # another size, mtime, ctime or inode: not valid
                    other = tuple(v + (j == i) for j, v in enumerate(held[0]))
                    assert cache.get(key, fake_stat(*other)) is None, (key, i, ops)
                for ident in idents - {held[0]}:  # (a stat it had before a restat, above all)
                    assert cache.get(key, fake_stat(*ident)) is None, (key, ops)
            else:
                for ident in idents:
                    assert cache.get(key, fake_stat(*ident)) is None, (key, ops)
        assert empty_nodes(cache._root) == 0, ops  # what was dropped leaves nothing behind
