"""Only the optional compiled accelerators live here; everything else is in pyproject.toml.

- ``wskreplay.formats._xpress`` (C): without a C compiler the build goes on and wskreplay
  uses the pure-Python XPRESS decompressor.
- ``wskreplay.formats._walk`` (C): the capture walks' loop that follows each record's
  length; without it, the same loop in Python.
- ``wskreplay.formats._layers`` (C): the layer walk's common path (Ethernet, IPv4 or IPv6,
  TCP) for every frame of a chunk in one loop; without it, the walk takes every frame.
- ``wskreplay.formats._pktmon`` (C): PktMon appearances grouped into packets by content
  (Windows 11 24H2 recordings); without it, ``pktmon.PacketIds`` one appearance at a time.
- ``wskreplay.formats._pieces`` (C, OpenSSL's libcrypto, headers from ``libssl-dev``): a
  stream's scattered payloads hashed in one call without the GIL; without it, hashlib
  one payload at a time.
- The emulator's state machines (``wskreplay/replayer``: the WSK layer, the TCP sender, the
  peers, the connection and the replay engine) compiled by mypyc from the same Python
  source, 1.3-2x faster (docs/performance.md); the socket target's real-time loop and
  session too, for less work between one call's send and the next. Set
  ``WSKREPLAY_PURE_PYTHON=1`` to build without them; the Python modules are the reference
  and give the same results.
"""

import glob
import os

from setuptools import Extension, setup

COMPILED = [
    "wskreplay/replayer/wsk_socket.py",
    "wskreplay/replayer/tcp_sender.py",
    "wskreplay/replayer/peer.py",
    "wskreplay/replayer/targets/emulator.py",
    "wskreplay/replayer/engine.py",
    "wskreplay/replayer/realtime.py",
    "wskreplay/replayer/targets/socket_session.py",
]

ext_modules = [
    Extension("wskreplay.formats._xpress", ["wskreplay/formats/_xpress.c"], optional=True),
    Extension("wskreplay.formats._walk", ["wskreplay/formats/_walk.c"], optional=True),
    Extension("wskreplay.formats._layers", ["wskreplay/formats/_layers.c"], optional=True),
    Extension("wskreplay.formats._pktmon", ["wskreplay/formats/_pktmon.c"], optional=True),
    Extension(
        "wskreplay.formats._pieces",
        ["wskreplay/formats/_pieces.c"],
        libraries=["crypto"],
        optional=True,
    ),
]
if os.environ.get("WSKREPLAY_PURE_PYTHON") != "1":
    try:
        from mypyc.build import mypycify

        flags = ["--ignore-missing-imports", "--follow-imports=silent"]
        ext_modules += mypycify(flags + COMPILED, opt_level="3", group_name="wskreplay_native")
    except (SystemExit, Exception) as exc:  # any failure to compile: the Python modules
        print(f"wskreplay: emulator not compiled ({exc!r}); using the Python modules")
        # An earlier in-place build's modules would shadow the sources: remove them.
        for source in COMPILED:
            for stale in glob.glob(source.removesuffix(".py") + ".*.so"):
                os.remove(stale)
        for stale in glob.glob("wskreplay_native__mypyc.*.so"):
            os.remove(stale)

setup(ext_modules=ext_modules)
