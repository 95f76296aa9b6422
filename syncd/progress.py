"""A rich progress bar for ``syncd sync`` on a terminal (files, bytes, rate, ETA)."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress import TaskID as _TaskID

from syncd.engine import Progress as ProgressSink


class RichProgress(ProgressSink):
    def __init__(self) -> None:
        self._bar: Progress | None = None
        self._bytes: _TaskID | None = None
        self._files: _TaskID | None = None

    def start(self, files: int, nbytes: int) -> None:
        if files == 0:
            return
        if self._bar is None:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                transient=True,
            )
            self._bar.start()
            self._files = self._bar.add_task("files", total=files)
            self._bytes = self._bar.add_task("bytes", total=nbytes)
        else:
            assert self._files is not None and self._bytes is not None
            self._bar.update(self._files, total=(self._bar.tasks[0].total or 0) + files)
            self._bar.update(self._bytes, total=(self._bar.tasks[1].total or 0) + nbytes)

    def advance(self, nbytes: int) -> None:
        if self._bar is not None and self._bytes is not None:
            self._bar.advance(self._bytes, nbytes)

    def file_done(self, rel: str) -> None:
        if self._bar is not None and self._files is not None:
            self._bar.advance(self._files, 1)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
