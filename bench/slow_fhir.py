"""A deliberately slow FHIR server on loopback: every GET answers an empty searchset Bundle,
but only after ``delay`` seconds. The benchmark points the service's fallback fetch at it to
show that a call ends within the fetch deadline whatever the EHR's server does.

    python -m bench.slow_fhir --port 8091 --delay 3
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

EMPTY_BUNDLE = json.dumps({"resourceType": "Bundle", "type": "searchset", "total": 0}).encode()


class SlowHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.server.count()  # type: ignore[attr-defined]
        time.sleep(self.server.delay)  # type: ignore[attr-defined]
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(EMPTY_BUNDLE)))
            self.end_headers()
            self.wfile.write(EMPTY_BUNDLE)
        except OSError:
            pass  # the client gave up long ago: that is the point

    def log_message(self, format: str, *args: object) -> None:
        pass


class SlowFhirServer(ThreadingHTTPServer):
    """A threaded loopback server whose every answer takes ``delay`` seconds."""

    daemon_threads = True

    def __init__(self, delay: float, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), SlowHandler)
        self.delay = delay
        self.requests = 0  # queries received
        self._lock = threading.Lock()

    def count(self) -> None:
        with self._lock:
            self.requests += 1

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/fhir"

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a closed connection is expected here

    def start(self) -> SlowFhirServer:
        threading.Thread(target=self.serve_forever, name="slow-fhir", daemon=True).start()
        return self


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.slow_fhir", description=__doc__)
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--delay", type=float, default=3.0, help="seconds before each answer")
    args = parser.parse_args()
    server = SlowFhirServer(args.delay, args.port)
    print(f"slow FHIR server on {server.base_url} (answers after {args.delay} s)")
    server.serve_forever()


if __name__ == "__main__":
    main()
