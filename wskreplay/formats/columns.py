"""Columnar integer encoding used by .wskt call and segment blocks.

Each column goes through a *transform* that turns it into small integers (a delta, a
difference from another column, a delta within a group of rows such as one socket), then
is *packed* at the narrowest width (0, 1, 2, 4 or 8 bytes) that holds ``value - base``,
with its bytes transposed (all low bytes, then all next bytes, ...) so zstd sees long runs.
All arithmetic is int64 and wraps modulo 2**64, so every transform is exactly invertible
for any input, including the uint64 IRP pointers. Described byte by byte in docs/format.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from wskreplay.errors import InputError

_WIDTHS = (1, 2, 4, 8)


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    dtype: str
    transform: str = "plain"
    """``plain``; ``delta`` (from the previous row); ``minus`` (``base`` subtracted, only on
    rows where ``mask`` is non-zero); ``next`` (difference from the previous row of the same
    ``group`` plus that row's ``length``: zero for contiguous stream offsets)."""
    base: str | None = None
    mask: str | None = None
    group: tuple[str, ...] = ()
    length: str | None = None
    default: int = 0
    """Value of every row when a block lacks this column (written by an older minor version)."""


def check_dependencies(specs: tuple[ColumnSpec, ...]) -> None:
    """Every column a transform reads must come earlier: blocks decode in spec order."""
    seen: set[str] = set()
    for spec in specs:
        needs = {spec.base, spec.mask, spec.length, *spec.group} - {None}
        if not needs <= seen:
            raise ValueError(f"column {spec.name!r} depends on later columns {needs - seen}")
        seen.add(spec.name)


def _to_i64(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint64:
        return arr.view(np.int64)
    return arr.astype(np.int64)


def sort_by_keys(keys: list[np.ndarray]) -> np.ndarray:
    """The stable order that sorts rows by ``keys`` (at least one; the first primary), as
    ``np.lexsort(keys[::-1])`` gives it. Non-negative integer keys whose combined span
    fits 16 bits (sockets, directions) are sorted as one key by numpy's radix sort, 10x
    faster than lexsort on millions of rows."""
    if all(k.dtype.kind in "ui" for k in keys) and len(keys[0]):
        highs = [int(k.max()) for k in keys]
        span = 1
        for high in highs:
            span *= high + 1
        if min(int(k.min()) for k in keys) >= 0 and span < 1 << 16:
            combined = keys[0].astype(np.uint16)
            for k, high in zip(keys[1:], highs[1:], strict=True):
                combined *= np.uint16(high + 1)
                combined += k.astype(np.uint16)
            return np.argsort(combined, kind="stable")
    return np.lexsort(keys[::-1])


def _group_order(
    cols: Mapping[str, np.ndarray], group: tuple[str, ...], n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stable order that brings each group's rows together, and which sorted rows start one."""
    keys = [np.asarray(cols[g]) for g in reversed(group)]
    order = sort_by_keys(keys[::-1]) if keys else np.arange(n)
    first = np.ones(n, dtype=bool)
    if n > 1:
        same = np.ones(n - 1, dtype=bool)
        for k in keys:
            ks = k[order]
            same &= ks[1:] == ks[:-1]
        first[1:] = ~same
    return order, first


def _shifted_lengths(
    cols: Mapping[str, np.ndarray], spec: ColumnSpec, order: np.ndarray, first: np.ndarray
) -> np.ndarray:
    n = len(order)
    out = np.zeros(n, dtype=np.int64)
    if spec.length is not None and n > 1:
        lens = _to_i64(np.asarray(cols[spec.length]))[order]
        out[1:] = lens[:-1]
        out[first] = 0
    return out


def encode_transform(spec: ColumnSpec, cols: Mapping[str, np.ndarray]) -> np.ndarray:
    v = _to_i64(np.asarray(cols[spec.name]))
    n = len(v)
    if spec.transform == "plain":
        return v
    if spec.transform == "delta":
        e = v.copy()
        e[1:] -= v[:-1]
        return e
    if spec.transform == "minus":
        e = v - _to_i64(np.asarray(cols[spec.base]))
        if spec.mask is not None:
            off = np.asarray(cols[spec.mask]) == 0
            e[off] = v[off]
        return e
    if spec.transform == "next":
        order, first = _group_order(cols, spec.group, n)
        sv = v[order]
        d = sv.copy()
        d[1:] -= sv[:-1]
        d[first] = sv[first]
        d -= _shifted_lengths(cols, spec, order, first)
        e = np.empty(n, dtype=np.int64)
        e[order] = d
        return e
    raise ValueError(f"unknown transform {spec.transform!r}")


GroupOrders = dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]]


def decode_transform(
    spec: ColumnSpec,
    e: np.ndarray,
    cols: Mapping[str, np.ndarray],
    orders: GroupOrders | None = None,
) -> np.ndarray:
    """Invert :func:`encode_transform`; ``cols`` holds the already decoded columns.
    ``orders`` keeps each group's order for the block's later columns of the same group."""
    n = len(e)
    if spec.transform == "plain":
        return e
    if spec.transform == "delta":
        return np.cumsum(e, dtype=np.int64)
    if spec.transform == "minus":
        base = _to_i64(np.asarray(cols[spec.base]))
        v = e + base
        if spec.mask is not None:
            off = np.asarray(cols[spec.mask]) == 0
            v[off] = e[off]
        return v
    if spec.transform == "next":
        known = orders.get(spec.group) if orders is not None else None
        order, first = known if known is not None else _group_order(cols, spec.group, n)
        if orders is not None:
            orders[spec.group] = (order, first)
        d = e[order] + _shifted_lengths(cols, spec, order, first)
        cs = np.cumsum(d, dtype=np.int64)
        starts = np.flatnonzero(first)
        group_id = np.cumsum(first) - 1
        sv = cs - (cs[starts] - d[starts])[group_id]
        v = np.empty(n, dtype=np.int64)
        v[order] = sv
        return v
    raise ValueError(f"unknown transform {spec.transform!r}")


def pack(values: np.ndarray) -> dict[str, Any]:
    """``{"w": width, "b": base, "g": step, "d": bytes}``: row i is ``base + step * d[i]``.

    Width 0 means every row equals ``base``; ``g`` is omitted when it is 1. The step (the
    GCD of the differences from ``base``) makes 100 ns QPC ticks or 1 us pcap times cost
    what their resolution carries, not what a nanosecond integer could."""
    n = len(values)
    if n == 0:
        return {"w": 0, "b": 0}
    lo = int(values.min())
    hi = int(values.max())
    if lo == hi:
        return {"w": 0, "b": lo}
    rel = values.view(np.uint64) - np.uint64(lo & 0xFFFFFFFFFFFFFFFF)
    step = int(np.gcd.reduce(rel))
    if step > 1:
        rel //= np.uint64(step)
    span = (hi - lo) // step
    width = next(w for w in _WIDTHS if span < 1 << (8 * w))
    narrow = rel.astype(f"<u{width}")
    data = narrow.view(np.uint8).reshape(n, width).T.tobytes() if width > 1 else narrow.tobytes()
    packed = {"w": width, "b": lo, "d": data}
    if step > 1:
        packed["g"] = step
    return packed


def unpack(packed: Any, n: int, *, where: str) -> np.ndarray:
    """Invert :func:`pack`; every field is checked, ``where`` names the column in errors."""
    if not isinstance(packed, dict):
        raise ValueError(f"{where}: expected a map")
    width, base = packed.get("w"), packed.get("b")
    if width not in (0, *_WIDTHS) or not isinstance(base, int):
        raise ValueError(f"{where}: bad width {width!r} or base {base!r}")
    if base < -(1 << 63) or base >= 1 << 64:
        raise ValueError(f"{where}: base {base} outside 64 bits")
    step = packed.get("g", 1)
    if not isinstance(step, int) or not 1 <= step < 1 << 64:
        raise ValueError(f"{where}: bad step {step!r}")
    base_i64 = np.uint64(base & 0xFFFFFFFFFFFFFFFF).astype(np.int64)
    if width == 0:
        return np.full(n, base_i64, dtype=np.int64)
    data = packed.get("d")
    if not isinstance(data, bytes) or len(data) != n * width:
        got = len(data) if isinstance(data, bytes) else type(data).__name__
        raise ValueError(f"{where}: {got} data bytes, expected {n} rows x {width}")
    raw = np.frombuffer(data, dtype=np.uint8)
    if width > 1:
        raw = raw.reshape(width, n).T.copy()
    rel = raw.reshape(-1).view(f"<u{width}").astype(np.uint64)
    if step > 1:
        rel *= np.uint64(step)
    return (rel + base_i64.view(np.uint64)).view(np.int64)


def _from_i64(values: np.ndarray, dtype: str, where: str) -> np.ndarray:
    if np.dtype(dtype) == np.uint64:
        return values.view(np.uint64)
    out = values.astype(dtype)
    if not np.array_equal(out.astype(np.int64), values):
        raise ValueError(f"{where}: value outside the range of {np.dtype(dtype).name}")
    return out


def encode_columns(specs: tuple[ColumnSpec, ...], cols: Mapping[str, np.ndarray]) -> dict:
    return {spec.name: pack(encode_transform(spec, cols)) for spec in specs}


def decode_columns(
    specs: tuple[ColumnSpec, ...], encoded: Any, n: int, *, path: str | None, offset: int
) -> dict[str, np.ndarray]:
    """Decode a block's column map; unknown columns are ignored, missing ones take defaults."""
    if not isinstance(encoded, dict):
        raise InputError(path, "column map is not a msgpack map", offset)
    cols: dict[str, np.ndarray] = {}
    orders: GroupOrders = {}
    try:
        for spec in specs:
            if spec.name in encoded:
                e = unpack(encoded[spec.name], n, where=f"column {spec.name!r}")
                cols[spec.name] = _from_i64(
                    decode_transform(spec, e, cols, orders), spec.dtype, f"column {spec.name!r}"
                )
            else:
                cols[spec.name] = np.full(n, spec.default, dtype=spec.dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InputError(path, f"bad column block: {exc}", offset) from None
    return cols
