"""Deprecated path, kept for one release: see :mod:`wskreplay.cli.console`."""

from wskreplay._moved import forwarder

__getattr__ = forwarder(__name__, "wskreplay.cli.console")
