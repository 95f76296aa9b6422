"""What a running daemon is doing, and the ways it is told (docs/status.md).

Rooms, bottom to top (none imports the daemon or the engine: the board reads a running daemon
through ``board.LiveView``):

- ``metrics``: the counters the engine reports to (retries, errors by kind, durations);
- ``document``: the status document's shared pieces, and the document when no daemon runs;
- ``board``: ``StatusBoard``, the document of a running daemon (``LiveView``);
- ``prometheus``: the document and the counters as ``/metrics`` text;
- ``notify``: sd_notify (READY=1, STATUS=, WATCHDOG=1, STOPPING=1);
- ``control``: the control socket (``<state_dir>/syncd.sock``) and the clients of ``syncd
  status`` / ``syncd sync`` (socket, or the status page's ``/status.json``);
- ``web``: the status page (``[status] listen``): ``/``, ``/status.json``, ``/metrics``;
  its HTML, CSS and JS are package data in ``static/``.
"""
