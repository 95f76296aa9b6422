"""Who records what ``syncd restore`` wrote into a folder as sent, so that nothing sends it
back: a running daemon over its control socket (``status.client.RestoreSession``), or, with
none running, the manifest itself under the state lock (``ManifestKeeper``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from syncd.manifest import Manifest
from syncd.recorder import Recorder
from syncd.statelock import StateLock
from syncd.types import LocalFile

log = logging.getLogger("syncd.restore")


class Keeper(Protocol):
    """Who records the files restored into a folder as sent (so nothing sends them back):
    a running daemon over its control socket, or the manifest under the state lock."""

    async def hold(self, scope: str, rels: list[str]) -> None:
        """These paths are about to be written: leave them alone until ``record``/``release``."""
        ...

    async def record(self, scope: str, local: LocalFile, sha256: str) -> None:
        """The file at ``local.rel``, as stat'ed after it was written, holds ``sha256``, which
        the server holds at that path too."""
        ...

    async def release(self) -> None:
        """Done: everything recorded is committed; the held paths are free."""
        ...

    async def adopt(self, scope: str, mirror: str) -> None:
        """A whole folder was restored from the mirror ``mirror``: it is this folder's mirror
        (where the state dir knows none yet: a new machine)."""
        ...


class NoKeeper:
    """Nothing to record (``--to`` outside the folders, a dry run)."""

    async def hold(self, scope: str, rels: list[str]) -> None:
        return None

    async def record(self, scope: str, local: LocalFile, sha256: str) -> None:
        return None

    async def release(self) -> None:
        return None

    async def adopt(self, scope: str, mirror: str) -> None:
        return None


class ManifestKeeper:
    """No daemon runs: take the state lock (``AlreadyRunning`` if another process has it)
    and record the rows through the recorder, committed as the restore goes."""

    def __init__(self, state_dir: Path) -> None:
        self.lock = StateLock(state_dir, "restore").acquire()
        try:
            self.recorder = Recorder(Manifest.in_state_dir(state_dir))
        except BaseException:
            self.lock.release()
            raise
        self._started = False

    async def hold(self, scope: str, rels: list[str]) -> None:
        return None  # the lock keeps every other writer out

    async def record(self, scope: str, local: LocalFile, sha256: str) -> None:
        if not self._started:
            self.recorder.running()
            self._started = True
        self.recorder.sent(scope, local, sha256)

    async def adopt(self, scope: str, mirror: str) -> None:
        if self.recorder.manifest.mirror(scope) is None:
            log.info(
                "%s: this state dir now knows the mirror %s it was restored from", scope, mirror
            )
            self.recorder.mirror(scope, mirror)

    async def release(self) -> None:
        try:
            await self.recorder.stop()
            await self.recorder.flush()
            self.recorder.manifest.close()
        finally:
            self.lock.release()


__all__ = ["Keeper", "ManifestKeeper", "NoKeeper"]
