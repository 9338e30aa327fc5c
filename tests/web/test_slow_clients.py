"""Slow clients cost bounded resources, and broken framing gets a JSON answer (issue 15, points
2 and 5), on the server the service really runs: `calcinosis-cds serve` (gunicorn with
`cds_service.serving.BoundedThreadWorker`), one worker of two threads and a one-second client
timeout, so that two slow clients are enough to hold every thread without the deadline.

Figures (16 slow clients against the default 2 workers x 32 threads) are `make chaos`'s."""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterator

import httpx
import pytest

from cds_service.serving import RequestDeadlines, read_deadline_passed
from tests.conftest import ROOT, SERVICE_URL, free_port, load_request, start_server, wait_until_up

PATIENT_VIEW = SERVICE_URL
SMALL = ("--workers", "1", "--threads", "2")
# Long enough for a healthy call on a loaded machine; far shorter than "never".
WAIT_S = 30


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    folder = tmp_path_factory.mktemp("slow-clients")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDS_", "GUNICORN"))}
    env.update(
        DATABASE_URL=f"sqlite:///{folder / 'store.sqlite3'}",
        CDS_CLIENT_TIMEOUT_SECONDS="1",
        CDS_MAX_BODY_BYTES=str(64 * 1024),
        LOG_LEVEL="WARNING",
    )
    log = folder / "serve.log"
    command = [sys.executable, "-m", "cds_service", "serve", "--port", str(port), *SMALL]
    process = start_server(command, env, log, cwd=ROOT)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/livez", process, log)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=15)


def raw_exchange(port: int, data: bytes, *, close_writing: bool = False) -> bytes:
    """Send `data` on a new connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        sock.sendall(data)
        if close_writing:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def head(length: str | None = None, chunked: bool = False) -> bytes:
    lines = [
        f"POST {PATIENT_VIEW} HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
    ]
    lines += [f"Content-Length: {length}"] if length else []
    lines += ["Transfer-Encoding: chunked"] if chunked else []
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status_and_json(answer: bytes) -> tuple[int, dict]:
    header, _, body = answer.partition(b"\r\n\r\n")
    return int(header.split()[1]), json.loads(body)


def test_a_half_sent_body_is_cut_with_a_json_408(server: int) -> None:
    status, body = status_and_json(raw_exchange(server, head("2000") + b'{"hook": '))
    assert status == 408
    assert body["issue"][0]["code"] == "timeout"
    assert body["issue"][0]["expression"] == ["$"]


def test_half_sent_headers_are_disconnected(server: int) -> None:
    assert raw_exchange(server, f"POST {PATIENT_VIEW} HTTP/1.1\r\nHost: x\r\n".encode()) == b""


def test_slow_clients_on_every_thread_do_not_stop_a_healthy_call(server: int) -> None:
    # Three clients that stop half-way, on a worker of two threads: without the deadline they
    # hold both threads for as long as they stay connected, and the call below never answers.
    stalled = [socket.create_connection(("127.0.0.1", server)) for _ in range(3)]
    try:
        for sock in stalled:
            sock.sendall(head("2000") + b"{")
        request = load_request("01-ssc-calcinosis")
        answer = httpx.post(
            f"http://127.0.0.1:{server}{PATIENT_VIEW}", json=request, timeout=WAIT_S
        )
        assert answer.status_code == 200
        assert "cards" in answer.json()
    finally:
        for sock in stalled:
            sock.close()


def test_a_malformed_chunk_is_a_json_400(server: int) -> None:
    status, body = status_and_json(
        raw_exchange(server, head(chunked=True) + b"zz\r\n{}\r\n0\r\n\r\n")
    )
    assert status == 400
    assert "chunked encoding is malformed" in body["issue"][0]["diagnostics"]


def test_a_chunked_body_over_the_limit_is_413_not_cut(server: int) -> None:
    piece = b" " * 16384
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(5)) + b"0\r\n\r\n"
    status, body = status_and_json(raw_exchange(server, head(chunked=True) + chunks))
    assert status == 413
    assert body["issue"][0]["code"] == "too-long"


def test_a_body_shorter_than_announced_is_a_json_400(server: int) -> None:
    answer = raw_exchange(server, head("2000") + b'{"hook": "x"}', close_writing=True)
    status, body = status_and_json(answer)
    assert status == 400
    assert "ended before its announced length" in body["issue"][0]["diagnostics"]


# ----------------------------------------------------------------------------- the deadlines


class _Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock


def test_a_deadline_ends_a_blocked_read_and_marks_the_socket() -> None:
    deadlines = RequestDeadlines(0.2)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.settimeout(WAIT_S)  # what a test waits at most, not what it measures
        deadlines.arm(_Conn(ours))
        assert ours.recv(10) == b""  # woken by the deadline, not by the peer
        assert read_deadline_passed({"gunicorn.socket": ours})
        theirs.settimeout(WAIT_S)
        ours.sendall(b"answer")  # writing still works: the 408 can go out
        assert theirs.recv(10) == b"answer"


def test_a_disarmed_deadline_never_fires() -> None:
    deadlines = RequestDeadlines(0.05)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert deadlines.disarm(deadlines.arm(_Conn(ours)))
        ours.settimeout(0.5)  # ten times the deadline: had it fired, recv would see the end
        with pytest.raises(TimeoutError):
            ours.recv(1)
        assert not read_deadline_passed({"gunicorn.socket": ours})
