"""The column tables of calls and segments: one numpy array per field, since a trace can
hold millions of each; rows are read as :class:`~wskreplay.trace.records.SendCall` and
:class:`~wskreplay.trace.records.Segment`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import fields
from typing import ClassVar, TypeVar

import numpy as np

from wskreplay.formats.columns import sort_by_keys
from wskreplay.formats.wskt import CALL_COLUMNS, SEGMENT_COLUMNS
from wskreplay.trace.records import Direction, Segment, SendCall

TableT = TypeVar("TableT", bound="ColumnTable")
_NO_ROWS = np.empty(0, np.int64)
_NO_ROWS.flags.writeable = False


class DeferredColumns(dict[str, np.ndarray]):
    """A table's columns, some of them decoded only when first read (``pending``, decoded
    by ``load(names)``): a column asked for by name is decoded alone; whatever walks every
    column (rows, ``take``, equality) decodes the rest first, in one ``load``. A trace read
    for one job (``diff``) then holds only the columns that job reads."""

    def __init__(
        self,
        decoded: Mapping[str, np.ndarray],
        pending: Iterable[str],
        load: Callable[[list[str]], Mapping[str, np.ndarray]],
        rows: int,
        dtypes: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(decoded)
        self._pending = [name for name in pending if name not in decoded]
        self._load = load
        self.rows = rows
        self._dtypes = dict(dtypes or {})

    def pending(self, name: str) -> bool:
        return name in self._pending

    def rebuilt(
        self, decoded: Mapping[str, np.ndarray], dtypes: Mapping[str, str]
    ) -> DeferredColumns:
        return DeferredColumns(decoded, self._pending, self._load, self.rows, dtypes)

    def __missing__(self, name: str) -> np.ndarray:
        if name not in self._pending:
            raise KeyError(name)
        self._decode([name])
        return super().__getitem__(name)

    def _decode(self, names: list[str]) -> None:
        for name, arr in self._load(names).items():
            arr = np.ascontiguousarray(arr, dtype=self._dtypes.get(name))
            if arr.shape != (self.rows,):
                raise ValueError(f"column {name!r}: shape {arr.shape}, expected ({self.rows},)")
            self[name] = arr
        self._pending = [name for name in self._pending if name not in names]

    def _decode_all(self) -> None:
        if self._pending:
            self._decode(list(self._pending))

    def __iter__(self) -> Iterator[str]:
        self._decode_all()
        return super().__iter__()

    def __len__(self) -> int:
        return super().__len__() + len(self._pending)

    def items(self):  # type: ignore[override]
        self._decode_all()
        return super().items()

    def values(self):  # type: ignore[override]
        self._decode_all()
        return super().values()

    def keys(self):  # type: ignore[override]
        self._decode_all()
        return super().keys()

    def __reduce__(self) -> tuple:
        """Copied or pickled as a plain dict of every column (``load`` reads a file)."""
        return (dict, (dict(self.items()),))


class ColumnTable:
    """Rows stored as one numpy array per field; rows read as friendly objects on demand."""

    SCHEMA: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self, columns: Mapping[str, np.ndarray]) -> None:
        n = columns.rows if isinstance(columns, DeferredColumns) else None
        cols: dict[str, np.ndarray] = {}
        for name, dtype in self.SCHEMA:
            if isinstance(columns, DeferredColumns) and columns.pending(name):
                continue
            arr = np.ascontiguousarray(columns[name], dtype=dtype)
            if arr.ndim != 1 or (n is not None and len(arr) != n):
                raise ValueError(f"column {name!r}: shape {arr.shape}, expected ({n},)")
            n = len(arr)
            cols[name] = arr
        if isinstance(columns, DeferredColumns):
            cols = columns.rebuilt(cols, dict(self.SCHEMA))
        self._cols = cols
        self._views: dict[str, np.ndarray] = {}
        self._n = n or 0
        self._groups: dict[tuple[tuple[str, ...], str], dict[tuple[int, ...], np.ndarray]] = {}

    @classmethod
    def empty(cls: type[TableT]) -> TableT:
        return cls({name: np.empty(0, dtype) for name, dtype in cls.SCHEMA})

    @classmethod
    def concat(cls: type[TableT], tables: Iterable[TableT]) -> TableT:
        tables = list(tables)
        if not tables:
            return cls.empty()
        if len(tables) == 1:
            return tables[0]
        return cls._concat(tables)

    @classmethod
    def _concat(cls: type[TableT], tables: list[TableT]) -> TableT:
        return cls(
            {name: np.concatenate([t._cols[name] for t in tables]) for name, _ in cls.SCHEMA}
        )

    def column(self, name: str) -> np.ndarray:
        """One field of every row, as a read-only numpy array (no per-row objects). The
        view is made once per column and kept (the diff asks for columns millions of times
        in a run of chaos seeds)."""
        view = self._views.get(name)
        if view is None:
            view = self._cols[name].view()
            view.flags.writeable = False
            self._views[name] = view
        return view

    @property
    def columns(self) -> dict[str, np.ndarray]:
        return {name: self.column(name) for name, _ in self.SCHEMA}

    def rows_by(self, keys: tuple[str, ...], order: str) -> dict[tuple[int, ...], np.ndarray]:
        """Row indices grouped by the values of the ``keys`` columns, each group ordered by
        the ``order`` column (ties in row order). Sorted once per table and kept: a table's
        columns do not change once it is built."""
        cached = self._groups.get((keys, order))
        if cached is not None:
            return cached
        cols = [self._cols[k] for k in keys]
        by = self._cols[order]
        if self._n > 1 and not bool(np.all(by[1:] >= by[:-1])):
            first = np.argsort(by, kind="stable")
            rows = first[sort_by_keys([c[first] for c in cols])]
        else:
            rows = sort_by_keys(cols)
        groups: dict[tuple[int, ...], np.ndarray] = {}
        if self._n:
            ordered = [c[rows] for c in cols]
            change = np.zeros(self._n - 1, bool)
            for c in ordered:
                change |= c[1:] != c[:-1]
            starts = np.concatenate(([0], np.flatnonzero(change) + 1))
            ends = np.append(starts[1:], self._n)
            firsts = [c[starts].tolist() for c in ordered]
            for g, (lo, hi) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
                part = rows[lo:hi]
                part.flags.writeable = False
                groups[tuple(f[g] for f in firsts)] = part
        self._groups[(keys, order)] = groups
        return groups

    def __len__(self) -> int:
        return self._n

    def take(self: TableT, index: np.ndarray | slice) -> TableT:
        return type(self)({name: arr[index] for name, arr in self._cols.items()})

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return len(self) == len(other) and all(
            np.array_equal(self._cols[name], other._cols[name]) for name, _ in self.SCHEMA
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} rows={len(self)}>"


CALL_SCHEMA: tuple[tuple[str, str], ...] = tuple((c.name, c.dtype) for c in CALL_COLUMNS)
"""Call columns. Sentinels: ``completed`` is :data:`NOT_COMPLETED` (the IRP never completed
while recorded), :data:`COMPLETED` or :data:`COMPLETION_UNKNOWN` (the recording could not
see it); unless COMPLETED the completion fields are absent (0); ``irql == -1`` unknown;
``control_len == -1`` no ControlInfo (NULL), else its bytes are in the table's control
blob, concatenated in row order."""
NOT_COMPLETED, COMPLETED, COMPLETION_UNKNOWN = 0, 1, 2


class CallTable(ColumnTable):
    SCHEMA = CALL_SCHEMA

    def rows_of(self, socket: int) -> np.ndarray:
        """The socket's calls (row indices) in issue order."""
        return self.rows_by(("socket",), "issue_ns").get((socket,), _NO_ROWS)

    def __init__(self, columns: Mapping[str, np.ndarray], control_blob: bytes = b"") -> None:
        super().__init__(columns)
        lens = self._cols["control_len"]
        if np.any(lens < -1):
            raise ValueError("control_len below -1")
        if int(np.maximum(lens, 0).sum()) != len(control_blob):
            raise ValueError(
                f"control blob holds {len(control_blob)} bytes, control_len sums to "
                f"{int(np.maximum(lens, 0).sum())}"
            )
        self.control_blob = bytes(control_blob)
        self._control_starts: np.ndarray | None = None

    @classmethod
    def _concat(cls, tables: list[CallTable]) -> CallTable:
        cols = {name: np.concatenate([t._cols[name] for t in tables]) for name, _ in cls.SCHEMA}
        return cls(cols, b"".join(t.control_blob for t in tables))

    def take(self, index: np.ndarray | slice) -> CallTable:
        lens = np.maximum(self._cols["control_len"], 0).astype(np.int64)
        starts = self._starts()
        if isinstance(index, slice):
            rows = range(self._n)[index]
            if rows.step == 1:
                lo = int(starts[rows.start]) if len(rows) else 0
                hi = int(starts[rows.stop - 1] + lens[rows.stop - 1]) if len(rows) else 0
                cols = {name: arr[index] for name, arr in self._cols.items()}
                return CallTable(cols, self.control_blob[lo:hi])
            index = np.arange(rows.start, rows.stop, rows.step)
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        sel_lens = lens[index]
        total = int(sel_lens.sum())
        if total:
            first = np.repeat(starts[index] - (np.cumsum(sel_lens) - sel_lens), sel_lens)
            blob = np.frombuffer(self.control_blob, np.uint8)[first + np.arange(total)].tobytes()
        else:
            blob = b""
        return CallTable({name: arr[index] for name, arr in self._cols.items()}, blob)

    def _starts(self) -> np.ndarray:
        if self._control_starts is None:
            lens = np.maximum(self._cols["control_len"], 0).astype(np.int64)
            self._control_starts = np.cumsum(lens) - lens
        return self._control_starts

    def control_info(self, i: int) -> bytes | None:
        n = int(self._cols["control_len"][i])
        if n < 0:
            return None
        start = int(self._starts()[i])
        return self.control_blob[start : start + n]

    def __eq__(self, other: object) -> bool:
        result = super().__eq__(other)
        if result is NotImplemented or not result:
            return result
        assert isinstance(other, CallTable)
        return self.control_blob == other.control_blob

    def row(self, i: int) -> SendCall:
        c = {name: arr[i].item() for name, arr in self._cols.items()}
        done = c["completed"] == COMPLETED
        return SendCall(
            seq=c["seq"],
            socket=c["socket"],
            issue_ns=c["issue_ns"],
            return_ns=c["return_ns"],
            flags=c["flags"],
            offset=c["offset"],
            length=c["length"],
            control_info=self.control_info(i),
            status=c["status"],
            completion_ns=c["completion_ns"] if done else None,
            completion_status=c["completion_status"] if done else None,
            information=c["information"] if done else None,
            irp=c["irp"],
            irql=None if c["irql"] < 0 else c["irql"],
            stream_offset=c["stream_offset"],
            completion_unknown=c["completed"] == COMPLETION_UNKNOWN,
        )

    def __getitem__(self, i: int) -> SendCall:
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(i)
        return self.row(i)

    def __iter__(self) -> Iterator[SendCall]:
        for i in range(self._n):
            yield self.row(i)

    @classmethod
    def from_calls(cls, calls: Iterable[SendCall]) -> CallTable:
        calls = list(calls)
        cols: dict[str, list[int]] = {name: [] for name, _ in CALL_SCHEMA}
        blob = bytearray()
        for call in calls:
            done = call.completion_ns is not None
            values = {
                "seq": call.seq,
                "socket": call.socket,
                "issue_ns": call.issue_ns,
                "return_ns": call.return_ns,
                "flags": call.flags,
                "offset": call.offset,
                "length": call.length,
                "status": call.status,
                "completed": COMPLETION_UNKNOWN
                if call.completion_unknown
                else COMPLETED
                if done
                else NOT_COMPLETED,
                "completion_ns": call.completion_ns if done else 0,
                "completion_status": (call.completion_status or 0) if done else 0,
                "information": (call.information or 0) if done else 0,
                "irp": call.irp,
                "irql": -1 if call.irql is None else call.irql,
                "stream_offset": call.stream_offset,
                "control_len": -1 if call.control_info is None else len(call.control_info),
            }
            for name, value in values.items():
                cols[name].append(value)
            if call.control_info is not None:
                blob += call.control_info
        arrays = {name: np.array(cols[name], dtype=dtype) for name, dtype in CALL_SCHEMA}
        return cls(arrays, bytes(blob))


SEGMENT_SCHEMA: tuple[tuple[str, str], ...] = tuple((c.name, c.dtype) for c in SEGMENT_COLUMNS)


class SegmentTable(ColumnTable):
    SCHEMA = SEGMENT_SCHEMA

    def rows_of(self, socket: int, direction: Direction) -> np.ndarray:
        """The socket's segments in one direction (row indices) in time order."""
        groups = self.rows_by(("socket", "direction"), "time_ns")
        return groups.get((socket, int(direction)), _NO_ROWS)

    def row(self, i: int) -> Segment:
        c = {name: arr[i].item() for name, arr in self._cols.items()}
        c["direction"] = Direction(c["direction"])
        return Segment(**c)

    def __getitem__(self, i: int) -> Segment:
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(i)
        return self.row(i)

    def __iter__(self) -> Iterator[Segment]:
        for i in range(self._n):
            yield self.row(i)

    @classmethod
    def from_segments(cls, segments: Iterable[Segment]) -> SegmentTable:
        rows = [tuple(getattr(s, f.name) for f in fields(Segment)) for s in segments]
        names = [f.name for f in fields(Segment)]
        cols = {
            name: np.array([r[k] for r in rows], dtype=dict(SEGMENT_SCHEMA)[name])
            for k, name in enumerate(names)
        }
        return cls(cols)
