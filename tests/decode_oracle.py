"""The decode of frames with the C pass over plain Ethernet/IP/TCP frames
(``formats/_layers.c``) and by the layer walk alone, as comparable values. Used by
``tests/test_layers_native.py`` and the decode fuzz harness."""

from __future__ import annotations

import dataclasses

import pytest

from wskreplay.formats import pcap
from wskreplay.formats.layers import decode as decoding


def outcome(frames: pcap.Frames, chunk: int, options: decoding.DecodeOptions | None) -> dict:
    d = decoding.decode(frames, options, chunk=chunk)
    seg = d.segments
    return {
        "columns": {
            f.name: (getattr(seg, f.name).dtype.str, getattr(seg, f.name).tolist())
            for f in dataclasses.fields(seg)
        },
        "report": d.report.as_dict(),
        "paths": d.report.paths.paths,
        "deferred": d.report.deferred,
        "buffer": len(d.buffer),
    }


def both_decodes(
    frames: pcap.Frames,
    chunk: int = decoding.DECODE_CHUNK,
    options: decoding.DecodeOptions | None = None,
) -> tuple[dict, dict]:
    """The decode with the C pass, then by the walk alone (``WSKREPLAY_PURE_PYTHON=1``)."""
    native = outcome(frames, chunk, options)
    with pytest.MonkeyPatch.context() as m:
        m.setenv("WSKREPLAY_PURE_PYTHON", "1")
        reference = outcome(frames, chunk, options)
    return native, reference
