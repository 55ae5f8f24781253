"""SIGTERM and SIGINT turned into an exception in the stage's code, so that its run ends as KILLED."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator


class StageKilled(BaseException):
    """SIGTERM or SIGINT, raised in the stage's code so that its run ends as KILLED."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def killed_on_signals() -> Iterator[None]:
    """While open, SIGTERM and SIGINT raise StageKilled; a second signal meets the previous handler."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread gets signals
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)

    received = []

    def on_signal(signum, frame):
        restore()
        received.append(signum)
        raise StageKilled(signum)

    for signum in previous:
        signal.signal(signum, on_signal)
    try:
        yield
    finally:
        restore()
    if received:  # raised where Python swallows exceptions (a __del__, a weakref callback): the stage went on
        raise StageKilled(received[0])
