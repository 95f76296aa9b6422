"""Deterministic crash points for the fault-injection tests.

``SYNCD_CRASH_AT=<step>`` makes the process SIGKILL itself when it reaches that step, so a test
can prove that a crash there loses nothing. Unset (always, outside tests) it does nothing.

Steps: ``hashing`` (a file read and hashed, not sent), ``mid-body`` (a large upload half
sent), ``after-upload`` (the server confirmed, the manifest row not written), ``after-delete``,
``after-move`` (likewise), ``server-mid-body`` (the server has written part of a body),
``server-after-keep`` (the server has kept the file an upload replaces, not yet renamed the
new one over it), ``server-mid-batch`` (the server has renamed the first file of a batch into
place, not the others), ``server-mid-append`` (the server has appended a piece of a resumable
upload).
"""

from __future__ import annotations

import os
import signal

ENV = "SYNCD_CRASH_AT"
_AT = os.environ.get(ENV) or None


def crash_point(step: str) -> None:
    """Kill this process at once (no cleanup, like a power cut) if ``step`` is the one set."""
    if _AT is not None and step == _AT:
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
