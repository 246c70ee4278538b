"""NTSTATUS values seen on WSK send paths, with their symbolic names (mingw-w64 ntstatus.h)."""

from __future__ import annotations

from typing import Final

import numpy as np

STATUS_SUCCESS: Final = 0x00000000
STATUS_PENDING: Final = 0x00000103
STATUS_BUFFER_OVERFLOW: Final = 0x80000005
STATUS_UNSUCCESSFUL: Final = 0xC0000001
STATUS_INVALID_PARAMETER: Final = 0xC000000D
STATUS_INSUFFICIENT_RESOURCES: Final = 0xC000009A
STATUS_IO_TIMEOUT: Final = 0xC00000B5
STATUS_FILE_FORCED_CLOSED: Final = 0xC00000B6
STATUS_NOT_SUPPORTED: Final = 0xC00000BB
STATUS_CANCELLED: Final = 0xC0000120
STATUS_LOCAL_DISCONNECT: Final = 0xC000013B
STATUS_REMOTE_DISCONNECT: Final = 0xC000013C
STATUS_INVALID_DEVICE_STATE: Final = 0xC0000184
STATUS_CONNECTION_DISCONNECTED: Final = 0xC000020C
STATUS_CONNECTION_RESET: Final = 0xC000020D
STATUS_CONNECTION_REFUSED: Final = 0xC0000236
STATUS_GRACEFUL_DISCONNECT: Final = 0xC0000237
STATUS_NETWORK_UNREACHABLE: Final = 0xC000023C
STATUS_HOST_UNREACHABLE: Final = 0xC000023D
STATUS_CONNECTION_ABORTED: Final = 0xC0000241

NAMES: dict[int, str] = {
    value: name for name, value in globals().items() if name.startswith("STATUS_")
}
CODES: dict[str, int] = {name: value for value, name in NAMES.items()}


def name(code: int) -> str | None:
    """The symbolic name of ``code``, or None when it is not one wskreplay knows."""
    return NAMES.get(code)


def parse(text: str) -> int:
    """A status from its name (``STATUS_CONNECTION_RESET``) or number (``0xC000020D``);
    ValueError otherwise."""
    if text in CODES:
        return CODES[text]
    value = int(text, 0)
    if not 0 <= value < 1 << 32:
        raise ValueError(f"{text} is not a 32-bit status")
    return value


def hex_code(code: int) -> str:
    """``code`` as the 0x%08X string used in every JSON output."""
    return f"0x{code:08X}"


def describe(code: int) -> str:
    """``STATUS_PENDING (0x00000103)``, or the bare hex form for an unknown code."""
    known = NAMES.get(code)
    return f"{known} ({hex_code(code)})" if known else hex_code(code)


def is_success(code: int) -> bool:
    """NT_SUCCESS: severity success or informational (STATUS_PENDING included)."""
    return (code >> 30) in (0, 1)


def success_mask(codes: np.ndarray) -> np.ndarray:
    """NT_SUCCESS over an array of status codes."""
    return (np.asarray(codes).astype(np.int64) >> 30) & 3 <= 1
