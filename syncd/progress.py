"""A rich progress bar for ``syncd sync`` on a terminal: one row of files (counted as files),
one of bytes (in the summary's binary units: KiB, MiB, GiB), each with its rate and ETA.

The bar is drawn on stderr. While it is shown, syncd's log handler prints through the same
console, above the bar (``syncd.logs.routed``), so a log line never tears through it.
"""

from __future__ import annotations

import contextlib

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.progress import TaskID as _TaskID
from rich.text import Text

from syncd.logs import routed
from syncd.report import Progress as ProgressSink
from syncd.report import human

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def _pair(done: float, total: float) -> str:
    """``done/total`` in the unit that suits ``total``, as ``human`` would show it:
    ``0.4/1.9 MiB``, ``300/512 B``."""
    scale, unit = 1, 0
    while total >= 1024 * scale and unit < len(_UNITS) - 1:
        scale *= 1024
        unit += 1
    if unit == 0:
        return f"{done:.0f}/{total:.0f} B"
    return f"{done / scale:.1f}/{total / scale:.1f} {_UNITS[unit]}"


class _Done(ProgressColumn):
    """How far a row is, in its own unit: ``12/4,269 files`` or ``0.4/1.9 MiB``."""

    def render(self, task: Task) -> Text:
        if task.fields.get("unit") == "bytes":
            return Text(_pair(task.completed, task.total or 0), style="progress.download")
        return Text(
            f"{int(task.completed):,}/{int(task.total or 0):,} files", style="progress.download"
        )


class _Rate(ProgressColumn):
    """The row's rate: ``3.1 files/s`` or ``12.4 MiB/s``."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None:
            return Text("?", style="progress.data.speed")
        if task.fields.get("unit") == "bytes":
            return Text(f"{human(speed)}/s", style="progress.data.speed")
        return Text(f"{speed:.1f} files/s", style="progress.data.speed")


class _Above:
    """A stream for the log handler while the bar is live: each whole line is printed by
    the bar's console, above the bar, as it is (no markup, no highlighting, no wrapping)."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._buffer = ""

    def write(self, text: str) -> int:
        self._buffer += text
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            self._console.print(Text(line), soft_wrap=True, highlight=False, markup=False)
        return len(text)

    def flush(self) -> None:
        pass


class RichProgress(ProgressSink):
    def __init__(self) -> None:
        self._bar: Progress | None = None
        self._bytes: _TaskID | None = None
        self._files: _TaskID | None = None
        self._routing = contextlib.ExitStack()

    def start(self, files: int, nbytes: int) -> None:
        if files == 0:
            return
        if self._bar is None:
            console = Console(stderr=True)
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                _Done(),
                _Rate(),
                TimeRemainingColumn(),
                console=console,
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._bar.start()
            self._files = self._bar.add_task("files", total=files, unit="files")
            self._bytes = self._bar.add_task("bytes", total=nbytes, unit="bytes")
            self._routing.enter_context(routed(_Above(console)))
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
            self._routing.close()
