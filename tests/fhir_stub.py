"""A programmable FHIR endpoint on loopback, for the failure modes a real server rarely shows on
demand (slow answers, 5xx, non-FHIR bodies, next links to another host). The integration tests
against a real FHIR server use sekmet-fhir (tests/fhir/test_fhir_fetch.py)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# A route answers (status, content type, body) for a request path (with its query string).
Route = Callable[[str], tuple[int, str, bytes]]


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

    def __post_init__(self) -> None:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.seen.append(Seen(self.path, dict(self.headers)))
                if stub.delay_s:
                    time.sleep(stub.delay_s)
                for prefix, route in stub.routes.items():
                    if self.path.startswith(prefix):
                        status, ctype, body = route(self.path)
                        break
                else:
                    status, ctype, body = fhir({"resourceType": "OperationOutcome"}, 404)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

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
        self._server.shutdown()
        self._server.server_close()
