"""The receiving server, ``syncd serve``: see docs/protocol.md for what it speaks."""

from syncd.server.app import ServeOptions, make_app, serve

__all__ = ["ServeOptions", "make_app", "serve"]
