"""The baseline commit (``--baseline REV``): the 10,000 × 4 KiB first sync to ``syncd serve``
by syncd as it was at REV, client and server, alternating in the same run with the syncd under
test, for floors stated as "≥ N × today's".

REV must be in the clone's history; a shallow clone (``git clone --depth 1``) lacks it: then
--quick compares with HEAD (a smoke test: the machinery runs, the ratio is ~1) and a full run
says how to fetch REV and leaves the row not measured.

REV's ``syncd`` package is taken with ``git archive`` into ``<dir>/baseline/<commit>/`` (kept
between runs) and run as ``python -m syncd`` with PYTHONPATH at that tree, in the bench's own
venv (the same dependencies, so that only syncd's code differs).
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from . import peers
from .procs import BenchError, Ran
from .report import Floor, Result, unmeasured
from .session import Session
from .syncd_runs import ROOT, compile_syncd, config, sync
from .workloads import tree_size

# The commit before issue 16's work (batched small files, the streamed manifest): the
# "today's files/s" of the small-file floor.
BASELINE = "6224e45"
FLOOR_TIMES = 3.0


def resolve(repo: Path, rev: str) -> str | None:
    """REV's full commit id, or None when the clone's history does not hold it (a shallow
    clone, as CI makes with --depth 1, or not a git checkout at all)."""
    p = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return p.stdout.strip() if p.returncode == 0 and p.stdout.strip() else None


def pick(repo: Path, rev: str, quick: bool) -> tuple[str | None, str]:
    """The commit to compare with and the row's name for it. REV when the clone holds it; else
    with --quick HEAD (the machinery still runs end to end, the ratio is ~1: quick asserts
    nothing), and in a full run none: the text then says why and how to get REV."""
    commit = resolve(repo, rev)
    if commit is not None:
        return commit, f"syncd at {commit[:7]}, client and server"
    head = resolve(repo, "HEAD") if quick else None
    if head is not None:
        return head, f"baseline: HEAD ({rev} not in this clone)"
    return None, (
        f"--baseline {rev} is not in this clone's history: in a shallow clone "
        f"`git fetch --unshallow` (or `git fetch origin {rev}`) brings it"
    )


def extract(repo: Path, commit: str, tree: Path) -> None:
    """``commit``'s ``syncd`` package into ``tree`` (once: kept between runs), compiled."""
    if not (tree / "syncd" / "__main__.py").exists():
        part = tree.with_name(commit + ".part")
        shutil.rmtree(part, ignore_errors=True)
        part.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "-C", str(repo), "archive", "--format=tar", commit, "syncd"],
            capture_output=True,
            timeout=120,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(part)], input=archive, check=True, timeout=120)
        part.rename(tree)
    compile_syncd(tree / "syncd")


def baseline_env(s: Session, tree: Path) -> dict[str, str]:
    """The bench's environment with REV's syncd first on the path (and not the current
    directory's: PYTHONSAFEPATH, as the bench runs in the checkout); checked in a child."""
    env = {**s.env, "PYTHONPATH": str(tree), "PYTHONSAFEPATH": "1"}
    where = subprocess.run(
        [sys.executable, "-c", "import syncd; print(syncd.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    ).stdout.strip()
    if not where.startswith(str(tree)):
        raise BenchError(f"the baseline's syncd did not come first on the path ({where!r})")
    return env


def baseline(s: Session) -> None:
    """10,000 × 4 KiB first syncs: today's syncd against REV's, alternating, medians."""
    rev = s.args.baseline
    folder = s.data["small"]
    files, nbytes = tree_size(folder)
    row = f"{files:,} × 4 KiB first sync, vs the baseline commit"
    commit, peer_name = pick(ROOT, rev, s.args.quick)
    if commit is None:
        s.add(
            unmeasured("small_vs_baseline", row, "files/s", f"syncd at {rev}", "higher", peer_name)
        )
        return
    if not peer_name.startswith("syncd at"):
        print(f"  {peer_name}", flush=True)
    tree = s.dir / "baseline" / commit
    extract(ROOT, commit, tree)
    env = baseline_env(s, tree)
    old_syncd = [sys.executable, "-m", "syncd"]
    pid, url, root, _token, token_file = peers.start_syncd_serve(
        s.run_dir, s.store_dir, old_syncd, tag="-baseline", env=env
    )
    t = s.timeout_for(nbytes, files)
    runs: dict[str, list[Ran]] = {"syncd": [], "baseline": []}
    for i in range(s.reps_at_least(3)):
        order = ("syncd", "baseline") if i % 2 == 0 else ("baseline", "syncd")
        for who in order:
            name = f"baseline-{who}"
            shutil.rmtree(s.run_dir / "state" / name, ignore_errors=True)
            if who == "syncd":
                shutil.rmtree(s.srv.serve_root / name, ignore_errors=True)
                cfg = config(s, name, folder, name)
                runs[who].append(sync(s, cfg, "syncd-baseline-current", t))
                got = s.srv.serve_root / name
            else:
                shutil.rmtree(root / name, ignore_errors=True)
                cfg = config(s, name, folder, name, serve=(url, token_file))
                cmd: list[str | Path] = [*old_syncd, "sync", "-c", cfg]
                runs[who].append(s.cmd(cmd, "syncd-baseline-old", t, env, {"serve": pid}))
                got = root / name
            if tree_size(got)[0] != files:
                raise BenchError(f"{who}'s first sync did not store every file ({got})")
    rate = {k: statistics.median(files / r.seconds for r in v) for k, v in runs.items()}
    cur, old = rate["syncd"], rate["baseline"]
    s.add(
        Result(
            "small_vs_baseline",
            row,
            "files/s",
            cur,
            old,
            peer_name,
            "higher",
            [Floor(f"≥ {FLOOR_TIMES:g} × the baseline", cur >= FLOOR_TIMES * old)],
            {
                "baseline_commit": commit,
                "samples_files_per_s": {
                    k: [round(files / r.seconds) for r in v] for k, v in runs.items()
                },
                "client_cpu_ms_per_file": {
                    k: round(statistics.median(r.cpu for r in v) / files * 1000, 3)
                    for k, v in runs.items()
                },
                "server_cpu_ms_per_file": {
                    k: round(statistics.median(r.server_cpu["serve"] for r in v) / files * 1000, 3)
                    for k, v in runs.items()
                },
            },
        )
    )
