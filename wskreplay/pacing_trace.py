"""Deprecated path, kept for one release: see :mod:`wskreplay.generators.pacing_trace`."""

from wskreplay._moved import forwarder

__getattr__ = forwarder(__name__, "wskreplay.generators.pacing_trace")
