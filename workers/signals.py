"""One stop for the SIGTERMs a worker process gets at once.

A SIGTERM to the worker's whole process group (`kill -TERM -- -PGID`, systemd's default KillMode=control-group)
reaches dramatiq's worker process twice: from the kill, and forwarded by dramatiq's main process a moment later.
dramatiq's handler (`dramatiq.cli.worker_process`) takes the first as "stop" and the second as "kill": sys.exit in
the main thread, in the middle of `worker.stop`, so the jobs in hand were neither finished nor given back. Here the
signals that come within STOP_SIGNAL_WINDOW_SECONDS of the first are that same stop request; one that comes later
is a real second signal and reaches dramatiq's handler (which kills the process).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger("marketplace.jobs")

STOP_SIGNAL_WINDOW_SECONDS = 5.0

_Handler = Callable[[int, FrameType | None], Any]


class _FirstStop:
    """When the first stop signal came (monotonic seconds), shared by the signals coalesced."""

    def __init__(self) -> None:
        self.at: float | None = None


class _Coalesced:
    def __init__(self, handler: _Handler, first: _FirstStop, window: float) -> None:
        self.handler = handler
        self.first = first
        self.window = window

    def __call__(self, signum: int, frame: FrameType | None) -> Any:
        now = time.monotonic()
        if self.first.at is not None and now - self.first.at < self.window:
            log.info(
                "signal %s %.1f s after the first: the same stop request (send it again after %.0f s to kill)",
                signal.Signals(signum).name, now - self.first.at, self.window,
            )
            return None
        if self.first.at is None:
            self.first.at = now
        return self.handler(signum, frame)


def coalesce_stop_signals(window: float = STOP_SIGNAL_WINDOW_SECONDS, *, owner: str = "dramatiq.cli") -> None:
    """Wrap the process's SIGTERM and SIGHUP handlers (dramatiq's worker process sets them before it imports the
    broker module, `workers.worker_entry`, which calls this) so that those arriving within `window` seconds of the
    first are one. Only handlers defined in the module `owner` (dramatiq's own) are wrapped: a process that imports
    the broker module with handlers of its own (a test, a tool) keeps them as they are. Does nothing outside the main
    thread or where no handler of Python's is set."""
    if threading.current_thread() is not threading.main_thread():
        return
    first = _FirstStop()
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is None:
            continue
        handler = signal.getsignal(signum)
        if not callable(handler) or isinstance(handler, _Coalesced) or getattr(handler, "__module__", None) != owner:
            continue
        signal.signal(signum, _Coalesced(handler, first, window))
