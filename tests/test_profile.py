"""Transport profiles: shipped by name, by path, and every bad profile a one-line error."""

from __future__ import annotations

import re
from dataclasses import fields

import pytest

from wskreplay.errors import InputError
from wskreplay.replayer.profile import (
    PROFILES,
    SECTIONS,
    TransportProfile,
    load_profile,
    parse_profile,
)

from .conftest import REPO


def test_default_profile_by_name_and_by_path():
    by_name = load_profile("windows-tcpip")
    by_path = load_profile(str(PROFILES / "windows-tcpip.toml"))
    assert by_name == by_path
    assert by_name.send.supported_flags == ("WSK_FLAG_NODELAY",)
    assert by_name.completion.policy == "on-ack"
    assert by_name.tcp.mss == 1460


def test_every_setting_is_in_the_shipped_file_and_the_docs():
    """The shipped profile spells out every setting, and docs/emulator.md explains each."""
    text = (PROFILES / "windows-tcpip.toml").read_text()
    docs = (REPO / "docs" / "emulator.md").read_text()
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            assert re.search(rf"^{f.name} = ", text, re.M), (section, f.name)
            assert f"`{section}.{f.name}`" in docs, (section, f.name)


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("name = 1", "name must be a string"),
        ("colour = 'red'", "unknown key(s) ['colour']"),
        ("[send]\nflags = []", "[send] unknown key(s) ['flags']"),
        ("[tcp]\nmss = -5", "[tcp] mss must be a positive integer"),
        ("[tcp]\nnagle = 'yes'", "[tcp] nagle must be true or false"),
        ("[completion]\npolicy = 'whenever'", "[completion] policy must be one of"),
        ("[send]\nwrong_state_status = 'STATUS_OOPS'", "unknown NTSTATUS name 'STATUS_OOPS'"),
        ("[send]\nsupported_flags = ['WSK_FLAG_FAST']", "supported_flags must list names"),
        ("[send]\ncontrol_info_accepted = [[0]]", "[level, type] integer pairs"),
        ("[send\n", "not valid TOML"),
    ],
)
def test_bad_profiles_are_one_line_errors(text, what):
    with pytest.raises(InputError) as info:
        parse_profile(text, "custom.toml")
    message = str(info.value)
    assert message.startswith("custom.toml: ") and what in message and "\n" not in message


def test_unknown_profile_name_lists_the_shipped_ones():
    with pytest.raises(InputError, match="shipped: windows-tcpip"):
        load_profile("linux")


def test_a_partial_profile_takes_the_defaults(tmp_path):
    path = tmp_path / "fast-ack.toml"
    path.write_text("name = 'fast-ack'\n[completion]\npolicy = 'on-transmit'\n")
    profile = load_profile(str(path))
    assert isinstance(profile, TransportProfile) and profile.name == "fast-ack"
    assert profile.completion.policy == "on-transmit" and profile.tcp.mss == 1460
    assert profile.as_dict()["completion"]["policy"] == "on-transmit"
