"""The gunicorn worker of the service: threads that a slow client cannot hold.

gunicorn's ``gthread`` worker already parks a connection that has sent nothing on its poller,
without a thread; but once a client has started a request, a thread reads it with blocking
calls, and a client that sends half a body and stops holds that thread for as long as it likes
(issue 15: two such connections made a healthy call wait 35 s). `BoundedThreadWorker` gives
each request a deadline, CDS_CLIENT_TIMEOUT_SECONDS from the moment a thread takes it: a
request not read by then has its socket shut for reading, which wakes the blocked read at once
(it sees the end of the stream). The service then answers 408 if it was reading the body (see
`read_deadline_passed`) and closes the connection; a client still sending its headers is simply
disconnected. Only reading is shut: a request read in time still gets its answer (what the
service does after reading is bounded by its own deadlines: FHIR fetch, store), and its
connection is then closed rather than kept alive.

So a slow client costs a thread for at most the client timeout, and a worker runs more
threads than the few clients that can do that at once (``threads`` in gunicorn_conf). A
buffering reverse proxy in front (README, "Deployment") takes slow clients off the service
altogether.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
import weakref
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

from cds_service.settings import Settings

# Sockets whose request was cut by its deadline: the app reads this to answer 408, not 400.
_cut: weakref.WeakSet[socket.socket] = weakref.WeakSet()


def read_deadline_passed(environ: dict[str, Any]) -> bool:
    """Whether this request's client ran out of time to send it (its socket was shut)."""
    sock = environ.get("gunicorn.socket")
    return sock is not None and sock in _cut


class RequestDeadlines:
    """One thread that shuts the reading side of sockets whose request is past its deadline."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._heap: list[tuple[float, int]] = []
        self._armed: dict[int, Any] = {}  # token -> connection (with a .sock)
        self._tokens = itertools.count()
        self._wake = threading.Condition()
        threading.Thread(target=self._run, name="request-deadlines", daemon=True).start()

    def arm(self, conn: Any) -> int:
        """Start the clock of a request on `conn`; the token disarms it."""
        token = next(self._tokens)
        with self._wake:
            self._armed[token] = conn
            heapq.heappush(self._heap, (time.monotonic() + self.timeout_s, token))
            self._wake.notify()
        return token

    def disarm(self, token: int) -> bool:
        """Stop the clock; False when the deadline had already cut the request."""
        with self._wake:
            return self._armed.pop(token, None) is not None

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._heap and self._heap[0][1] not in self._armed:
                    heapq.heappop(self._heap)  # disarmed in time
                if not self._heap:
                    self._wake.wait()
                    continue
                due, token = self._heap[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._wake.wait(wait)
                    continue
                heapq.heappop(self._heap)
                conn = self._armed.pop(token)
            _shut_reading(conn.sock)


def _shut_reading(sock: socket.socket) -> None:
    """End the stream for whoever reads `sock`; writing still works, so an answer can go out.
    (The plain socket's method: an SSL socket's own shutdown would drop its TLS state.)"""
    _cut.add(sock)
    with contextlib.suppress(OSError):  # already closed by the client or the worker
        socket.socket.shutdown(sock, socket.SHUT_RD)


class BoundedThreadWorker(ThreadWorker):
    """gunicorn's gthread worker with a deadline on reading each request."""

    def init_process(self) -> None:
        timeout = Settings.from_env().client_timeout_seconds
        self.deadlines = RequestDeadlines(float(timeout))
        super().init_process()

    def handle(self, conn: Any) -> Any:
        token = self.deadlines.arm(conn)
        try:
            result = super().handle(conn)
        finally:
            in_time = self.deadlines.disarm(token)
        return result if in_time else False  # a cut connection is never kept alive
