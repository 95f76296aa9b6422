"""SIGINT/SIGTERM handled on the running event loop for the life of a ``with`` block.

The one way syncd's long-running commands (``syncd run`` and ``syncd serve``) take their stop
signals: the handlers are installed on entry and removed on exit, and where the loop cannot
install them (Windows, or not the main thread) nothing is installed and Ctrl-C still raises
``KeyboardInterrupt``. What a signal means is the caller's ``on_signal``. Imports nothing of
syncd (Shared layer).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_signals(on_signal: Callable[[signal.Signals], None]) -> Iterator[None]:
    """Call ``on_signal(sig)`` on the running loop for each SIGINT or SIGTERM received while
    the block runs; the loop's handlers are removed when it ends."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in STOP_SIGNALS:
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError, ValueError):
            continue  # Windows, or not the main thread: Ctrl-C still raises there
        installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
