"""The TCP proxy of the fault battery (bench/chaos.py, `make chaos`) in its three modes, in front
of an echo server on loopback: passing, stopped (refused, reset) and black-holed (accepted, no
answer, then resumed). The waits are socket timeouts, not timing assertions."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from bench.chaos import TcpProxy

SHORT = 0.3  # how long a socket waits for what the black hole never delivers


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            while data := self.request.recv(4096):
                self.request.sendall(data)
        except ConnectionResetError:
            pass  # what the stopped proxy does


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}).start()
    try:
        with TcpProxy(("127.0.0.1", server.server_address[1])) as running:
            yield running
    finally:
        server.shutdown()
        server.server_close()


def _connect(proxy: TcpProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    sock.settimeout(5)
    return sock


def _echo(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    return sock.recv(4096)


def test_pass_forwards_both_ways(proxy: TcpProxy) -> None:
    with _connect(proxy) as sock:
        assert _echo(sock, b"ping") == b"ping"
        assert _echo(sock, b"again") == b"again"


def test_stopped_refuses_new_connections_and_resets_open_ones(proxy: TcpProxy) -> None:
    sock = _connect(proxy)
    assert _echo(sock, b"before") == b"before"
    proxy.set_mode(TcpProxy.STOPPED)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=5).close()
    try:
        assert sock.recv(4096) == b""  # the open one is gone (reset or closed)
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    proxy.set_mode(TcpProxy.PASS)  # listening again, on the same port
    with _connect(proxy) as fresh:
        assert _echo(fresh, b"after") == b"after"


def test_black_hole_accepts_but_stalls_until_passing_again(proxy: TcpProxy) -> None:
    with _connect(proxy) as open_one:
        assert _echo(open_one, b"before") == b"before"
        proxy.set_mode(TcpProxy.BLACK_HOLE)
        new_one = _connect(proxy)  # accepted...
        with new_one:
            for sock, data in ((open_one, b"stalled"), (new_one, b"held")):
                sock.settimeout(SHORT)
                sock.sendall(data)
                with pytest.raises(TimeoutError):  # ...but nothing comes back
                    sock.recv(4096)
            proxy.set_mode(TcpProxy.PASS)  # the partition heals: nothing was lost
            for sock, data in ((open_one, b"stalled"), (new_one, b"held")):
                sock.settimeout(5)
                assert sock.recv(4096) == data
