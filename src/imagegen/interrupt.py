"""Stopping long work cleanly: the first Ctrl-C (SIGINT) or SIGTERM (what batch schedulers and ``kill`` send
before they kill a job) only asks the loop in progress to stop at its next safe point, where it saves what it
has (a checkpoint, the rows computed so far) and raises KeyboardInterrupt; a second Ctrl-C stops at once."""

from __future__ import annotations

import signal
import sys
import threading


class StopRequest:
    """A context manager whose ``signal`` is None until SIGINT or SIGTERM arrives, then the signal's name.

    ``then`` finishes the message printed at the first signal ("stopping after this step and saving a
    checkpoint"). Handlers can only be installed from the main thread; elsewhere this does nothing. A signal
    the process was started ignoring (SIGINT of a job started with ``&`` by a script) stays ignored."""

    def __init__(self, then: str) -> None:
        self.then = then
        self.signal: str | None = None
        self._previous: dict = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt  # asked twice: the user means now
        self.signal = signal.Signals(signum).name
        print(f"\n{self.signal}: {self.then} (Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
