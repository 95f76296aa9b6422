"""The first look at every folder, without the event loop: scan it, compare with the manifest.

``syncd sync`` starts here. When no folder has anything to send or delete and nothing went
wrong, that is all the command does: no event loop, no HTTP client, no hashing is imported
(a no-op pass over 10,000 files is mostly Python's start-up). Otherwise the engine takes over
the manifest, the scanners and the scans made here (``Engine(prescan=...)``), so a pass with
one changed file does not scan its folder twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from syncd.manifest import Manifest, scope_of
from syncd.planner import Plan, plan_folder
from syncd.scanner import FolderUnavailable, Scanner, ScanResult

if TYPE_CHECKING:
    from syncd.config import Config


class Prescan:
    """The manifest (open), one scanner per folder, and each folder's scan (and plan, where
    it made one) by scope.

    ``settled`` is true when every folder was scanned without a problem and its plan is empty:
    nothing to upload, delete or report. The manifest is closed by ``close()``, or by the
    engine that is handed this object.
    """

    def __init__(self, config: Config, *, force_delete: bool = False) -> None:
        self.manifest = Manifest.in_state_dir(config.sync.state_dir)
        self.scanners: list[Scanner] = []
        self.scans: dict[str, ScanResult] = {}
        self.plans: dict[str, Plan] = {}  # by scope, for the folders it could plan
        self.unchanged = 0
        self.settled = True
        try:
            for folder in config.folders:
                scanner = Scanner(folder)
                self.scanners.append(scanner)
                scope = scope_of(config, folder)
                try:
                    scan = scanner.scan()
                except FolderUnavailable:
                    self.settled = False  # the engine scans it again and says why
                    continue
                self.scans[scope] = scan
                if not self.settled or scan.problems:
                    self.settled = False
                    continue  # the engine plans it; the scan is all it needs from here
                if self.manifest.states(scope) == set(scan.files.values()):
                    self.unchanged += len(scan.files)  # as the manifest says: nothing to do
                    self.plans[scope] = Plan(unchanged=len(scan.files))
                    continue
                plan = self.plans[scope] = plan_folder(
                    scan.files,
                    self.manifest.rows(scope),
                    delete=folder.delete,
                    ignored=scanner.ignorer.ignored,
                    incomplete=scan.incomplete,
                    max_delete=None if force_delete else config.sync.max_delete,
                )
                self.unchanged += plan.unchanged
                if not plan.empty or plan.held_back:
                    self.settled = False
        except BaseException:
            self.manifest.close()
            raise

    def close(self) -> None:
        self.manifest.close()


__all__ = ["Prescan"]
