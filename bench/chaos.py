"""The fault battery of issue 15 (``make chaos``): the service under the faults it must survive.

Every fault is made here, on loopback (127.0.0.1, free ports), by this script: slow clients,
FHIR servers that drip, answer too much or a gzip bomb, a database behind a TCP proxy the script
stops or black-holes (never the machine's PostgreSQL itself), a worker killed. Each scenario
starts its own service (``calcinosis-cds serve``, 2 workers) and stops everything it started
in ``finally`` blocks; each has its own time limit, and the whole run one.

    S1  16 slow clients hold connections open: healthy calls still answer in < 1 s
    S2  a FHIR server dripping 1 byte every 0.3 s: the calls end at the fetch deadline, and
        calls to a healthy FHIR server answer normally right after
    S3  a 50 MB Bundle and a gzip bomb from the FHIR server: 412 within the deadline, and
        each worker's memory grows by < 100 MB
    S4  the database stopped (connections refused) and
    S5  the database black-holed (accepted, nothing answered), with JWT on: cards in < 1.5 s,
        feedback 503 + Retry-After, then accepted once the database is back; a worker
        SIGKILLed meanwhile is replaced and answers
    S6  10,000 calls over two days, then ``calcinosis-cds prune`` with a retention of one day:
        the tables keep only the last day

    python -m bench.chaos                   # all scenarios, the table on stdout
    python -m bench.chaos --only S1,S3      # some of them
    python -m bench.chaos --write-readme    # also write the table into README.md

Exit status 1 when a criterion fails. PostgreSQL (S4, S5, S6) is the one named by
``--postgres-url`` (default: TEST_POSTGRES_URL, else 127.0.0.1:5432/test), in a private schema
made and dropped by the script; when it does not answer those scenarios are skipped (S6 then
runs on SQLite). The services run with a 2 GiB data-size limit (``ulimit -d``) so that a
service that does read a bomb fails alone instead of taking the machine's memory.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import re
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.report import README, machine_facts, say, write_readme

ROOT = Path(__file__).resolve().parents[1]
MARKER_START = "<!-- chaos:start -->"
MARKER_END = "<!-- chaos:end -->"
FIXTURES = ROOT / "fixtures"
PATIENT_VIEW = "/cds-services/calcinosis-patient-view"
ORDER_SELECT = "/cds-services/calcinosis-order-select"
FEEDBACK = f"{PATIENT_VIEW}/feedback"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
LOOPBACK = "127.0.0.1"

WORKERS = 2
FHIR_DEADLINE_MS = 1200  # CDS_FHIR_DEADLINE_MS of every service here
CLIENT_TIMEOUT_S = 10  # CDS_CLIENT_TIMEOUT_SECONDS (its default): time a client has to send
DEADLINE_MARGIN_S = 0.5  # what "within the deadline" may add: answer, scheduling
DATA_LIMIT_KIB = 2 * 1024 * 1024  # ulimit -d of the services: a bomb never eats the machine
RUN_BUDGET_S = 300.0  # the whole run: a scenario gets at most what is left of it
# Settings the services must not inherit from the shell running this script.
INHERITED_OUT = ("DATABASE_URL", "LOG_LEVEL", "LOG_FORMAT", "PORT", "WEB_CONCURRENCY")
INHERITED_OUT += ("GUNICORN_CMD_ARGS", "PROMETHEUS_MULTIPROC_DIR", "HOST")
HASH_KEY = "chaos-" + uuid.uuid4().hex * 2
ISSUER = "https://ehr.chaos.example"
PUBLIC_BASE_URL = "https://cds.chaos.example"
KID = "chaos-k1"

# The fixtures the scenarios send (they give cards on any date: renal alerts, synthesis).
CARD_FIXTURES = ("02-aluminium-egfr-22", "05-aluminium-creatinine-umol", "01-ssc-calcinosis")
SELECT_FIXTURE = "21-select-aluminium-egfr-22"


# ----------------------------------------------------------------------------- results


@dataclass
class Check:
    """One row of the table: a criterion, what was measured, and its result (pass, FAIL,
    SKIPPED or info, the last for figures the issue asks to report without a bound)."""

    scenario: str
    criterion: str
    measured: str
    result: str

    @classmethod
    def of(cls, scenario: str, criterion: str, measured: str, ok: bool) -> Check:
        return cls(scenario, criterion, measured, "pass" if ok else "FAIL")


class Skip(Exception):
    """A scenario that cannot run here; the message says why."""


def table(checks: Sequence[Check]) -> str:
    shown = {"pass": "pass", "FAIL": "**FAIL**", "SKIPPED": "skipped", "info": "—"}
    lines = ["| scenario | criterion | measured | result |", "|---|---|---|---|"]
    for c in checks:
        cells = (c.scenario, c.criterion, c.measured, shown.get(c.result, c.result))
        lines.append("| " + " | ".join(x.replace("|", "/") for x in cells) + " |")
    return "\n".join(lines)


def seconds(value: float) -> str:
    return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"


def spread(values: Sequence[float]) -> str:
    """'max 0.31 s, median 0.05 s' of some durations."""
    if not values:
        return "none"
    return f"max {seconds(max(values))}, median {seconds(statistics.median(values))}"


def span(values: Sequence[float]) -> str:
    lo, hi = min(values), max(values)
    return seconds(lo) if hi - lo < 0.01 else f"{seconds(lo)[:-2]}–{seconds(hi)}"


def tally(outcomes: Sequence[str]) -> str:
    """'3 × HTTP 200, 1 × timed out'."""
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome] = counts.get(outcome, 0) + 1
    return ", ".join(f"{n:,} × {what}" for what, n in counts.items())


# ----------------------------------------------------------------------------- HTTP client


@dataclass
class Answer:
    """What one HTTP call got (status 0: no answer, `error` says why) and how long it took."""

    status: int
    seconds: float
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    error: str = ""

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def cards(self) -> list[dict[str, Any]]:
        data = self.json()
        found = data.get("cards") if isinstance(data, dict) else None
        return found if isinstance(found, list) else []

    @property
    def with_cards(self) -> bool:
        return self.status == 200 and bool(self.cards)

    def describe(self) -> str:
        if not self.status:
            return self.error
        return f"HTTP {self.status}" + ("" if self.status != 200 or self.cards else " no card")


def call(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> Answer:
    sent = {"Content-Type": "application/json"} if body is not None else {}
    sent |= headers or {}
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    started = time.monotonic()
    try:
        connection.request(method, path, body=body, headers=sent)
        response = connection.getresponse()
        data = response.read()
        return Answer(
            response.status, time.monotonic() - started, data, dict(response.getheaders())
        )
    except TimeoutError:
        return Answer(0, time.monotonic() - started, error="timed out")
    except ConnectionRefusedError:
        return Answer(0, time.monotonic() - started, error="connection refused")
    except (OSError, http.client.HTTPException) as exc:
        return Answer(0, time.monotonic() - started, error=f"failed ({type(exc).__name__})")
    finally:
        connection.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def utc_stamp(when: datetime | None = None) -> str:
    return (when or datetime.now(UTC)).isoformat(timespec="seconds").replace("+00:00", "Z")


# ----------------------------------------------------------------------------- fixtures

_PID = "chaos-patient-id"  # placeholders in a fixture's text
_HOOK_INSTANCE = "chaos-hook-instance"


class Fixture:
    """A fixture request whose patient id (and hookInstance) each call sets anew, so that
    every call is a new patient: no snooze or repeat rule hides its cards."""

    def __init__(self, name: str, hook: str = "patient-view") -> None:
        request = json.loads((FIXTURES / hook / f"{name}.request.json").read_text("utf-8"))
        self.name = name
        self.request = request
        self.patient_id = request["context"]["patientId"]
        held = self._placeheld(request)
        self._template = json.dumps(held)
        self._prefetch = {k: json.dumps(v) for k, v in (held.get("prefetch") or {}).items()}

    def _placeheld(self, value: Any) -> Any:
        if isinstance(value, dict):
            held = {k: self._placeheld(v) for k, v in value.items()}
            if "hookInstance" in held:
                held["hookInstance"] = _HOOK_INSTANCE
            return held
        if isinstance(value, list):
            return [self._placeheld(v) for v in value]
        if value == self.patient_id:
            return _PID
        if value == f"Patient/{self.patient_id}":
            return f"Patient/{_PID}"
        return value

    def body(self, patient: str, **changes: Any) -> bytes:
        """The request for `patient`; `changes` replace top-level members (None removes)."""
        text = self._template.replace(_PID, patient).replace(_HOOK_INSTANCE, str(uuid.uuid4()))
        if not changes:
            return text.encode()
        request = json.loads(text)
        for key, value in changes.items():
            if value is None:
                request.pop(key, None)
            else:
                request[key] = value
        return json.dumps(request).encode()

    def prefetched(self, key: str, patient: str) -> bytes | None:
        """What the fixture prefetched for `key`, for `patient` (None: null or no such key)."""
        text = self._prefetch.get(key)
        return None if text is None or text == "null" else text.replace(_PID, patient).encode()

    def fetching(self, patient: str, fhir_server: str) -> bytes:
        """The request without its prefetch: every key is to be fetched from `fhir_server`."""
        authorization = {
            "access_token": "chaos-token-" + uuid.uuid4().hex,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "calcinosis-cds",
        }
        return self.body(
            patient, prefetch=None, fhirServer=fhir_server, fhirAuthorization=authorization
        )


def patient(tag: str) -> str:
    return f"chaos-{tag}-{uuid.uuid4().hex[:8]}"


def feedback_entry(
    card: dict[str, Any], when: datetime | None = None, override: bool = False
) -> dict[str, Any]:
    """Feedback on `card`: its first suggestion accepted, or (`override`, or a card without
    suggestions) overridden with its first reason."""
    entry: dict[str, Any] = {"card": card["uuid"], "outcomeTimestamp": utc_stamp(when)}
    if card.get("suggestions") and not override:
        entry |= {
            "outcome": "accepted",
            "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}],
        }
    else:
        entry["outcome"] = "overridden"
        if card.get("overrideReasons"):
            entry["overrideReason"] = {"reason": card["overrideReasons"][0]}
    return entry


# ----------------------------------------------------------------------------- the service


def serve_threads() -> str:
    """The threads per worker `calcinosis-cds serve` runs by default, as its help says it."""
    done = subprocess.run(
        [sys.executable, "-m", "cds_service", "serve", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    # The option's own help (not the usage line, where the next "default" is another's).
    found = re.search(r"^\s+--threads\b.*?default (\d+)", done.stdout, re.DOTALL | re.MULTILINE)
    return found.group(1) if found else "?"


@dataclass
class Service:
    """One `calcinosis-cds serve` (a gunicorn master and its workers) started by the script."""

    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def post(self, path: str, body: bytes, token: str | None = None, timeout: float = 10) -> Answer:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return call(self.port, "POST", path, body, headers, timeout)

    def get(self, path: str, timeout: float = 5) -> Answer:
        return call(self.port, "GET", path, timeout=timeout)

    def workers(self) -> list[int]:
        return children(self.process.pid)

    def running(self) -> bool:
        return self.process.poll() is None

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log.read_text("utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
        return records


def children(pid: int) -> list[int]:
    """The child processes of `pid`, from /proc (no dependency)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError, ValueError):
            found += [int(x) for x in (task / "children").read_text().split()]
    return sorted(set(found))


def memory_mb(pid: int) -> tuple[float, float] | None:
    """(VmRSS, VmHWM) of a process in MB, or None when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.MULTILINE))
    if len(values) < 2:
        return None
    return int(values["VmRSS"]) / 1024, int(values["VmHWM"]) / 1024


def reset_peak(pid: int) -> bool:
    """Reset a process's VmHWM to its current RSS (Linux: 5 > clear_refs)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def service_env(folder: Path, name: str, **settings: str) -> dict[str, str]:
    """The environment of a service: nothing inherited of the shell's service settings."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("CDS_") and k not in INHERITED_OUT
    }
    metrics = folder / f"{name}-metrics"
    metrics.mkdir(exist_ok=True)
    env |= {
        "CDS_HASH_KEY": HASH_KEY,
        "CDS_PRODUCTION": "0",
        "CDS_FHIR_DEADLINE_MS": str(FHIR_DEADLINE_MS),
        "CDS_CLIENT_TIMEOUT_SECONDS": str(CLIENT_TIMEOUT_S),
        "DATABASE_URL": f"sqlite:///{folder / f'{name}.sqlite3'}",
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "json",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    return env | settings


@contextlib.contextmanager
def served(run: Run, name: str, env: dict[str, str]) -> Iterator[Service]:
    """Start the service, wait until /healthz answers, and stop it (and its workers) after."""
    port = free_port()
    log = run.folder / f"{name}.log"
    command = [sys.executable, "-m", "cds_service", "serve", "--host", LOOPBACK]
    command += ["--port", str(port), "--workers", str(WORKERS)]
    if run.threads is not None:
        command += ["--threads", str(run.threads)]
    # `ulimit -d` then exec: the limit is set before gunicorn starts, the pid stays the master's.
    limited = ["sh", "-c", 'ulimit -d "$0" && exec "$@"', str(DATA_LIMIT_KIB), *command]
    with log.open("wb") as output:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and command
            limited, cwd=ROOT, env=env, stdout=output, stderr=output, start_new_session=True
        )
    service = Service(port, process, log)
    try:
        deadline = time.monotonic() + 60
        while service.get("/healthz", timeout=2).status != 200:
            if process.poll() is not None:
                tail = log.read_text("utf-8", errors="replace")[-2000:]
                raise RuntimeError(f"{name}: the service exited ({process.returncode}):\n{tail}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: the service did not answer within 60 s (see {log})")
            time.sleep(0.1)
        yield service
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the master we started; its process group gets SIGKILL if it lingers (a
    worker stuck on a fault would hold a graceful stop for gunicorn's 30 s)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # its own session: only what we started
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def warm(service: Service, body: Callable[[], bytes], times: int = 4) -> list[Answer]:
    return [service.post(PATIENT_VIEW, body(), timeout=30) for _ in range(times)]


# ----------------------------------------------------------------------------- JWT


class Issuer:
    """An EHR the service trusts: an ES384 key made for this run, its JWKS in the issuers
    file, and a fresh token (new jti) for each call."""

    def __init__(self, folder: Path) -> None:
        import jwt
        from cryptography.hazmat.primitives.asymmetric import ec

        self._jwt = jwt
        self.key = ec.generate_private_key(ec.SECP384R1())
        public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key()))
        self.file = folder / "trusted-issuers.json"
        jwk = {**public, "kid": KID, "alg": "ES384", "use": "sig"}
        self.file.write_text(json.dumps({"issuers": [{"iss": ISSUER, "jwks": {"keys": [jwk]}}]}))

    def token(self, path: str) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": "chaos-ehr",
            "aud": PUBLIC_BASE_URL + path,
            "iat": now,
            "exp": now + 300,
            "jti": str(uuid.uuid4()),
        }
        headers = {"kid": KID, "typ": "JWT"}
        return str(self._jwt.encode(claims, self.key, algorithm="ES384", headers=headers))

    def env(self) -> dict[str, str]:
        return {
            "CDS_AUTH": "jwt",
            "CDS_TRUSTED_ISSUERS": str(self.file),
            "CDS_PUBLIC_BASE_URL": PUBLIC_BASE_URL,
        }


# ----------------------------------------------------------------------------- TCP proxy


class TcpProxy:
    """A loopback TCP proxy in front of one upstream (host, port), in one of three modes:

    - ``pass``: bytes forwarded both ways;
    - ``stopped``: the listener is closed (new connections refused) and every connection is
      reset, as when the server's host is gone;
    - ``black-hole``: connections are accepted but nothing is forwarded, and the connections
      already open stall (nothing read, nothing delivered), as in a network partition. Back to
      ``pass``, they resume where they stopped and the held connections are connected.

    Threads, not asyncio: it runs beside blocking code in this script and in tests."""

    PASS, STOPPED, BLACK_HOLE = "pass", "stopped", "black-hole"
    TICK = 0.05  # how often waiting threads look at the mode again

    def __init__(self, upstream: tuple[str, int], port: int = 0) -> None:
        self.upstream = upstream
        self._cond = threading.Condition()
        self._mode = self.PASS
        self._closed = False
        self._links: set[_Link] = set()
        self._listener: socket.socket | None = self._listen(port)
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, name="chaos-proxy", daemon=True)

    @property
    def mode(self) -> str:
        return self._mode

    def start(self) -> TcpProxy:
        self._acceptor.start()
        return self

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def set_mode(self, mode: str) -> None:
        if mode not in (self.PASS, self.STOPPED, self.BLACK_HOLE):
            raise ValueError(mode)
        with self._cond:
            self._mode = mode
            if mode == self.STOPPED:
                self._close_listener()
                links, self._links = list(self._links), set()
            else:
                links = []
                if self._listener is None and not self._closed:
                    self._listener = self._listen(self.port)
            self._cond.notify_all()
        for link in links:
            link.reset()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._close_listener()
            links, self._links = list(self._links), set()
            self._cond.notify_all()
        for link in links:
            link.reset()
        if self._acceptor.is_alive():
            self._acceptor.join(timeout=2)

    def connections(self) -> int:
        with self._cond:
            return len(self._links)

    @staticmethod
    def _listen(port: int) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LOOPBACK, port))
        listener.listen(64)
        listener.settimeout(TcpProxy.TICK)
        return listener

    def _close_listener(self) -> None:
        if self._listener is not None:
            # shutdown first: a bare close leaves the port listening while the accepting
            # thread still waits on it, and a connection made then would be taken.
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None

    def _accept(self) -> None:
        while not self._closed:
            listener = self._listener
            if listener is None:
                time.sleep(self.TICK)
                continue
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            client.settimeout(None)
            link = _Link(client)
            with self._cond:
                if self._closed or self._mode == self.STOPPED:
                    link.reset()
                    continue
                self._links.add(link)
            threading.Thread(target=self._serve, args=(link,), daemon=True).start()

    def _wait_passing(self, link: _Link) -> bool:
        """Wait while the proxy black-holes; False when the link was reset meanwhile."""
        with self._cond:
            while self._mode == self.BLACK_HOLE and not link.dead and not self._closed:
                self._cond.wait(self.TICK)
            return self._mode == self.PASS and not link.dead and not self._closed

    def _serve(self, link: _Link) -> None:
        try:
            if not self._wait_passing(link):
                return
            link.upstream = socket.create_connection(self.upstream, timeout=3)
            link.upstream.settimeout(None)
            back = threading.Thread(
                target=self._pump, args=(link, link.upstream, link.client), daemon=True
            )
            back.start()
            self._pump(link, link.client, link.upstream)
            back.join()
        except OSError:
            pass
        finally:
            link.close()
            with self._cond:
                self._links.discard(link)

    def _pump(self, link: _Link, source: socket.socket, target: socket.socket) -> None:
        while not link.dead:
            if self._mode != self.PASS:  # black-hole: read nothing (stopped: reset soon)
                with self._cond:
                    self._cond.wait(self.TICK)
                continue
            try:
                ready, _, _ = select.select([source], [], [], self.TICK)
                if not ready:
                    continue
                if self._mode != self.PASS:
                    continue
                data = source.recv(65536)
                if not data:
                    break
                target.sendall(data)
            except (OSError, ValueError):
                break
        link.close()


class _Link:
    """One client connection through the proxy, and its upstream connection once made."""

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.upstream: socket.socket | None = None
        self.dead = False
        self._lock = threading.Lock()

    def close(self, reset: bool = False) -> None:
        with self._lock:
            if self.dead:
                return
            self.dead = True
            for sock in (self.client, self.upstream):
                if sock is None:
                    continue
                with contextlib.suppress(OSError):
                    if reset:  # RST, not FIN: the peer sees "connection reset"
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                    else:
                        sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()

    def reset(self) -> None:
        self.close(reset=True)


# ----------------------------------------------------------------------------- FHIR stubs


class StubHttp(ThreadingHTTPServer):
    """A loopback HTTP server whose every GET is answered by `answer(handler)`; it counts the
    connections it is still serving."""

    daemon_threads = True

    def __init__(self, answer: Callable[[BaseHTTPRequestHandler, StubHttp], None]) -> None:
        self.answer = answer
        self.stopping = threading.Event()
        self.active = 0
        self.served = 0
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with stub._lock:
                    stub.active += 1
                    stub.served += 1
                try:
                    stub.answer(self, stub)
                except OSError:
                    pass  # the service hung up: often the point
                finally:
                    with stub._lock:
                        stub.active -= 1

            def log_message(self, *_args: object) -> None:
                pass

        super().__init__((LOOPBACK, 0), Handler)

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.server_address[1]}/fhir"

    def handle_error(self, request: object, client_address: object) -> None:
        pass

    def __enter__(self) -> StubHttp:
        threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()


def send(handler: BaseHTTPRequestHandler, status: int, body: bytes, **headers: str) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", "application/fhir+json")
    handler.send_header("Content-Length", str(len(body)))
    for name, value in headers.items():
        handler.send_header(name.replace("_", "-"), value)
    handler.end_headers()
    handler.wfile.write(body)


EMPTY_BUNDLE = {"resourceType": "Bundle", "type": "searchset", "total": 0, "entry": []}
# The resource type a prefetch query asks for -> the fixture's prefetch key.
PREFETCH_KEYS = {
    "Patient": "patient",
    "Condition": "conditions",
    "Observation": "observations",
    "MedicationRequest": "medications",
    "Procedure": "procedures",
}


def healthy_fhir(fixture: Fixture) -> Callable[[BaseHTTPRequestHandler, StubHttp], None]:
    """Answers each query with what the fixture prefetched for its key (an empty searchset
    for a null key), for the patient the query names."""

    def answer(handler: BaseHTTPRequestHandler, _stub: StubHttp) -> None:
        kind = handler.path.split("?")[0].removeprefix("/fhir/").split("/")[0]
        key = PREFETCH_KEYS.get(kind)
        if key is None:
            send(handler, 404, json.dumps({"resourceType": "OperationOutcome"}).encode())
            return
        asked = re.search(r"(?:Patient/|[?&]patient=)([^&/?]+)", handler.path)
        value = fixture.prefetched(key, asked.group(1) if asked else "")
        send(handler, 200, value or json.dumps(EMPTY_BUNDLE).encode())

    return answer


def drip(handler: BaseHTTPRequestHandler, stub: StubHttp) -> None:
    """200 and its headers at once, then one byte every 0.3 s until the client goes. The
    length announced is a small Bundle's: it is the pace that is wrong, not the size."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/fhir+json")
    handler.send_header("Content-Length", "4096")  # 20 minutes at this pace
    handler.end_headers()
    handler.wfile.flush()
    text = b'{"resourceType": "Bundle", "type": "searchset", "entry": ['
    sent = 0
    while sent < 4096 and not stub.stopping.wait(0.3):
        handler.wfile.write(text[sent : sent + 1] if sent < len(text) else b" ")
        handler.wfile.flush()
        sent += 1


def big_bundle(size: int = 50_000_000) -> bytes:
    """A searchset of tiny Observations (44 bytes each: 1.1 million) of about `size` bytes."""
    entry = b'{"resource":{"resourceType":"Observation"}},'
    head = b'{"resourceType":"Bundle","type":"searchset","entry":['
    entries = (size - len(head)) // len(entry)
    return head + entry * (entries - 1) + entry[:-1] + b"]}"


def gzip_bomb(megabytes: int = 1024) -> bytes:
    """A Bundle whose id is `megabytes` MiB of zeros, gzip-compressed (about 1 MB)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip wrapper
    zeros = b"0" * (1 << 20)
    parts = [packer.compress(b'{"resourceType":"Bundle","type":"searchset","id":"')]
    parts += [packer.compress(zeros) for _ in range(megabytes)]
    parts += [packer.compress(b'"}'), packer.flush()]
    return b"".join(parts)


def payload(body: bytes, **headers: str) -> Callable[[BaseHTTPRequestHandler, StubHttp], None]:
    def answer(handler: BaseHTTPRequestHandler, _stub: StubHttp) -> None:
        send(handler, 200, body, **headers)

    return answer


# ----------------------------------------------------------------------------- run context


@dataclass
class Run:
    folder: Path
    threads: int | None  # passed as `serve --threads` (None: serve's own default)
    postgres_url: str | None  # None: not reachable (postgres_why says why)
    postgres_why: str = ""
    serve_config: str = ""


def probe_postgres(url: str) -> str:
    """'' when `url` answers on loopback, else why not."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    host = make_url(url).host or ""
    if host not in ("127.0.0.1", "localhost", "::1"):
        return f"{host} is not loopback (the battery stays on 127.0.0.1)"
    engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "no PostgreSQL here"
        return f"PostgreSQL not reachable at {host} ({type(exc).__name__})"
    finally:
        engine.dispose()
    return ""


@contextlib.contextmanager
def private_schema(url: str, tag: str) -> Iterator[str]:
    """A schema of our own (dropped afterwards); yields its name."""
    from sqlalchemy import create_engine, text

    name = f"chaos_{os.getpid()}_{tag}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{name}"'))
        yield name
    finally:
        with contextlib.suppress(Exception), admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        admin.dispose()


def schema_url(url: str, schema: str, host: str | None = None, port: int | None = None) -> str:
    """`url` on `schema` (through the search_path option), optionally at another address."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if host is not None:
        parsed = parsed.set(host=host, port=port)
    text = parsed.render_as_string(hide_password=False)
    return f"{text}{'&' if '?' in text else '?'}options=-csearch_path%3D{schema}"


# ----------------------------------------------------------------------------- S1


def s1_slow_clients(run: Run, stack: contextlib.ExitStack) -> list[Check]:
    """16 connections that announce 20,000 bytes, send half and wait: healthy calls meanwhile,
    and what each slow connection gets in the end (watched for CLIENT_TIMEOUT_S + 10 s)."""
    fixture = Fixture(CARD_FIXTURES[0])
    service = stack.enter_context(served(run, "s1", service_env(run.folder, "s1")))
    warm(service, lambda: fixture.body(patient("s1w")))
    request = (
        (
            f"POST {PATIENT_VIEW} HTTP/1.1\r\nHost: {LOOPBACK}:{service.port}\r\n"
            "Content-Type: application/json\r\nContent-Length: 20000\r\n\r\n"
        ).encode()
        + b'{"hook": "patient-view", '
        + b" " * 9975
    )
    held: list[tuple[socket.socket, float]] = []
    outcomes: list[tuple[str, float] | None] = [None] * 16
    cap_s = CLIENT_TIMEOUT_S + 10  # how long the slow connections are watched

    def watch(i: int, sock: socket.socket, opened: float) -> None:
        sock.settimeout(0.25)
        while time.monotonic() - opened < cap_s:
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                outcomes[i] = ("reset", time.monotonic() - opened)
                return
            found = re.match(rb"HTTP/1\.[01] (\d{3})", data)
            what = f"HTTP {found.group(1).decode()}" if found else "closed"
            outcomes[i] = (what, time.monotonic() - opened)
            return

    watchers = []
    for i in range(16):
        sock = socket.create_connection((LOOPBACK, service.port), timeout=5)
        stack.callback(sock.close)
        sock.sendall(request)
        held.append((sock, time.monotonic()))
        watcher = threading.Thread(target=watch, args=(i, sock, held[-1][1]), daemon=True)
        watcher.start()
        watchers.append(watcher)
    time.sleep(0.5)  # the slow requests reach the workers
    healthy: list[Answer] = []
    stop_at = time.monotonic() + 12
    while len(healthy) < 10 and time.monotonic() < stop_at:
        healthy.append(service.post(PATIENT_VIEW, fixture.body(patient("s1")), timeout=3))
    for watcher in watchers:
        watcher.join(timeout=max(0.0, cap_s - (time.monotonic() - held[0][1])) + 1)
    times = [a.seconds for a in healthy]
    good = [a for a in healthy if a.with_cards]
    ok = len(good) == len(healthy) == 10 and max(times) < 1.0
    measured = f"{len(good)}/{len(healthy)} × 200 with cards; {spread(times)}"
    notes = [tally([a.describe() for a in healthy])] if len(good) < len(healthy) else []
    notes += ["no more calls: 12 s spent"] if len(healthy) < 10 else []
    measured += f" ({'; '.join(notes)})" if notes else ""
    slow = [o or (f"still open after {cap_s} s", cap_s) for o in outcomes]
    groups: dict[str, list[float]] = {}
    for what, after in slow:
        groups.setdefault(what, []).append(after)
    got = "; ".join(
        f"{len(v)} × {what}" + ("" if what.startswith("still") else f" after {span(v)}")
        for what, v in groups.items()
    )
    return [
        Check.of(
            "S1",
            "16 slow clients held (Content-Length 20000, half sent): a healthy patient-view "
            "call answers in < 1 s (10 calls)",
            measured,
            ok,
        ),
        Check("S1", "what the 16 slow connections got", got, "info"),
    ]


# ----------------------------------------------------------------------------- S2


def s2_dripping_fhir(run: Run, stack: contextlib.ExitStack) -> list[Check]:
    """4 calls at once fetching every key from a dripping server, then, from their fetch
    deadline on, calls fetching from a healthy one."""
    fixture = Fixture(CARD_FIXTURES[0])
    dripping = stack.enter_context(StubHttp(drip))
    healthy = stack.enter_context(StubHttp(healthy_fhir(fixture)))
    env = service_env(run.folder, "s2", CDS_FHIR_SERVERS=f"{dripping.base_url},{healthy.base_url}")
    service = stack.enter_context(served(run, "s2", env))
    warmed = warm(service, lambda: fixture.fetching(patient("s2w"), healthy.base_url))
    if not all(a.with_cards for a in warmed):
        raise RuntimeError(
            f"the healthy FHIR server gives no cards: {tally([a.describe() for a in warmed])}"
        )
    dripped: list[Answer | None] = [None] * 4

    def dripping_call(i: int) -> None:
        body = fixture.fetching(patient("s2d"), dripping.base_url)
        dripped[i] = service.post(PATIENT_VIEW, body, timeout=15)

    started = time.monotonic()
    threads = [threading.Thread(target=dripping_call, args=(i,), daemon=True) for i in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, started + FHIR_DEADLINE_MS / 1000 - time.monotonic()))
    after: list[Answer] = []
    for _ in range(6):  # from the fetch deadline on
        after.append(
            service.post(
                PATIENT_VIEW, fixture.fetching(patient("s2h"), healthy.base_url), timeout=5
            )
        )
    for thread in threads:
        thread.join(timeout=16)
    drips = [a or Answer(0, 15, error="no answer") for a in dripped]
    stub_notices_s = 1.0  # the stub sees a connection closed at its next write (0.3 s)
    time.sleep(stub_notices_s)
    still_open = dripping.active
    limit = FHIR_DEADLINE_MS / 1000 + DEADLINE_MARGIN_S
    drip_ok = all(a.status == 412 and a.seconds <= limit for a in drips)
    times = [a.seconds for a in after]
    after_ok = all(a.with_cards and a.seconds < 1.0 for a in after)
    return [
        Check.of(
            "S2",
            f"4 calls at once, every key fetched from a server dripping 1 byte / 0.3 s: "
            f"412 within the fetch deadline ({FHIR_DEADLINE_MS} ms) + {DEADLINE_MARGIN_S:g} s",
            f"{tally([a.describe() for a in drips])} in {span([a.seconds for a in drips])}",
            drip_ok,
        ),
        Check.of(
            "S2",
            "from the deadline on, calls fetching from a healthy FHIR server: 200 with "
            "cards in < 1 s (6 calls)",
            f"{tally([a.describe() for a in after])}; {spread(times)}",
            after_ok,
        ),
        Check(
            "S2",
            f"dripping connections still open {stub_notices_s:g} s after the calls ended",
            f"{still_open} of {dripping.served}",
            "info",
        ),
    ]


# ----------------------------------------------------------------------------- S3


class PeakMemory:
    """The peak RSS of some processes while the block runs: their VmHWM (reset first, where
    Linux allows it) and samples of their VmRSS every 50 ms, whichever is higher."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.reset = all(reset_peak(pid) for pid in pids)
        self.before = {pid: memory_mb(pid) for pid in pids}
        self.sampled = dict.fromkeys(pids, 0.0)
        self.after: dict[int, tuple[float, float] | None] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.after = {pid: memory_mb(pid) for pid in self.pids}

    def _sample(self) -> None:
        while not self._done.wait(0.05):
            for pid in self.pids:
                if (now := memory_mb(pid)) is not None:
                    self.sampled[pid] = max(self.sampled[pid], now[0])

    def growth(self, pid: int) -> tuple[float, float, float, float] | None:
        """(RSS before, RSS after, peak, peak - before) in MB; None if the process is gone."""
        start, end = self.before.get(pid), self.after.get(pid)
        if start is None or end is None:
            return None
        peak = max(self.sampled[pid], end[1] if self.reset else 0.0)
        return start[0], end[0], peak, peak - start[0]


def s3_oversized(run: Run, stack: contextlib.ExitStack) -> list[Check]:
    """Every prefetch key fetched from a server answering 50 MB, then from one answering a
    gzip bomb: the call fails (412) within the deadline, each worker's memory stays flat."""
    fixture = Fixture(CARD_FIXTURES[0])
    big, bomb = big_bundle(), gzip_bomb()
    sending_big = stack.enter_context(StubHttp(payload(big)))
    bombing = stack.enter_context(StubHttp(payload(bomb, Content_Encoding="gzip")))
    servers = f"{sending_big.base_url},{bombing.base_url}"
    service = stack.enter_context(
        served(run, "s3", service_env(run.folder, "s3", CDS_FHIR_SERVERS=servers))
    )
    warm(service, lambda: fixture.body(patient("s3w")), times=6)
    checks = []
    cases = (
        (f"a {len(big) / 1e6:.0f} MB Bundle (1.1 M tiny entries) on every key", sending_big),
        (f"a gzip bomb (1 GiB of zeros in {len(bomb) / 1e6:.1f} MB) on every key", bombing),
    )
    limit = FHIR_DEADLINE_MS / 1000 + DEADLINE_MARGIN_S
    for label, server in cases:
        workers = service.workers()
        with PeakMemory(workers) as memory:
            body = fixture.fetching(patient("s3"), server.base_url)
            answer = service.post(PATIENT_VIEW, body, timeout=40)
            time.sleep(3)  # what a fetch thread still reads after the answer counts too
        checks.append(
            Check.of(
                "S3",
                f"{label}: 412 within the fetch deadline + {DEADLINE_MARGIN_S:g} s",
                f"{answer.describe()} in {seconds(answer.seconds)}",
                answer.status == 412 and answer.seconds <= limit,
            )
        )
        rows, flat = [], True
        for pid in workers:
            grown = memory.growth(pid)
            if grown is None:
                rows.append(f"worker {pid} gone")
                flat = False
                continue
            start, end, peak, more = grown
            flat &= more < 100
            rows.append(
                f"worker {pid}: {start:.0f} → {end:.0f} MB, peak {peak:.0f} MB (+{more:.0f})"
            )
        if sorted(service.workers()) != sorted(workers):
            rows.append(f"workers now {service.workers()}")
            flat = False
        checks.append(
            Check.of("S3", f"{label}: each worker's RSS grows < 100 MB", "; ".join(rows), flat)
        )
    return checks


# ----------------------------------------------------------------------------- S4, S5


def s4_database_stopped(run: Run, stack: contextlib.ExitStack) -> list[Check]:
    return database_outage(run, stack, "S4", TcpProxy.STOPPED)


def s5_database_black_holed(run: Run, stack: contextlib.ExitStack) -> list[Check]:
    return database_outage(run, stack, "S5", TcpProxy.BLACK_HOLE)


def database_outage(run: Run, stack: contextlib.ExitStack, name: str, mode: str) -> list[Check]:
    """The service (JWT on) on PostgreSQL through the proxy; the proxy turned to `mode`: a
    worker killed, charts opened, feedback given; then the proxy passes again and the
    feedback on the cards shown meanwhile is retried until accepted."""
    if run.postgres_url is None:
        raise Skip(run.postgres_why)
    from sqlalchemy.engine import make_url

    upstream = make_url(run.postgres_url)
    schema = stack.enter_context(private_schema(run.postgres_url, name.lower()))
    proxy = stack.enter_context(TcpProxy((upstream.host or LOOPBACK, upstream.port or 5432)))
    issuer = Issuer(run.folder)
    url = schema_url(run.postgres_url, schema, LOOPBACK, proxy.port)
    env = service_env(run.folder, name.lower(), DATABASE_URL=url, **issuer.env())
    service = stack.enter_context(served(run, name.lower(), env))
    fixtures = [Fixture(n) for n in CARD_FIXTURES]

    def chart(i: int, timeout: float = 10) -> Answer:
        body = fixtures[i % len(fixtures)].body(patient(name.lower()))
        return service.post(PATIENT_VIEW, body, issuer.token(PATIENT_VIEW), timeout)

    def feedback(card: dict[str, Any]) -> Answer:
        body = json.dumps({"feedback": [feedback_entry(card)]}).encode()
        return service.post(FEEDBACK, body, issuer.token(FEEDBACK), timeout=15)

    deadline = time.monotonic() + 30
    while service.get("/readyz").status != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    warmed = [chart(i, 30) for i in range(4)]
    if not all(a.with_cards for a in warmed):
        raise RuntimeError(f"no cards before the outage: {tally([a.describe() for a in warmed])}")
    first = feedback(warmed[0].cards[0])
    if first.status != 200:
        raise RuntimeError(f"feedback refused before the outage: {first.describe()}")

    proxy.set_mode(mode)
    outage_started = time.monotonic()
    # A worker killed as the outage begins: the master must stay, and a replacement must boot
    # with the database down and answer. Calls go on meanwhile (they all count below).
    master_pid = service.process.pid
    old = service.workers()
    victim = old[0]
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    outage: list[Answer] = []
    replacement: int | None = None
    answered: list[int] = []  # the statuses of the replacement's patient-view answers
    answering_after = 0.0
    while time.monotonic() - killed_at < 20 and not answered:
        outage.append(chart(len(outage)))
        fresh = [pid for pid in service.workers() if pid not in old]
        replacement = replacement or (fresh[0] if fresh else None)
        if replacement is not None:
            answered = [
                r.get("status")
                for r in service.log_records()
                if r.get("logger") == "gunicorn.access"
                and r.get("pid") == replacement
                and r.get("path") == PATIENT_VIEW
            ]
            answering_after = time.monotonic() - killed_at
        time.sleep(0.1)
    outage += [chart(len(outage) + i) for i in range(10)]
    shown = [a.cards[0] for a in outage if a.with_cards]
    during = feedback(shown[0]) if shown else None
    outage_s = time.monotonic() - outage_started

    proxy.set_mode(TcpProxy.PASS)
    back_at = time.monotonic()
    pending = {card["uuid"]: card for card in shown}
    accepted_after: list[float] = []
    statuses: dict[str, str] = {}
    while pending and time.monotonic() - back_at < 20:
        for card_id, card in list(pending.items()):
            got = feedback(card)
            statuses[card_id] = got.describe()
            if got.status == 200:
                accepted_after.append(time.monotonic() - back_at)
                del pending[card_id]
        if pending:
            time.sleep(0.5)

    what = {
        TcpProxy.STOPPED: "stopped (connections refused and reset)",
        TcpProxy.BLACK_HOLE: "black-holed (accepted, nothing answered)",
    }[mode]
    times = [a.seconds for a in outage]
    good = [a for a in outage if a.with_cards]
    checks = [
        Check.of(
            name,
            f"database {what}, JWT on: patient-view answers with its cards in < 1.5 s "
            f"({len(outage)} calls)",
            f"{len(good)}/{len(outage)} × 200 with cards; {spread(times)}"
            + ("" if len(good) == len(outage) else f" ({tally([a.describe() for a in outage])})"),
            len(good) == len(outage) and max(times) < 1.5,
        ),
    ]
    if during is None:
        checks.append(
            Check.of(
                name,
                "feedback during the outage: 503 with Retry-After",
                "no card shown to give feedback on",
                False,
            )
        )
    else:
        retry = during.headers.get("Retry-After")
        checks.append(
            Check.of(
                name,
                "feedback during the outage: 503 with Retry-After",
                f"{during.describe()}"
                + (f", Retry-After: {retry}" if retry else ", no Retry-After")
                + f", in {seconds(during.seconds)}",
                during.status == 503 and bool(retry),
            )
        )
    if shown:
        done = len(shown) - len(pending)
        measured = f"{done}/{len(shown)} accepted" + (
            f", the last {seconds(max(accepted_after))} after the database came back"
            if accepted_after
            else ""
        )
        if pending:
            measured += (
                f"; the others still {tally([statuses.get(c, '?') for c in pending])} after 20 s"
            )
        checks.append(
            Check.of(
                name,
                "database back: feedback on the cards shown during the outage is accepted "
                "(200) within 20 s",
                measured,
                not pending,
            )
        )
    master_ok = service.running() and Path(f"/proc/{master_pid}").exists()
    replaced = (
        f"worker {victim} SIGKILLed as the outage began; "
        f"master {'running' if master_ok else 'GONE'}; "
        + (
            f"replacement {replacement} answered {tally([f'HTTP {s}' for s in answered])}, "
            f"the first {seconds(answering_after)} after the kill"
            if answered
            else f"replacement {replacement} answered nothing within 20 s"
            if replacement
            else "no replacement within 20 s"
        )
        + f" (outage {seconds(outage_s)})"
    )
    checks.append(
        Check.of(
            name,
            "a worker SIGKILLed during the outage: the master stays, a replacement boots and "
            "answers",
            replaced,
            master_ok
            and replacement is not None
            and bool(answered)
            and all(s == 200 for s in answered),
        )
    )
    return checks


# ----------------------------------------------------------------------------- S6

S6_CALLS = 10_000
S6_RETENTION = "1d"
S6_SHIFT = timedelta(days=2)  # the old half of the calls, as if made two days ago
S6_FIXTURES = ("05-aluminium-creatinine-umol", "06-aluminium-ckd4-coded")  # cheap, one card


def s6_calls(database_url: str, shift_s: float, first: int, count: int, log: str) -> dict[str, int]:
    """`count` calls through the Flask test client of an app whose clock is `shift_s` seconds
    behind (run in a process of its own): in every 10, 5 patient-view, 1 order-select and 4
    feedback (accepted, or overridden: a snooze) on cards shown just before. Returns the
    answers by status."""
    sink = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(sink, 2)  # the service's log lines go to the log file

    from cds_service.app import create_app
    from cds_service.settings import Settings

    shift = timedelta(seconds=shift_s)
    hour = timedelta(hours=1)  # snoozes end long before the retention: prune may drop them
    settings = Settings(
        database_url=database_url,
        hash_key=HASH_KEY,
        log_level="WARNING",
        store_deadline_ms=5000,
        clock=lambda: datetime.now(UTC) - shift,
        **{f"snooze_{k}": hour for k in ("critical", "warning", "info")},
        **{f"snooze_no_reason_{k}": hour for k in ("critical", "warning", "info")},
    )
    app = create_app(settings)
    client = app.test_client()
    views = [Fixture(n) for n in S6_FIXTURES]
    select_fixture = Fixture(SELECT_FIXTURE, "order-select")
    statuses: dict[str, int] = {}
    recent: list[dict[str, Any]] = []
    try:
        for i in range(first, first + count):
            kind = i % 10
            who = f"chaos-s6-{shift_s:.0f}-{i}"
            if kind < 5:
                body = views[i % 2].body(who)
                answer = client.post(PATIENT_VIEW, data=body, content_type="application/json")
                cards = (answer.get_json(silent=True) or {}).get("cards") or []
                recent += cards[:1]
            elif kind == 5:
                body = select_fixture.body(who)
                answer = client.post(ORDER_SELECT, data=body, content_type="application/json")
            elif recent:
                entry = feedback_entry(recent.pop(), datetime.now(UTC) - shift, kind % 2 == 1)
                body = json.dumps({"feedback": [entry]}).encode()
                answer = client.post(FEEDBACK, data=body, content_type="application/json")
            else:
                continue
            key = str(answer.status_code)
            statuses[key] = statuses.get(key, 0) + 1
    finally:
        app.extensions["cds_engine"].close()
    return statuses


def count_rows(url: str) -> dict[str, int]:
    from sqlalchemy import create_engine, func, inspect, select

    from cds_service.store import metadata as store_metadata

    engine = create_engine(url, connect_args={"connect_timeout": 3} if "postgres" in url else {})
    try:
        present = set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            return {
                t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in store_metadata.sorted_tables
                if t.name in present
            }
    finally:
        engine.dispose()


def s6_retention(run: Run, stack: contextlib.ExitStack) -> list[Check]:
    """Half the calls dated two days ago, half now; the rows counted after each half, then
    after `calcinosis-cds prune` with every retention at one day."""
    if run.postgres_url is not None:
        schema = stack.enter_context(private_schema(run.postgres_url, "s6"))
        # Commits not waited for on disk (this session only): the calls are what is measured.
        url = schema_url(run.postgres_url, schema) + "%20-csynchronous_commit%3Doff"
        where = "PostgreSQL"
    else:
        url = f"sqlite:///{run.folder / 's6.sqlite3'}"
        where = f"SQLite, {run.postgres_why}"
    processes = max(1, min(2, os.cpu_count() or 1))
    # Processes of their own (spawned: this one has threads); terminated if the scenario
    # is stopped, closed and joined otherwise.
    pool = multiprocessing.get_context("spawn").Pool(processes)
    stack.callback(pool.join)
    stack.callback(pool.terminate)
    log = str(run.folder / "s6.log")
    statuses: dict[str, int] = {}
    counts: list[dict[str, int]] = []
    started = time.monotonic()
    share = S6_CALLS // 2 // processes  # calls per process and phase
    for shift in (S6_SHIFT, timedelta(0)):
        jobs = [
            pool.apply_async(s6_calls, (url, shift.total_seconds(), p * share, share, log))
            for p in range(processes)
        ]
        for job in jobs:
            for status, n in job.get(timeout=150).items():
                statuses[status] = statuses.get(status, 0) + n
        counts.append(count_rows(url))
    pool.close()
    took = time.monotonic() - started
    old, before = counts
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("CDS_") and k not in INHERITED_OUT
    }
    env |= {f"CDS_RETAIN_{k}": S6_RETENTION for k in ("ISSUED", "FEEDBACK", "CAUTIONS", "SNOOZES")}
    env |= {"CDS_HASH_KEY": HASH_KEY, "DATABASE_URL": url, "LOG_LEVEL": "WARNING"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    pruning = time.monotonic()
    done = subprocess.run(  # noqa: S603 - our own interpreter and command
        [sys.executable, "-m", "cds_service", "prune", "--database-url", url],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    prune_s = time.monotonic() - pruning
    after = count_rows(url)
    answered = sum(statuses.values())
    checks = [
        Check.of(
            "S6",
            f"{S6_CALLS:,} calls in process, half dated {S6_SHIFT.days} days ago ({where}): "
            "all answered 200",
            f"{tally([f'HTTP {s}' for s in statuses for _ in range(statuses[s])])} "
            f"in {seconds(took)} ({processes} processes)",
            answered == 2 * share * processes and set(statuses) == {"200"},
        ),
    ]
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
        checks.append(
            Check.of(
                "S6",
                "calcinosis-cds prune (retention 1d) runs",
                f"exit {done.returncode}: {tail[0][:200]}",
                False,
            )
        )
        return checks
    checks.append(
        Check(
            "S6",
            f"calcinosis-cds prune, every CDS_RETAIN_* = {S6_RETENTION}",
            f"{done.stdout.strip()[:300]} in {seconds(prune_s)}",
            "info",
        )
    )
    for name in before:
        kept = after.get(name, 0)
        bound = before[name] - old.get(name, 0)
        checks.append(
            Check.of(
                "S6",
                f"{name}: after prune, only the last day's rows remain",
                f"{before[name]:,} → {kept:,} rows ({old.get(name, 0):,} written > 1 day ago)",
                kept <= bound,
            )
        )
    return checks


# ----------------------------------------------------------------------------- main

Scenario = Callable[[Run, contextlib.ExitStack], list[Check]]
SCENARIOS: dict[str, tuple[str, Scenario, float]] = {
    "S1": ("slow clients", s1_slow_clients, 60),
    "S2": ("dripping FHIR server", s2_dripping_fhir, 60),
    "S3": ("oversized FHIR answers", s3_oversized, 90),
    "S4": ("database stopped", s4_database_stopped, 90),
    "S5": ("database black-holed", s5_database_black_holed, 90),
    "S6": ("retention", s6_retention, 200),
}


def run_scenario(run: Run, name: str, left_s: float) -> list[Check]:
    """One scenario in a thread of its own, bounded by its time limit (or what is `left_s`
    of the run's): past it, what it started is stopped (its ExitStack is closed from here)
    and it fails."""
    title, scenario, own_limit = SCENARIOS[name]
    limit = min(own_limit, left_s)
    stack = contextlib.ExitStack()
    result: list[Check] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            result.extend(scenario(run, stack))
        except BaseException as exc:  # noqa: BLE001 - reported as the scenario's result
            failure.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=body, name=f"chaos-{name}", daemon=True)
    thread.start()
    try:  # a SIGTERM or Ctrl-C while waiting stops what the scenario started too
        thread.join(limit)
        if thread.is_alive():
            stopped = f"stopped after {seconds(time.monotonic() - started)}"
            return [Check(name, f"{title}: ends within {limit:g} s", stopped, "FAIL")]
        if failure:
            exc = failure[0]
            if isinstance(exc, Skip):
                return [Check(name, title, f"skipped: {exc}", "SKIPPED")]
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            return [Check(name, f"{title}: runs", f"{type(exc).__name__}: {first}", "FAIL")]
        return result
    finally:
        stack.close()
        thread.join(10)
        stack.close()  # what a stopped scenario still entered meanwhile
        say(f"  {name} {title}: {seconds(time.monotonic() - started)}")


def _terminated(_signal: int, _frame: object) -> None:
    raise SystemExit(143)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--only", help="comma-separated scenarios, e.g. S1,S3")
    parser.add_argument(
        "--write-readme", action="store_true", help="write the table into README.md"
    )
    parser.add_argument("--postgres-url", help="PostgreSQL for S4-S6 (default TEST_POSTGRES_URL)")
    parser.add_argument(
        "--threads", type=int, help="serve --threads N (default: the command's own default)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the logs (the folder is printed)")
    args = parser.parse_args(argv)
    chosen = [s.strip().upper() for s in (args.only or ",".join(SCENARIOS)).split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)} (have {', '.join(SCENARIOS)})")

    # SIGTERM (`timeout`, CI) unwinds like Ctrl-C: the finally blocks stop what was started.
    signal.signal(signal.SIGTERM, _terminated)
    postgres = args.postgres_url
    if postgres is None:
        postgres = os.environ.get("TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    started = time.monotonic()
    checks: list[Check] = []
    folder: contextlib.AbstractContextManager[str] = (
        contextlib.nullcontext(tempfile.mkdtemp(prefix="cds-chaos-"))
        if args.keep
        else tempfile.TemporaryDirectory(prefix="cds-chaos-")
    )
    with folder as tmp:
        if args.keep:
            say(f"Logs kept in {tmp}")
        run = Run(Path(tmp), args.threads, None)
        if not postgres:
            run.postgres_why = "no PostgreSQL (scripts/ensure-postgres found none)"
        elif why := probe_postgres(postgres):
            run.postgres_why = why
        else:
            run.postgres_url = postgres
        run.serve_config = f"calcinosis-cds serve --workers {WORKERS}"
        if args.threads is not None:
            run.serve_config += f" --threads {args.threads}"
        else:
            run.serve_config += f" (its default --threads {serve_threads()})"
        say(
            f"Fault battery: {', '.join(chosen)}; service `{run.serve_config}`; PostgreSQL: "
            + ("reachable" if run.postgres_url else run.postgres_why)
        )
        for name in chosen:
            left = RUN_BUDGET_S - (time.monotonic() - started)
            if left < 30:
                spent = f"skipped: the run's {RUN_BUDGET_S:g} s are spent"
                checks.append(Check(name, SCENARIOS[name][0], spent, "SKIPPED"))
                continue
            checks += run_scenario(run, name, left)
    took = time.monotonic() - started
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = machine_facts("gunicorn")
    block = "\n".join(
        [
            textwrap.fill(
                f"Measured {when} by `make chaos` in {seconds(took)} on {machine}; the "
                f"service as `{run.serve_config}`, CDS_FHIR_DEADLINE_MS={FHIR_DEADLINE_MS}, "
                f"CDS_CLIENT_TIMEOUT_SECONDS={CLIENT_TIMEOUT_S}, the other settings their "
                "defaults.",
                width=100,
                break_long_words=False,
                break_on_hyphens=False,
            ),
            "",
            table(checks),
        ]
    )
    say("\n" + block)
    if args.write_readme and args.only:
        say(f"\nNOTE: {README.name} not written: --only ran part of the battery.")
    elif args.write_readme and write_readme(block, MARKER_START, MARKER_END):
        say(f"\n{README.name} updated (between {MARKER_START} and {MARKER_END}).")
    return 1 if any(c.result == "FAIL" for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
