"""Benchmark the CDS service against its floor, in one run (``make bench``).

1. Builds three prefetch-complete patient-view requests (bench/patients.py: about 50, 300 and
   2,000 resources) and prints their size.
2. In process: each request through the Flask test client of an app built by ``create_app``
   (JSON parse -> cards, store writes included, SQLite in a temporary folder; start-up objects
   frozen out of the garbage collector's sight, as in the served workers).
3. Over HTTP: the service and the floor (bench/floor.py: parse the body, answer no card), each
   served by gunicorn with 2 workers, under wrk (fixed connections and duration per
   measurement, the body POSTed by bench/post.lua) or, when wrk cannot be had, a Python load
   generator (said so in the output).
4. The fallback fetch against a deliberately slow FHIR server (bench/slow_fhir.py): the call
   must end within the fetch deadline plus a small margin.
5. Prints the table, the goals with pass / fail and the cost per resource, and writes them into
   README.md between the ``bench:start`` / ``bench:end`` markers.

    python -m bench                 # the full run (about two minutes)
    python -m bench --quick         # a short smoke run; README.md is left alone
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import http.client
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import redirect_stderr
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import patients
from bench.report import README, machine_facts, say, write_readme
from bench.slow_fhir import SlowFhirServer

ROOT = Path(__file__).resolve().parents[1]
LUA_SCRIPT = Path(__file__).resolve().parent / "post.lua"
GUNICORN_CONF = ROOT / "cds_service" / "gunicorn_conf.py"
SERVICE_ID = "calcinosis-patient-view"
SERVICE_PATH = f"/cds-services/{SERVICE_ID}"
MARKER_START = "<!-- bench:start -->"
MARKER_END = "<!-- bench:end -->"
WORKERS = 2
SLOW_FHIR_DELAY_S = 3.0
DEADLINE_MARGIN_MS = 250  # what "within the deadline" may add: response, scheduling
SLOW_FHIR_CALLS = 3
# The goals of issue 7.
TYPICAL_MAX_RATIO, TYPICAL_MAX_MS = 2.0, 50.0
LARGE_MAX_MS = 150.0
SMALL_MAX_RATIO = 1.5


# ----------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Load:
    """One load measurement over HTTP (milliseconds, requests per second)."""

    p50: float
    p95: float
    p99: float
    rps: float
    requests: int
    errors: int  # connection errors, timeouts and non-2xx answers


@dataclass(frozen=True)
class InProcess:
    p50: float
    p99: float
    samples: int
    cards: tuple[str, ...]  # "rule:indicator" of the answer


@dataclass(frozen=True)
class Row:
    size: patients.Size
    resources: int
    body_bytes: int
    in_process: InProcess
    service: Load
    floor: Load

    @property
    def ratio(self) -> float:
        return self.service.p99 / self.floor.p99 if self.floor.p99 else float("inf")


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    if not ordered:
        return float("nan")
    rank = max(1, -(-len(ordered) * p // 100))  # ceil(n * p / 100)
    return ordered[int(rank) - 1]


# ----------------------------------------------------------------------------- in process


def measure_in_process(
    bodies: dict[str, bytes], folder: Path, budget_s: float, max_samples: int
) -> dict[str, InProcess]:
    """Each body through the Flask test client: warm-up, then timed requests until the
    budget or the sample cap is reached. The service logs as it does in production (its own
    handler, at the default level) into a file instead of stderr."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    with (folder / "in-process.log").open("w", encoding="utf-8") as log, redirect_stderr(log):
        try:
            return _in_process(folder, bodies, budget_s, max_samples)
        finally:
            for handler in [h for h in root.handlers if h not in handlers]:
                root.removeHandler(handler)
            root.setLevel(level)


def _in_process(
    folder: Path, bodies: dict[str, bytes], budget_s: float, max_samples: int
) -> dict[str, InProcess]:
    from cds_service.app import create_app
    from cds_service.settings import Settings

    settings = Settings(
        database_url=f"sqlite:///{folder / 'in-process.sqlite3'}",
        hash_key="bench-" + uuid.uuid4().hex * 2,
    )
    app = create_app(settings)
    gc.freeze()  # as the served workers do (gunicorn_conf.post_worker_init)
    client = app.test_client()
    results: dict[str, InProcess] = {}
    try:
        for name, body in bodies.items():

            def post(body: bytes = body) -> Any:
                return client.post(SERVICE_PATH, data=body, content_type="application/json")

            answer = post()
            if answer.status_code != 200 or not answer.get_json()["cards"]:
                raise SystemExit(f"in process, {name}: HTTP {answer.status_code}, no cards")
            cards = tuple(
                f"{c['source'].get('topic', {}).get('code', '?')}:{c['indicator']}"
                for c in answer.get_json()["cards"]
            )
            for _ in range(9):
                post()
            samples: list[float] = []
            stop = time.perf_counter() + budget_s
            while len(samples) < max_samples and (time.perf_counter() < stop or len(samples) < 20):
                started = time.perf_counter()
                answer = post()
                samples.append((time.perf_counter() - started) * 1000)
                if answer.status_code != 200:
                    raise SystemExit(f"in process, {name}: HTTP {answer.status_code}")
            samples.sort()
            results[name] = InProcess(
                percentile(samples, 50), percentile(samples, 99), len(samples), cards
            )
            say(
                f"  {name:8} p50 {results[name].p50:7.2f} ms  p99 {results[name].p99:7.2f} ms"
                f"  ({len(samples)} requests; cards: {', '.join(cards)})"
            )
    finally:
        app.extensions["cds_engine"].close()
    return results


# ----------------------------------------------------------------------------- load tools


class LoadTool:
    name = ""
    label = ""

    def run(self, url: str, body_file: Path, duration_s: float) -> Load:
        raise NotImplementedError


class Wrk(LoadTool):
    """wrk with bench/post.lua: its done() prints the percentiles (wrk --latency has no p95)."""

    def __init__(self, executable: str, threads: int, connections: int) -> None:
        self.executable = executable
        self.threads = threads
        self.connections = connections
        probe = subprocess.run(  # noqa: S603 - our own fixed arguments
            [executable, "-v"], capture_output=True, text=True, check=False
        )
        found = re.search(r"wrk (?:debian/)?(\S+)", probe.stdout + probe.stderr)
        self.name = f"wrk {found.group(1) if found else '(unknown version)'}"
        self.label = (
            f"{self.name}, {threads} threads, {connections} connections, "
            "the body POSTed by bench/post.lua"
        )

    def run(self, url: str, body_file: Path, duration_s: float) -> Load:
        command = [
            self.executable,
            f"-t{self.threads}",
            f"-c{self.connections}",
            f"-d{max(1, round(duration_s))}s",
            "--timeout",
            "10s",
            "-s",
            str(LUA_SCRIPT),
            url,
            "--",
            str(body_file),
        ]
        done = subprocess.run(  # noqa: S603 - our own fixed arguments
            command, capture_output=True, text=True, check=False, timeout=duration_s + 60
        )
        line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
        if done.returncode != 0 or line is None:
            raise SystemExit(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        figures = json.loads(line.removeprefix("BENCH "))
        errors = sum(
            int(figures[k])
            for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
        )
        return Load(
            p50=figures["p50_us"] / 1000,
            p95=figures["p95_us"] / 1000,
            p99=figures["p99_us"] / 1000,
            rps=figures["requests"] / (figures["duration_us"] / 1e6),
            requests=int(figures["requests"]),
            errors=errors,
        )


class PythonLoad(LoadTool):
    """Fallback when wrk cannot be had: one thread per connection, each POSTing in a loop
    (reconnecting when the server closes). Slower than wrk and sharing the CPUs with the
    servers through the GIL: its figures are labelled as such."""

    def __init__(self, connections: int, why: str) -> None:
        self.connections = connections
        self.name = f"python-loadgen ({why})"
        self.label = f"{self.name}, {connections} connections (threads)"

    def run(self, url: str, body_file: Path, duration_s: float) -> Load:
        host, port, path = _split_url(url)
        body = body_file.read_bytes()
        headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
        latencies: list[list[float]] = [[] for _ in range(self.connections)]
        errors = [0] * self.connections
        stop = time.perf_counter() + duration_s

        def worker(i: int) -> None:
            connection = http.client.HTTPConnection(host, port, timeout=10)
            while time.perf_counter() < stop:
                started = time.perf_counter()
                try:
                    connection.request("POST", path, body=body, headers=headers)
                    answer = connection.getresponse()
                    answer.read()
                    latencies[i].append((time.perf_counter() - started) * 1000)
                    if answer.status != 200:
                        errors[i] += 1
                    if answer.will_close:
                        connection.close()
                except (OSError, http.client.HTTPException):
                    errors[i] += 1
                    connection.close()
            connection.close()

        started = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(self.connections)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        ordered = sorted(x for per_thread in latencies for x in per_thread)
        return Load(
            p50=percentile(ordered, 50),
            p95=percentile(ordered, 95),
            p99=percentile(ordered, 99),
            rps=len(ordered) / elapsed,
            requests=len(ordered),
            errors=sum(errors),
        )


def _split_url(url: str) -> tuple[str, int, str]:
    found = re.fullmatch(r"http://([^:/]+):(\d+)(/.*)", url)
    assert found, url
    return found.group(1), int(found.group(2)), found.group(3)


def pick_tool(choice: str, threads: int, connections: int) -> LoadTool:
    executable = shutil.which("wrk")
    if choice == "wrk" and executable is None:
        raise SystemExit("wrk is not on PATH (bench/ensure-wrk installs it as root on Debian)")
    if choice != "python" and executable is not None:
        return Wrk(executable, threads, connections)
    if choice == "auto":
        say("NOTE: wrk is not available: falling back to the Python load generator.")
        return PythonLoad(connections, "fallback: wrk not available")
    return PythonLoad(connections, "chosen with --tool python")


# ----------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_call(
    port: int, method: str, path: str, body: bytes | None = None, timeout: float = 30
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    config: str  # what gunicorn was given, for the report

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{SERVICE_PATH}"


def gunicorn_command(app_spec: str, port: int, with_conf: bool) -> list[str]:
    command = [sys.executable, "-m", "gunicorn"]
    if with_conf:
        command += ["-c", "python:cds_service.gunicorn_conf"]
    return [*command, "--workers", str(WORKERS), "--bind", f"127.0.0.1:{port}", app_spec]


@contextlib.contextmanager
def gunicorn(
    name: str,
    app_spec: str,
    env: dict[str, str],
    folder: Path,
    ready: Callable[[int], bool],
    *,
    with_conf: bool,
) -> Iterator[Server]:
    """Start gunicorn (its own process group), wait until `ready`, stop it afterwards."""
    port = free_port()
    log = folder / f"{name}.log"
    command = gunicorn_command(app_spec, port, with_conf)
    with log.open("wb") as output:
        process = subprocess.Popen(  # noqa: S603 - our own fixed arguments
            command, cwd=ROOT, env=env, stdout=output, stderr=output, start_new_session=True
        )
    shown = " ".join(command[3:-1]).replace(f"127.0.0.1:{port}", "127.0.0.1:<free port>")
    server = Server(name, port, process, log, shown)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
                raise RuntimeError(f"{name}: gunicorn exited ({process.returncode}):\n{tail}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if ready(port):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: gunicorn did not answer within 60 s (see {log})")
            time.sleep(0.2)
        yield server
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Stop a gunicorn master we started (it stops its workers); its group if it lingers."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


# ----------------------------------------------------------------------------- slow FHIR


@dataclass(frozen=True)
class SlowFetch:
    deadline_ms: int
    timeout_ms: int
    times_ms: tuple[float, ...]
    status: int
    diagnostics: str
    queries: int  # what the slow server received

    @property
    def passed(self) -> bool:
        answered = 0 < self.status < 500
        return answered and max(self.times_ms) <= self.deadline_ms + DEADLINE_MARGIN_MS


def measure_slow_fhir(
    port: int, server: SlowFhirServer, timeout_ms: int, deadline_ms: int
) -> SlowFetch:
    """A request without prefetch but with fhirServer (the slow one): how long until the
    service answers, and what it answers."""
    times: list[float] = []
    status, diagnostics = 0, ""
    received = server.requests
    for i in range(SLOW_FHIR_CALLS):
        request = {
            "hook": "patient-view",
            "hookInstance": str(uuid.uuid4()),
            "fhirServer": server.base_url,
            "context": {"userId": "Practitioner/bench", "patientId": f"bench-slow-{i}"},
        }
        started = time.perf_counter()
        status, raw = http_call(port, "POST", SERVICE_PATH, json.dumps(request).encode())
        times.append((time.perf_counter() - started) * 1000)
        with contextlib.suppress(ValueError, KeyError, IndexError, TypeError):
            diagnostics = json.loads(raw)["issue"][0]["diagnostics"]
    queries = server.requests - received
    return SlowFetch(deadline_ms, timeout_ms, tuple(times), status, diagnostics, queries)


# ----------------------------------------------------------------------------- report


def verdict(ok: bool) -> str:
    return "**pass**" if ok else "**FAIL**"


def ms(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def report(
    rows: list[Row],
    slow: SlowFetch,
    facts: str,
    tool: LoadTool,
    duration_s: float,
    warmup_s: float,
    service_config: str,
    floor_config: str,
) -> str:
    by_name = {row.size.name: row for row in rows}
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Measured {when} by `make bench` on {facts}.",
        f"Load: {tool.label}; {duration_s:g} s per measurement after a {warmup_s:g} s warm-up of "
        f"each server; service and floor each under gunicorn with {WORKERS} workers "
        f"(service: `{service_config}`, SQLite in a temporary folder, log level INFO; floor: "
        f"`{floor_config}`). In process: the Flask test client, the same requests one at a time.",
        "Latencies in ms.",
        "",
        "| size | resources | body | in-process p50 / p99 | HTTP p50 / p95 / p99 | req/s "
        "| floor p50 / p95 / p99 | floor req/s | service / floor (p99) |",
        "|---|---:|---:|---|---|---:|---|---:|---:|",
    ]
    for row in rows:
        s, f, i = row.service, row.floor, row.in_process
        errors = f" ({s.errors + f.errors} errors!)" if s.errors or f.errors else ""
        lines.append(
            f"| {row.size.name} | {row.resources} | {row.body_bytes / 1024:.0f} KiB "
            f"| {ms(i.p50)} / {ms(i.p99)} | {ms(s.p50)} / {ms(s.p95)} / {ms(s.p99)} "
            f"| {s.rps:.0f} | {ms(f.p50)} / {ms(f.p95)} / {ms(f.p99)} | {f.rps:.0f} "
            f"| {row.ratio:.1f}{errors} |"
        )
    typical, large, small = by_name["typical"], by_name["large"], by_name["small"]
    goals = [
        (
            "typical: p99 ≤ 2 × floor p99 and < 50 ms",
            f"{ms(typical.service.p99)} ms; 2 × floor = {ms(2 * typical.floor.p99)} ms",
            typical.ratio <= TYPICAL_MAX_RATIO and typical.service.p99 < TYPICAL_MAX_MS,
        ),
        ("large: p99 < 150 ms", f"{ms(large.service.p99)} ms", large.service.p99 < LARGE_MAX_MS),
        (
            "small: p99 ≤ 1.5 × floor p99",
            f"{ms(small.service.p99)} ms; 1.5 × floor = {ms(1.5 * small.floor.p99)} ms",
            small.ratio <= SMALL_MAX_RATIO,
        ),
        (
            f"missing prefetch, FHIR server answering after {SLOW_FHIR_DELAY_S:g} s: answered "
            f"within the fetch deadline ({slow.deadline_ms} ms) + {DEADLINE_MARGIN_MS} ms",
            f"slowest of {len(slow.times_ms)}: {max(slow.times_ms):.0f} ms, HTTP {slow.status}",
            slow.passed,
        ),
    ]
    lines += ["", "| goal | measured | result |", "|---|---|---|"]
    lines += [f"| {goal} | {measured} | {verdict(ok)} |" for goal, measured, ok in goals]

    per_resource = {row.size.name: row.in_process.p50 / row.resources for row in rows}
    marginal = (large.in_process.p50 - typical.in_process.p50) / (
        large.resources - typical.resources
    )
    linear = per_resource["large"] <= per_resource["typical"] * 1.15
    lines += [
        "",
        "Cost against prefetch size (in-process p50 per resource): "
        + ", ".join(f"{name} {1000 * v:.1f} µs" for name, v in per_resource.items())
        + f"; from typical to large each extra resource costs {1000 * marginal:.1f} µs. "
        + (
            "Linear or better: the cost per resource does not grow with the record."
            if linear
            else "**Worse than linear**: the cost per resource grows with the record."
        ),
        "",
        "Nothing per request depends on the knowledge base: no knowledge file is read after "
        "start-up (tests/knowledge/test_knowledge_loaded_once.py).",
        "",
        f"Slow FHIR server (answers after {SLOW_FHIR_DELAY_S:g} s; request timeout "
        f"{slow.timeout_ms} ms, deadline {slow.deadline_ms} ms): "
        + ", ".join(f"{t:.0f}" for t in slow.times_ms)
        + f" ms ({slow.queries} queries reached the slow server); the service answered HTTP "
        + str(slow.status)
        + (f" “{slow.diagnostics}”" if slow.diagnostics else "")
        + ".",
    ]
    return "\n".join(_wrap(line) for line in lines)


def _wrap(line: str) -> str:
    """Prose at the README's width; table rows as they are."""
    if line.startswith("|") or len(line) <= 100:
        return line
    return textwrap.fill(line, width=100, break_long_words=False, break_on_hyphens=False)


# ----------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per server")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--tool", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--in-process-seconds", type=float, default=4, help="budget per size")
    parser.add_argument("--no-readme", action="store_true", help="do not update README.md")
    parser.add_argument("--quick", action="store_true", help="short smoke run, README untouched")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.in_process_seconds, args.no_readme = 2, 1, 1, True

    from cds_service.settings import Settings

    tool = pick_tool(args.tool, args.threads, args.connections)
    as_of = datetime.now(UTC).date()
    with tempfile.TemporaryDirectory(prefix="cds-bench-") as tmp:
        folder = Path(tmp)
        say(f"Requests (patient-view, prefetch complete, dates anchored on {as_of}):")
        bodies: dict[str, bytes] = {}
        counts: dict[str, int] = {}
        for size in patients.SIZES:
            request = patients.build(size, as_of)
            bodies[size.name] = patients.body(request)
            counts[size.name] = patients.resource_count(request)
            (folder / f"{size.name}.json").write_bytes(bodies[size.name])
            say(
                f"  {size.name:8} {counts[size.name]:5d} resources, "
                f"{len(bodies[size.name]):9,d} bytes"
            )

        say("\nIn process (Flask test client, SQLite in a temporary folder):")
        in_process = measure_in_process(bodies, folder, args.in_process_seconds, 500)

        slow_server = SlowFhirServer(SLOW_FHIR_DELAY_S).start()
        # The service as `make run` starts it, whatever this shell sets: no authentication,
        # not production mode, its own store; each gunicorn master makes its own metrics folder.
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        env |= {
            "CDS_AUTH": "off",
            "CDS_PRODUCTION": "0",
            "DATABASE_URL": f"sqlite:///{folder / 'service.sqlite3'}",
            "CDS_FHIR_SERVERS": slow_server.base_url,
            "CDS_HASH_KEY": "bench-" + uuid.uuid4().hex * 2,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p
            ),
        }
        service_settings = Settings.from_env(env)
        with_conf = GUNICORN_CONF.is_file()
        say(f"\nOver HTTP ({tool.label}):")
        try:
            with contextlib.ExitStack() as stack:
                service = stack.enter_context(
                    gunicorn(
                        "service",
                        "cds_service.app:create_app()",
                        env,
                        folder,
                        lambda port: http_call(port, "GET", "/healthz", timeout=5)[0] == 200,
                        with_conf=with_conf,
                    )
                )
                floor = _start_floor(stack, env, folder, bodies["small"], with_conf)
                rows = _load_runs(tool, service, floor, bodies, counts, in_process, folder, args)
                say("\nMissing prefetch, slow FHIR server:")
                slow = measure_slow_fhir(
                    service.port,
                    slow_server,
                    service_settings.fhir_timeout_ms,
                    service_settings.fhir_deadline_ms,
                )
                say(
                    "  "
                    + ", ".join(f"{t:.0f} ms" for t in slow.times_ms)
                    + f" ({slow.queries} queries reached the slow server)"
                    + f" -> HTTP {slow.status} {slow.diagnostics}"
                )
                service_config, floor_config = service.config, floor.config
        finally:
            slow_server.shutdown()
            slow_server.server_close()

    block = report(
        rows,
        slow,
        machine_facts("gunicorn", "Flask"),
        tool,
        args.duration,
        args.warmup,
        service_config,
        floor_config,
    )
    say("\n" + block)
    if not args.no_readme and write_readme(block, MARKER_START, MARKER_END):
        say(f"\n{README.name} updated (between {MARKER_START} and {MARKER_END}).")
    errors = sum(row.service.errors + row.floor.errors for row in rows)
    return 1 if errors else 0


def _start_floor(
    stack: contextlib.ExitStack, env: dict[str, str], folder: Path, probe: bytes, with_conf: bool
) -> Server:
    """The floor under the same gunicorn settings as the service; without the service's
    config file if the floor cannot start with it."""

    def ready(port: int) -> bool:
        return http_call(port, "POST", SERVICE_PATH, probe, timeout=5)[0] == 200

    if with_conf:
        try:
            return stack.enter_context(
                gunicorn("floor", "bench.floor:app", env, folder, ready, with_conf=True)
            )
        except RuntimeError as exc:
            say(f"NOTE: the floor did not start with the service's gunicorn config ({exc})")
    return stack.enter_context(
        gunicorn("floor", "bench.floor:app", env, folder, ready, with_conf=False)
    )


def _load_runs(
    tool: LoadTool,
    service: Server,
    floor: Server,
    bodies: dict[str, bytes],
    counts: dict[str, int],
    in_process: dict[str, InProcess],
    folder: Path,
    args: argparse.Namespace,
) -> list[Row]:
    for name, body in bodies.items():  # the service answers with cards over HTTP too
        status, raw = http_call(service.port, "POST", SERVICE_PATH, body)
        if status != 200 or not json.loads(raw)["cards"]:
            raise SystemExit(f"service over HTTP, {name}: HTTP {status}, no cards")
    for server in (floor, service):
        tool.run(server.url, folder / "typical.json", args.warmup)
    rows = []
    for size in patients.SIZES:
        body_file = folder / f"{size.name}.json"
        floor_load = tool.run(floor.url, body_file, args.duration)
        service_load = tool.run(service.url, body_file, args.duration)
        for label, load in (("floor", floor_load), ("service", service_load)):
            say(
                f"  {size.name:8} {label:8} p50 {ms(load.p50):>6} p95 {ms(load.p95):>6} "
                f"p99 {ms(load.p99):>6} ms  {load.rps:7.1f} req/s  {load.requests} requests"
                + (f"  {load.errors} ERRORS" if load.errors else "")
            )
        rows.append(
            Row(
                size,
                counts[size.name],
                len(bodies[size.name]),
                in_process[size.name],
                service_load,
                floor_load,
            )
        )
    return rows


if __name__ == "__main__":
    sys.exit(main())
