"""Syncthing as a peer: two instances on loopback, A sending to B, run and measured from
inside a network namespace that holds only loopback (``python -m benchlib.syncthing_peer
SPEC.json``, started by measure_syncthing under ``unshare -n``).

Syncthing dials discovery servers, relays, STUN, upgrade and usage-report servers by default.
Both instances are configured before their first start with all of that off (global and local
discovery, relays, NAT traversal, usage and crash reporting, upgrades), listen on
tcp://127.0.0.1 only, know each other by device ID and a static address, and watch with the
minimum delay (1 s). And they only ever start in here: ``main`` refuses to run unless the
namespace's only interface is ``lo``, so that even a setting missed cannot reach the network.
The measuring runs in the namespace too, since the REST APIs are on its loopback.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from .measure_live import measure_latency
from .procs import BenchError, cpu_seconds, free_port, proc_status, wait_until
from .workloads import tree_size

FOLDER = "bench"
OFF = {
    "globalAnnounceEnabled": "false",
    "localAnnounceEnabled": "false",
    "relaysEnabled": "false",
    "natEnabled": "false",
    "urAccepted": "-1",
    "urURL": "",
    "crashReportingEnabled": "false",
    "crashReportingURL": "",
    "autoUpgradeIntervalH": "0",
    "releasesURL": "",
    "startBrowser": "false",
    "stunKeepaliveStartS": "0",
    "announceLANAddresses": "false",
    "setLowPriority": "false",  # Debian's default renices it: not what is compared
}
REMOVE = ("globalAnnounceServer", "stunServer", "listenAddress")


def isolated() -> bool:
    """This process's network namespace holds only loopback (/proc/self/net is per process)."""
    lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]
    return [ln.split(":")[0].strip() for ln in lines] == ["lo"]


def _set(parent: ET.Element, tag: str, value: str) -> None:
    el = parent.find(tag)
    (el if el is not None else ET.SubElement(parent, tag)).text = value


class Instance:
    def __init__(self, name: str, home: Path, folder: Path) -> None:
        self.name, self.home, self.folder = name, home, folder
        self.gui_port, self.port = free_port(), free_port()
        self.key = secrets.token_urlsafe(24)
        out = subprocess.run(
            [
                "syncthing",
                "generate",
                f"--home={home}",
                "--no-default-folder",
                "--skip-port-probing",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        m = re.search(r"Device ID: ([A-Z0-9-]+)", out.stdout + out.stderr)
        if not m:
            raise BenchError(f"syncthing generate printed no device ID: {out.stdout!r}")
        self.id = m.group(1)
        self.proc: subprocess.Popen[bytes] | None = None

    def configure(self, peer: Instance) -> None:
        """config.xml before the first start: everything off that could leave the machine."""
        path = self.home / "config.xml"
        tree = ET.parse(path)
        top = tree.getroot()
        opts = top.find("options")
        gui = top.find("gui")
        defaults = top.find("defaults/folder")
        if opts is None or gui is None or defaults is None:
            raise BenchError(f"{path}: no options, gui or defaults/folder element")
        for tag in REMOVE:
            for el in opts.findall(tag):
                opts.remove(el)
        ET.SubElement(opts, "listenAddress").text = f"tcp://127.0.0.1:{self.port}"
        for tag, value in OFF.items():
            _set(opts, tag, value)
        gui.set("tls", "false")
        _set(gui, "address", f"127.0.0.1:{self.gui_port}")
        _set(gui, "apikey", self.key)
        for dev in top.findall("device"):
            for addr in dev.findall("address"):
                addr.text = f"tcp://127.0.0.1:{self.port}"
        other = ET.SubElement(
            top, "device", id=peer.id, name=peer.name, compression="metadata", introducer="false"
        )
        ET.SubElement(other, "address").text = f"tcp://127.0.0.1:{peer.port}"
        folder = copy.deepcopy(defaults)
        folder.attrib.update(
            id=FOLDER,
            label=FOLDER,
            path=str(self.folder),
            fsWatcherEnabled="true",
            fsWatcherDelayS="1",
            rescanIntervalS="3600",
        )
        for dev in folder.findall("device"):
            folder.remove(dev)
        for dev_id in (self.id, peer.id):
            d = ET.Element("device", id=dev_id, introducedBy="")
            ET.SubElement(d, "encryptionPassword")
            folder.insert(1, d)
        top.insert(0, folder)
        tree.write(path)
        (self.folder / ".stfolder").mkdir(parents=True, exist_ok=True)

    def start(self, logs: Path) -> None:
        """In this process's group (not a session of its own, unlike the bench's servers), so
        that the bench's deadline, which kills the group, takes Syncthing with it."""
        env = {**os.environ, "STNOUPGRADE": "1", "STNORESTART": "1", "STNODEFAULTFOLDER": "1"}
        cmd = ["syncthing", "serve", f"--home={self.home}", "--no-browser", "--no-restart"]
        with (logs / f"syncthing-{self.name}.log").open("ab") as out:
            self.proc = subprocess.Popen(
                [*cmd, "--no-upgrade", "--logflags=3"],
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                env=env,
            )

    def rest(self, path: str, method: str = "GET") -> Any:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.gui_port}{path}",
            method=method,
            headers={"X-API-Key": self.key},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body.strip() else None

    def status(self) -> dict[str, Any]:
        try:
            got: dict[str, Any] = self.rest(f"/rest/db/status?folder={FOLDER}")
        except OSError:
            return {}
        return got

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(OSError):
            self.rest("/rest/system/shutdown", "POST")
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    work = Path(spec["work"])
    logs = Path(spec["logs"])
    src = work / "A-folder"
    shutil.copytree(spec["data"], src)
    files = tree_size(src)[0]
    a = Instance("A", work / "A-home", src)
    b = Instance("B", work / "B-home", Path(spec["store"]))
    a.configure(b)
    b.configure(a)
    out: dict[str, Any] = {"files": files}
    try:
        t0 = time.perf_counter()
        a.start(logs)
        b.start(logs)

        def complete() -> bool:
            st = b.status()
            if not (st.get("needFiles") == 0 and st.get("localFiles", 0) >= files):
                return False
            return tree_size(b.folder)[0] >= files

        t1 = wait_until(complete, spec["timeout"], "Syncthing B to hold every file", 0.02)
        out["first_sync_s"] = t1 - t0
        out["latency_ms"] = measure_latency(a.folder, b.folder, spec["writes"])
        out["rss_mib"] = {
            i.name: proc_status(i.proc.pid).get("VmHWM", 0) / 1024 for i in (a, b) if i.proc
        }
        out["cpu_s"] = {i.name: cpu_seconds(i.proc.pid) for i in (a, b) if i.proc}
        out["version"] = a.rest("/rest/system/version").get("version", "?")
    finally:
        a.stop()
        b.stop()
    return out


def main(argv: list[str]) -> int:
    if not isolated():
        print(
            "refusing to start Syncthing outside a loopback-only network namespace "
            "(run under `unshare -n`)",
            file=sys.stderr,
        )
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    try:
        result = measure(spec)
    except BenchError as e:
        print(f"syncthing peer: {e}", file=sys.stderr)
        return 1
    Path(spec["result"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
