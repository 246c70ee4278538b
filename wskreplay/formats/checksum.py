"""The CRC-32 of .wskt blocks (zlib's: the IEEE 802.3 polynomial, reflected).

Every block written and every block read is checked, so for a 130 MB trace the CRC was
the largest single cost of writing a replay (0.12 s of 0.43 s). ISA-L's (python-isal, a
dependency: folding with carry-less multiplication) computes the same value 7.6x faster
on this machine (17.6 against 2.3 GB/s); zlib's is the reference, taken when python-isal is
missing or ``WSKREPLAY_PURE_PYTHON=1`` asks for the references. ``tests/test_checksum.py``
keeps the two equal.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

from wskreplay.formats.reference import reference_asked

Crc32 = Callable[..., int]


def _chosen() -> tuple[Crc32, str]:
    if not reference_asked():
        try:
            from isal.isal_zlib import crc32 as isal_crc32
        except ImportError:
            pass
        else:
            return isal_crc32, "isal"
    return zlib.crc32, "zlib"


crc32, CRC32_SOURCE = _chosen()
"""``crc32(data, value=0)``, as :func:`zlib.crc32`; :data:`CRC32_SOURCE` says whose."""
