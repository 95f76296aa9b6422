"""The scanner's fast ignore check agrees with the full gitignore rules."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.config import FolderConfig
from syncd.ignore import DEFAULT_IGNORES, Ignorer

SEGMENT = st.sampled_from(
    ["a", "b", "x.o", "keep.o", "n.swp", "build", "docs", "r.md", "4913", "é"]
)
PATTERN = st.sampled_from(
    [
        "*.o",
        "!keep.o",
        "build/",
        "/top",
        "docs/*.md",
        "**/a/b",
        "a?",
        "*.swp",
        "!n.swp",
        "b",
        "/a/x.o",
        "d*/",
        "[ab]",
        "**/r.md",
    ]
)


def ignorer(folder: Path, patterns: list[str]) -> Ignorer:
    return Ignorer(
        FolderConfig(
            path=folder,
            remote_path="t",
            ignore=tuple(patterns),
            use_default_ignores=True,
            delete=True,
        )
    )


@settings(max_examples=300, deadline=None)
@given(patterns=st.lists(PATTERN, max_size=6), parts=st.lists(SEGMENT, min_size=1, max_size=4))
def test_fast_check_matches_full_rules(patterns: list[str], parts: list[str]) -> None:
    ig = ignorer(Path("/nonexistent-folder"), patterns)
    rel = "/".join(parts)
    parents = ["/".join(parts[:i]) for i in range(1, len(parts))]
    if any(ig.ignored(p, is_dir=True) for p in parents):
        return  # the walk never reaches files under an ignored directory
    assert ig.file_ignored(rel, parts[-1]) == ig.ignored(rel), (patterns, rel)


NAME_GLOB = st.sampled_from(
    ["*.o", "build/", "a?", "*.swp", "b", "d*/", ".git/", "*~", "x.*", "#c", "é*", "4913"]
)
NAMES = st.sampled_from(
    ["a", "b", "ab", "x.o", "x.", "n.swp", "build", "docs", ".git", "d", "c~", "é", "#c", "4913"]
)


@settings(max_examples=500, deadline=None)
@given(patterns=st.lists(NAME_GLOB, max_size=5), parts=st.lists(NAMES, min_size=1, max_size=4))
def test_plain_name_globs_match_like_gitignore(patterns: list[str], parts: list[str]) -> None:
    # Plain name globs are matched without pathspec: the same answers as the full rules.
    import pathspec

    ig = ignorer(Path("/nonexistent-folder"), patterns)
    assert ig.spec is None, patterns
    spec = pathspec.GitIgnoreSpec.from_lines([*DEFAULT_IGNORES, *patterns])
    rel = "/".join(parts)
    for is_dir in (False, True):
        want = spec.match_file(rel + "/" if is_dir else rel)
        assert ig.ignored(rel, is_dir=is_dir) == want, (patterns, rel, is_dir)
    parents = ["/".join(parts[:i]) for i in range(1, len(parts))]
    if not any(ig.ignored(p, is_dir=True) for p in parents):
        assert ig.file_ignored(rel, parts[-1]) == spec.match_file(rel), (patterns, rel)


@settings(max_examples=500, deadline=None)
@given(
    glob=st.text(st.sampled_from("ab.*?"), min_size=1, max_size=8).filter(
        lambda g: "**" not in g and g not in ("*", ".", "..")
    ),
    name=st.text(st.sampled_from("ab.\n"), min_size=1, max_size=12),
)
def test_plain_name_globs_match_like_fnmatch(glob: str, name: str) -> None:
    # The linear-time translation (each piece between stars at its leftmost place) matches
    # exactly what a glob means.
    import fnmatch

    ig = ignorer(Path("/nonexistent-folder"), [glob])
    assert ig.spec is None
    assert ig.file_ignored(name, name) == fnmatch.fnmatchcase(name, glob), (glob, name)


def test_plain_name_globs_take_linear_time() -> None:
    # `*a*a*a*a*a*a*a*a*b` against 255 a's: a naive regex backtracks for hours. Generous
    # bound: linear matching takes microseconds, so 5 s cannot be missed on a slow machine.
    import time

    ig = ignorer(Path("/nonexistent-folder"), ["*a*a*a*a*a*a*a*a*b", "a?a*a*a*a*a*a*a*d*e"])
    assert ig.spec is None
    start = time.monotonic()
    assert not ig.file_ignored("a" * 254 + "c", "a" * 254 + "c")
    assert ig.file_ignored("a" * 254 + "b", "a" * 254 + "b")
    assert ig.file_ignored("a" * 250 + "dxe", "a" * 250 + "dxe")
    assert time.monotonic() - start < 5


def test_names_with_a_newline_match_like_gitignore() -> None:
    # gitignore's '*' matches any character but '/', a newline too; pathspec's regexes would
    # not ('.' stops at a newline, '$' matches before a final one).
    ig = ignorer(Path("/nonexistent-folder"), ["**/x.o", "*.log", "n\nl*/"])
    assert ig.spec is not None
    assert ig.ignored("a\nb/x.o") and ig.file_ignored("a\nb/x.o", "x.o")
    assert not ig.ignored("a.log\n") and not ig.file_ignored("a.log\n", "a.log\n")
    assert ig.ignored("new\nline.log") and ig.file_ignored("new\nline.log", "new\nline.log")
    assert ig.ignored("n\nl-dir", is_dir=True) and not ig.ignored("n\nl-file")


@settings(max_examples=500, deadline=None)
@given(
    line=st.text(st.sampled_from("ab*?/[]!"), min_size=1, max_size=10),
    path=st.text(st.sampled_from("ab/\n"), min_size=1, max_size=12).filter(
        lambda p: not p.startswith("/") and not p.endswith("/") and "//" not in p
    ),
)
def test_the_linear_rewrite_of_pathspec_patterns_matches_the_same(line: str, path: str) -> None:
    # Lines with '/', '[]', '!' or '**' go through pathspec; their regexes are rewritten to
    # take linear time (ignore._linear). What they match must not change.
    import re

    import pathspec

    from syncd.ignore import _linear

    try:
        spec = pathspec.GitIgnoreSpec.from_lines([line])
    except Exception:
        return  # not a usable line: the scanner refuses it (test_fuzz_local)
    for p in spec.patterns:
        regex = getattr(p, "regex", None)
        if regex is None:
            continue
        fast = re.compile(_linear(regex.pattern), regex.flags)
        assert bool(fast.match(path)) == bool(regex.match(path)), (line, path, fast.pattern)


def test_path_patterns_take_linear_time_too() -> None:
    # One line with a '/' (or a '!', '**', '[]') used to send every line through pathspec's
    # backtracking regexes: `docs/*a*a*a*a*a*a*a*b` took hours on a 100-character name, and a
    # daemon that met such a name hung (SIGTERM ignored). Generous bound, as above.
    import time

    lines = ["docs/*a*a*a*a*a*a*a*b", "*a*a*a*a*a*a*a*c", "!keep.log", "**/x*a*a*a*a*a*a*y/"]
    ig = ignorer(Path("/nonexistent-folder"), lines)
    assert ig.spec is not None
    name = "a" * 254 + "d"
    start = time.monotonic()
    assert not ig.ignored(f"docs/{name}") and not ig.file_ignored(f"docs/{name}", name)
    assert ig.ignored("docs/" + "a" * 254 + "b")
    assert ig.ignored("x/" + "a" * 254 + "c")
    assert not ig.ignored(f"x{name}", is_dir=True)
    assert ig.ignored("x" + "a" * 200 + "y", is_dir=True)
    assert time.monotonic() - start < 5
