"""Work started in a thread of its own while the caller goes on with other work."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Background(Generic[T]):
    """``fn(*args)`` in a thread of its own; :meth:`result` waits for it and returns its
    value or raises its exception. Worth it where ``fn`` spends its time in numpy, whose
    sorts and gathers let go of the GIL: the caller's own work runs meanwhile. The thread
    has ended once :meth:`result` has returned, so a process may fork after it."""

    def __init__(self, fn: Callable[..., T], *args: Any) -> None:
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, args), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[..., T], args: tuple[Any, ...]) -> None:
        try:
            self._value = fn(*args)
        except BaseException as exc:  # handed to the caller by result()
            self._error = exc

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]
