"""The C agent's wire codec (testdriver/wire.c) with the Python reference as its oracle:
generated messages and their mutations are accepted or refused alike, the limits of
docs/agent-protocol.md hold at their edges in both, and the handshake values and frame
tags are byte for byte the reference's (the fuzz harness ``agent-wire-c`` runs the same
comparison on arbitrary bytes)."""

from __future__ import annotations

import os

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import wire_c
from wskreplay.formats import agentwire as protocol

LIMIT = protocol.MAX_FRAME

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.binary(max_size=40)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=6)
    | st.dictionaries(st.text(max_size=8) | st.binary(max_size=8) | st.integers(-1000, 1000),
                      inner,
                      max_size=6),
    max_leaves=30,
)  # fmt: skip
messages = st.dictionaries(st.text(max_size=8), values, max_size=6).map(
    lambda m: {**m, "op": m.get("op", "send")}
) | values.map(lambda v: {"op": v})


def python_accepts(body: bytes) -> bool:
    try:
        protocol.decode(body, LIMIT)
    except protocol.ProtocolError:
        return False
    return True


def same_verdict(body: bytes) -> None:
    assert (wire_c.check(body, LIMIT) is None) == python_accepts(body), (
        body[:64].hex(), wire_c.check(body, LIMIT)
    )  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(messages | values)
def test_generated_messages(value):
    same_verdict(msgpack.packb(value, use_bin_type=True))


@settings(max_examples=400, deadline=None)
@given(messages, st.data())
def test_mutated_messages(value, data):
    body = bytearray(msgpack.packb(value, use_bin_type=True))
    how = data.draw(st.sampled_from(["flip", "truncate", "append", "insert"]))
    at = data.draw(st.integers(0, len(body)))
    byte = data.draw(st.integers(0, 255))
    if how == "flip" and at < len(body):
        body[at] = byte
    elif how == "truncate":
        del body[at:]
    elif how == "append":
        body += bytes([byte])
    else:
        body.insert(at, byte)
    same_verdict(bytes(body))


def nested(depth: int) -> bytes:
    return b"\x82\xa2op\xa1x\xa1a" + b"\x91" * depth + b"\xc0"


def array(items: int) -> bytes:
    if items < 65536:
        head = b"\xdc" + items.to_bytes(2, "big")
    else:
        head = b"\xdd" + items.to_bytes(4, "big")
    return b"\x82\xa2op\xa1x\xa1a" + head + b"\xc0" * items


def map_of(entries: int) -> bytes:
    body = b"\xde" + (entries + 1).to_bytes(2, "big") + b"\xa2op\xa1x"
    return body + b"".join(b"\xa5k%04d" % i + b"\xc0" for i in range(entries))


@pytest.mark.parametrize(
    "body, accepted",
    [
        (nested(1023), True),
        (nested(1024), False),
        (array(65536), True),
        (array(65537), False),
        (map_of(1023), True),
        (map_of(1024), False),
        (b"\x81\xa2op\xa3\xed\xa0\x80", False),  # a surrogate in a string
        (b"\x81\xa2op\xa3\xc0\xaf\x80", False),  # an overlong encoding
        (b"\x82\xa2op\xa1x\x01\x02", False),  # an integer map key
        (b"\x82\xa2op\xa1x\xc4\x01a\x02", True),  # a binary map key
        (b"\x81\xc4\x02op\xa1x", False),  # 'op' as binary
        (b"\x82\xa2op\x01\xa2op\xa1x", True),  # the last duplicate key wins
        (b"\x81\xa2op\xd4\x01\x02", False),  # an extension type
        (b"\x81\xa2op\xc1", False),  # the never-used byte
        (b"\x81\xa2op\xa1x\x00", False),  # data after the message
        (b"\x81\xa2op\xdb\xff\xff\xff\xff", False),  # a string longer than the frame
    ],
    ids=lambda v: v if isinstance(v, bool) else None,
)
def test_the_limits_at_their_edges(body, accepted):
    assert python_accepts(body) is accepted
    assert (wire_c.check(body, LIMIT) is None) is accepted


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=16, max_size=200), st.binary(min_size=32, max_size=32),
       st.binary(min_size=32, max_size=32), st.binary(max_size=5000),
       st.integers(0, (1 << 64) - 1), st.sampled_from([b"A", b"C"]))  # fmt: skip
def test_handshake_values_and_tags_are_the_references(token, cn, an, body, seq, side):
    proof, key = wire_c.handshake_values(token, cn, an)
    assert proof == protocol.agent_proof(token, cn, an)
    assert key == protocol.session_key(token, cn, an)
    assert wire_c.frame_tag(key, side, seq, body) == protocol.frame_tag(key, side, seq, body)


def test_a_long_token_is_hashed_first_as_hmac_says():
    token = os.urandom(50).hex()
    assert wire_c.handshake_values(token, bytes(32), bytes(32))[0] == protocol.agent_proof(
        token, bytes(32), bytes(32)
    )
