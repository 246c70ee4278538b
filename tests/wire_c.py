"""The C agent's wire codec (testdriver/wire.c, sha256.c) built for this machine with gcc
and loaded with ctypes, so the Python reference (wskreplay/formats/agentwire.py) can be its
oracle: the same messages accepted and refused, the same handshake values and tags."""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

TESTDRIVER = Path(__file__).resolve().parent.parent / "testdriver"
SOURCES = (TESTDRIVER / "wire.c", TESTDRIVER / "sha256.c")
FLAGS = ("-O1", "-g", "-std=c11", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC")


@functools.cache
def library() -> ctypes.CDLL:
    digest = hashlib.sha256()
    for path in SOURCES + (TESTDRIVER / "wire.h", TESTDRIVER / "sha256.h"):
        digest.update(path.read_bytes())
    digest.update(" ".join(FLAGS).encode())
    lib = Path(tempfile.gettempdir()) / f"wskreplay-wire-{digest.hexdigest()[:16]}.so"
    if not lib.exists():
        partial = lib.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run(
            ["gcc", *FLAGS, *map(str, SOURCES), "-o", str(partial)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        partial.replace(lib)
    c = ctypes.CDLL(str(lib))
    c.wire_check.argtypes = [
        ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.POINTER(ctypes.c_char_p)
    ]  # fmt: skip
    c.wire_frame_tag.argtypes = [
        ctypes.c_char_p, ctypes.c_char, ctypes.c_uint64, ctypes.c_char_p, ctypes.c_size_t,
        ctypes.c_char_p,
    ]  # fmt: skip
    for name in ("wire_agent_proof", "wire_session_key"):
        getattr(c, name).argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                                     ctypes.c_char_p, ctypes.c_char_p]  # fmt: skip
    return c


def check(body: bytes, limit: int) -> str | None:
    """None when the C decoder accepts ``body`` as a message, else its reason."""
    why = ctypes.c_char_p()
    if library().wire_check(body, len(body), limit, ctypes.byref(why)) == 0:
        return None
    return (why.value or b"?").decode()


def frame_tag(key: bytes, side: bytes, sequence: int, body: bytes) -> bytes:
    out = ctypes.create_string_buffer(32)
    library().wire_frame_tag(key, side, sequence, body, len(body), out)
    return out.raw


def handshake_values(token: str, client_nonce: bytes, agent_nonce: bytes) -> tuple[bytes, bytes]:
    """(the agent's proof, the session key) as the C agent computes them."""
    proof, key = ctypes.create_string_buffer(32), ctypes.create_string_buffer(32)
    raw = token.encode()
    library().wire_agent_proof(raw, len(raw), client_nonce, agent_nonce, proof)
    library().wire_session_key(raw, len(raw), client_nonce, agent_nonce, key)
    return proof.raw, key.raw
