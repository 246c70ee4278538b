"""The ``wskreplay`` command line: the group and its error handling (:mod:`.app`), the
options shared by several commands (:mod:`.options`), a module per family of commands
(:mod:`.traces`, :mod:`.captures`, :mod:`.recording`, :mod:`.replaying`, :mod:`.diffing`,
:mod:`.agent`), and what they print (:mod:`.console`, :mod:`.etwview`)."""

from wskreplay.cli import agent, captures, diffing, recording, replaying, traces  # noqa: F401
from wskreplay.cli.app import EXIT_ERROR, EXIT_OK, EXIT_PROBLEM, main

__all__ = ["EXIT_ERROR", "EXIT_OK", "EXIT_PROBLEM", "main"]
