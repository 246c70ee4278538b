"""CMSGHDR codec: x64 and x86 layouts from wsk-facts.md, bounded by the bytes present."""

from __future__ import annotations

import pytest

from wskreplay.errors import InputError
from wskreplay.formats import ntstatus, wsk


def test_x64_layout_matches_cmsg_space():
    msg = wsk.ControlMessage(wsk.IPPROTO_IP, 3, b"\x10\0\0\0\x01")
    buf = wsk.encode_cmsgs([msg, msg])
    # CMSG_LEN(5) = 16 + 5 = 21; CMSG_SPACE(5) = 16 + 8 = 24; next header at round8(21).
    assert len(buf) == 48
    assert int.from_bytes(buf[:8], "little") == 21
    assert wsk.decode_cmsgs(buf) == [msg, msg]


def test_x86_layout_has_12_byte_headers_and_4_byte_alignment():
    msg = wsk.ControlMessage(wsk.IPPROTO_IPV6, 50, b"\xaa" * 5)
    buf = wsk.encode_cmsgs([msg, msg], wsk.X86)
    assert len(buf) == 2 * (12 + 8)
    assert int.from_bytes(buf[:4], "little") == 17
    assert wsk.decode_cmsgs(buf, wsk.X86) == [msg, msg]


@pytest.mark.parametrize(
    "buf, what",
    [
        (b"\x01\x02\x03", "CMSGHDR truncated"),
        ((40).to_bytes(8, "little") + b"\0" * 8, "cmsg_len 40 outside"),
        ((4).to_bytes(8, "little") + b"\0" * 8, "cmsg_len 4 outside"),
    ],
)
def test_malformed_control_info(buf, what):
    with pytest.raises(InputError, match=what):
        wsk.decode_cmsgs(buf, path="call 7")


def test_ntstatus_names_and_success():
    assert ntstatus.describe(0x103) == "STATUS_PENDING (0x00000103)"
    assert ntstatus.name(0xC000020D) == "STATUS_CONNECTION_RESET"
    assert ntstatus.describe(0xDEADBEEF) == "0xDEADBEEF"
    assert ntstatus.is_success(ntstatus.STATUS_PENDING)
    assert not ntstatus.is_success(ntstatus.STATUS_FILE_FORCED_CLOSED)
