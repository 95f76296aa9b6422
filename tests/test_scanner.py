"""The scanner's fast ignore check agrees with the full gitignore rules."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.config import FolderConfig
from syncd.scanner import Ignorer

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
