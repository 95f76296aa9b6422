"""The resume rows of the large-file group (see measure_bigfile): a reset at 50 %, a SIGKILL
at 50 % then a restart, the same on S3; beside rsync --partial and rclone."""

from __future__ import annotations

import shutil
from pathlib import Path

from . import bigfile_peers as bp
from .bigfile_rig import (
    FILE,
    Group,
    command,
    killed_at_half,
    measure,
    ratio_row,
    reset_at_half,
    same,
)
from .countproxy import CountProxy
from .procs import BenchError
from .report import Result, unmeasured


def reset(g: Group) -> None:
    """The connection reset at half the file: syncd, rsync --partial, rclone."""
    s, size, px = g.s, g.size, g.px
    if g.moto is None and not bp.s3_missing():
        # Starts meanwhile (s3() waits for it): it imports for seconds, which the timed rows
        # before this one must not share the cores with; these rows count bytes.
        g.moto = bp.start_moto(s.run_dir)
    cfg = g.serve_cfg("bigfile-reset", g.folder)
    w = reset_at_half(g, px, lambda: g.sync(cfg, "syncd-bigfile-reset"), "syncd sync")
    ok = same(g.serve_root / "bigfile-reset" / FILE, g.sha)
    peer, peer_name = None, "syncd's uninterrupted upload (rsync is not installed)"
    if g.rpx is not None and g.rsyncd and g.rsyncd.root:
        rpx = g.rpx
        peer = reset_at_half(
            g,
            rpx,
            lambda: command(s, bp.rsync_push(g.folder, rpx.port, "reset"), "rsync-reset", 600),
            "rsync",
        )
        peer_name = "rsync --partial, run again, same proxy"
        if not same(g.rsyncd.root / "reset" / FILE, g.sha):
            peer_name += " (its copy is WRONG)"
    elif g.whole is not None:
        peer = g.whole
    row = ratio_row(
        "bigfile_reset",
        f"{g.label} to syncd serve, connection reset at 50 %: bytes sent / size",
        w,
        peer,
        peer_name,
        size,
        ok,
    )
    s.add(row)
    if g.rclone_conf:
        conf = g.rclone_conf
        dst = f"serve:bigfile-reset-rclone/{FILE}"
        rc = reset_at_half(
            g,
            px,
            lambda: command(s, bp.rclone_copyto(conf, g.src, dst), "rclone-reset", 600),
            "rclone",
        )
        rc_ok = same(g.serve_root / "bigfile-reset-rclone" / FILE, g.sha)
        s.add(
            Result(
                "bigfile_reset_rclone",
                f"{g.label} to syncd serve, connection reset at 50 %, vs rclone",
                "× size",
                w.up / size,
                rc.up / size,
                "rclone copyto (WebDAV), same proxy" + ("" if rc_ok else " (its copy is WRONG)"),
                "lower",
                [],
                {"syncd": w.facts(size), "rclone": rc.facts(size)},
            )
        )
    elif not s.args.quick:
        s.add(
            unmeasured(
                "bigfile_reset_rclone",
                f"{g.label} to syncd serve, connection reset at 50 %, vs rclone",
                "× size",
                "rclone",
                "lower",
                "rclone is not installed",
            )
        )
    for rel in ("bigfile-reset", "bigfile-reset-rclone"):
        shutil.rmtree(g.serve_root / rel, ignore_errors=True)
    if g.rsyncd and g.rsyncd.root:
        shutil.rmtree(g.rsyncd.root / "reset", ignore_errors=True)


def kill(g: Group) -> None:
    """``syncd sync`` SIGKILLed at half the file, then again; rsync --partial the same."""
    s, size, px = g.s, g.size, g.px
    cfg = g.serve_cfg("bigfile-kill", g.folder)
    argv: list[str | Path] = [*s.syncd, "sync", "-c", cfg]
    w = killed_at_half(g, px, argv, "syncd-bigfile-kill", s.env)
    w = w + measure(px, lambda: g.sync(cfg, "syncd-bigfile-kill-again"))
    ok = same(g.serve_root / "bigfile-kill" / FILE, g.sha)
    peer, peer_name = g.whole, "syncd's uninterrupted upload (rsync is not installed)"
    if g.rpx is not None and g.rsyncd and g.rsyncd.root:
        rpx = g.rpx
        push = bp.rsync_push(g.folder, rpx.port, "kill")
        peer = killed_at_half(g, rpx, push, "rsync-kill", s.env)
        peer = peer + measure(rpx, lambda: command(s, push, "rsync-kill-again", 600))
        peer_name = "rsync --partial, SIGKILLed, run again, same proxy"
        if not same(g.rsyncd.root / "kill" / FILE, g.sha):
            peer_name += " (its copy is WRONG)"
    s.add(
        ratio_row(
            "bigfile_kill",
            f"{g.label} to syncd serve, SIGKILLed at 50 % then run again: bytes sent / size",
            w,
            peer,
            peer_name,
            size,
            ok,
        )
    )
    shutil.rmtree(g.serve_root / "bigfile-kill", ignore_errors=True)
    if g.rsyncd and g.rsyncd.root:
        shutil.rmtree(g.rsyncd.root / "kill", ignore_errors=True)


def s3(g: Group) -> None:
    """The kill against S3 (moto_server), against one uninterrupted upload to it."""
    s, size = g.s, g.size
    name = f"{g.label} to S3 (moto), SIGKILLed at 50 % then run again: bytes sent / size"
    why = bp.s3_missing()
    if why or g.moto is None:
        peer = "one uninterrupted upload"
        s.add(unmeasured("bigfile_s3_kill", name, "× size", peer, "lower", why or "no moto"))
        return
    bp.moto_ready(g.moto)
    env = bp.s3_env(s.env, s.run_dir)
    with CountProxy(g.moto.port, name="s3-proxy") as mpx:
        endpoint = mpx.url.rstrip("/")
        clean_cfg = bp.s3_config(s.run_dir, "bigfile-s3-clean", g.folder, "clean", endpoint)
        clean = measure(mpx, lambda: g.sync(clean_cfg, "syncd-bigfile-s3-clean", env))
        if clean.codes != [0]:
            raise BenchError(f"syncd sync to S3 exited {clean.codes[0]} (see its log)")
        cfg = bp.s3_config(s.run_dir, "bigfile-s3-kill", g.folder, "kill", endpoint)
        argv: list[str | Path] = [*s.syncd, "sync", "-c", cfg]
        w = killed_at_half(g, mpx, argv, "syncd-bigfile-s3-kill", env)
        w = w + measure(mpx, lambda: g.sync(cfg, "syncd-bigfile-s3-kill-again", env))
    ok = bp.s3_object_sha256(g.moto, f"mirror/kill/{FILE}") == g.sha
    s.add(
        ratio_row(
            "bigfile_s3_kill",
            name,
            w,
            clean,
            "one uninterrupted syncd sync to S3, same proxy",
            size,
            ok,
        )
    )
    g.moto.stop()
    g.moto = None
