"""Background: a function run in a thread of its own, its value or its exception handed
to the caller, the thread over once the caller has it (a process may fork after)."""

from __future__ import annotations

import threading

import pytest

from wskreplay.errors import InputError
from wskreplay.threads import Background


def test_the_value_comes_back_from_another_thread():
    seen = []

    def work(a, b):
        seen.append(threading.get_ident())
        return a + b

    job = Background(work, 2, 3)
    assert job.result() == 5
    assert seen and seen[0] != threading.get_ident()
    assert not job._thread.is_alive()


def test_the_exception_is_raised_in_the_caller():
    def fail():
        raise InputError("t.wskt", "at offset 8: expected a block")

    job = Background(fail)
    with pytest.raises(InputError, match="expected a block"):
        job.result()
    assert not job._thread.is_alive()


def test_the_caller_works_meanwhile():
    started, release = threading.Event(), threading.Event()

    def wait_for_the_caller():
        started.set()
        return release.wait(10)

    job = Background(wait_for_the_caller)
    assert started.wait(10)
    release.set()
    assert job.result() is True
