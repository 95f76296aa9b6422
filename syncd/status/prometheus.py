"""``/metrics``: the status document and the engine's counters in the Prometheus text
format (exposition format 0.0.4), ``syncd_`` series. Served by the status page (status/web.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from syncd.errors import ERROR_KINDS
from syncd.status.metrics import Metrics


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(v: float | int | bool | None) -> str:
    if v is None:
        return "0"
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    return repr(float(v))


def render_metrics(doc: dict[str, Any], m: Metrics) -> str:
    """The status document and the counters as Prometheus text (exposition format 0.0.4)."""
    t, d, r = doc["totals"], doc["daemon"], doc["remote"]

    def lab(**kv: str) -> str:
        return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in kv.items()) + "}"

    def per_folder(key: Callable[[dict[str, Any]], Any]) -> list[tuple[str, Any]]:
        return [(lab(folder=f["remote_path"]), key(f)) for f in doc["folders"]]

    kinds = sorted(set(ERROR_KINDS) | set(m.errors_total))
    families: list[tuple[str, str, str, list[tuple[str, Any]]]] = [
        ("info", "gauge", "The running daemon's version.", [(lab(version=d["version"]), 1)]),
        (
            "start_time_seconds",
            "gauge",
            "When the daemon started (unix time).",
            [("", d["started"])],
        ),
        ("ready", "gauge", "1 once the first reconcile has finished.", [("", d["ready"])]),
        ("in_sync", "gauge", "1 when every folder is mirrored.", [("", doc["in_sync"])]),
        ("uploads_total", "counter", "Files uploaded since start.", [("", t["uploaded"])]),
        ("sent_bytes_total", "counter", "Bytes sent since start.", [("", t["bytes_sent"])]),
        ("deletes_total", "counter", "Deletions mirrored since start.", [("", t["deleted"])]),
        ("moves_total", "counter", "Server-side moves since start.", [("", t["moved"])]),
        (
            "errors_total",
            "counter",
            "Failures since start, by kind.",
            [(lab(kind=k), m.errors_total.get(k, 0)) for k in kinds],
        ),
        ("retries_total", "counter", "Retries of transient failures.", [("", m.retries)]),
        ("current_errors", "gauge", "Paths whose last attempt failed.", [("", t["errors"])]),
        (
            "pending_files",
            "gauge",
            "Paths waiting to be sent, deleted or moved.",
            per_folder(lambda f: f["pending_count"]),
        ),
        (
            "in_flight_files",
            "gauge",
            "Transfers running now.",
            per_folder(lambda f: len(f["in_flight"])),
        ),
        (
            "mirrored_files",
            "gauge",
            "Files the remote is known to hold.",
            per_folder(lambda f: f["files"]),
        ),
        (
            "mirrored_bytes",
            "gauge",
            "Bytes the remote is known to hold.",
            per_folder(lambda f: f["bytes"]),
        ),
        (
            "folder_in_sync",
            "gauge",
            "1 when the folder is fully mirrored.",
            per_folder(lambda f: f["in_sync"]),
        ),
        (
            "held_deletions",
            "gauge",
            "Deletions the deletion guard holds back (release: syncd sync --force-delete).",
            per_folder(lambda f: (f.get("held_deletions") or {}).get("count", 0)),
        ),
        (
            "watcher_restarts_total",
            "counter",
            "Times a folder's watch was restarted.",
            per_folder(lambda f: f["watcher_restarts"]),
        ),
        (
            "watch_degraded",
            "gauge",
            "1 while part of the folder is polled: inotify's watch limit is below its directories.",
            per_folder(lambda f: f.get("watch_degraded") is not None),
        ),
        (
            "polled_directories",
            "gauge",
            "Directories polled instead of watched (0: all watched).",
            per_folder(lambda f: (f.get("watch_degraded") or {}).get("polled_dirs", 0)),
        ),
        (
            "watched_directories",
            "gauge",
            "Directories watched with inotify while part of the folder is polled (0: not counted).",
            per_folder(lambda f: (f.get("watch_degraded") or {}).get("watched_dirs", 0)),
        ),
        (
            "last_success_timestamp_seconds",
            "gauge",
            "Last time every folder was seen fully mirrored (unix time; 0: not yet).",
            [("", doc["last_sync"])],
        ),
        (
            "last_transfer_timestamp_seconds",
            "gauge",
            "Last successful upload, delete or move (unix time; 0: none yet).",
            [("", r["last_transfer"])],
        ),
        ("remote_reachable", "gauge", "1 while the remote answers.", [("", r["reachable"])]),
        ("queued_changes", "gauge", "Changes kept while the remote is down.", [("", r["queued"])]),
    ]
    out: list[str] = []
    for name, kind, help_, samples in families:
        out += [f"# HELP syncd_{name} {help_}", f"# TYPE syncd_{name} {kind}"]
        out += [f"syncd_{name}{labels} {_num(value)}" for labels, value in samples]
    h = m.upload_seconds
    name = "syncd_upload_duration_seconds"
    out.append(f"# HELP {name} Time to send one file, hashing and retries included.")
    out.append(f"# TYPE {name} histogram")
    for bound, count in zip(h.buckets, h.counts, strict=True):
        out.append(f'{name}_bucket{{le="{_num(bound)}"}} {count}')
    out.append(f'{name}_bucket{{le="+Inf"}} {h.count}')
    out.append(f"{name}_sum {_num(h.sum)}")
    out.append(f"{name}_count {h.count}")
    return "\n".join(out) + "\n"


__all__ = ["render_metrics"]
