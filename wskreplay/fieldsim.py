"""Deprecated path, kept for one release: see :mod:`wskreplay.generators.fieldsim`."""

from wskreplay._moved import forwarder

__getattr__ = forwarder(__name__, "wskreplay.generators.fieldsim")
