"""The first look at every folder, without the event loop: scan it, compare with the manifest,
and ask the server (one small request, standard library only) whether it changed since. The
look is the engine's own (``syncd.look.first_look``).

``syncd sync`` starts here. When every folder matches its manifest rows, the server's state
token is the one recorded after the last complete pass (nothing changed there either), and
nothing went wrong, that is all the command does: no event loop, no HTTP client, no hashing is
imported (a no-op pass over 10,000 files is mostly Python's start-up). Otherwise the engine
takes over the manifest, the scanners and the scans made here (``Engine(prescan=...)``), and
plans each folder against the server's listing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from syncd.look import FirstLook, first_look
from syncd.manifest import Manifest, scope_of
from syncd.scanner import FolderUnavailable, Scanner

if TYPE_CHECKING:
    from syncd.config import Config

# Remote kinds that cannot list what they hold: the manifest is all there is to go by.
UNLISTED = ("http",)


class Prescan:
    """The manifest (open), one scanner per folder, and each folder's look by scope.

    ``settled`` is true when every folder was scanned without a problem, matches its manifest
    rows exactly, and the server's holdings are known to be those rows. The manifest is closed
    by ``close()``, or by the engine that is handed this object.
    """

    def __init__(self, config: Config) -> None:
        self.manifest = Manifest.in_state_dir(config.sync.state_dir)
        self.scanners: list[Scanner] = []
        self.looks: dict[str, FirstLook] = {}
        self.unchanged = 0
        self.settled = True
        try:
            for folder in config.folders:
                scanner = Scanner(folder)
                self.scanners.append(scanner)
                scope = scope_of(config, folder)
                # The server is asked while the folder is scanned (its answer costs it a
                # walk of its own copy: on two cores the two walks take the time of one).
                asked = self._ask_server(config, scope, folder.remote_path)
                try:
                    look = first_look(scanner, self.manifest, scope)
                except FolderUnavailable:
                    self.settled = False  # the engine scans it again and says why
                    continue
                self.looks[scope] = look
                if not self.settled or not look.in_sync or look.scan.problems or not asked():
                    self.settled = False  # the engine plans it
                    continue
                self.unchanged += look.unchanged
        except BaseException:
            self.manifest.close()
            raise

    def _ask_server(self, config: Config, scope: str, remote_path: str) -> Callable[[], bool]:
        """Start asking whether the server still holds what the rows say; the function
        returned waits for the answer. Known without a listing only from `syncd serve`'s state
        token, and for remotes that cannot list at all."""
        remote = config.remote
        if remote.kind in UNLISTED:
            return lambda: True
        known = self.manifest.mirror(scope)
        if remote.kind != "syncd" or known is None or known[1] is None:
            return lambda: False
        from syncd.remotes.quickstate import fetch_state

        token = known[1]
        got: list[str | None] = []
        asking = threading.Thread(
            target=lambda: got.append(fetch_state(remote, remote_path, remote.timeout)),
            name="syncd-state",
            daemon=True,
        )
        asking.start()

        def answer() -> bool:
            asking.join()
            return bool(got) and got[0] == token

        return answer

    def close(self) -> None:
        self.manifest.close()


__all__ = ["Prescan"]
