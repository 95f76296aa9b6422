"""The receiving server, ``syncd serve``: see docs/protocol.md for what it speaks."""

from syncd.server.app import make_app
from syncd.server.serve import ServeOptions, serve

__all__ = ["ServeOptions", "make_app", "serve"]
