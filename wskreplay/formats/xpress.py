"""LZ77 XPRESS, the "plain LZ77" of [MS-XCA] sections 2.3 (compression) and 2.4
(decompression): what compressed ETL buffers (BufferFlag 0x40) hold.

The stream is groups of up to 32 items, each group led by a 32-bit little-endian flag
word read from its most significant bit: 0 = one literal byte, 1 = a match given by a
16-bit word (13 bits offset - 1, 3 bits length - 3) with longer lengths continued in a
shared half byte, then a byte, then 16 or 32 bits.
"""

from __future__ import annotations

import struct

from wskreplay.errors import InputError

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


class XpressError(ValueError):
    """The compressed bytes are not a valid XPRESS stream of the promised size."""


try:
    from wskreplay.formats import _xpress
except ImportError:  # built only where a C compiler was present at install
    _xpress = None

ACCELERATED = _xpress is not None


def decompress(data: bytes | memoryview, size: int) -> bytes:
    """Exactly ``size`` bytes from ``data``; :class:`XpressError` on any inconsistency.

    Uses the C accelerator when it was built, else :func:`decompress_python`; both make
    the same checks and report the same errors."""
    if _xpress is None:
        return decompress_python(data, size)
    try:
        return _xpress.decompress(data, size)
    except ValueError as exc:
        raise XpressError(str(exc)) from None


def decompress_python(data: bytes | memoryview, size: int) -> bytes:
    """Pure-Python decompression: never writes past ``size`` bytes and never reads past
    ``data``; a stream that would is an error, whatever its headers claim."""
    src = bytes(data)
    n = len(src)
    out = bytearray()
    pos = 0
    flags = 0
    flag_count = 0
    half_byte_at = -1
    while True:
        if flag_count == 0:
            if pos + 4 > n:
                break
            flags = _U32.unpack_from(src, pos)[0]
            pos += 4
            flag_count = 32
        flag_count -= 1
        if not (flags >> flag_count) & 1:
            if pos >= n:
                break
            if len(out) >= size:
                raise XpressError(f"literal at input {pos} past the expected {size} bytes")
            out.append(src[pos])
            pos += 1
            continue
        if pos >= n:
            break
        if pos + 2 > n:
            raise XpressError(f"match word cut short at input {pos}")
        word = _U16.unpack_from(src, pos)[0]
        pos += 2
        length = word & 7
        offset = (word >> 3) + 1
        if length == 7:
            if half_byte_at < 0:
                if pos >= n:
                    raise XpressError(f"length nibble cut short at input {pos}")
                length = src[pos] & 0xF
                half_byte_at = pos
                pos += 1
            else:
                length = src[half_byte_at] >> 4
                half_byte_at = -1
            if length == 15:
                if pos >= n:
                    raise XpressError(f"length byte cut short at input {pos}")
                length = src[pos]
                pos += 1
                if length == 255:
                    if pos + 2 > n:
                        raise XpressError(f"16-bit length cut short at input {pos}")
                    length = _U16.unpack_from(src, pos)[0]
                    pos += 2
                    if length == 0:
                        if pos + 4 > n:
                            raise XpressError(f"32-bit length cut short at input {pos}")
                        length = _U32.unpack_from(src, pos)[0]
                        pos += 4
                    if length < 15 + 7:
                        raise XpressError(f"match length {length} below 22 at input {pos}")
                    length -= 15 + 7
                length += 15
            length += 7
        length += 3
        if offset > len(out):
            raise XpressError(
                f"match offset {offset} reaches before the output start at input {pos}"
            )
        if len(out) + length > size:
            raise XpressError(f"match at input {pos} runs past the expected {size} bytes")
        start = len(out) - offset
        if offset >= length:
            out += out[start : start + length]
        else:
            pattern = bytes(out[start:])
            out += (pattern * (length // offset + 1))[:length]
    if len(out) != size:
        raise XpressError(f"decompressed to {len(out)} bytes, expected {size}")
    return bytes(out)


def decompress_or_raise(data: bytes | memoryview, size: int, *, path: str, offset: int) -> bytes:
    """:func:`decompress`, with failures reported as an :class:`InputError` at ``offset``."""
    try:
        return decompress(data, size)
    except XpressError as exc:
        raise InputError(path, f"compressed buffer: {exc}", offset) from None


def compress(data: bytes | memoryview) -> bytes:
    """A valid XPRESS stream for ``data``, by the C accelerator when it is built."""
    if _xpress is None:
        return compress_python(bytes(data))
    return _xpress.compress(data)


def compress_python(data: bytes) -> bytes:
    """A valid XPRESS stream for ``data`` (greedy matching through a 3-byte table).

    Meant for writing test fixtures and synthetic recordings, not for ratio or speed."""
    out = bytearray()
    n = len(data)
    table: dict[bytes, int] = {}
    pos = 0
    half_byte_at = -1
    while pos < n or not out:
        flag_at = len(out)
        out += b"\0\0\0\0"
        flags = 0
        for bit in range(32):
            if pos >= n:
                flags |= 1 << (31 - bit)
                continue
            key = data[pos : pos + 3]
            candidate = table.get(key, -1) if len(key) == 3 else -1
            if len(key) == 3:
                table[key] = pos
            length = 0
            if candidate >= 0 and pos - candidate <= 8192:
                limit = min(n - pos, 65535 + 3)
                while length < limit and data[candidate + length] == data[pos + length]:
                    length += 1
            if length < 3:
                out.append(data[pos])
                pos += 1
                continue
            flags |= 1 << (31 - bit)
            offset = pos - candidate
            code = length - 3
            out += _U16.pack(((offset - 1) << 3) | min(code, 7))
            if code >= 7:
                rest = code - 7
                nibble = min(rest, 15)
                if half_byte_at < 0:
                    half_byte_at = len(out)
                    out.append(nibble)
                else:
                    out[half_byte_at] |= nibble << 4
                    half_byte_at = -1
                if rest >= 15:
                    rest -= 15
                    if rest < 255:
                        out.append(rest)
                    else:
                        out.append(255)
                        out += _U16.pack(rest + 15 + 7)
            pos += length
        _U32.pack_into(out, flag_at, flags)
        if pos >= n:
            break
    return bytes(out)
