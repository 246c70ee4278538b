"""The ``wskreplay`` command line: the group and its error handling (:mod:`.app`), the
options shared by several commands (:mod:`.options`), a module per family of commands
(:mod:`.traces`, :mod:`.captures`, :mod:`.recording`, :mod:`.replaying`, :mod:`.diffing`,
:mod:`.agent`), and what they print (:mod:`.console`, :mod:`.etwview`)."""

import os

# Before numpy is imported: nothing here multiplies matrices, and OpenBLAS's worker threads
# spin for about 0.1 s of CPU after numpy's import, in this process and in each one it
# starts (they inherit this), on a machine where the replay's sender needs a core.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from wskreplay.cli import agent, captures, diffing, recording, replaying, traces  # noqa: F401
from wskreplay.cli.app import EXIT_ERROR, EXIT_OK, EXIT_PROBLEM, main, run

__all__ = ["EXIT_ERROR", "EXIT_OK", "EXIT_PROBLEM", "main", "run"]
