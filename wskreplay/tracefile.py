"""Deprecated path, kept for one release: see :mod:`wskreplay.trace` (the writer, the
reader, verify and recover are its modules now)."""

from wskreplay._moved import forwarder

__getattr__ = forwarder(__name__, "wskreplay.trace")
