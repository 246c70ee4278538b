"""Deprecated path, kept for one release: see :mod:`wskreplay.trace.summary`."""

from wskreplay._moved import forwarder

__getattr__ = forwarder(__name__, "wskreplay.trace.summary")
