"""Fetching prefetch queries from the EHR's FHIR server when the EHR did not send them.

- Independent queries run concurrently (one thread each, from a pool kept for the process).
- Each HTTP request has a timeout, and the whole fetch one deadline; what is not back by the
  deadline has failed. Every socket read and write is bounded by what is left of the deadline,
  so a server that drips its answer (headers or body) cannot hold a thread past it.
- Bodies are streamed and counted after decompression (which is ours, capped, so a small
  compressed "bomb" never inflates past the cap): at most `max_query_bytes` for all the pages
  of one query, and `max_call_bytes` for every query of one hook call together.
- Bundle ``next`` links are followed up to a page limit, and only while they stay on the same
  FHIR server (at or below its base URL, `cds_service.urls.is_within`): the access token is
  never sent anywhere else.
- Every failure becomes a short reason ("HTTP 401", "timed out", "not FHIR JSON") and an
  outcome from a fixed list (for metrics). Reasons and logs never contain the access token,
  and never the URL (it carries the patient id).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx

from cds_service.urls import is_within

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
# The only content codings asked for: both are inflated here, under the size caps.
ACCEPT_ENCODING = "gzip, deflate"
MAX_QUERY_BYTES = 8 * 1024 * 1024
MAX_CALL_BYTES = 16 * 1024 * 1024
_PIECE = 64 * 1024  # the most a decompressor hands back at once


class _NoRequestUrls(logging.Filter):
    """httpx logs every request URL ("HTTP Request: GET <url> ..."); FHIR query URLs carry the
    patient id. A filter on the logger itself holds whatever level a deployment sets."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("HTTP Request")


logging.getLogger("httpx").addFilter(_NoRequestUrls())


class FetchError(Exception):
    """One query could not be answered; `reason` is safe to show and to log; `outcome` is one
    of http_error, timeout, deadline, connection_error, invalid_response, too_large."""

    def __init__(self, reason: str, outcome: str = "invalid_response") -> None:
        super().__init__(reason)
        self.reason = reason
        self.outcome = outcome


DEADLINE = "no answer before the deadline"

# Told of every query: (prefetch key, outcome, seconds until answered or given up); it must
# not raise (Metrics.fetched never does).
QueryObserver = Callable[[str, str, float], None]


# --------------------------------------------------------------------------- the deadline

# The deadline of the query this thread is reading, if any (monotonic time): connections are
# pooled and shared between threads, so the socket reads it at each read, not when it opened.
_reading = threading.local()


def _bounded(timeout: float | None, expired: type[Exception]) -> float | None:
    """`timeout`, shortened to what is left of this thread's deadline (raises `expired` when
    nothing is left)."""
    deadline: float | None = getattr(_reading, "deadline", None)
    if deadline is None:
        return timeout
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise expired(DEADLINE)
    return remaining if timeout is None else min(timeout, remaining)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write ends by the deadline. httpx's timeouts apply to
    each read, so a server sending one byte at a time (in its headers as well as its body)
    would otherwise hold the thread as long as it likes."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        timeout = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's own sockets, wrapped in `_DeadlineStream`."""

    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        timeout = _bounded(timeout, httpcore.ConnectTimeout)
        stream = self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        timeout = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class _DeadlineTransport(httpx.HTTPTransport):
    """httpx's transport over `_DeadlineBackend` (httpx takes no network backend, so its
    connection pool is replaced by an equal one that has it). Being a transport of our own, it
    leaves out the proxies of HTTP(S)_PROXY: the FHIR server is reached directly."""

    def __init__(self) -> None:
        context = httpx.create_ssl_context()  # loaded once (it reads the CA bundle)
        super().__init__(verify=context)
        self._pool = httpcore.ConnectionPool(  # with httpx's default limits
            ssl_context=context,
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=_DeadlineBackend(),
        )


# --------------------------------------------------------------------------- the size caps


class FetchBudget:
    """The decompressed bytes one hook call may still read from the FHIR server, shared (so
    locked) by its concurrent queries and by the follow-up fetches of the same call."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()

    def left(self) -> int:
        with self._lock:
            return self.limit - self._used

    def take(self, count: int) -> bool:
        """Count `count` more bytes, unless that goes over the limit (then False)."""
        with self._lock:
            if self._used + count > self.limit:
                return False
            self._used += count
            return True


class _Allowance:
    """What one query (all its pages) may still read: its own cap, and the call's budget."""

    def __init__(self, cap: int, budget: FetchBudget) -> None:
        self.cap = cap
        self.left = cap
        self.budget = budget

    def check(self, count: int) -> None:
        """Raise if `count` more bytes would be too many (nothing is counted)."""
        if count > self.left:
            raise self._too_large()
        if count > self.budget.left():
            raise self._too_large(call=True)

    def take(self, count: int) -> None:
        if count > self.left:
            raise self._too_large()
        if not self.budget.take(count):
            raise self._too_large(call=True)
        self.left -= count

    def _too_large(self, call: bool = False) -> FetchError:
        if call:
            return FetchError(
                f"the answers to this call are larger than {self.budget.limit} bytes together "
                "(CDS_FHIR_MAX_CALL_BYTES)",
                "too_large",
            )
        return FetchError(
            f"the answer is larger than {self.cap} bytes (CDS_FHIR_MAX_QUERY_BYTES)", "too_large"
        )


_CODING = re.compile(r"[a-z0-9._+-]{1,24}")


class _Decoder:
    """Inflates a body as it comes, never more than `size` bytes at a time: the caller counts
    each piece before asking for more, so a bomb stops at the cap. "deflate" is read both
    zlib-wrapped (as specified) and raw (as some servers send it)."""

    def __init__(self, content_encoding: str) -> None:
        listed = (c.strip() for c in content_encoding.lower().split(","))
        codings = [c for c in listed if c not in ("", "identity")]
        if len(codings) > 1:
            raise FetchError("the answer is compressed more than once, which was not asked for")
        self.coding = codings[0] if codings else ""
        if self.coding not in ("", "gzip", "x-gzip", "deflate"):
            shown = self.coding if _CODING.fullmatch(self.coding) else "an unknown coding"
            raise FetchError(f"the answer is compressed as {shown}, which was not asked for")
        self._inflate: Any = zlib.decompressobj(31) if "gzip" in self.coding else None
        self._head = b""  # deflate: the first bytes, until they say whether a zlib header leads

    def pieces(self, raw: bytes, size: int) -> Iterator[bytes]:
        if not self.coding:
            yield raw
            return
        if self._inflate is None:
            self._head += raw
            if len(self._head) < 2:
                return
            raw, self._head = self._head, b""
            zlib_header = raw[0] & 0x0F == 8 and (raw[0] << 8 | raw[1]) % 31 == 0
            self._inflate = zlib.decompressobj(15 if zlib_header else -15)
        try:
            while raw and not self._inflate.eof:
                piece = self._inflate.decompress(raw, size)
                if piece:
                    yield piece
                raw = self._inflate.unconsumed_tail
        except zlib.error:
            raise FetchError(f"the {self.coding} answer is corrupt") from None

    def rest(self) -> bytes:
        """What is left once the whole body has come (a few bytes at most: the input is all
        consumed); raises if the compressed stream did not end."""
        if not self.coding:
            return b""
        try:
            rest = self._inflate.flush() if self._inflate is not None else b""
        except zlib.error:
            raise FetchError(f"the {self.coding} answer is corrupt") from None
        if self._inflate is None or not self._inflate.eof:
            raise FetchError(f"the {self.coding} answer is cut short")
        return rest


# --------------------------------------------------------------------------- the fetcher


@dataclass
class _Answer:
    """What one query came to, in its thread, and how long that took."""

    seconds: float
    resources: list[dict[str, Any]] = field(default_factory=list)
    truncated: bool = False
    error: FetchError | None = None


@dataclass
class FetchResult:
    """What came back for each key, and why the others failed."""

    resources: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    truncated: list[str] = field(default_factory=list)


class FhirFetcher:
    """A FHIR REST client for prefetch queries, shared by all requests of a worker."""

    def __init__(
        self,
        timeout_s: float,
        deadline_s: float,
        page_limit: int,
        observer: QueryObserver | None = None,
        *,
        max_query_bytes: int = MAX_QUERY_BYTES,
        max_call_bytes: int = MAX_CALL_BYTES,
        threads: int = 8,
    ) -> None:
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s
        self.page_limit = page_limit
        self.observer = observer
        self.max_query_bytes = max_query_bytes
        self.max_call_bytes = max_call_bytes
        self.threads = threads
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None  # created on the first fetch
        self._pool: ThreadPoolExecutor | None = None

    def _open(self) -> tuple[httpx.Client, ThreadPoolExecutor]:
        with self._lock:
            if self._client is None or self._pool is None:
                self._client = httpx.Client(
                    headers={"Accept": FHIR_JSON, "Accept-Encoding": ACCEPT_ENCODING},
                    follow_redirects=False,
                    timeout=self.timeout_s,
                    transport=_DeadlineTransport(),
                )
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="fhir-fetch")
            return self._client, self._pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
            if self._client is not None:
                self._client.close()
            self._client, self._pool = None, None

    def deadline(self) -> float:
        """The monotonic time by which a call's fetches must all be answered."""
        return time.monotonic() + self.deadline_s

    def budget(self) -> FetchBudget:
        """The bytes a call's fetches may read together (share it like the deadline)."""
        return FetchBudget(self.max_call_bytes)

    def fetch(
        self,
        base_url: str,
        token: str | None,
        queries: Mapping[str, str],
        deadline: float | None = None,
        budget: FetchBudget | None = None,
    ) -> FetchResult:
        """Run `queries` (key -> URL relative to `base_url`, or an absolute URL below it, such
        as a Bundle's next link) against `base_url` concurrently, all within `deadline` (by
        default one deadline from now) and `budget` (by default a call's). A key's metrics
        label is the part before any "#"."""
        client, pool = self._open()
        started = time.monotonic()
        deadline = deadline if deadline is not None else started + self.deadline_s
        budget = budget if budget is not None else self.budget()
        base = base_url.rstrip("/") + "/"
        futures = {
            key: pool.submit(self._timed_query, client, base, token, query, deadline, budget)
            for key, query in queries.items()
        }
        result = FetchResult()
        outcomes: dict[str, str] = {}
        for key, future in futures.items():
            try:
                answer = future.result(timeout=max(0.0, deadline - time.monotonic()) + 0.05)
            except FutureTimeout:
                future.cancel()  # the query's reads end at the deadline: its thread is free
                answer = _Answer(time.monotonic() - started, error=FetchError(DEADLINE, "deadline"))
            if answer.error is not None:
                result.failures[key] = answer.error.reason
                outcomes[key] = answer.error.outcome
            else:
                result.resources[key] = answer.resources
                outcomes[key] = "ok"
                if answer.truncated:
                    result.truncated.append(key)
            if self.observer is not None:
                self.observer(key.split("#")[0], outcomes[key], answer.seconds)
        for key, reason in result.failures.items():
            label = key.split("#")[0]  # never an id: "medication#3", not the Medication id
            log.warning(
                "FHIR fetch failed: key=%s reason=%s",
                label,
                reason,
                extra={"key": label, "outcome": outcomes[key]},
            )
        for key in result.truncated:
            log.warning(
                "FHIR fetch stopped at %d pages: key=%s", self.page_limit, key, extra={"key": key}
            )
        return result

    def _timed_query(
        self,
        client: httpx.Client,
        base: str,
        token: str | None,
        query: str,
        deadline: float,
        budget: FetchBudget,
    ) -> _Answer:
        started = time.monotonic()
        try:
            resources, truncated = self._fetch_query(client, base, token, query, deadline, budget)
        except FetchError as exc:
            return _Answer(time.monotonic() - started, error=exc)
        return _Answer(time.monotonic() - started, resources, truncated)

    def _fetch_query(
        self,
        client: httpx.Client,
        base: str,
        token: str | None,
        query: str,
        deadline: float,
        budget: FetchBudget,
    ) -> tuple[list[dict[str, Any]], bool]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        absolute = query.startswith(("http://", "https://"))
        url: str | None = query if absolute else base + query.lstrip("/")
        if not is_within(url, base, query=True):
            where = "a next link" if absolute else "a query"
            raise FetchError(f"{where} points outside the FHIR server")
        allowance = _Allowance(self.max_query_bytes, budget)  # for all the pages
        resources: list[dict[str, Any]] = []
        for _page in range(self.page_limit):
            assert url is not None
            body = self._get_json(client, url, headers, deadline, allowance)
            kind = body.get("resourceType")
            if kind == "OperationOutcome":
                raise FetchError("the FHIR server answered with an OperationOutcome")
            if kind != "Bundle":
                return [body], False
            entries = body.get("entry") or []
            if not isinstance(entries, list):
                raise FetchError("Bundle.entry is not an array")
            for entry in entries:
                resource = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(resource, dict) and resource.get("resourceType") not in (
                    None,
                    "OperationOutcome",
                ):
                    resources.append(resource)
            url = next_link(body)
            if url is None:
                return resources, False
            if not is_within(url, base, query=True):
                raise FetchError("a next link points outside the FHIR server")
        return resources, True

    def _get_json(
        self,
        client: httpx.Client,
        url: str,
        headers: dict[str, str],
        deadline: float,
        allowance: _Allowance,
    ) -> dict[str, Any]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError(DEADLINE, "deadline")
        request = client.build_request(
            "GET", url, headers=headers, timeout=min(self.timeout_s, remaining)
        )
        _reading.deadline = deadline
        try:
            response = client.send(request, stream=True)
            try:
                content = self._read(response, deadline, allowance)
            finally:
                response.close()  # unread, the connection is dropped rather than drained
        except httpx.TimeoutException:
            if time.monotonic() >= deadline:  # cut short by the deadline
                raise FetchError(DEADLINE, "deadline") from None
            raise FetchError("timed out", "timeout") from None
        except httpx.HTTPError as exc:
            raise FetchError(
                f"connection failed ({type(exc).__name__})", "connection_error"
            ) from None
        finally:
            _reading.deadline = None
        try:
            body = json.loads(content)
        except (ValueError, RecursionError):
            raise FetchError("the answer is not FHIR JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
            raise FetchError("the answer is not a FHIR resource")
        return body

    @staticmethod
    def _read(response: httpx.Response, deadline: float, allowance: _Allowance) -> bytearray:
        """The body of a 200 answer, decompressed, within the deadline and the allowance."""
        if response.status_code != 200:
            raise FetchError(f"HTTP {response.status_code}", "http_error")
        decoder = _Decoder(response.headers.get("Content-Encoding", ""))
        length = response.headers.get("Content-Length", "")
        if length.strip().isdigit():
            allowance.check(int(length))  # too large already: not read at all
        content = bytearray()
        for raw in response.iter_raw():
            if time.monotonic() >= deadline:
                raise FetchError(DEADLINE, "deadline")
            for piece in decoder.pieces(raw, min(_PIECE, allowance.left + 1)):
                allowance.take(len(piece))
                content += piece
        rest = decoder.rest()
        allowance.take(len(rest))
        content += rest
        return content


def next_link(bundle: Mapping[str, Any]) -> str | None:
    """The URL of a Bundle's `next` link, if it has one."""
    links = bundle.get("link")
    for link in links if isinstance(links, list) else ():
        if isinstance(link, Mapping) and link.get("relation") == "next":
            url = link.get("url")
            return url if isinstance(url, str) and url else None
    return None
