"""What a decode did with every frame: read, decoded (with TCP or without), or not
decoded and why, per link type and per encapsulation path. Nothing is dropped silently:
every frame read is counted in exactly one outcome."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wskreplay.formats.layers.link import LINKTYPE_NAME
from wskreplay.formats.layers.walk import Outcome, PathTable, reason_text

PRIORITY = np.full(64, 9, np.int8)
"""When a frame became several units (A-MSDU subframes), its outcome is the best of them."""
PRIORITY[Outcome.TCP] = 0
PRIORITY[Outcome.OTHER] = 1
PRIORITY[Outcome.FRAGMENT] = 2
PRIORITY[Outcome.UNDECODED] = 3
PRIORITY[Outcome.CONTAINER] = 4


def link_type_name(linktype: int) -> str:
    if linktype < 0:
        return "not a frame (the source's own record)"
    return LINKTYPE_NAME.get(linktype, f"link type {linktype}")


def _tally(keys: np.ndarray) -> list[tuple[int, int]]:
    """(value, count) of each distinct value; one pass when all are equal (the usual)."""
    if not len(keys):
        return []
    first = int(keys[0])
    if (keys == first).all():
        return [(first, len(keys))]
    values, counts = np.unique(keys, return_counts=True)
    return list(zip(values.tolist(), counts.tolist(), strict=True))


@dataclass
class Counts:
    read: int = 0
    tcp: int = 0
    other: int = 0
    undecoded: Counter[str] = field(default_factory=Counter)

    def add(self, outcome: int, n: int, reason: str | None = None) -> None:
        self.read += n
        if outcome == Outcome.TCP:
            self.tcp += n
        elif outcome == Outcome.OTHER:
            self.other += n
        else:
            self.undecoded[reason or "?"] += n

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "tcp": self.tcp,
            "other": self.other,
            "undecoded": dict(self.undecoded.most_common()),
        }


@dataclass
class DecodeReport:
    """Per link type and per encapsulation path: frames read, with TCP, decoded without
    TCP, and not decoded by reason."""

    paths: PathTable = field(default_factory=PathTable)
    link_types: dict[int, Counts] = field(default_factory=dict)
    encapsulations: dict[int, Counts] = field(default_factory=dict)
    deferred: dict[int, int] = field(default_factory=dict)
    """Frames whose outcome waits for IP reassembly: frame -> link type."""
    quiet: set[str] = field(default_factory=set)
    """Reasons counted but not warned about (their packets' TCP is read elsewhere)."""

    def add_units(
        self,
        frame: np.ndarray,
        code: np.ndarray,
        arg: np.ndarray,
        path: np.ndarray,
        linktype_of_frame: np.ndarray,
        *,
        one_per_frame: bool,
    ) -> None:
        """Count each frame once, by the best outcome among its units (``one_per_frame``:
        no frame was split into several units)."""
        if not len(frame):
            return
        if not one_per_frame:
            order = np.lexsort((PRIORITY[code], frame))
            frame, code, arg, path = frame[order], code[order], arg[order], path[order]
            first = np.concatenate(([True], frame[1:] != frame[:-1]))
            frame, code, arg, path = frame[first], code[first], arg[first], path[first]
        linktype = linktype_of_frame[frame].astype(np.int64)
        waiting = code == Outcome.FRAGMENT
        if waiting.any():
            for f, lt in zip(frame[waiting].tolist(), linktype[waiting].tolist(), strict=True):
                self.deferred[f] = lt
        undecoded = code == Outcome.UNDECODED
        decoded = ~waiting & ~undecoded
        key = (linktype << 48) | (code.astype(np.int64) << 40) | path.astype(np.int64)
        for k, n in _tally(key[decoded]):
            self.count(k >> 48, k & 0xFFFFFFFF, (k >> 40) & 0xFF, n, None)
        if undecoded.any():
            pairs = Counter(zip(key[undecoded].tolist(), arg[undecoded].tolist(), strict=True))
            for (k, why), n in pairs.items():
                self.count(k >> 48, k & 0xFFFFFFFF, (k >> 40) & 0xFF, n, self._reason(why))

    def count(self, linktype: int, path: int, outcome: int, n: int, reason: str | None) -> None:
        self.link_types.setdefault(linktype, Counts()).add(outcome, n, reason)
        self.encapsulations.setdefault(path, Counts()).add(outcome, n, reason)

    def resolve(self, frame: int, path: int, outcome: int, reason: str | None) -> None:
        """The outcome of a frame that waited for reassembly (once; later calls for the
        same frame are ignored)."""
        linktype = self.deferred.pop(frame, None)
        if linktype is not None:
            self.count(linktype, path, outcome, 1, reason)

    @staticmethod
    def _reason(packed: int) -> str:
        return reason_text(packed >> 32, packed & 0xFFFFFFFF)

    def skipped(self, linktype: int, reason: str, n: int, *, warn: bool) -> None:
        """Packets a source could not present as frames at all (e.g. a PktMon packet
        type that is not a link layer)."""
        self.count(linktype, 0, int(Outcome.UNDECODED), n, reason)
        if not warn:
            self.quiet.add(reason)

    @property
    def totals(self) -> Counts:
        total = Counts()
        for c in self.link_types.values():
            total.read += c.read
            total.tcp += c.tcp
            total.other += c.other
            total.undecoded.update(c.undecoded)
        return total

    def as_dict(self) -> dict[str, Any]:
        total = self.totals
        return {
            "frames": {
                "read": total.read,
                "tcp": total.tcp,
                "other": total.other,
                "undecoded": sum(total.undecoded.values()),
            },
            "undecoded": dict(total.undecoded.most_common()),
            **({"not_warned": sorted(self.quiet)} if self.quiet else {}),
            "link_types": [
                {"link_type": lt, "name": link_type_name(lt), **c.as_dict()}
                for lt, c in sorted(self.link_types.items())
            ],
            "encapsulations": [
                {"path": list(self.paths.paths[p]), **c.as_dict()}
                for p, c in sorted(
                    self.encapsulations.items(),
                    key=lambda kv: (-kv[1].read, self.paths.paths[kv[0]]),
                )
            ],
        }

    def warning(self) -> str | None:
        """One line when frames that could have carried TCP were not decoded."""
        return self.warning_of(self.as_dict())

    @staticmethod
    def warning_of(doc: dict[str, Any]) -> str | None:
        """:meth:`warning` from a report's :meth:`as_dict` (as a summary keeps it)."""
        quiet = set(doc.get("not_warned", ()))
        undecoded = {why: n for why, n in doc["undecoded"].items() if why not in quiet}
        count = sum(undecoded.values())
        if not count:
            return None
        reasons = ", ".join(f"{n} {why}" for why, n in undecoded.items())
        return f"{count} frames that could carry TCP were not decoded: {reasons}"
