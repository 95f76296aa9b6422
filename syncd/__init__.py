"""syncd: mirror folders on a workstation to a server, live."""

__version__ = "0.1.0"

__all__ = ["__version__"]
