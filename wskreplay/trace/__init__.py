"""The trace: the model in memory (:mod:`.model`, with :mod:`.records` and :mod:`.tables`)
and its ``.wskt`` file (:mod:`.writer`, :mod:`.reader`, :mod:`.verify`, the block layout
in :mod:`.blocks`); long streams spilled to disk (:mod:`.spill`), file digests
(:mod:`.digest`), and what ``wskreplay info`` shows (:mod:`.summary`).

The names a user of traces needs are importable from here::

    from wskreplay.trace import read_trace, write_trace, TraceReader, Trace
"""

from wskreplay.formats.wskt import FORMAT_MAJOR
from wskreplay.trace.model import Direction, Trace
from wskreplay.trace.reader import TraceReader, read_trace
from wskreplay.trace.verify import VerifyReport, recover, verify
from wskreplay.trace.writer import TraceWriter, write_trace

__all__ = [
    "FORMAT_MAJOR",
    "Direction",
    "Trace",
    "TraceReader",
    "TraceWriter",
    "VerifyReport",
    "read_trace",
    "recover",
    "verify",
    "write_trace",
]
