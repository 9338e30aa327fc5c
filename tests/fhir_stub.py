"""A programmable FHIR endpoint on loopback, for the failure modes a real server rarely shows on
demand (slow answers, 5xx, non-FHIR bodies, next links to another host, answers dripped a byte
at a time, huge or compressed bodies). The integration tests against a real FHIR server use
sekmet-fhir (tests/fhir/test_fhir_fetch.py)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """An answer written piece by piece, `pause_s` apart, for as long as `chunks` lasts and the
    client listens: with `headers` exactly as given (no Content-Length unless there: the body
    then ends with the connection, or is chunked with `chunked`); with `headers=None`, `chunks`
    are the whole raw answer, status line and headers included."""

    chunks: Iterable[bytes]
    headers: dict[str, str] | None = field(default_factory=dict)
    status: int = 200
    pause_s: float = 0.0
    chunked: bool = False


# A route answers (status, content type, body), or a Reply, for a request path (with its query
# string).
Route = Callable[[str], tuple[int, str, bytes] | Reply]


def fhir(body: dict[str, Any], status: int = 200) -> tuple[int, str, bytes]:
    return status, "application/fhir+json", json.dumps(body).encode()


def bundle(resources: list[dict[str, Any]], next_url: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }
    if next_url:
        result["link"] = [{"relation": "next", "url": next_url}]
    return result


@dataclass
class Seen:
    path: str
    headers: dict[str, str]


@dataclass
class StubFhirServer:
    """Serves `routes` (first matching path prefix wins); records every request it gets."""

    routes: dict[str, Route] = field(default_factory=dict)
    delay_s: float = 0.0
    seen: list[Seen] = field(default_factory=list)
    sent: int = 0  # bytes of Reply bodies written (and accepted by the socket)

    def __post_init__(self) -> None:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.seen.append(Seen(self.path, dict(self.headers)))
                if stub.delay_s:
                    time.sleep(stub.delay_s)
                for prefix, route in stub.routes.items():
                    if self.path.startswith(prefix):
                        answer = route(self.path)
                        break
                else:
                    answer = fhir({"resourceType": "OperationOutcome"}, 404)
                if isinstance(answer, Reply):
                    self._reply(answer)
                    return
                status, ctype, body = answer
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _reply(self, reply: Reply) -> None:
                if reply.headers is not None:
                    if reply.chunked:
                        self.protocol_version = "HTTP/1.1"
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    if reply.chunked:
                        self.send_header("Transfer-Encoding", "chunked")
                        self.send_header("Connection", "close")
                    self.end_headers()
                try:
                    for chunk in reply.chunks:
                        if stub.stopping.is_set():
                            return
                        framed = b"%x\r\n%s\r\n" % (len(chunk), chunk) if reply.chunked else chunk
                        self.wfile.write(framed)
                        self.wfile.flush()
                        with stub.lock:
                            stub.sent += len(chunk)
                        if reply.pause_s:
                            time.sleep(reply.pause_s)
                    if reply.chunked:
                        self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    pass  # the client hung up: what these answers are for

            def log_message(self, *_args: Any) -> None:
                pass

        self.lock = threading.Lock()
        self.stopping = threading.Event()  # ends the replies still being written
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/fhir"

    def __enter__(self) -> StubFhirServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
